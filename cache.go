package apikey

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the verification cache.
const (
	// DefaultCacheTTL is how long a verified key is served from memory when
	// CacheOptions.TTL is 0. It is also the bound on how long a revocation
	// made through another Manager (another process) can go unnoticed by
	// this one. Revocations through this Manager take effect at once.
	DefaultCacheTTL = 5 * time.Second
	// DefaultNegativeTTL is how long an unknown key id is remembered when
	// CacheOptions.NegativeTTL is 0.
	DefaultNegativeTTL = time.Second
	// DefaultCacheSize is the entry limit when CacheOptions.MaxEntries is 0.
	DefaultCacheSize = 100_000
)

// CacheOptions configures the verification cache of a Manager. The zero
// value enables it with the defaults above and no stale serving.
//
// An entry holds a copy of the record and the SHA-256 of the secret that
// was verified against it, so a hit costs one SHA-256 and a map lookup:
// no store query and no bcrypt. Expiry and revocation times in the cached
// record are still checked on every verification.
type CacheOptions struct {
	// TTL is how long a verified key is served without asking the store:
	// DefaultCacheTTL when 0; negative disables the cache.
	TTL time.Duration
	// NegativeTTL is how long an unknown id is answered ErrInvalid without
	// asking the store: DefaultNegativeTTL when 0; negative disables it.
	NegativeTTL time.Duration
	// MaxEntries bounds the cache: DefaultCacheSize when 0. When full, an
	// arbitrary entry is evicted for each new one.
	MaxEntries int
	// StaleIfError lets a key verified within TTL+StaleIfError keep working
	// while the store fails (a key not seen in that window gets
	// ErrUnavailable). 0, the default, never serves stale entries.
	StaleIfError time.Duration
}

type cacheEntry struct {
	key     *Key // private copy; nil for an unknown id
	sum     [sha256.Size]byte
	fetched time.Time
}

// call is one store lookup shared by concurrent misses of one id.
type call struct {
	done chan struct{}
	key  *Key
	err  error
}

// cache is the Manager's verification cache. A nil cache caches nothing.
type cache struct {
	ttl, negTTL, stale time.Duration
	max                int

	mu       sync.RWMutex
	entries  map[string]cacheEntry
	inflight map[string]*call
	epoch    atomic.Uint64 // bumped by every invalidation
}

func newCache(o CacheOptions) (*cache, error) {
	if o.TTL < 0 {
		return nil, nil
	}
	if o.StaleIfError < 0 || o.MaxEntries < 0 {
		return nil, fmt.Errorf("%w: negative cache option", ErrInvalidOptions)
	}
	c := &cache{ttl: o.TTL, negTTL: o.NegativeTTL, stale: o.StaleIfError, max: o.MaxEntries,
		entries: map[string]cacheEntry{}, inflight: map[string]*call{}}
	if c.ttl == 0 {
		c.ttl = DefaultCacheTTL
	}
	if c.negTTL == 0 {
		c.negTTL = DefaultNegativeTTL
	}
	if c.max == 0 {
		c.max = DefaultCacheSize
	}
	return c, nil
}

// get returns the entry for id if it is still fresh: younger than the
// negative TTL for an unknown id, than the TTL plus extra for a key.
func (c *cache) get(id string, now time.Time, extra time.Duration) (cacheEntry, bool) {
	c.mu.RLock()
	e, ok := c.entries[id]
	c.mu.RUnlock()
	maxAge := c.ttl + extra
	if e.key == nil {
		maxAge = c.negTTL
	}
	if !ok || now.Sub(e.fetched) >= maxAge {
		return cacheEntry{}, false
	}
	return e, true
}

func (c *cache) put(id string, e cacheEntry, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch.Load() != epoch { // invalidated while we were fetching
		return
	}
	if _, ok := c.entries[id]; !ok && len(c.entries) >= c.max {
		for victim := range c.entries {
			delete(c.entries, victim)
			break
		}
	}
	c.entries[id] = e
}

// invalidate forgets id, and any lookup of it in flight, so that no
// verification starting after it returns can use an older record.
func (c *cache) invalidate(id string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.epoch.Add(1)
	delete(c.entries, id)
	delete(c.inflight, id)
	c.mu.Unlock()
}

// reset forgets every entry and every lookup in flight, as invalidate does
// for one id.
func (c *cache) reset() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.epoch.Add(1)
	clear(c.entries)
	clear(c.inflight)
	c.mu.Unlock()
}

// load fetches id from the store, sharing one Get among concurrent callers.
// It returns the epoch at which the fetch started.
func (c *cache) load(ctx context.Context, id string, get func(context.Context, string) (*Key, error)) (*Key, uint64, error) {
	for {
		c.mu.Lock()
		epoch := c.epoch.Load()
		cl, joined := c.inflight[id]
		if !joined {
			cl = &call{done: make(chan struct{})}
			c.inflight[id] = cl
		}
		c.mu.Unlock()
		if !joined {
			cl.key, cl.err = safeGet(ctx, get, id)
			c.mu.Lock()
			if c.inflight[id] == cl {
				delete(c.inflight, id)
			}
			c.mu.Unlock()
			close(cl.done)
			return cl.key.Clone(), epoch, cl.err
		}
		select {
		case <-ctx.Done():
			return nil, epoch, ctx.Err()
		case <-cl.done:
		}
		// The leader's own context ended: try again with ours.
		if errors.Is(cl.err, context.Canceled) || errors.Is(cl.err, context.DeadlineExceeded) {
			continue
		}
		return cl.key.Clone(), epoch, cl.err
	}
}

// Invalidate drops id from m's verification cache, so the next
// verification reads the store. Revoke, Rotate and Delete call it; call it
// yourself when another process tells you a key changed (for example over
// a pub/sub channel) to make that change effective here at once.
func (m *Manager) Invalidate(id string) { m.cache.invalidate(id) }
