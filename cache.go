package apikey

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the verification cache.
const (
	// defaultCacheTTL is how long a verified key is served from memory when
	// Options.CacheTTL is 0. It is also the bound on how long a revocation
	// made through another Manager (another process) can go unnoticed by
	// this one when no Notifier tells it sooner. Revocations through this
	// Manager take effect at once.
	defaultCacheTTL = 5 * time.Second
	// defaultNegativeTTL is how long a failed lookup (an unknown id, or a
	// known id presented with a wrong secret) is remembered when
	// Options.CacheNegativeTTL is 0.
	defaultNegativeTTL = time.Second
	// defaultCacheSize is the entry limit when Options.CacheMaxEntries is 0.
	defaultCacheSize = 100_000
)

// cacheOptions are the cache's settings from Options.
type cacheOptions struct {
	TTL, NegativeTTL, StaleIfError time.Duration
	MaxEntries                     int
}

// cacheEntry is one immutable cache entry. It is replaced, never changed.
type cacheEntry struct {
	// key is the record, shared with every caller of Verify that hits this
	// entry (see Verify). It is never modified. Nil for an unknown id.
	key *Key
	// sum is the SHA-256 of the key material that verified against key.
	// verified is false when none did (the entry was made by a wrong
	// secret), and then the entry lives NegativeTTL only.
	sum      [sha256.Size]byte
	verified bool
	// check is the token's checksum (its CRC-32) with checkKnown set, for
	// a verified entry. A token of the same prefix, checksum and material
	// is the very token that verified, so a hit need not recompute them.
	check uint64
	// fetched is when key was read from the store (Unix nanoseconds).
	fetched int64
	// used is when a use of key was last handed to the last-used recorder
	// (Unix nanoseconds). It is the one field that changes. A hit within
	// usageGranularity of it skips the recorder.
	used atomic.Int64
	// narrow is key narrowed to its customer's scope ceiling, for the
	// customer record it was made for (see narrowed).
	narrow atomic.Pointer[narrowedKey]
	// cust is the customer entry of key's customer last used (see
	// customers.lookupFor).
	cust atomic.Pointer[customerMemo]
	// probed is when a wrong secret against this verified entry last
	// cost a store query (Unix nanoseconds), see Manager.lookup.
	probed atomic.Int64
}

// maxAge returns how long e may be served. extra is the stale window.
func (c *cache) maxAge(e *cacheEntry, extra time.Duration) time.Duration {
	if !e.verified {
		return c.negTTL
	}
	return c.ttl + extra
}

// call is one store lookup shared by concurrent misses of one id.
type call struct {
	done chan struct{}
	key  *Key
	err  error
}

// cacheShards is the number of independently locked parts of the cache
// (and of the last-used recorder). Verifications of different keys on
// different cores rarely meet on a lock.
const cacheShards = 64

// hotSlots is the size of each shard's table of verified entries, read
// without a lock.
const hotSlots = 256

// cacheShard is one part of the cache, padded to its own cache lines so
// that two cores working on neighbouring shards do not share a line.
//
// hot is a direct-mapped table of verified entries, read with one atomic
// load and no lock. So cores verifying the same keys share no written
// cache line. A hit finds its entry there. Anything else (a slot taken by
// another key, a failed lookup's entry) goes through entries under mu.
// Every write to hot is made under mu, together with the write
// to entries, so hot never holds an entry that entries no longer has.
type cacheShard struct {
	mu       sync.RWMutex
	entries  map[string]*cacheEntry
	inflight map[string]*call
	hot      *[hotSlots]atomic.Pointer[cacheEntry]
	_        [128 - 24 - 8 - 8 - 8]byte
}

// setHot records in the hot table that id's entry is now e, or none when
// e is nil. s.mu must be held.
func (s *cacheShard) setHot(id string, e *cacheEntry) {
	slot := &s.hot[hotSlot(id)]
	if e != nil && e.verified {
		slot.Store(e)
		return
	}
	if cur := slot.Load(); cur != nil && cur.key.ID == id {
		slot.Store(nil)
	}
}

// cache is the Manager's verification cache. A nil cache caches nothing.
//
// Invalidation works by epochs. Every invalidation bumps epoch. A lookup
// that started at an older epoch does not store what it fetched. So no
// verification starting after an invalidation returned can see a record
// read before it.
type cache struct {
	ttl, negTTL, stale time.Duration
	max                int64

	count  atomic.Int64  // entries in all shards
	epoch  atomic.Uint64 // bumped by every invalidation
	shards [cacheShards]cacheShard
}

func newCache(o cacheOptions) (*cache, error) {
	if o.TTL < 0 {
		return nil, nil
	}
	if o.StaleIfError < 0 || o.MaxEntries < 0 {
		return nil, fmt.Errorf("%w: negative cache option", ErrInvalidOptions)
	}
	c := &cache{ttl: o.TTL, negTTL: o.NegativeTTL, stale: o.StaleIfError, max: int64(o.MaxEntries)}
	if c.ttl == 0 {
		c.ttl = defaultCacheTTL
	}
	if c.negTTL == 0 {
		c.negTTL = defaultNegativeTTL
	}
	if c.max == 0 {
		c.max = defaultCacheSize
	}
	for i := range c.shards {
		c.shards[i].entries = map[string]*cacheEntry{}
		c.shards[i].inflight = map[string]*call{}
		c.shards[i].hot = new([hotSlots]atomic.Pointer[cacheEntry])
	}
	return c, nil
}

// shardSeed hashes key ids to shards. It is fixed for the process so that
// the cache and the last-used recorder agree.
var shardSeed = maphash.MakeSeed()

// shardOf returns the shard index of id.
func shardOf(id string) int { return int(maphash.String(shardSeed, id) % cacheShards) }

// locate returns the shard index of id and its slot in the shard's hot
// table.
func locate(id string) (shard, slot int) {
	h := maphash.String(shardSeed, id)
	return int(h % cacheShards), int(h / cacheShards % hotSlots)
}

// hotSlot returns the slot of id in its shard's hot table.
func hotSlot(id string) int {
	_, slot := locate(id)
	return slot
}

// hit returns the verified entry of id from the hot table, without a
// lock, if it is there and fresh.
func (c *cache) hit(shard, slot int, id string, now time.Time) *cacheEntry {
	e := c.shards[shard].hot[slot].Load()
	if e == nil || e.key.ID != id || uint64(now.UnixNano()-e.fetched) >= uint64(c.ttl) {
		return nil
	}
	return e
}

// get returns the entry for id if it is still fresh. A failed lookup's
// entry must be younger than the negative TTL, a key's younger than the
// TTL plus extra.
func (c *cache) get(shard int, id string, now time.Time, extra time.Duration) *cacheEntry {
	s := &c.shards[shard]
	s.mu.RLock()
	e := s.entries[id]
	s.mu.RUnlock()
	if e == nil || uint64(now.UnixNano()-e.fetched) >= uint64(c.maxAge(e, extra)) {
		return nil
	}
	return e
}

// staleEntry returns the entry for id that may answer while the store
// fails, one younger than the TTL plus the stale window.
func (c *cache) staleEntry(shard int, id string, now time.Time) *cacheEntry {
	s := &c.shards[shard]
	s.mu.RLock()
	e := s.entries[id]
	s.mu.RUnlock()
	if e == nil || !younger(now, e.fetched, c.maxAge(e, c.stale)) {
		return nil
	}
	return e
}

// younger reports whether what was fetched at fetched (Unix nanoseconds)
// is younger than d at now. A concurrent request may have fetched it after
// this one read the clock. It then counts as fetched now, not as expired.
func younger(now time.Time, fetched int64, d time.Duration) bool {
	return max(now.UnixNano()-fetched, 0) < int64(d)
}

// put stores e for id unless an invalidation happened since epoch. The map
// key is the record's own id, or a copy of id, never a part of the token.
func (c *cache) put(shard int, id string, e *cacheEntry, epoch uint64) {
	if e.key != nil {
		id = e.key.ID
	} else {
		id = strings.Clone(id)
	}
	s := &c.shards[shard]
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.epoch.Load() != epoch { // invalidated while we were fetching
		return
	}
	if _, ok := s.entries[id]; !ok && c.count.Add(1) > c.max {
		victim, found := "", false
		for victim = range s.entries {
			found = true
			break
		}
		if !found { // full, and nothing of this shard to evict
			c.count.Add(-1)
			return
		}
		delete(s.entries, victim)
		s.setHot(victim, nil)
		c.count.Add(-1)
	}
	s.entries[id] = e
	s.setHot(id, e)
}

// upgrade replaces old, an entry made by a wrong secret, with one that
// remembers sum as verified, if old is still the entry of id.
func (c *cache) upgrade(shard int, id string, old *cacheEntry, sum [sha256.Size]byte, check uint64) {
	s := &c.shards[shard]
	s.mu.Lock()
	if s.entries[id] == old {
		e := &cacheEntry{key: old.key, sum: sum, verified: true, check: check, fetched: old.fetched}
		// Assigning to an existing string key replaces the map's key with
		// the one given: the record's id, never a part of the token.
		s.entries[old.key.ID] = e
		s.setHot(old.key.ID, e)
	}
	s.mu.Unlock()
}

// invalidate forgets id, and any lookup of it in flight, so that no
// verification starting after it returns can use an older record.
func (c *cache) invalidate(id string) {
	if c == nil {
		return
	}
	s := &c.shards[shardOf(id)]
	s.mu.Lock()
	c.epoch.Add(1)
	if _, ok := s.entries[id]; ok {
		delete(s.entries, id)
		c.count.Add(-1)
	}
	s.setHot(id, nil)
	delete(s.inflight, id)
	s.mu.Unlock()
}

// reset forgets every entry and every lookup in flight, so that no
// verification starting after it returns can use a record read before it
// (for example after notifications of changes may have been lost).
func (c *cache) reset() {
	if c == nil {
		return
	}
	c.epoch.Add(1) // first: a put racing with the loop below is refused
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		c.count.Add(-int64(len(s.entries)))
		clear(s.entries)
		clear(s.inflight)
		for i := range s.hot {
			s.hot[i].Store(nil)
		}
		s.mu.Unlock()
	}
}

// load fetches id from the store, sharing one Get among concurrent callers.
// It returns the epoch at which the fetch started.
func (c *cache) load(ctx context.Context, shard int, id string, get func(context.Context, string) (*Key, error)) (*Key, uint64, error) {
	s := &c.shards[shard]
	for {
		s.mu.Lock()
		epoch := c.epoch.Load()
		cl, joined := s.inflight[id]
		if !joined {
			cl = &call{done: make(chan struct{})}
			s.inflight[strings.Clone(id)] = cl
		}
		s.mu.Unlock()
		if !joined {
			cl.key, cl.err = safeGet(ctx, get, id)
			s.mu.Lock()
			if s.inflight[id] == cl {
				delete(s.inflight, id)
			}
			s.mu.Unlock()
			close(cl.done)
			return cl.key, epoch, cl.err
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
		return cl.key, epoch, cl.err
	}
}

// probe spends the store query that a wrong secret for an id the cache
// does not hold costs, for a wrong secret against the verified entry e.
// It does so once per negative TTL per id, so that the store's load never
// tells whether an id is cached (recently used). The answer is not used.
func (c *cache) probe(ctx context.Context, shard int, e *cacheEntry, id string, now time.Time, get func(context.Context, string) (*Key, error)) {
	p, t := e.probed.Load(), now.UnixNano()
	if c.negTTL > 0 && uint64(t-p) < uint64(c.negTTL) || !e.probed.CompareAndSwap(p, t) {
		return
	}
	c.load(ctx, shard, id, get)
}

// customerMemo is the customer entry a key's cache entry last used, and
// the epoch it was found at.
type customerMemo struct {
	e     *customerEntry
	epoch uint64
}

// narrowedKey is a key with only the scopes within the ceiling of the
// customer record c. The cache entry of the key keeps it, so that a hit
// allocates nothing while the record is the same.
type narrowedKey struct {
	c *Customer
	k *Key
}

type customerEntry struct {
	c       *Customer // never nil: the zero record for an unknown id
	fetched int64     // Unix nanoseconds
}

// checkKnown marks cacheEntry.check as set.
const checkKnown = 1 << 32

// checkOf returns the cacheEntry.check of a parsed token.
func checkOf(t Token) uint64 {
	v, _ := decodeChecksum(t.raw[len(t.raw)-ChecksumLength:])
	return uint64(v) | checkKnown
}

// How the cache answered a verification, as reported to Metrics.Verified.
const (
	cacheHit      = "hit"      // a verified entry answered
	cacheMiss     = "miss"     // the store was asked
	cacheNegative = "negative" // a remembered failed lookup answered
	cacheStale    = "stale"    // the store failed and a stale entry answered
	cacheOff      = "off"      // the cache is disabled
	cacheNone     = "none"     // refused before any lookup (malformed)
)

// clock reads a Manager's clock once. When not zero, start is a reading
// of time.Now to use instead if the clock is time.Now (real).
type clock struct {
	start time.Time
	now   func() time.Time
	real  bool
}

// read returns the time.
func (c *clock) read() time.Time {
	if c.start.IsZero() || !c.real {
		return c.now()
	}
	return c.start
}

// quick answers a token that is byte for byte one that verified and is still
// in the hot table. It has the same prefix, checksum (the entry remembers
// it) and material (its SHA-256 is the entry's). Such a token is well
// formed, since the one that made the entry was parsed in full, so neither
// the base62 check nor the CRC-32 is repeated. Any other token gets nil,
// after no more than a lock-free probe of the hot table. The clock is read,
// and the material hashed, only for a token whose id and checksum match an
// entry. A nil cache answers nothing.
func (c *cache) quick(token string, f *Format, clk *clock) (*cacheEntry, time.Time) {
	if c == nil {
		return nil, time.Time{}
	}
	prefix := f.prefix
	if f.more != nil {
		prefix = f.prefixOf(token)
	}
	p := len(prefix)
	if len(token) != p+1+IDLength+f.secretLen+ChecksumLength || p == 0 || token[:p] != prefix || token[p] != '_' {
		return nil, time.Time{}
	}
	n := len(token) - ChecksumLength
	want, ok := decodeChecksum(token[n:])
	if !ok {
		return nil, time.Time{}
	}
	material := token[p+1 : n]
	id := material[:IDLength]
	shard, slot := locate(id)
	e := c.shards[shard].hot[slot].Load()
	if e == nil || e.check != uint64(want)|checkKnown || e.key.ID != id || e.key.Prefix != prefix {
		return nil, time.Time{}
	}
	now := clk.read()
	if uint64(now.UnixNano()-e.fetched) >= uint64(c.ttl) {
		return nil, time.Time{}
	}
	sum := sha256.Sum256(readOnly(material))
	if subtle.ConstantTimeCompare(e.sum[:], sum[:]) != 1 {
		return nil, time.Time{}
	}
	return e, now
}

// lookup finds the key of t and checks its secret with d, through the
// cache, and says how the cache answered. It returns a key or an error,
// never both nil, and the cache entry that answered on a hit. The cache
// decides here which of its answers it trusts. They are a verified entry
// for the same material, a remembered failure, or a stale entry while the
// store fails. A nil cache asks the store every time.
func (c *cache) lookup(ctx context.Context, t Token, now time.Time, get func(context.Context, string) (*Key, error), d *digests) (*Key, *cacheEntry, string, error) {
	if c == nil {
		k, err := safeGet(ctx, get, t.ID)
		if errors.Is(err, ErrNotFound) {
			k = nil
		} else if err != nil {
			return nil, nil, cacheOff, fmt.Errorf("apikey: lookup: %w: %w", ErrUnavailable, err)
		}
		if err := d.check(t, k); err != nil {
			return nil, nil, cacheOff, err
		}
		return k, nil, cacheOff, nil
	}

	shard, slot := locate(t.ID)
	sum := sha256.Sum256(readOnly(t.material))
	if e := c.hit(shard, slot, t.ID, now); e != nil && subtle.ConstantTimeCompare(e.sum[:], sum[:]) == 1 {
		return e.key, e, cacheHit, nil // no lock taken
	}
	if e := c.get(shard, t.ID, now, 0); e != nil {
		if e.verified && subtle.ConstantTimeCompare(e.sum[:], sum[:]) == 1 {
			return e.key, e, cacheHit, nil
		}
		// Another secret than the one verified, or an entry made by a
		// failed lookup: the full comparison, as uncached, minus the store.
		answer := cacheHit
		if !e.verified {
			answer = cacheNegative
		}
		if err := d.check(t, e.key); err != nil {
			if e.verified {
				c.probe(ctx, shard, e, t.ID, now, get)
			}
			return nil, nil, answer, err
		}
		if !e.verified { // the right secret after a wrong one
			c.upgrade(shard, t.ID, e, sum, checkOf(t))
		}
		return e.key, e, answer, nil
	}

	k, epoch, err := c.load(ctx, shard, t.ID, get)
	switch {
	case errors.Is(err, ErrNotFound):
		k = nil
	case err != nil:
		if c.stale > 0 {
			if e := c.staleEntry(shard, t.ID, now); e != nil && e.verified && subtle.ConstantTimeCompare(e.sum[:], sum[:]) == 1 {
				return e.key, e, cacheStale, nil
			}
		}
		return nil, nil, cacheMiss, fmt.Errorf("apikey: lookup: %w: %w", ErrUnavailable, err)
	}
	if err := d.check(t, k); err != nil {
		// An unknown id and a wrong secret are remembered alike, so that
		// both cost one store query per NegativeTTL.
		if errors.Is(err, ErrInvalid) && c.negTTL > 0 {
			e := &cacheEntry{fetched: now.UnixNano()}
			id := t.ID
			if k != nil && k.ID == t.ID {
				e.key, id = k, k.ID
			}
			c.put(shard, id, e, epoch)
		}
		return nil, nil, cacheMiss, err
	}
	e := &cacheEntry{key: k, sum: sum, verified: true, check: checkOf(t), fetched: now.UnixNano()}
	c.put(shard, k.ID, e, epoch)
	return k, e, cacheMiss, nil
}
