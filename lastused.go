package apikey

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of last-used tracking.
const (
	// DefaultLastUsedInterval is how often uses are flushed to the store
	// when Options.LastUsedInterval is 0. Key.LastUsedAt therefore lags
	// the true last use by at most this interval plus one flush.
	DefaultLastUsedInterval = 10 * time.Second
	// DefaultLastUsedQueue is the number of distinct keys that can wait for
	// one flush when Options.LastUsedQueue is 0.
	DefaultLastUsedQueue = 100_000
)

// Stats counts a Manager's background work: last-used tracking and, with
// a Notifier, the changes it published and the cache drops it applied.
type Stats struct {
	// UsesRecorded counts successful verifications recorded for a flush.
	UsesRecorded uint64
	// UsesDropped counts uses not recorded because the queue was full.
	UsesDropped uint64
	// Flushes counts MarkUsed calls that succeeded.
	Flushes uint64
	// FlushErrors counts MarkUsed calls that failed; their uses are kept
	// for the next flush while the queue has room.
	FlushErrors uint64
	// Published counts ids announced through the Notifier.
	Published uint64
	// PublishErrors counts ids the Notifier failed to announce; other
	// instances then notice those changes within their cache TTL.
	PublishErrors uint64
	// CacheResets counts whole-cache drops on a notifier's (re)subscription
	// or on an announcement that any key may have changed.
	CacheResets uint64
}

// usageRecorder coalesces uses in memory, one time per key, and writes
// them in batches with Store.MarkUsed. A nil recorder records nothing.
type usageRecorder struct {
	store    Store
	interval time.Duration
	max      int
	log      *slog.Logger

	mu      sync.Mutex
	pending map[string]time.Time
	closed  bool

	recorded, dropped, flushes, failures atomic.Uint64

	flushMu sync.Mutex // one flush at a time
	stop    chan struct{}
	done    chan struct{}
}

func newUsageRecorder(store Store, interval time.Duration, max int, log *slog.Logger) (*usageRecorder, error) {
	if interval < 0 {
		return nil, nil
	}
	if interval == 0 {
		interval = DefaultLastUsedInterval
	}
	if max <= 0 {
		max = DefaultLastUsedQueue
	}
	u := &usageRecorder{
		store: store, interval: interval, max: max, log: log,
		pending: map[string]time.Time{}, stop: make(chan struct{}), done: make(chan struct{}),
	}
	go u.loop()
	return u, nil
}

func (u *usageRecorder) record(id string, at time.Time) {
	if u == nil {
		return
	}
	u.mu.Lock()
	prev, ok := u.pending[id]
	switch {
	case u.closed:
	case !ok && len(u.pending) >= u.max:
		u.dropped.Add(1)
	case !ok || at.After(prev):
		u.pending[id] = at
		u.recorded.Add(1)
	default:
		u.recorded.Add(1)
	}
	u.mu.Unlock()
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
			ctx, cancel := context.WithTimeout(context.Background(), u.interval)
			u.flush(ctx)
			cancel()
		}
	}
}

// flush writes the pending uses. On failure they go back into the queue
// (newer uses recorded meanwhile win) so the next flush retries them.
func (u *usageRecorder) flush(ctx context.Context) error {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	u.mu.Lock()
	batch := u.pending
	u.pending = make(map[string]time.Time, len(batch))
	u.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := u.markUsed(ctx, batch)
	if err == nil {
		u.flushes.Add(1)
		return nil
	}
	u.failures.Add(1)
	if u.log != nil {
		u.log.Warn("apikey: last-used flush failed", slog.Int("keys", len(batch)), slog.String("error", err.Error()))
	}
	u.mu.Lock()
	for id, at := range batch {
		if prev, ok := u.pending[id]; ok {
			if at.After(prev) {
				u.pending[id] = at
			}
		} else if len(u.pending) < u.max {
			u.pending[id] = at
		} else {
			u.dropped.Add(1)
		}
	}
	u.mu.Unlock()
	return err
}

// markUsed calls the store, turning a panic into an error.
func (u *usageRecorder) markUsed(ctx context.Context, batch map[string]time.Time) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = storeErr("mark used", panicError{r})
		}
	}()
	if err := u.store.MarkUsed(ctx, batch); err != nil {
		return storeErr("mark used", err)
	}
	return nil
}

func (u *usageRecorder) close(ctx context.Context) error {
	if u == nil {
		return nil
	}
	u.mu.Lock()
	already := u.closed
	u.closed = true
	u.mu.Unlock()
	if !already {
		close(u.stop)
		<-u.done
	}
	return u.flush(ctx)
}

func (u *usageRecorder) stats() Stats {
	if u == nil {
		return Stats{}
	}
	return Stats{
		UsesRecorded: u.recorded.Load(), UsesDropped: u.dropped.Load(),
		Flushes: u.flushes.Load(), FlushErrors: u.failures.Load(),
	}
}
