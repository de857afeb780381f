package apikey

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
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

// webhooks writes the events of a Manager's changes to its store's outbox
// (Options.Outbox), in the same atomic step as each change. It builds an
// outbox.Change and hands it to the one store write that makes the
// change, through that write's context. A nil *webhooks writes nothing.
type webhooks struct {
	store  outbox.Store
	policy outbox.Policy
	queue  *eventQueue // events of the request path: outbox_queue.go
}

// newWebhooks returns the event writer of Options.Outbox p over store,
// nil when p is nil.
func newWebhooks(store Store, p *outbox.Policy, q queueOptions) (*webhooks, error) {
	if p == nil {
		return nil, nil
	}
	os, ok := store.(outbox.Store)
	if !ok {
		return nil, fmt.Errorf("%w: Outbox needs a store that implements outbox.Store", ErrInvalidOptions)
	}
	pol, err := p.Resolved()
	if err != nil {
		return nil, fmt.Errorf("%w: Outbox: %w", ErrInvalidOptions, err)
	}
	w := &webhooks{store: os, policy: pol}
	w.queue = newEventQueue(w, q)
	return w, nil
}

// eventID derives the webhook-id of an event from its type and what
// identifies the occurrence (a key id, a revision, a window), so that the
// same occurrence written twice, by two instances or after a crash, is
// one event.
func eventID(typ string, parts ...string) string {
	h := sha256.New()
	h.Write([]byte(typ))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return "msg_" + base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(h.Sum(nil)[:20])
}

// events returns the events of type typ for every endpoint (none when the
// policy leaves typ out): what happened at at, due at due (at when zero).
func (w *webhooks) events(typ, id string, at, due time.Time, data outbox.Data) []outbox.Event {
	if !w.policy.Writes(typ) {
		return nil
	}
	at = UTCMicro(at)
	body, err := json.Marshal(outbox.Payload{Type: typ, Timestamp: at, Data: data})
	if err != nil { // plain data: cannot happen
		panic(err)
	}
	if due.IsZero() || due.Before(at) {
		due = at
	}
	evs := make([]outbox.Event, len(w.policy.Endpoints))
	for i, ep := range w.policy.Endpoints {
		evs[i] = outbox.Event{ID: id, Endpoint: ep, Type: typ, Payload: body, CreatedAt: at, DueAt: UTCMicro(due), State: outbox.Pending}
	}
	return evs
}

// with returns ctx carrying c, and the events ctx asks to go along (see
// along), for the next store write; ctx itself when that is nothing.
func (w *webhooks) with(ctx context.Context, c *outbox.Change) context.Context {
	if w == nil {
		return ctx
	}
	if evs, _ := ctx.Value(alongKey{}).([]outbox.Event); len(evs) > 0 {
		if c == nil {
			c = &outbox.Change{}
		}
		c.Append = append(c.Append, evs...)
	}
	if c == nil || len(c.Append)+len(c.Cancel) == 0 {
		return ctx
	}
	return outbox.WithChange(ctx, c)
}

// alongKey is the context key of events that go along with the next
// change's write.
type alongKey struct{}

// along returns ctx asking the write of the next change made with it to
// carry evs too.
func (w *webhooks) along(ctx context.Context, evs []outbox.Event) context.Context {
	if w == nil || len(evs) == 0 {
		return ctx
	}
	return context.WithValue(ctx, alongKey{}, evs)
}

// keyData describes k in an event.
func keyData(k *Key) *outbox.Key {
	return &outbox.Key{
		ID: k.ID, Prefix: k.Prefix, Hint: k.Hint, Name: k.Name, Owner: k.Owner, Customer: k.Customer(),
		CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, Disabled: k.Disabled,
	}
}

// expiringID is the id of the key.expiring event of key id: one per key,
// so that it is sent once.
func expiringID(id string) string { return eventID(outbox.KeyExpiring, id) }

// expiring returns the key.expiring events of k, scheduled the lead time
// before its expiry: none for a key without expiry, or a rotated or
// revoked one.
func (w *webhooks) expiring(k *Key, now time.Time) []outbox.Event {
	if w.policy.ExpiringLead < 0 || k.ExpiresAt.IsZero() || k.RotatedTo != "" || !k.RevokedAt.IsZero() {
		return nil
	}
	return w.events(outbox.KeyExpiring, expiringID(k.ID), now, k.ExpiresAt.Add(-w.policy.ExpiringLead), outbox.Data{Key: keyData(k)})
}

// created is the change of Issue storing k: key.created, and its
// key.expiring scheduled.
func (w *webhooks) created(ctx context.Context, k *Key) context.Context {
	if w == nil {
		return ctx
	}
	c := &outbox.Change{Append: w.events(outbox.KeyCreated, eventID(outbox.KeyCreated, k.ID), k.CreatedAt, time.Time{}, outbox.Data{Key: keyData(k)})}
	c.Append = append(c.Append, w.expiring(k, k.CreatedAt)...)
	return w.with(ctx, c)
}

// uncreated is the change of the removal of a key whose Issue was undone:
// its events, if still pending, go with it.
func (w *webhooks) uncreated(ctx context.Context, id string) context.Context {
	if w == nil {
		return ctx
	}
	return w.with(ctx, &outbox.Change{Cancel: []string{eventID(outbox.KeyCreated, id), expiringID(id)}})
}

// snapshot returns a copy of k as read before a change, nil when no
// events are written.
func (w *webhooks) snapshot(k *Key) *Key {
	if w == nil {
		return nil
	}
	return k.Clone()
}

// updated is the change of the conditional Update of before into after,
// for the operation t: key.disabled or key.enabled when the operator's
// switch flipped, and key.expiring scheduled again when the expiry moved.
func (w *webhooks) updated(ctx context.Context, t eventType, before, after *Key, now time.Time) context.Context {
	if w == nil || before == nil {
		return ctx
	}
	c := &outbox.Change{}
	rev := strconv.FormatInt(after.Revision+1, 10) // the revision the write makes
	switch {
	case t == eventDisable && !before.Disabled && after.Disabled:
		c.Append = w.events(outbox.KeyDisabled, eventID(outbox.KeyDisabled, after.ID, rev), now, time.Time{}, outbox.Data{Key: keyData(after)})
	case t == eventEnable && before.Disabled && !after.Disabled:
		c.Append = w.events(outbox.KeyEnabled, eventID(outbox.KeyEnabled, after.ID, rev), now, time.Time{}, outbox.Data{Key: keyData(after)})
	}
	if !before.ExpiresAt.Equal(after.ExpiresAt) {
		// A key.expiring already sent stays sent: once per key.
		c.Cancel = []string{expiringID(after.ID)}
		c.Append = append(c.Append, w.expiring(after, now)...)
	}
	return w.with(ctx, c)
}

// revoked is the change of the revocation of k at now: key.revoked, and
// its key.expiring cancelled. A store appends it only if it revoked the
// key.
func (w *webhooks) revoked(ctx context.Context, k *Key, now time.Time) context.Context {
	if w == nil {
		return ctx
	}
	d := keyData(k)
	d.RevokedAt = now
	return w.with(ctx, &outbox.Change{
		Append: w.events(outbox.KeyRevoked, eventID(outbox.KeyRevoked, k.ID), now, time.Time{}, outbox.Data{Key: d}),
		Cancel: []string{expiringID(k.ID)},
	})
}

// deleted is the change of the removal of key id: its key.expiring goes.
func (w *webhooks) deleted(ctx context.Context, id string) context.Context {
	if w == nil {
		return ctx
	}
	return w.with(ctx, &outbox.Change{Cancel: []string{expiringID(id)}})
}

// rotated is the change of the rotation of a key into succ, prev being
// the old key as the rotation leaves it: key.rotated, the old key's
// key.expiring cancelled and the successor's scheduled.
func (w *webhooks) rotated(ctx context.Context, prev, succ *Key) context.Context {
	if w == nil {
		return ctx
	}
	old := keyData(prev)
	c := &outbox.Change{
		Append: w.events(outbox.KeyRotated, eventID(outbox.KeyRotated, prev.ID), succ.CreatedAt, time.Time{},
			outbox.Data{Key: old, Successor: keyData(succ)}),
		Cancel: []string{expiringID(prev.ID)},
	}
	c.Append = append(c.Append, w.expiring(succ, succ.CreatedAt)...)
	return w.with(ctx, c)
}

// customerSet is the change of a SetCustomer writing after over before:
// customer.suspended when the operator suspended him.
func (w *webhooks) customerSet(ctx context.Context, before, after *Customer) context.Context {
	if w == nil || before.Suspended || !after.Suspended {
		return ctx
	}
	rev := strconv.FormatInt(after.Revision+1, 10)
	return w.with(ctx, &outbox.Change{Append: w.events(outbox.CustomerSuspended,
		eventID(outbox.CustomerSuspended, after.ID, rev), after.UpdatedAt, time.Time{}, outbox.Data{Customer: after.ID})})
}

// leakedEvents returns the key.leaked events of a report that k's token
// was found at url (already cut and redacted), answered with action: one
// per key and url, so that a repeated report is one event.
func (w *webhooks) leakedEvents(k *Key, url, action string, now time.Time) []outbox.Event {
	if w == nil {
		return nil
	}
	return w.events(outbox.KeyLeaked, eventID(outbox.KeyLeaked, k.ID, url), now, time.Time{},
		outbox.Data{Key: keyData(k), URL: url, Action: action})
}

// appendLeaked writes the key.leaked events evs when no write carried
// them (a report, a key revoked already): appending them again is a no-op.
func (w *webhooks) appendLeaked(ctx context.Context, evs []outbox.Event) error {
	if w == nil || len(evs) == 0 {
		return nil
	}
	if err := w.store.Append(ctx, evs); err != nil {
		return storeErr("leaked", err)
	}
	return nil
}

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
	return flushUntilEmpty(ctx, q.flush)
}

// addStats fills the event counters of s.
func (q *eventQueue) addStats(s *Stats) {
	if q == nil {
		return
	}
	s.EventsWritten, s.EventsDropped, s.EventFlushErrors = q.written.Load(), q.dropped.Load(), q.failures.Load()
}
