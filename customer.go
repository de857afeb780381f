package apikey

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/limits"
)

// Customer is the operator's record of a customer, whoever owns keys. The
// customer of a key is its Owner, or the key's lineage for a key without
// owner (see Key.Customer). Every key of a customer spends from the
// customer's plan, and no key can hold more than its customer was granted.
//
// A customer without a stored record has the zero values. He has no scope
// ceiling, no key cap, nothing suspended and no plan of his own. So each
// of his keys spends its own Key.Plan, as without customer records. A key
// without a configured plan spends Options.DefaultPlan.
type Customer struct {
	// ID identifies the customer. It is the Owner of his keys.
	ID string `json:"id"`
	// Plan names the customer's plan in Options.Plans. Empty means
	// Options.DefaultPlan.
	Plan string `json:"plan,omitempty"`
	// Scopes is the scope ceiling, the scopes his keys may hold. Nil means
	// unrestricted. An empty, non-nil slice allows none. A key's effective
	// scopes are its own scopes within the ceiling, so lowering the
	// ceiling narrows every key at once.
	Scopes []string `json:"scopes"`
	// MaxKeys caps the customer's usable keys (not revoked, not expired).
	// A rotation chain counts once. 0 means no cap. Concurrent Issues
	// never exceed it when the store implements CustomerStore (they are
	// ordered by the record's Revision). With Options.Customers over a
	// store without it, they may.
	MaxKeys int `json:"max_keys,omitempty"`
	// Limits are granted by the operator on top of the plan's. A limit
	// named like one of the plan's replaces it. They are counted per
	// customer.
	Limits []limits.Limit `json:"limits,omitempty"`
	// Credits is a grant of credits that are never refilled, counted per
	// customer as the limit CreditsLimit. 0 means none. The balance lives
	// in the Limiter (see Middleware.Balance).
	Credits int64 `json:"credits,omitempty"`
	// AllowedIPs, if set, are the only IP ranges the customer's keys may
	// be used from; nil or empty means any address. A key's own ranges
	// must lie within them when they are set, and narrowing them narrows
	// every key at once (see docs/ip-restrictions.md).
	AllowedIPs []netip.Prefix `json:"allowed_ips,omitempty"`
	// Suspended refuses every key of the customer until it is cleared.
	// Only the operator sets or clears it.
	Suspended bool `json:"suspended"`
	// Metadata holds application data. Never put secrets in it.
	Metadata map[string]string `json:"metadata,omitempty"`
	// CreatedAt and UpdatedAt are set by the Manager.
	CreatedAt time.Time `json:"created_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Revision counts the writes to the record, as Key.Revision does. It
	// is 0 for a customer that has no stored record.
	Revision int64 `json:"revision"`
}

// Clone returns a deep copy of c.
func (c *Customer) Clone() *Customer {
	if c == nil {
		return nil
	}
	d := *c
	if c.Scopes != nil {
		d.Scopes = append(make([]string, 0, len(c.Scopes)), c.Scopes...)
	}
	d.Limits = slices.Clone(c.Limits)
	d.AllowedIPs = slices.Clone(c.AllowedIPs)
	d.Metadata = maps.Clone(c.Metadata)
	return &d
}

// Allows reports whether scope is within the customer's ceiling.
func (c *Customer) Allows(scope string) bool {
	return c == nil || c.Scopes == nil || slices.Contains(c.Scopes, scope)
}

// Customer returns the id of k's customer. That is its Owner, or its
// lineage (the first key of its rotation chain) for a key without owner.
// Issue refuses an Owner of the form of a key id, so the two never meet.
func (k *Key) Customer() string {
	if k.Owner != "" {
		return k.Owner
	}
	return lineage(k)
}

// CustomerStore is an optional Store capability that keeps customer
// records. memstore and sqlstore implement it. The Manager reads customers
// from Options.Customers when set, else from the store's CustomerStore.
// Without either, every customer has the zero record.
//
// GetCustomer returns the record of id or an error wrapping ErrNotFound.
// PutCustomer writes c conditionally, like Store.Update. With Revision 0
// it creates the record, with ErrConflict if it exists. Otherwise it
// replaces the stored record only if the stored Revision equals
// c.Revision. It gives ErrConflict if not, and ErrNotFound if there is
// none. It stores Revision+1 and sets c.Revision to it. Every field
// round-trips, and a nil Scopes stays nil while an empty Scopes stays
// empty. ListCustomers
// returns up to limit customers (100 when 0) with an ID above after, in
// ascending byte order. Values returned are the caller's.
//
// storetest.Run checks an implementation.
type CustomerStore interface {
	GetCustomer(ctx context.Context, id string) (*Customer, error)
	PutCustomer(ctx context.Context, c *Customer) error
	ListCustomers(ctx context.Context, after string, limit int) ([]*Customer, error)
}

// customerTopic marks a customer id published through the Notifier, which
// no key id starts with.
const customerTopic = "customer:"

// validCustomer checks the fields of c against the input limits.
func validCustomer(c *Customer, plans limits.Plans) error {
	if err := validPlan(plans, c.Plan); err != nil {
		return err
	}
	if c.Scopes != nil {
		if err := validScopes(c.Scopes); err != nil {
			return err
		}
	}
	if c.MaxKeys < 0 || c.MaxKeys > MaxCustomerKeys {
		return &InputError{Field: "max_keys", Reason: fmt.Sprintf("must be 0 to %d", MaxCustomerKeys)}
	}
	if c.Credits < 0 || c.Credits > gcra.MaxCount {
		return &InputError{Field: "credits", Reason: "must be 0 or more"}
	}
	if err := validKeyLimits(c.Limits); err != nil {
		return err
	}
	if err := validIPs(&c.AllowedIPs); err != nil {
		return err
	}
	for i := range c.Limits {
		c.Limits[i].Subject = ""
		if c.Credits > 0 && c.Limits[i].Name == CreditsLimit {
			return &InputError{Field: "limits", Reason: "a limit named " + CreditsLimit + " collides with the credits grant"}
		}
	}
	return validMetadata(c.Metadata)
}

// within reports whether every scope of k is within c's ceiling.
func within(k *Key, c *Customer) bool {
	if c == nil || c.Scopes == nil {
		return true
	}
	for _, s := range k.Scopes {
		if !slices.Contains(c.Scopes, s) {
			return false
		}
	}
	return true
}

// narrow returns a copy of k holding only the scopes within c's ceiling,
// and only the addresses within c's ranges.
func narrow(k *Key, c *Customer) *Key {
	n := k.Clone()
	n.Scopes = slices.DeleteFunc(n.Scopes, func(s string) bool { return !c.Allows(s) })
	n.AllowedIPs = effectiveIPs(k, c)
	return n
}

// isCustomerTopic reports whether a published id names a customer, and
// which.
func isCustomerTopic(id string) (string, bool) {
	return strings.CutPrefix(id, customerTopic)
}

// confined reports whether k needs no narrowing to c's ranges: c has
// none, or k's own lie within them.
func confined(k *Key, c *Customer) bool {
	return len(c.AllowedIPs) == 0 || len(k.AllowedIPs) != 0 && ipallow.Within(k.AllowedIPs, c.AllowedIPs)
}

// effectiveIPs returns the ranges k may be used from under c: the
// addresses in both k's ranges and c's, each empty list meaning any
// address; noAddress when they have none in common.
func effectiveIPs(k *Key, c *Customer) []netip.Prefix {
	switch {
	case len(c.AllowedIPs) == 0:
		return slices.Clone(k.AllowedIPs)
	case len(k.AllowedIPs) == 0:
		return slices.Clone(c.AllowedIPs)
	}
	if both := ipallow.Intersect(k.AllowedIPs, c.AllowedIPs); len(both) > 0 {
		return both
	}
	return noAddress()
}

// ipsWithin reports whether k's ranges are allowed under c at Issue and
// Update: k has none (it takes c's), c has none, or they lie within c's.
func ipsWithin(k *Key, c *Customer) bool {
	return len(k.AllowedIPs) == 0 || c == nil || len(c.AllowedIPs) == 0 || ipallow.Within(k.AllowedIPs, c.AllowedIPs)
}
