// Package outbox holds the vocabulary of the events a Manager writes for
// webhooks. An Event is one webhook for one endpoint. The Store capability
// keeps events until they are delivered. The Policy says which events to
// write. Package webhook delivers them.
//
// An event is written in the same atomic step as the change it reports.
// The Manager hands it to the store's write through the write's context
// (WithChange). A store that implements Store appends it in the
// transaction of that write. Memstore does it under its lock, and sqlstore
// in one SQL transaction. A change that is written therefore always has
// its event, and one that fails never has one, whatever crashes afterwards.
//
//	m, err := apikey.New(store, apikey.Options{Outbox: &outbox.Policy{}})
//	d, err := webhook.New(store.(outbox.Store), webhook.Options{
//		Endpoints: []webhook.Endpoint{{URL: "https://example.com/hooks", Secrets: []string{secret}}},
//	})
//	go d.Run(ctx)
//
// The events and the fields of their Data follow.
//
//   - key.created sets Key, the new key.
//   - key.rotated sets Key, the old key, and Successor, the new one. The
//     old key's ExpiresAt is the end of its grace period.
//   - key.revoked sets Key.
//   - key.disabled and key.enabled set Key. They report the operator's
//     Manager.Disable and Manager.Enable.
//   - key.leaked sets Key, URL and Action. URL is where the token was
//     found, any token in it replaced by its hint. Action is what the
//     report asked (revoke, disable or report). There is one per key and
//     URL.
//   - key.expiring sets Key. It is due Policy.ExpiringLead before the key
//     expires, once per key.
//   - customer.credits_low sets Customer and Limit. It is raised when a
//     customer's credits fall to or below the threshold of
//     Policy.CreditsLow.
//   - customer.quota_exhausted sets Customer and Limit. It is raised once
//     per quota and window, when a customer's quota has nothing left.
//   - customer.suspended sets Customer, when the operator suspends him.
//
// No event carries a token, a secret or a digest.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The event types.
const (
	KeyCreated             = "key.created"
	KeyRotated             = "key.rotated"
	KeyRevoked             = "key.revoked"
	KeyDisabled            = "key.disabled"
	KeyEnabled             = "key.enabled"
	KeyLeaked              = "key.leaked"
	KeyExpiring            = "key.expiring"
	CustomerCreditsLow     = "customer.credits_low"
	CustomerQuotaExhausted = "customer.quota_exhausted"
	CustomerSuspended      = "customer.suspended"
)

// Types returns every event type, in the order of the package
// documentation.
func Types() []string {
	return []string{KeyCreated, KeyRotated, KeyRevoked, KeyDisabled, KeyEnabled, KeyLeaked, KeyExpiring,
		CustomerCreditsLow, CustomerQuotaExhausted, CustomerSuspended}
}

// Limits of an Event's fields, which Validate checks.
const (
	// MaxIDLength bounds Event.ID, Event.Endpoint and Event.Type.
	MaxIDLength = 64
	// MaxPayload bounds Event.Payload, in bytes. A webhook body is small.
	MaxPayload = 64 << 10
	// MaxError bounds Event.LastError, in bytes. A longer error is cut.
	MaxError = 1000
)

// Sentinel errors of a Store.
var (
	// ErrNotFound reports an event id the outbox does not hold.
	ErrNotFound = errors.New("outbox: no such event")
	// ErrLost reports a Settle of a claim the event no longer carries.
	// Its lease ended and another claim took it, or it was cancelled.
	ErrLost = errors.New("outbox: claim lost")
	// ErrInvalid reports an event or an argument a Store refuses.
	ErrInvalid = errors.New("outbox: invalid event")
)

// State is where an event stands in its delivery.
type State string

// The states of an event.
const (
	// Pending events wait for their DueAt, or for the end of a lease.
	Pending State = "pending"
	// Delivered events were acknowledged by their endpoint (a 2xx).
	Delivered State = "delivered"
	// Dead events failed every attempt allowed, or their endpoint
	// answered 410 Gone. Redeliver makes them pending again.
	Dead State = "dead"
)

// Event is one webhook for one endpoint, with its delivery state. It is
// plain data, and a Store fills its fields.
type Event struct {
	// ID is the webhook-id. It is the same for every attempt and every
	// endpoint of one event, so that a receiver can drop a repeat. It is
	// derived from what happened (the key and the change), so that
	// appending one event twice stores it once. It holds letters, digits,
	// '_' and '-', at most MaxIDLength bytes.
	ID string `json:"id"`
	// Endpoint names the endpoint the event is for (see
	// Policy.Endpoints). (ID, Endpoint) is unique in an outbox.
	Endpoint string `json:"endpoint"`
	// Type is the event type, e.g. KeyRevoked.
	Type string `json:"type"`
	// Payload is the body sent, byte for byte, a JSON Payload.
	Payload []byte `json:"payload"`
	// CreatedAt is when the event was written.
	CreatedAt time.Time `json:"created_at"`
	// DueAt is the earliest time of the next attempt. It is when the
	// event happened, when a retry is due, or, for key.expiring, the lead
	// time before the expiry.
	DueAt time.Time `json:"due_at"`
	// State is the delivery state, Pending when appended.
	State State `json:"state"`
	// Attempts counts the claims of the event. Each is one attempt,
	// whether or not it ended (an instance that crashed mid-delivery
	// spent one).
	Attempts int `json:"attempts"`
	// AttemptedAt is when the last attempt ended, zero before the first.
	AttemptedAt time.Time `json:"attempted_at,omitzero"`
	// LastError says why the last attempt failed, e.g. "503 Service
	// Unavailable". It is empty after a success.
	LastError string `json:"last_error,omitempty"`
	// Claim and LeaseUntil are the current claim and the end of its
	// lease. They are empty and zero when none holds the event.
	Claim      string    `json:"claim,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
}

// Validate reports whether e can be appended, with an error wrapping
// ErrInvalid. The ID must hold letters, digits, '_' and '-'. The Endpoint
// and the Type must hold 1 to MaxIDLength bytes. The Payload must hold at
// most MaxPayload bytes.
func (e *Event) Validate() error {
	switch {
	case e.ID == "" || len(e.ID) > MaxIDLength || !isID(e.ID):
		return fmt.Errorf("%w: id %q", ErrInvalid, e.ID)
	case e.Endpoint == "" || len(e.Endpoint) > MaxIDLength:
		return fmt.Errorf("%w: endpoint of %d bytes", ErrInvalid, len(e.Endpoint))
	case e.Type == "" || len(e.Type) > MaxIDLength:
		return fmt.Errorf("%w: type of %d bytes", ErrInvalid, len(e.Type))
	case len(e.Payload) > MaxPayload:
		return fmt.Errorf("%w: payload of %d bytes", ErrInvalid, len(e.Payload))
	}
	return nil
}

// isID reports whether s holds only letters, digits, '_' and '-': no '.',
// which separates the parts of the signed content.
func isID(s string) bool {
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Result is the outcome of one attempt to deliver a claimed event.
type Result struct {
	// ID, Endpoint and Claim name the event and the claim the attempt
	// held.
	ID, Endpoint, Claim string
	// State is Delivered, Pending (to try again at Next) or Dead.
	State State
	// At is when the attempt ended.
	At time.Time
	// Next is when a Pending event is due again.
	Next time.Time
	// Error says why the attempt failed. It is empty when Delivered.
	Error string
}

// Query selects events for Store.Events. The zero value selects the 100
// newest events.
type Query struct {
	// ID, if set, selects the events of that id (one per endpoint).
	ID string
	// State, if set, selects the events in that state.
	State State
	// Size is the most events returned, 100 when 0 or negative, and at
	// most 1,000.
	Size int
}

// PageSize returns the effective limit of q.
func (q Query) PageSize() int {
	switch {
	case q.Size <= 0:
		return 100
	case q.Size > 1000:
		return 1000
	}
	return q.Size
}

// Store is an optional apikey.Store capability, an outbox of events that
// waits for their delivery. memstore and sqlstore implement it.
//
// How to implement a Store.
//
//  1. Be safe for concurrent use, by many instances at once when the
//     storage is shared.
//  2. Be atomic with the change. The context of a write of the key store
//     (Create, Update, Delete, apikey.Revoker.Revoke,
//     apikey.Rotator.Rotate, apikey.CustomerStore.PutCustomer) may carry
//     a Change (ChangeFrom). Apply it in the same atomic step as the
//     write, all or nothing with it. First delete the pending events of
//     its Cancel ids that no claim holds, then append its events as
//     Append does. A write that fails, or that changes nothing (a Revoke
//     of a revoked key), applies none of it. Other methods ignore it.
//  3. Append adds events as Pending, with no attempts and no claim, due
//     at DueAt (at CreatedAt when zero). An event whose (ID, Endpoint)
//     is stored already, in any state, is left as it is: ids are
//     idempotency keys. An event that fails Validate is refused with
//     ErrInvalid and nothing is appended.
//  4. Claim takes, in one atomic step, up to limit Pending events of
//     endpoint whose DueAt is not after now and that no lease holds at
//     now (no claim, or LeaseUntil not after now), earliest DueAt first.
//     It sets their Claim to claim and their LeaseUntil to until,
//     increments their Attempts, and returns them so changed. Of
//     concurrent Claims, each event goes to one.
//  5. Settle writes the outcome of an attempt on the event (r.ID,
//     r.Endpoint) only if its Claim is still r.Claim: State, AttemptedAt
//     (r.At), DueAt (r.Next, for Pending) and LastError (r.Error, cut to
//     MaxError bytes), and clears Claim and LeaseUntil. Otherwise it
//     writes nothing and returns ErrLost.
//  6. Redeliver makes every event of id that no lease holds at at
//     (whatever its state) Pending, with no attempts and no error, due at
//     at, and returns how many; an id not stored gives ErrNotFound.
//  7. Events returns the events q selects, newest CreatedAt first (then
//     by ID and Endpoint).
//  8. PurgeEvents deletes up to limit Delivered or Dead events whose
//     AttemptedAt is before before, and returns how many it deleted.
//  9. Times come back in UTC, truncated to the microsecond. Payload
//     round-trips byte for byte. Values returned are the caller's.
//  10. Honour ctx.
//
// Run storetest.Run from your tests. It checks the outbox of a store that
// implements Store.
type Store interface {
	Append(ctx context.Context, events []Event) error
	Claim(ctx context.Context, endpoint, claim string, now, until time.Time, limit int) ([]Event, error)
	Settle(ctx context.Context, r Result) error
	Redeliver(ctx context.Context, id string, at time.Time) (int, error)
	Events(ctx context.Context, q Query) ([]Event, error)
	PurgeEvents(ctx context.Context, before time.Time, limit int) (int, error)
}

// Change is what one write of the key store also does to the outbox. It
// holds the events to append and the ids of pending events to cancel (a
// scheduled key.expiring whose key changed). See Store, rule 2.
type Change struct {
	Append []Event
	Cancel []string
}

// changeKey is the context key of a *Change.
type changeKey struct{}

// WithChange returns a context that carries c to the next write of a
// Store that implements this package's Store. The Manager calls it for
// the one write that makes a change.
func WithChange(ctx context.Context, c *Change) context.Context {
	return context.WithValue(ctx, changeKey{}, c)
}

// ChangeFrom returns the Change ctx carries, nil when none.
func ChangeFrom(ctx context.Context) *Change {
	c, _ := ctx.Value(changeKey{}).(*Change)
	return c
}

// Trunc cuts s to MaxError bytes, on a UTF-8 boundary, for
// Event.LastError.
func Trunc(s string) string {
	if len(s) <= MaxError {
		return s
	}
	i := MaxError
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i]
}
