package apikey

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// customers reads customer records for the request path, through a cache
// invalidated by changes and notifications. A nil *customers is the legacy
// mode, with no customer records at all.
type customers struct {
	get   func(context.Context, string) (*Customer, error)
	store CustomerStore // nil when the application answers (Options.Customers)
	ttl   time.Duration // 0: no cache
	stale time.Duration
	max   int64

	entries sync.Map // id -> *customerEntry
	n       atomic.Int64
	epoch   atomic.Uint64
	// mu orders the writes of entries after a read with invalidations. A
	// record read before an invalidation is never stored after it.
	mu sync.Mutex
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
func (cs *customers) read(ctx context.Context, id string) (*Customer, error) {
	c, err := cs.fetch(ctx, id)
	if c == nil && err == nil {
		return &Customer{ID: id}, nil
	}
	return c, err
}

// unknownCustomer is the record the request path shares among all ids
// without one, so that caching them costs no record each. It is never
// changed.
var unknownCustomer = &Customer{}

// fetch returns the record of id from the source, nil without an error
// for an unknown id.
func (cs *customers) fetch(ctx context.Context, id string) (c *Customer, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, panicError{r}
		}
	}()
	if !storable(id) {
		return nil, nil
	}
	c, err = cs.get(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	case c == nil:
		return nil, errors.New("customer source returned no customer and no error")
	}
	return c, nil
}

// lookup returns the customer id for the request path. It reads the cache
// within its TTL, else the source. While the source fails, an entry
// within TTL plus the stale window answers. The result is shared.
func (cs *customers) lookup(ctx context.Context, id string, now time.Time) (*Customer, error) {
	e, _, err := cs.entry(ctx, id, now)
	if err != nil {
		return nil, err
	}
	return e.c, nil
}

// entry is lookup's answer as a cache entry, with the epoch read before
// it was found. While the epoch stays the same, no record has changed
// since, so the entry may be remembered (see lookupFor).
func (cs *customers) entry(ctx context.Context, id string, now time.Time) (*customerEntry, uint64, error) {
	epoch := cs.epoch.Load()
	v, ok := cs.entries.Load(id)
	var e *customerEntry
	if ok {
		e = v.(*customerEntry)
		if cs.ttl > 0 && uint64(now.UnixNano()-e.fetched) < uint64(cs.ttl) {
			return e, epoch, nil
		}
	}
	c, err := cs.fetch(ctx, id)
	if c == nil && err == nil {
		c = unknownCustomer
	}
	if err != nil {
		if e != nil && cs.stale > 0 && younger(now, e.fetched, cs.ttl+cs.stale) {
			return e, epoch, nil
		}
		return nil, 0, fmt.Errorf("apikey: customer: %w: %w", ErrUnavailable, err)
	}
	fresh := &customerEntry{c: c, fetched: now.UnixNano()}
	if cs.ttl > 0 {
		cs.keep(id, fresh, epoch)
	}
	return fresh, epoch, nil
}

// lookupFor is lookup for the key k of the verification cache entry k
// (nil when the cache is off). While no customer record changed, the
// entry remembered there answers without a map lookup.
func (cs *customers) lookupFor(ctx context.Context, ce *cacheEntry, k *Key, now time.Time) (*Customer, error) {
	if ce != nil && cs.ttl > 0 {
		if m := ce.cust.Load(); m != nil && m.epoch == cs.epoch.Load() && uint64(now.UnixNano()-m.e.fetched) < uint64(cs.ttl) {
			return m.e.c, nil
		}
	}
	e, epoch, err := cs.entry(ctx, k.Customer(), now)
	if err != nil {
		return nil, err
	}
	if ce != nil && cs.ttl > 0 && uint64(now.UnixNano()-e.fetched) < uint64(cs.ttl) {
		ce.cust.Store(&customerMemo{e: e, epoch: epoch})
	}
	return e.c, nil
}

// keep caches e for id unless an invalidation happened since epoch, when
// the read of e began. A lookup starting after the invalidation returned
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
	// The entry goes before the epoch moves on. A lookup that read the new
	// epoch then finds no entry, never the old one with the new epoch.
	if _, ok := cs.entries.LoadAndDelete(id); ok {
		cs.n.Add(-1)
	}
	cs.epoch.Add(1)
}

func (cs *customers) reset() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.entries.Clear() // before the epoch moves on, as in invalidate
	cs.n.Store(0)
	cs.epoch.Add(1)
}

// narrowed returns k with only the scopes within c's ceiling, memoized in
// e when the cache is on.
func narrowed(e *cacheEntry, k *Key, c *Customer) *Key {
	if e == nil {
		return narrow(k, c)
	}
	if n := e.narrow.Load(); n != nil && n.c == c {
		return n.k
	}
	n := &narrowedKey{c: c, k: narrow(k, c)}
	e.narrow.Store(n)
	return n.k
}
