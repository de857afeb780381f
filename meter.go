package apikey

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gokeys/apikey/usage"
)

// Defaults of usage recording.
const (
	// defaultUsageInterval is how often counts are added to the store
	// when Options.UsageInterval is 0.
	defaultUsageInterval = 10 * time.Second
	// defaultUsageQueue bounds the (key, hour) counters held when
	// Options.UsageQueue is 0.
	defaultUsageQueue = 100_000
	// defaultUsageRetention is how long stored usage is kept when
	// Options.UsageRetention is 0.
	defaultUsageRetention = 400 * 24 * time.Hour
	// usagePurgeEvery is how often the flush loop purges old usage.
	usagePurgeEvery = time.Hour
	// meterSlots is the size of each meter shard's table of current
	// counters, read without a lock.
	meterSlots = 64
)

// usageMetrics is what a Metrics may also implement to hear of usage
// recording (see Options.Metrics): it is not part of Metrics, so that
// existing implementations keep compiling.
type usageMetrics interface {
	// UsageFlushed reports one usage.Store.AddUsage call: its records,
	// duration and error (nil on success).
	UsageFlushed(records int, d time.Duration, err error)
	// UsageQueued reports, after each flush, the counters held and the
	// requests not counted since the previous report, the queue being
	// full.
	UsageQueued(queued, dropped int)
}

// meterCounter counts the requests of one key in one hour. A request is
// counted once, and moved between outcomes by the stages it goes through,
// with atomic adds; a flush takes the counts with atomic swaps, so the
// counter is never locked on the request path.
//
// A counter is pinned by each request that may still add to it (pins);
// a flush removes a counter of a past hour only when no request pins it,
// after marking it retired so that a request that finds it lock-free
// afterwards backs off and looks it up again under the shard's lock.
type meterCounter struct {
	allowed, limited, refused, cost atomic.Int64
	pins                            atomic.Int64
	retired                         atomic.Bool

	id, customer string
	hour         int64 // Unix hours
}

// add adds r's counts to c.
func (c *meterCounter) add(r *usage.Record) {
	c.allowed.Add(r.Allowed)
	c.limited.Add(r.Limited)
	c.refused.Add(r.Refused)
	c.cost.Add(r.Cost)
}

// move moves one request counted allowed to the outcome to; nil-safe.
func (c *meterCounter) move(to *atomic.Int64) {
	to.Add(1) // first, so that the total never dips
	c.allowed.Add(-1)
}

// pending returns the requests counted and not taken yet.
func (c *meterCounter) pending() int64 {
	return c.allowed.Load() + c.limited.Load() + c.refused.Load()
}

// meterKey identifies a counter.
type meterKey struct {
	id   string
	hour int64
}

// meterShard is one independently locked part of the counters, on its
// own cache lines.
type meterShard struct {
	mu       sync.Mutex
	counters map[meterKey]*meterCounter
	closed   bool
	dropped  uint64
	hot      [meterSlots]atomic.Pointer[meterCounter] // written under mu
	_        [128 - 32]byte
}

// meter counts requests per key and hour in memory and adds the counts to
// a usage.Store in batches (see Options.UsageInterval), like the last-used
// recorder: in shards, bounded, each batch under its own timeout, a
// failed batch put back without holding up the others. A nil meter counts
// nothing.
type meter struct {
	store     usage.Store
	now       func() time.Time
	interval  time.Duration
	timeout   time.Duration
	retention time.Duration // 0: never purged
	max       int64
	batch     int
	log       *slog.Logger
	metrics   usageMetrics

	shards [cacheShards]meterShard

	// queued counts the counters held and the records being written.
	queued atomic.Int64
	// taken counts the requests flushes took from counters (and not put
	// back): with the pending ones, the requests counted.
	taken                    atomic.Int64
	flushes, failures, shown atomic.Uint64

	flushMu  sync.Mutex // one flush at a time; guards purged
	purged   time.Time
	stopOnce sync.Once
	cancel   context.CancelFunc
	base     context.Context
	stop     chan struct{}
	done     chan struct{}
}

// meterOptions are the Options fields of usage recording.
type meterOptions struct {
	interval, timeout, retention time.Duration
	max, batch                   int
	now                          func() time.Time
	log                          *slog.Logger
	metrics                      Metrics
}

// newMeter returns the meter of a Manager over store: nil when the store
// does not implement usage.Store or recording is off.
func newMeter(store Store, o meterOptions) (*meter, error) {
	if o.max < 0 {
		return nil, fmt.Errorf("%w: negative UsageQueue", ErrInvalidOptions)
	}
	us, ok := store.(usage.Store)
	if !ok || o.interval < 0 {
		return nil, nil
	}
	u := &meter{
		store: us, now: o.now, interval: o.interval, timeout: o.timeout, retention: o.retention,
		max: int64(o.max), batch: o.batch, log: o.log, stop: make(chan struct{}), done: make(chan struct{}),
	}
	u.metrics, _ = o.metrics.(usageMetrics)
	if u.interval == 0 {
		u.interval = defaultUsageInterval
	}
	if u.max == 0 {
		u.max = defaultUsageQueue
	}
	if u.batch == 0 {
		u.batch = defaultLastUsedBatch
	}
	if u.timeout == 0 {
		u.timeout = defaultLastUsedTimeout
	}
	switch {
	case u.retention == 0:
		u.retention = defaultUsageRetention
	case u.retention < 0:
		u.retention = 0
	}
	for i := range u.shards {
		u.shards[i].counters = map[meterKey]*meterCounter{}
	}
	u.base, u.cancel = context.WithCancel(context.Background())
	go u.loop()
	return u, nil
}

// unixHour is the Unix hour of t.
func unixHour(t time.Time) int64 {
	s := t.Unix()
	if s < 0 {
		return (s - 3599) / 3600
	}
	return s / 3600
}

// acquire returns the counter of k for the hour of now, pinned: release
// it when the request can add no more. It returns nil when usage is not
// recorded, or when the queue is full (the request is then dropped).
func (u *meter) acquire(k *Key, now time.Time) *meterCounter {
	if u == nil {
		return nil
	}
	hour := unixHour(now)
	shard, slot := locate(k.ID)
	s := &u.shards[shard]
	hot := &s.hot[slot%meterSlots]
	if c := hot.Load(); c != nil && c.hour == hour && c.id == k.ID {
		c.pins.Add(1)
		if !c.retired.Load() {
			return c
		}
		c.pins.Add(-1) // being removed: look it up under the lock
	}
	return u.acquireSlow(s, hot, k, hour)
}

func (u *meter) acquireSlow(s *meterShard, hot *atomic.Pointer[meterCounter], k *Key, hour int64) *meterCounter {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	key := meterKey{k.ID, hour}
	c := s.counters[key]
	if c == nil {
		if u.queued.Add(1) > u.max {
			u.queued.Add(-1)
			s.dropped++
			return nil
		}
		c = &meterCounter{id: k.ID, customer: k.Customer(), hour: hour}
		s.counters[key] = c
	}
	c.pins.Add(1) // under the lock: a flush cannot be removing it
	hot.Store(c)
	return c
}

// release unpins c; nil-safe.
func (c *meterCounter) release() {
	if c != nil {
		c.pins.Add(-1)
	}
}

// refuse counts a request of k refused at now for the state of the key
// or its customer (its secret verified).
func (u *meter) refuse(k *Key, now time.Time) {
	if c := u.acquire(k, now); c != nil {
		c.refused.Add(1)
		c.release()
	}
}

func (u *meter) loop() {
	defer close(u.done)
	t := time.NewTicker(u.interval)
	defer t.Stop()
	for {
		select {
		case <-u.stop:
			return
		case <-t.C:
			u.flush(u.base, false)
			u.purge(u.base)
		}
	}
}

// take swaps c's counts for zeros and returns them as a record, false
// when there was nothing to take.
func (u *meter) take(c *meterCounter) (usage.Record, bool) {
	if c.allowed.Load() == 0 && c.limited.Load() == 0 && c.refused.Load() == 0 && c.cost.Load() == 0 {
		return usage.Record{}, false
	}
	r := usage.Record{
		Customer: c.customer, KeyID: c.id, Start: time.Unix(c.hour*3600, 0).UTC(),
		Allowed: c.allowed.Swap(0), Limited: c.limited.Swap(0), Refused: c.refused.Swap(0), Cost: c.cost.Swap(0),
	}
	u.taken.Add(r.Allowed + r.Limited + r.Refused)
	return r, r.Allowed != 0 || r.Limited != 0 || r.Refused != 0 || r.Cost != 0
}

// flush adds the counts held to the store, in batches. Counters of past
// hours that no request pins are removed (all of them when final); the
// others stay, emptied. A batch that fails goes back into the counters
// for the next flush; the other batches go on. It returns the first
// error, and how many records are left to write.
func (u *meter) flush(ctx context.Context, final bool) (int, error) {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	hour := unixHour(u.now())
	var recs []usage.Record
	for i := range u.shards {
		s := &u.shards[i]
		s.mu.Lock()
		for key, c := range s.counters {
			if final || c.hour < hour {
				c.retired.Store(true)
				if final || c.pins.Load() == 0 {
					// No request can add to it any more: one that found
					// it lock-free sees retired and looks again.
					delete(s.counters, key)
					if h := &s.hot[hotSlot(c.id)%meterSlots]; h.Load() == c {
						h.Store(nil)
					}
					if r, ok := u.take(c); ok {
						recs = append(recs, r) // the counter becomes a record
					} else {
						u.queued.Add(-1)
					}
					continue
				}
				c.retired.Store(false) // pinned: kept for another flush
			}
			if r, ok := u.take(c); ok {
				recs = append(recs, r)
				u.queued.Add(1)
			}
		}
		s.mu.Unlock()
	}
	left, first := writeBatches(ctx, recs, u.batch, u.write, u.requeue, u.written, "add usage")
	if u.metrics != nil {
		dropped := u.dropped()
		u.metrics.UsageQueued(int(u.queued.Load()), int(dropped-u.shown.Swap(dropped)))
	}
	return left, first
}

// written takes n written records off the queue.
func (u *meter) written(n int) { u.queued.Add(-int64(n)) }

// write calls usage.Store.AddUsage for one batch under its own timeout.
func (u *meter) write(ctx context.Context, batch []usage.Record) error {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	start := time.Now()
	err := u.addUsage(ctx, batch)
	if u.metrics != nil {
		u.metrics.UsageFlushed(len(batch), time.Since(start), err)
	}
	if err != nil {
		u.failures.Add(1)
		if u.log != nil {
			u.log.Warn("apikey: usage flush failed", slog.Int("records", len(batch)), slog.String("error", err.Error()))
		}
		return err
	}
	u.flushes.Add(1)
	return nil
}

// addUsage calls the store, turning a panic into an error.
func (u *meter) addUsage(ctx context.Context, batch []usage.Record) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = storeErr("add usage", panicError{r})
		}
	}()
	if err := u.store.AddUsage(ctx, batch); err != nil {
		return storeErr("add usage", err)
	}
	return nil
}

// requeue adds the records of a failed batch back into the counters,
// whether or not their hour is over, closed or not.
func (u *meter) requeue(batch []usage.Record) {
	for i := range batch {
		r := &batch[i]
		key := meterKey{r.KeyID, unixHour(r.Start)}
		s := &u.shards[shardOf(r.KeyID)]
		s.mu.Lock()
		if c := s.counters[key]; c != nil {
			c.add(r)
			u.queued.Add(-1) // held twice: once is enough
		} else {
			c = &meterCounter{id: r.KeyID, customer: r.Customer, hour: key.hour}
			c.add(r)
			s.counters[key] = c
		}
		s.mu.Unlock()
		u.taken.Add(-(r.Allowed + r.Limited + r.Refused))
	}
}

// purge deletes the stored usage older than the retention, at most once
// an hour.
func (u *meter) purge(ctx context.Context) {
	if u.retention == 0 {
		return
	}
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	now := u.now()
	if !u.purged.IsZero() && now.Sub(u.purged) < usagePurgeEvery {
		return
	}
	u.purged = now
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	_, err := u.purgeUsage(ctx, now.Add(-u.retention).UTC().Truncate(time.Hour))
	if err != nil && u.log != nil {
		u.log.Warn("apikey: usage purge failed", slog.String("error", err.Error()))
	}
}

// purgeUsage calls the store, turning a panic into an error.
func (u *meter) purgeUsage(ctx context.Context, before time.Time) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = storeErr("purge usage", panicError{r})
		}
	}()
	n, err = u.store.PurgeUsage(ctx, before)
	if err != nil {
		return n, storeErr("purge usage", err)
	}
	return n, nil
}

// close stops counting and the background flushes, then writes every
// count held, retrying failed batches until ctx is done (three attempts
// when ctx has no deadline).
func (u *meter) close(ctx context.Context) error {
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
		u.cancel()
	})
	select {
	case <-u.done:
	case <-ctx.Done():
		return storeErr("add usage", ctx.Err())
	}
	return flushUntilEmpty(ctx, func(ctx context.Context) (int, error) { return u.flush(ctx, true) })
}

// dropped returns the requests not counted, the queue being full.
func (u *meter) dropped() uint64 {
	var n uint64
	for i := range u.shards {
		s := &u.shards[i]
		s.mu.Lock()
		n += s.dropped
		s.mu.Unlock()
	}
	return n
}

// addStats adds the meter's counters to st.
func (u *meter) addStats(st *Stats) {
	if u == nil {
		return
	}
	recorded := u.taken.Load()
	for i := range u.shards {
		s := &u.shards[i]
		s.mu.Lock()
		for _, c := range s.counters {
			recorded += c.pending()
		}
		st.UsageDropped += s.dropped
		s.mu.Unlock()
	}
	st.UsageRecorded = uint64(max(recorded, 0))
	st.UsageFlushes = u.flushes.Load()
	st.UsageFlushErrors = u.failures.Load()
}
