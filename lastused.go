package apikey

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gokeys/apikey/usage"
)

// Defaults of last-used tracking.
const (
	// defaultLastUsedInterval is how often uses are flushed to the store
	// when Options.LastUsedInterval is 0. Key.LastUsedAt therefore lags
	// the true last use by at most this interval plus one flush.
	defaultLastUsedInterval = 10 * time.Second
	// defaultLastUsedQueue is the number of distinct keys that can wait for
	// a flush (or be in one) when Options.LastUsedQueue is 0.
	defaultLastUsedQueue = 100_000
	// defaultLastUsedBatch is the most keys one Store.MarkUsed call writes
	// when Options.LastUsedBatch is 0.
	defaultLastUsedBatch = 1_000
	// defaultLastUsedTimeout bounds each Store.MarkUsed call when
	// Options.LastUsedTimeout is 0, whatever the flush interval.
	defaultLastUsedTimeout = 5 * time.Second
)

// usageGranularity is the resolution of last-used times of cached keys. A
// key verified many times within it is recorded once. So LastUsedAt may be
// up to this much older than the true last use.
const usageGranularity = time.Millisecond

// usageShard is one independently locked part of the pending uses, on its
// own cache lines.
type usageShard struct {
	mu       sync.Mutex
	pending  map[string]int64 // key id -> Unix nanoseconds of its last use
	closed   bool
	recorded uint64
	dropped  uint64
	_        [128 - 8 - 8 - 8 - 8 - 8]byte
}

// usageRecorder coalesces uses in memory, one time per key. It keeps them
// in shards so that verifications on different cores rarely meet on a
// lock. It writes them with Store.MarkUsed in batches of bounded size,
// each under its own timeout. A batch that fails goes back to the queue
// without holding up the others. So a slow or failing store never makes a
// flush retry more than one batch at a time (no livelock). The queue never
// holds more than its bound. A nil recorder records nothing.
type usageRecorder struct {
	store    Store
	interval time.Duration
	max      int64
	batch    int
	timeout  time.Duration
	// granularity is the resolution of stored last-used times; 0 writes
	// every use (see Options.LastUsedGranularity).
	granularity time.Duration
	log         *slog.Logger
	metrics     Metrics

	shards [cacheShards]usageShard

	// queued counts the keys held, pending or in a batch being written.
	// It changes only when a key enters or leaves, not on every use.
	queued                   atomic.Int64
	flushes, failures, shown atomic.Uint64
	rows                     atomic.Uint64 // keys the store reported written

	flushMu  sync.Mutex // one flush at a time
	stopOnce sync.Once
	cancel   context.CancelFunc
	base     context.Context // the background flushes' context, cancelled by close
	stop     chan struct{}
	done     chan struct{}
}

// usageOptions are the Options fields of last-used tracking.
type usageOptions struct {
	interval, timeout, granularity time.Duration
	max, batch                     int
	log                            *slog.Logger
	metrics                        Metrics
}

func newUsageRecorder(store Store, o usageOptions) (*usageRecorder, error) {
	if o.interval < 0 {
		return nil, nil
	}
	if o.max < 0 || o.batch < 0 || o.timeout < 0 {
		return nil, fmt.Errorf("%w: negative LastUsedQueue, LastUsedBatch or LastUsedTimeout", ErrInvalidOptions)
	}
	u := &usageRecorder{
		store: store, interval: o.interval, max: int64(o.max), batch: o.batch, timeout: o.timeout,
		granularity: granularity(o.granularity), log: o.log, metrics: o.metrics, stop: make(chan struct{}), done: make(chan struct{}),
	}
	if u.interval == 0 {
		u.interval = defaultLastUsedInterval
	}
	if u.max == 0 {
		u.max = defaultLastUsedQueue
	}
	if u.batch == 0 {
		u.batch = defaultLastUsedBatch
	}
	if u.timeout == 0 {
		u.timeout = defaultLastUsedTimeout
	}
	for i := range u.shards {
		u.shards[i].pending = map[string]int64{}
	}
	u.base, u.cancel = context.WithCancel(context.Background())
	go u.loop()
	return u, nil
}

// record notes a use of id at at. id must not be part of a token, because
// it is kept until the next flush.
func (u *usageRecorder) record(shard int, id string, at time.Time) {
	if u == nil {
		return
	}
	t := at.UnixNano()
	s := &u.shards[shard]
	s.mu.Lock()
	prev, ok := s.pending[id]
	switch {
	case s.closed:
	case ok:
		if t > prev {
			s.pending[id] = t
		}
		s.recorded++
	case u.queued.Add(1) > u.max:
		u.queued.Add(-1)
		s.dropped++
	default:
		s.pending[id] = t
		s.recorded++
	}
	s.mu.Unlock()
}

// recordUse records a verified use of key id at now. e, the key's cache
// entry if any, lets a key verified many times a millisecond be recorded
// once per millisecond, without taking the recorder's locks, and a key
// whose stored last use is within the granularity not at all.
func (u *usageRecorder) recordUse(e *cacheEntry, id string, now time.Time) {
	if u == nil {
		return
	}
	t := now.UnixNano()
	if e != nil {
		if uint64(t-e.used.Load()) < uint64(usageGranularity) || u.fresh(e.key, now) {
			return
		}
		e.used.Store(t)
	}
	u.record(shardOf(id), id, now)
}

func (u *usageRecorder) loop() {
	defer close(u.done)
	t := time.NewTicker(u.interval)
	defer t.Stop()
	for {
		select {
		case <-u.stop:
			return
		case <-t.C:
			u.flush(u.base)
		}
	}
}

// pendingUse is one pending use.
type pendingUse struct {
	id string
	at int64
}

// flush writes the pending uses in batches. A batch that fails goes back
// into the queue (newer uses recorded meanwhile win) for the next flush.
// The other batches go on. It returns the first error, and how many uses
// are left to write.
func (u *usageRecorder) flush(ctx context.Context) (int, error) {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	var uses []pendingUse
	for i := range u.shards {
		s := &u.shards[i]
		s.mu.Lock()
		if uses == nil {
			uses = make([]pendingUse, 0, u.queued.Load()+16)
		}
		for id, at := range s.pending {
			uses = append(uses, pendingUse{id, at})
		}
		clear(s.pending)
		s.mu.Unlock()
	}
	left, first := writeBatches(ctx, uses, u.batch, u.write, u.requeue, u.written, "mark used")
	if u.metrics != nil {
		st := u.stats()
		u.metrics.UsesQueued(int(u.queued.Load()), int(st.UsesDropped-u.shown.Swap(st.UsesDropped)))
	}
	return left, first
}

// written takes n written items off the queue.
func (u *usageRecorder) written(n int) { u.queued.Add(-int64(n)) }

// writeBatches writes items with write in batches of size, each on its
// own, while ctx lasts. A batch that fails, or that ctx no longer lets
// run, goes back with requeue without holding up the others. written
// hears of each batch written. It returns how many items went back, and
// the first error (ctx's, named by op, when no write failed).
func writeBatches[T any](ctx context.Context, items []T, size int, write func(context.Context, []T) error, requeue func([]T), written func(n int), op string) (int, error) {
	var first error
	left := 0
	for start := 0; start < len(items); start += size {
		batch := items[start:min(start+size, len(items))]
		if ctx.Err() == nil {
			err := write(ctx, batch)
			if err == nil {
				written(len(batch))
				continue
			}
			first = cmp.Or(first, err)
		}
		requeue(batch)
		left += len(batch)
	}
	if first == nil && left > 0 {
		first = storeErr(op, ctx.Err())
	}
	return left, first
}

// write calls Store.MarkUsed for one batch under its own timeout.
func (u *usageRecorder) write(ctx context.Context, batch []pendingUse) error {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	m := make(map[string]time.Time, len(batch))
	for _, x := range batch {
		m[x.id] = time.Unix(0, x.at).UTC()
	}
	start := time.Now()
	err := u.markUsed(ctx, m)
	if u.metrics != nil {
		u.metrics.Flushed(len(batch), time.Since(start), err)
	}
	if err != nil {
		u.failures.Add(1)
		if u.log != nil {
			u.log.Warn("apikey: last-used flush failed", slog.Int("keys", len(batch)), slog.String("error", err.Error()))
		}
		return err
	}
	u.flushes.Add(1)
	return nil
}

// requeue puts the uses of a failed batch back, unless a newer use of the
// same key was recorded meanwhile.
func (u *usageRecorder) requeue(batch []pendingUse) {
	for _, x := range batch {
		s := &u.shards[shardOf(x.id)]
		s.mu.Lock()
		if prev, ok := s.pending[x.id]; ok { // counted twice: once is enough
			if x.at > prev {
				s.pending[x.id] = x.at
			}
			u.queued.Add(-1)
		} else {
			s.pending[x.id] = x.at
		}
		s.mu.Unlock()
	}
}

// markUsed calls the store, turning a panic into an error.
func (u *usageRecorder) markUsed(ctx context.Context, uses map[string]time.Time) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = storeErr("mark used", panicError{r})
		}
	}()
	n, err := u.markUsedIn(ctx, uses)
	if err != nil {
		return storeErr("mark used", err)
	}
	u.rows.Add(uint64(n))
	return nil
}

// close stops recording and the background flushes, then writes every
// pending use, retrying failed batches until ctx is done (three attempts
// when ctx has no deadline).
func (u *usageRecorder) close(ctx context.Context) error {
	if u == nil {
		return nil
	}
	for i := range u.shards {
		s := &u.shards[i]
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
	}
	u.stopOnce.Do(func() {
		close(u.stop)
		u.cancel() // a background flush in progress gives its batches back
	})
	select {
	case <-u.done:
	case <-ctx.Done(): // a store that ignores its context holds the flush
		return storeErr("mark used", ctx.Err())
	}
	return flushUntilEmpty(ctx, u.flush)
}

func (u *usageRecorder) stats() Stats {
	if u == nil {
		return Stats{}
	}
	st := Stats{Flushes: u.flushes.Load(), FlushErrors: u.failures.Load(), UsesWritten: u.rows.Load()}
	for i := range u.shards {
		s := &u.shards[i]
		s.mu.Lock()
		st.UsesRecorded += s.recorded
		st.UsesDropped += s.dropped
		s.mu.Unlock()
	}
	return st
}

// defaultLastUsedGranularity is the resolution of stored last-used times
// when Options.LastUsedGranularity is 0: a key is written at most about
// once a minute, whatever the number of instances that use it.
const defaultLastUsedGranularity = time.Minute

// granularity returns the recorder's resolution of stored last-used
// times from the option o: 0 when every use is to be written.
func granularity(o time.Duration) time.Duration {
	switch {
	case o == 0:
		return defaultLastUsedGranularity
	case o < 0:
		return 0
	}
	return o
}

// fresh reports whether k's stored last use, as the Manager read it, is
// already within the granularity of a use at now: stored times only move
// forward, so the store would not write this use.
func (u *usageRecorder) fresh(k *Key, now time.Time) bool {
	return !k.LastUsedAt.IsZero() && now.Sub(k.LastUsedAt) < u.granularity
}

// markUsedIn writes one batch of uses to the store: with
// usage.LastUsedStore.MarkUsedGranular when the store has it and a
// granularity is set, else with Store.MarkUsed. It returns the keys
// written, as the store reports them (every key of the batch for
// MarkUsed, which reports nothing).
func (u *usageRecorder) markUsedIn(ctx context.Context, uses map[string]time.Time) (int, error) {
	if ls, ok := u.store.(usage.LastUsedStore); ok && u.granularity > 0 {
		return ls.MarkUsedGranular(ctx, uses, u.granularity)
	}
	return len(uses), u.store.MarkUsed(ctx, uses)
}

// flushUntilEmpty is the last flush of a closing recorder: it flushes
// until nothing is left, backing off from 10 ms to a second between
// attempts, while ctx lasts. A ctx without a deadline gets three attempts.
// It returns the last flush's error.
func flushUntilEmpty(ctx context.Context, flush func(context.Context) (int, error)) error {
	_, bounded := ctx.Deadline()
	wait := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		left, err := flush(ctx)
		if left == 0 || (!bounded && attempt == 3) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}
