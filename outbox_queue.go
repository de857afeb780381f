package apikey

import (
	"context"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/outbox"
)

// The events of the request path (customer.credits_low and
// customer.quota_exhausted) arise from a Limiter's answer, where no store
// write happens. They wait in memory and are appended to the outbox in
// bulk, every UsageInterval like the usage counts, and by Close. A crash
// loses those raised since the last flush: at most one interval's worth,
// and at most Policy.Queue of them. Each is raised again, with the same
// webhook-id, by the next request (on any instance) that sees the same
// state in the same window, since an instance remembers only what it
// raised itself; so an event is lost only if no request sees that state
// again within its window (for credits, until they are refilled or
// granted).

// eventQueue holds the events of the request path until a flush. A nil
// *eventQueue holds nothing.
type eventQueue struct {
	w        *webhooks
	now      func() time.Time
	interval time.Duration
	timeout  time.Duration
	log      *slog.Logger
	seed     maphash.Seed

	seen [16]seenShard // occurrences raised by this instance

	mu      sync.Mutex
	pending []outbox.Event
	closed  bool

	dropped, written, failures atomic.Uint64

	flushMu  sync.Mutex // one flush at a time
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// seenShard is a part of the occurrences an instance raised, so that a
// customer whose quota is exhausted raises one event, not one per
// request.
type seenShard struct {
	mu sync.Mutex
	m  map[occurrence]struct{}
	_  [40]byte
}

// maxSeen bounds each seenShard. A full one is emptied, which at worst
// raises an event again (the outbox keeps it once).
const maxSeen = 4096

// occurrence identifies a raised event by its type, customer, limit and
// window (or count, for credits never refilled).
type occurrence struct {
	typ      uint8
	customer string
	limit    string
	window   int64
}

// queueOptions are the Options fields of the queue.
type queueOptions struct {
	interval, timeout time.Duration
	now               func() time.Time
	log               *slog.Logger
}

func newEventQueue(w *webhooks, o queueOptions) *eventQueue {
	q := &eventQueue{w: w, now: o.now, interval: o.interval, timeout: o.timeout, log: o.log, seed: maphash.MakeSeed(),
		stop: make(chan struct{}), done: make(chan struct{})}
	if q.interval <= 0 {
		q.interval = defaultUsageInterval
	}
	if q.timeout <= 0 {
		q.timeout = defaultLastUsedTimeout
	}
	for i := range q.seen {
		q.seen[i].m = map[occurrence]struct{}{}
	}
	go q.loop()
	return q
}

// observe raises the events that the answer res of the Limiter to a call
// for subject with limits ls shows: a customer's quota with nothing left,
// his credits at or below the threshold. It costs a loop over ls when
// nothing is raised, and takes no lock then.
func (w *webhooks) observe(subject string, ls []limits.Limit, res limits.Result, now time.Time) {
	if w == nil {
		return
	}
	for i := range ls {
		l := &ls[i]
		if l.Subject != "" || (l.Kind != limits.KindQuota && l.Kind != limits.KindCredits) {
			continue // a key's own limits are not the customer's
		}
		var remaining int64
		switch {
		case len(res.States) == len(ls):
			remaining = res.States[i].Remaining
		case res.Limit.Name == l.Name && res.Limit.Kind == l.Kind:
			remaining = res.Remaining
		default:
			continue // the Limiter reported only another limit
		}
		if l.Kind == limits.KindQuota {
			if remaining <= 0 {
				w.queue.raise(outbox.CustomerQuotaExhausted, subject, l, remaining, 0, now)
			}
			continue
		}
		if low, ok := w.policy.LowAt(l.Count); ok && remaining <= low {
			w.queue.raise(outbox.CustomerCreditsLow, subject, l, remaining, low, now)
		}
	}
}

// raise queues the event typ of customer's limit l, unless this instance
// raised it already in the same window.
func (q *eventQueue) raise(typ, customer string, l *limits.Limit, remaining, threshold int64, now time.Time) {
	var start, end int64
	if l.Window != limits.Never {
		start, end = gcra.Window(uint8(l.Window), now.UnixNano())
	}
	key := occurrence{typ: 1, customer: customer, limit: l.Name, window: start}
	if typ == outbox.CustomerCreditsLow {
		key.typ = 2
		if l.Window == limits.Never {
			key.window = l.Count // a new grant is a new occurrence
		}
	}
	s := &q.seen[maphash.String(q.seed, customer)%uint64(len(q.seen))]
	s.mu.Lock()
	_, seen := s.m[key]
	if !seen {
		if len(s.m) >= maxSeen {
			clear(s.m)
		}
		s.m[key] = struct{}{}
	}
	s.mu.Unlock()
	if seen || !q.w.policy.Writes(typ) {
		return
	}
	lim := &outbox.Limit{Name: l.Name, Kind: l.Kind.String(), Count: l.Count, Remaining: remaining, Threshold: threshold}
	if l.Window != limits.Never {
		lim.WindowStart, lim.WindowEnd = time.Unix(0, start).UTC(), time.Unix(0, end).UTC()
	}
	id := eventID(typ, customer, l.Name, strconv.FormatInt(key.window, 10))
	evs := q.w.events(typ, id, now, time.Time{}, outbox.Data{Customer: customer, Limit: lim})
	q.mu.Lock()
	if q.closed || len(q.pending)+len(evs) > q.w.policy.Queue {
		q.mu.Unlock()
		q.dropped.Add(uint64(len(evs)))
		s.mu.Lock()
		delete(s.m, key) // raised again by the next request that sees it
		s.mu.Unlock()
		return
	}
	q.pending = append(q.pending, evs...)
	q.mu.Unlock()
}

func (q *eventQueue) loop() {
	defer close(q.done)
	t := time.NewTicker(q.interval)
	defer t.Stop()
	for {
		select {
		case <-q.stop:
			return
		case <-t.C:
			q.flush(context.Background())
		}
	}
}

// queueBatch is the most events one Append of a flush writes.
const queueBatch = 500

// flush appends the events held, in batches, each under its own timeout;
// a batch that fails goes back for the next flush. It returns how many
// are left, and the first error.
func (q *eventQueue) flush(ctx context.Context) (int, error) {
	q.flushMu.Lock()
	defer q.flushMu.Unlock()
	q.mu.Lock()
	evs := q.pending
	q.pending = nil
	q.mu.Unlock()
	return writeBatches(ctx, evs, queueBatch, q.write, q.requeue, func(n int) { q.written.Add(uint64(n)) }, "append events")
}

// write appends one batch under its own timeout.
func (q *eventQueue) write(ctx context.Context, batch []outbox.Event) (err error) {
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = panicError{r}
		}
		if err != nil {
			q.failures.Add(1)
			if q.log != nil {
				q.log.Warn("apikey: events flush failed", slog.Int("events", len(batch)), slog.String("error", err.Error()))
			}
		}
	}()
	return q.w.store.Append(ctx, batch)
}

// requeue puts a failed batch back, within the bound of the queue.
func (q *eventQueue) requeue(batch []outbox.Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	room := max(0, q.w.policy.Queue-len(q.pending))
	if len(batch) > room {
		q.dropped.Add(uint64(len(batch) - room))
		batch = batch[:room]
	}
	q.pending = append(append(make([]outbox.Event, 0, len(batch)+len(q.pending)), batch...), q.pending...)
}

// close stops the flushes and appends what is held, retrying failed
// batches until ctx is done (three attempts when ctx has no deadline).
func (q *eventQueue) close(ctx context.Context) error {
	if q == nil {
		return nil
	}
	q.stopOnce.Do(func() { close(q.stop) })
	select {
	case <-q.done:
	case <-ctx.Done():
		return storeErr("append events", ctx.Err())
	}
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	_, bounded := ctx.Deadline()
	wait := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		left, err := q.flush(ctx)
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

// addStats fills the event counters of s.
func (q *eventQueue) addStats(s *Stats) {
	if q == nil {
		return
	}
	s.EventsWritten, s.EventsDropped, s.EventFlushErrors = q.written.Load(), q.dropped.Load(), q.failures.Load()
}
