package apikey

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

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

// outboxStore returns m's store as an outbox, or an error wrapping
// errors.ErrUnsupported.
func (m *Manager) outboxStore(op string) (outbox.Store, error) {
	if m.hooks != nil {
		return m.hooks.store, nil
	}
	if s, ok := m.store.(outbox.Store); ok {
		return s, nil
	}
	return nil, fmt.Errorf("apikey: %s: %w: the store does not implement outbox.Store", op, errors.ErrUnsupported)
}

// Redeliver makes the event id (the webhook-id) pending again for every
// endpoint, due at once with no attempts, whether it was delivered or is
// dead, and returns for how many endpoints. An attempt under way is left
// to finish. An unknown id gives ErrNotFound. A store without an outbox
// gives an error wrapping errors.ErrUnsupported.
func (m *Manager) Redeliver(ctx context.Context, id string) (int, error) {
	s, err := m.outboxStore("redeliver")
	if err != nil {
		return 0, err
	}
	n, err := s.Redeliver(ctx, id, m.now().UTC().Truncate(time.Microsecond))
	switch {
	case errors.Is(err, outbox.ErrNotFound):
		return 0, fmt.Errorf("apikey: redeliver: %w", ErrNotFound)
	case err != nil:
		return 0, storeErr("redeliver", err)
	}
	if m.log != nil {
		m.log.LogAttrs(ctx, slog.LevelInfo, "apikey: redeliver", slog.String("event", id), slog.Int("endpoints", n))
	}
	return n, nil
}
