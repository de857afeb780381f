package outbox

import (
	"fmt"
	"slices"
	"time"
)

// DefaultEndpoint is the name of the endpoint of a Policy without
// Endpoints, and of a webhook.Endpoint without a Name.
const DefaultEndpoint = "default"

// Policy says which events a Manager writes to its store's outbox (see
// apikey.Options.Outbox). The zero value writes every event type for the
// endpoint "default", key.expiring seven days ahead and
// customer.credits_low at a tenth of a grant.
type Policy struct {
	// Endpoints names the endpoints to deliver to. Each event is written
	// once per endpoint, with one delivery state each. Empty means
	// DefaultEndpoint. Every process that changes keys (services, the
	// apikey CLI) needs the same names.
	Endpoints []string

	// Types lists the event types to write. Nil writes all of them
	// (Types()). An unknown type is refused.
	Types []string

	// ExpiringLead is how long before a key's expiry its key.expiring
	// event is due. It is 7 days when 0, and negative writes none. The
	// event is scheduled when the expiry is set (Issue, Rotate, Update).
	// It is due at once for a key that expires sooner. A later change of
	// the expiry replaces it until it is sent. A revocation, a rotation
	// or a deletion cancels it.
	ExpiringLead time.Duration

	// CreditsLow is the balance at or below which a customer's credits
	// (Customer.Credits, or a credits limit of his plan) raise
	// customer.credits_low. 0 means a tenth of the grant, and negative
	// raises none.
	CreditsLow int64

	// Queue bounds the events raised on the request path (credits low,
	// quota exhausted) that wait in memory for the next flush. It is
	// 10,000 when 0. Further ones are dropped and counted. They are raised
	// again by the next request that sees the same state.
	Queue int
}

// Defaults of a Policy.
const (
	defaultExpiringLead = 7 * 24 * time.Hour
	defaultQueue        = 10_000
)

// Resolved returns p with its defaults applied, or an error wrapping
// ErrInvalid for an unknown type, an empty or repeated endpoint name or
// a negative Queue. The Manager calls it.
func (p Policy) Resolved() (Policy, error) {
	r := p
	r.Endpoints = slices.Clone(p.Endpoints)
	if len(r.Endpoints) == 0 {
		r.Endpoints = []string{DefaultEndpoint}
	}
	for i, e := range r.Endpoints {
		if e == "" || len(e) > MaxIDLength || slices.Contains(r.Endpoints[:i], e) {
			return Policy{}, fmt.Errorf("%w: endpoint name %q is empty, too long or repeated", ErrInvalid, e)
		}
	}
	if r.Types == nil {
		r.Types = Types()
	}
	r.Types = slices.Clone(r.Types)
	for _, t := range r.Types {
		if !slices.Contains(Types(), t) {
			return Policy{}, fmt.Errorf("%w: unknown event type %q", ErrInvalid, t)
		}
	}
	if r.ExpiringLead == 0 {
		r.ExpiringLead = defaultExpiringLead
	}
	switch {
	case r.Queue < 0:
		return Policy{}, fmt.Errorf("%w: negative Queue", ErrInvalid)
	case r.Queue == 0:
		r.Queue = defaultQueue
	}
	return r, nil
}

// Writes reports whether p writes events of type t.
func (p *Policy) Writes(t string) bool { return p.Types == nil || slices.Contains(p.Types, t) }

// LowAt returns the balance at or below which credits of count raise
// customer.credits_low, and false when p raises none.
func (p *Policy) LowAt(count int64) (int64, bool) {
	switch {
	case p.CreditsLow < 0:
		return 0, false
	case p.CreditsLow == 0:
		return count / 10, true
	}
	return p.CreditsLow, true
}
