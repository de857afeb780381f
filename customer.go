package apikey

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gokeys/apikey/internal/gcra"
)

// Customer is the operator's record of a customer: whoever owns keys. The
// customer of a key is its Owner, or the key's lineage for a key without
// owner (see Key.Customer). Every key of a customer spends from the
// customer's plan, and no key can hold more than its customer was granted.
//
// A customer without a stored record has the zero values: no scope
// ceiling, no key cap, nothing suspended, and no plan of his own, so that
// each of his keys spends its own Key.Plan (Options.DefaultPlan when it
// has none that is configured), as without customer records.
type Customer struct {
	// ID identifies the customer: the Owner of his keys.
	ID string `json:"id"`
	// Plan names the customer's plan in Options.Plans; empty means
	// Options.DefaultPlan.
	Plan string `json:"plan,omitempty"`
	// Scopes is the scope ceiling: the scopes his keys may hold. Nil means
	// unrestricted; an empty, non-nil slice allows none. A key's effective
	// scopes are its own scopes within the ceiling, so lowering the
	// ceiling narrows every key at once.
	Scopes []string `json:"scopes"`
	// MaxKeys caps the customer's usable keys (not revoked, not expired);
	// a rotation chain counts once. 0 means no cap. Concurrent Issues
	// never exceed it when the store implements CustomerStore (they are
	// ordered by the record's Revision); with Options.Customers over a
	// store without it, they may.
	MaxKeys int `json:"max_keys,omitempty"`
	// Limits are granted by the operator on top of the plan's: a limit
	// named like one of the plan's replaces it. They are counted per
	// customer.
	Limits []Limit `json:"limits,omitempty"`
	// Credits is a grant of credits that are never refilled, counted per
	// customer: the limit CreditsLimit. 0 means none. The balance lives
	// in the Limiter (see Middleware.Balance).
	Credits int64 `json:"credits,omitempty"`
	// Suspended refuses every key of the customer until it is cleared.
	// Only the operator sets or clears it.
	Suspended bool `json:"suspended"`
	// Metadata holds application data; never put secrets in it.
	Metadata map[string]string `json:"metadata,omitempty"`
	// CreatedAt and UpdatedAt are set by the Manager.
	CreatedAt time.Time `json:"created_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Revision counts the writes to the record, as Key.Revision does: 0
	// for a customer that has no stored record.
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
	d.Metadata = maps.Clone(c.Metadata)
	return &d
}

// Allows reports whether scope is within the customer's ceiling.
func (c *Customer) Allows(scope string) bool {
	return c == nil || c.Scopes == nil || slices.Contains(c.Scopes, scope)
}

// Customer returns the id of k's customer: its Owner, or its lineage (the
// first key of its rotation chain) for a key without owner. Issue refuses
// an Owner of the form of a key id, so the two never meet.
func (k *Key) Customer() string {
	if k.Owner != "" {
		return k.Owner
	}
	return lineage(k)
}

// CustomerStore is an optional Store capability: it keeps customer
// records. memstore and sqlstore implement it. The Manager reads customers
// from Options.Customers when set, else from the store's CustomerStore;
// without either every customer has the zero record.
//
// GetCustomer returns the record of id or an error wrapping ErrNotFound.
// PutCustomer writes c conditionally, like Store.Update: with Revision 0 it
// creates the record (ErrConflict if it exists), else it replaces the
// stored record only if the stored Revision equals c.Revision
// (ErrConflict otherwise, ErrNotFound if there is none); it stores
// Revision+1 and sets c.Revision to it. Every field round-trips, and a nil
// Scopes stays nil while an empty Scopes stays empty. ListCustomers
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

// customers reads customer records for the request path, through a cache
// invalidated by changes and notifications. A nil *customers is the legacy
// mode: no customer records at all.
type customers struct {
	get   func(context.Context, string) (*Customer, error)
	store CustomerStore // nil when the application answers (Options.Customers)
	ttl   time.Duration // 0: no cache
	stale time.Duration
	max   int64

	entries sync.Map // id -> *customerEntry
	n       atomic.Int64
	epoch   atomic.Uint64
	// mu orders the writes of entries after a read with invalidations:
	// a record read before an invalidation is never stored after it.
	mu sync.Mutex
}

type customerEntry struct {
	c       *Customer // never nil: the zero record for an unknown id
	fetched time.Time
}

func newCustomers(store Store, hook func(context.Context, string) (*Customer, error), o cacheOptions) *customers {
	cs, _ := store.(CustomerStore)
	c := &customers{get: hook, ttl: o.TTL, stale: o.StaleIfError, max: int64(o.MaxEntries)}
	switch {
	case hook != nil:
	case cs != nil:
		c.get, c.store = cs.GetCustomer, cs
	default:
		return nil
	}
	switch {
	case c.ttl == 0:
		c.ttl = defaultCacheTTL
	case c.ttl < 0:
		c.ttl = 0
	}
	if c.max <= 0 {
		c.max = defaultCacheSize
	}
	return c
}

// read returns the record of id from the source, the zero record for an
// unknown id, never nil without an error.
func (cs *customers) read(ctx context.Context, id string) (c *Customer, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, panicError{r}
		}
	}()
	if !storable(id) {
		return &Customer{ID: id}, nil
	}
	c, err = cs.get(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return &Customer{ID: id}, nil
	case err != nil:
		return nil, err
	case c == nil:
		return nil, errors.New("customer source returned no customer and no error")
	}
	return c, nil
}

// lookup returns the customer id for the request path: from the cache
// within its TTL, else from the source. While the source fails, an entry
// within TTL plus the stale window answers. The result is shared.
func (cs *customers) lookup(ctx context.Context, id string, now time.Time) (*Customer, error) {
	e, _, err := cs.entry(ctx, id, now)
	if err != nil {
		return nil, err
	}
	return e.c, nil
}

// entry is lookup's answer as a cache entry, with the epoch read before
// it was found: while the epoch stays the same, no record has changed
// since, so the entry may be remembered (see lookupFor).
func (cs *customers) entry(ctx context.Context, id string, now time.Time) (*customerEntry, uint64, error) {
	epoch := cs.epoch.Load()
	v, ok := cs.entries.Load(id)
	var e *customerEntry
	if ok {
		e = v.(*customerEntry)
		if cs.ttl > 0 && now.Sub(e.fetched) < cs.ttl {
			return e, epoch, nil
		}
	}
	c, err := cs.read(ctx, id)
	if err != nil {
		if e != nil && cs.stale > 0 && now.Sub(e.fetched) < cs.ttl+cs.stale {
			return e, epoch, nil
		}
		return nil, 0, fmt.Errorf("apikey: customer: %w: %w", ErrUnavailable, err)
	}
	fresh := &customerEntry{c: c, fetched: now}
	if cs.ttl > 0 {
		cs.keep(id, fresh, epoch)
	}
	return fresh, epoch, nil
}

// customerMemo is the customer entry a key's cache entry last used, and
// the epoch it was found at.
type customerMemo struct {
	e     *customerEntry
	epoch uint64
}

// lookupFor is lookup for the key k of the verification cache entry k
// (nil when the cache is off): while no customer record changed, the
// entry remembered there answers without a map lookup.
func (cs *customers) lookupFor(ctx context.Context, ce *cacheEntry, k *Key, now time.Time) (*Customer, error) {
	if ce != nil && cs.ttl > 0 {
		if m := ce.cust.Load(); m != nil && m.epoch == cs.epoch.Load() && now.Sub(m.e.fetched) < cs.ttl {
			return m.e.c, nil
		}
	}
	e, epoch, err := cs.entry(ctx, k.Customer(), now)
	if err != nil {
		return nil, err
	}
	if ce != nil && cs.ttl > 0 && now.Sub(e.fetched) < cs.ttl {
		ce.cust.Store(&customerMemo{e: e, epoch: epoch})
	}
	return e.c, nil
}

// keep caches e for id unless an invalidation happened since epoch, when
// the read of e began: a lookup starting after the invalidation returned
// must never find e.
func (cs *customers) keep(id string, e *customerEntry, epoch uint64) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.epoch.Load() != epoch { // invalidated while reading: don't keep it
		return
	}
	if _, had := cs.entries.Swap(id, e); !had && cs.n.Add(1) > cs.max {
		cs.entries.Clear()
		cs.entries.Store(id, e)
		cs.n.Store(1)
	}
}

func (cs *customers) invalidate(id string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.epoch.Add(1)
	if _, ok := cs.entries.LoadAndDelete(id); ok {
		cs.n.Add(-1)
	}
}

func (cs *customers) reset() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.epoch.Add(1)
	cs.entries.Clear()
	cs.n.Store(0)
}

// errNoCustomerStore is returned by the customer methods of a Manager
// whose store keeps no customers.
var errNoCustomerStore = fmt.Errorf("apikey: %w: the store keeps no customers (CustomerStore)", errors.ErrUnsupported)

// Customer returns the current record of customer id, read from its
// source without the cache: the zero record (Revision 0) when none is
// stored. Without a customer source it is always the zero record.
func (m *Manager) Customer(ctx context.Context, id string) (*Customer, error) {
	if m.custs == nil {
		return &Customer{ID: id}, nil
	}
	c, err := m.custs.read(ctx, id)
	if err != nil {
		return nil, storeErr("customer", err)
	}
	return c.Clone(), nil
}

// SetCustomer changes the stored record of customer id with change, which
// receives a copy of the record (the zero record when none is stored) and
// may set every field but ID, CreatedAt, UpdatedAt and Revision. The write
// is conditional on the record not having changed since it was read, and
// is retried on a lost race like Update. Invalid values give an
// *InputError; change's own error is returned as it is. The change reaches
// every verification through m at once, and other instances through the
// Notifier. It needs a store that implements CustomerStore.
func (m *Manager) SetCustomer(ctx context.Context, id string, change func(*Customer) error) (*Customer, error) {
	cs := m.custs
	if cs == nil || cs.store == nil {
		return nil, errNoCustomerStore
	}
	if err := validText("id", id, MaxOwnerLength); err != nil || id == "" {
		return nil, &InputError{Field: "id", Reason: "must be 1 to 255 bytes of text"}
	}
	var err error
	for range maxAttempts {
		var c *Customer
		c, err = cs.store.GetCustomer(ctx, id)
		if errors.Is(err, ErrNotFound) {
			c, err = &Customer{ID: id}, nil
		}
		if err != nil {
			return nil, storeErr("set customer", err)
		}
		before := c.Clone()
		if err := change(c); err != nil {
			return nil, err
		}
		c.ID, c.CreatedAt, c.Revision = before.ID, before.CreatedAt, before.Revision
		if err := m.validCustomer(c); err != nil {
			return nil, err
		}
		now := m.now().UTC().Truncate(time.Microsecond)
		if c.CreatedAt.IsZero() {
			c.CreatedAt = now
		}
		c.UpdatedAt = now
		if err = cs.store.PutCustomer(m.hooks.customerSet(ctx, before, c), c); err == nil {
			m.CustomerChanged(ctx, id)
			m.emit(ctx, event{Type: eventCustomer, Owner: id, Time: now})
			return c.Clone(), nil
		}
		if !isConflict(err) {
			break
		}
	}
	return nil, storeErr("set customer", err)
}

// Customers returns a page of stored customers by ID, after the id after.
func (m *Manager) Customers(ctx context.Context, after string, limit int) ([]*Customer, error) {
	if m.custs == nil || m.custs.store == nil {
		return nil, errNoCustomerStore
	}
	cs, err := m.custs.store.ListCustomers(ctx, after, ListOptions{Limit: limit}.PageSize())
	if err != nil {
		return nil, storeErr("list customers", err)
	}
	return cs, nil
}

// CustomerChanged tells m, and through the Notifier every instance, that
// the record of customer id changed. SetCustomer calls it; an application
// that answers Options.Customers from its own records calls it after
// changing one.
func (m *Manager) CustomerChanged(ctx context.Context, id string) {
	if m.custs != nil {
		m.custs.invalidate(id)
	}
	m.fleet.publish(ctx, customerTopic+id)
}

// validCustomer checks the fields of c against the input limits.
func (m *Manager) validCustomer(c *Customer) error {
	if err := m.validPlan(c.Plan); err != nil {
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
	for i := range c.Limits {
		c.Limits[i].Subject = ""
		if c.Credits > 0 && c.Limits[i].Name == CreditsLimit {
			return &InputError{Field: "limits", Reason: "a limit named " + CreditsLimit + " collides with the credits grant"}
		}
	}
	return validMetadata(c.Metadata)
}

// customerOf returns the customer record of k for the request path (nil
// without customer records).
func (m *Manager) customerOf(ctx context.Context, k *Key, now time.Time) (*Customer, error) {
	if m.custs == nil {
		return nil, nil
	}
	return m.custs.lookup(ctx, k.Customer(), now)
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

// narrow returns a copy of k holding only the scopes within c's ceiling.
func narrow(k *Key, c *Customer) *Key {
	n := k.Clone()
	n.Scopes = slices.DeleteFunc(n.Scopes, func(s string) bool { return !c.Allows(s) })
	return n
}

// isCustomerTopic reports whether a published id names a customer, and
// which.
func isCustomerTopic(id string) (string, bool) {
	return strings.CutPrefix(id, customerTopic)
}
