package apikey

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"
	"unsafe"
)

// How the cache answered a verification, as reported to Metrics.Verified.
const (
	cacheHit      = "hit"      // a verified entry answered
	cacheMiss     = "miss"     // the store was asked
	cacheNegative = "negative" // a remembered failed lookup answered
	cacheStale    = "stale"    // the store failed and a stale entry answered
	cacheOff      = "off"      // the cache is disabled
	cacheNone     = "none"     // refused before any lookup (malformed)
)

// Verify checks a token and returns its key. It fails with ErrMalformed,
// ErrInvalid (unknown id, wrong secret and a key issued under another of
// the accepted prefixes alike, at the same cost, store queries included), ErrRevoked, ErrExpired, ErrDisabled, ErrPaused or
// ErrSuspended (the key's customer is suspended), checked in that order, or with an error wrapping ErrUnavailable when the store or
// the hasher failed, which is never a verdict on the key. It never returns
// a nil key without an error.
//
// When the customer's scope ceiling excludes some of the key's scopes, the
// returned key holds only the scopes within it.
//
// The returned key is shared: with the cache on, it is the cached record,
// returned to every verification of the same key until the entry is
// replaced, so that a hit allocates nothing. Treat it as read-only; call
// Clone for a copy you may change. (Changing it would change what every
// other request sees, until the entry expires.)
//
// A successful verification records a use for the next last-used flush;
// it never writes to the store itself.
func (m *Manager) Verify(ctx context.Context, token string) (*Key, error) {
	k, _, err := m.verifyKey(ctx, token)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// verifyKey is Verify, also returning the time it read from the clock
// and, on a refusal for the state of a key whose secret verified
// (ErrRevoked, ErrExpired, ErrDisabled, ErrPaused or ErrSuspended), the
// key, so that the refusal is counted for it.
func (m *Manager) verifyKey(ctx context.Context, token string) (*Key, time.Time, error) {
	var start time.Time
	if m.metrics != nil {
		start = time.Now()
	}
	k, id, now, cached, err := m.verify(ctx, token, start)
	if err == nil && k == nil { // unreachable: a last defence for the contract
		err = fmt.Errorf("apikey: verify: %w: no key and no error", ErrUnavailable)
	}
	if m.metrics != nil {
		m.metrics.Verified(outcomeOf(err), cached, time.Since(start))
	}
	if m.log != nil {
		m.emitVerify(ctx, k, id, now, err)
	}
	switch err {
	case nil:
		return k, now, nil
	case ErrRevoked, ErrExpired, ErrDisabled, ErrPaused, ErrSuspended:
		return k, now, err
	}
	return nil, now, err
}

// verify returns the key of token, the key id, the time it read from the
// clock (zero when the token did not parse: garbage costs no clock
// reading) and how the cache answered. start, when not zero, is a reading
// of time.Now to use instead of reading the clock again, if the Manager's
// clock is time.Now.
func (m *Manager) verify(ctx context.Context, token string, start time.Time) (*Key, string, time.Time, string, error) {
	if len(token) > MaxTokenLength {
		return nil, "", time.Time{}, cacheNone, ErrMalformed
	}
	var (
		t     Token
		e     *cacheEntry
		shard int
		now   time.Time
		k     *Key
	)
	cached := cacheHit
	if m.cache != nil {
		t, e, shard, now = m.quickHit(token, start)
	}
	if e != nil {
		k = e.key
	} else {
		var err error
		if t, err = m.format.Parse(token); err != nil {
			return nil, "", time.Time{}, cacheNone, err
		}
		now = start
		if now.IsZero() || !m.realClock {
			now = m.now()
		}
		var slot int
		shard, slot = locate(t.ID)
		if k, e, cached, err = m.lookup(ctx, t, shard, slot, now); err != nil {
			return nil, t.ID, now, cached, err
		}
	}
	switch {
	case k.Prefix != t.Prefix: // a key verifies only under its own prefix
		return nil, t.ID, now, cached, ErrInvalid
	case k.Revoked(now):
		return k, k.ID, now, cached, ErrRevoked
	case k.Expired(now):
		return k, k.ID, now, cached, ErrExpired
	case k.Disabled:
		return k, k.ID, now, cached, ErrDisabled
	case k.Paused:
		return k, k.ID, now, cached, ErrPaused
	}
	if m.custs != nil {
		c, err := m.custs.lookupFor(ctx, e, k, now)
		switch {
		case err != nil:
			return k, k.ID, now, cached, err
		case c.Suspended:
			return k, k.ID, now, cached, ErrSuspended
		case !within(k, c):
			k = narrowed(e, k, c)
		}
	}
	if !m.usage.fresh(k, now) {
		// A key verified many times a millisecond is recorded once per
		// millisecond, without touching the recorder's locks.
		if t := now.UnixNano(); e == nil || uint64(t-e.used.Load()) >= uint64(usageGranularity) {
			if e != nil {
				e.used.Store(t)
			}
			m.usage.record(shard, k.ID, now)
		}
	}
	return k, k.ID, now, cached, nil
}

// checkKnown marks cacheEntry.check as set.
const checkKnown = 1 << 32

// checkOf returns the cacheEntry.check of a parsed token.
func checkOf(t Token) uint64 {
	v, _ := decodeChecksum(t.raw[len(t.raw)-ChecksumLength:])
	return uint64(v) | checkKnown
}

// quickHit answers a token that is byte for byte one that verified and is
// still in the cache's hot table: the same prefix, checksum (the cached
// entry remembers it) and material (its SHA-256 is the entry's). Such a
// token is well formed, since the one that made the entry was parsed in
// full, so neither the base62 check nor the CRC-32 is repeated. Any other
// token gets nil, after no more than a lock-free probe of the hot table
// (the clock is read, and the material hashed, only for a token whose id
// and checksum match an entry), and takes the full path. The cache must be on.
func (m *Manager) quickHit(token string, start time.Time) (Token, *cacheEntry, int, time.Time) {
	c := m.cache
	f := &m.format
	prefix := f.prefix
	if f.more != nil {
		prefix = f.prefixOf(token)
	}
	p := len(prefix)
	if len(token) != p+1+IDLength+f.secretLen+ChecksumLength || p == 0 || token[:p] != prefix || token[p] != '_' {
		return Token{}, nil, 0, time.Time{}
	}
	n := len(token) - ChecksumLength
	want, ok := decodeChecksum(token[n:])
	if !ok {
		return Token{}, nil, 0, time.Time{}
	}
	material := token[p+1 : n]
	id := material[:IDLength]
	shard, slot := locate(id)
	e := c.shards[shard].hot[slot].Load()
	if e == nil || e.check != uint64(want)|checkKnown || e.key.ID != id || e.key.Prefix != prefix {
		return Token{}, nil, 0, time.Time{}
	}
	now := start
	if now.IsZero() || !m.realClock {
		now = m.now()
	}
	if now.Sub(e.fetched) >= c.ttl {
		return Token{}, nil, 0, time.Time{}
	}
	sum := sha256.Sum256(readOnly(material))
	if subtle.ConstantTimeCompare(e.sum[:], sum[:]) != 1 {
		return Token{}, nil, 0, time.Time{}
	}
	return Token{Prefix: prefix, ID: id, Secret: material[IDLength:], material: material, raw: token}, e, shard, now
}

// check compares t's material with the digest of k (the dummy digest when
// k is nil) and reports ErrInvalid on a mismatch.
func (m *Manager) check(t Token, k *Key) error {
	digest, version := m.dummyDigest, m.dummyVersion
	if k != nil {
		digest, version = k.Hash, k.HashVersion
	}
	switch h := m.hasher.(type) {
	case *hmacHasher: // the hashers of this package only read the material
		ok, err := h.Compare(readOnly(t.material), digest, version)
		return verdict(ok, err, t.ID, k)
	case sha256Hasher:
		ok, err := h.Compare(readOnly(t.material), digest, version)
		return verdict(ok, err, t.ID, k)
	}
	buf, _ := m.scratch.Get().(*[MaxTokenLength]byte)
	if buf == nil {
		buf = new([MaxTokenLength]byte)
	}
	ok, err := m.hasher.Compare(append(buf[:0], t.material...), digest, version)
	m.scratch.Put(buf)
	return verdict(ok, err, t.ID, k)
}

// readOnly returns the bytes of s without copying them, for a function
// that only reads its argument and keeps no reference to it.
func readOnly(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// verdict turns a Hasher's comparison of the material of a token of id
// with k's digest into check's answer.
func verdict(ok bool, err error, id string, k *Key) error {
	switch {
	case err != nil:
		return fmt.Errorf("apikey: compare: %w: %w", ErrUnavailable, err)
	case !ok || k == nil || k.ID != id:
		return ErrInvalid
	}
	return nil
}

// lookup finds the key of t and checks its secret, through the cache, and
// says how the cache answered. It returns a key or an error, never both
// nil, and the cache entry that answered on a hit.
func (m *Manager) lookup(ctx context.Context, t Token, shard, slot int, now time.Time) (*Key, *cacheEntry, string, error) {
	c := m.cache
	if c == nil {
		k, err := safeGet(ctx, m.store.Get, t.ID)
		if errors.Is(err, ErrNotFound) {
			k = nil
		} else if err != nil {
			return nil, nil, cacheOff, fmt.Errorf("apikey: lookup: %w: %w", ErrUnavailable, err)
		}
		if err := m.check(t, k); err != nil {
			return nil, nil, cacheOff, err
		}
		return k, nil, cacheOff, nil
	}

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
		if err := m.check(t, e.key); err != nil {
			if e.verified {
				c.probe(ctx, shard, e, t.ID, now, m.store.Get)
			}
			return nil, nil, answer, err
		}
		if !e.verified { // the right secret after a wrong one
			c.upgrade(shard, t.ID, e, sum, checkOf(t))
		}
		return e.key, e, answer, nil
	}

	k, epoch, err := c.load(ctx, shard, t.ID, m.store.Get)
	switch {
	case errors.Is(err, ErrNotFound):
		k = nil
	case err != nil:
		if c.stale > 0 {
			if e := c.get(shard, t.ID, now, c.stale); e != nil && e.verified && subtle.ConstantTimeCompare(e.sum[:], sum[:]) == 1 {
				return e.key, e, cacheStale, nil
			}
		}
		return nil, nil, cacheMiss, fmt.Errorf("apikey: lookup: %w: %w", ErrUnavailable, err)
	}
	if err := m.check(t, k); err != nil {
		// An unknown id and a wrong secret are remembered alike, so that
		// both cost one store query per NegativeTTL.
		if errors.Is(err, ErrInvalid) && c.negTTL > 0 {
			e := &cacheEntry{fetched: now}
			id := t.ID
			if k != nil && k.ID == t.ID {
				e.key, id = k, k.ID
			}
			c.put(shard, id, e, epoch)
		}
		return nil, nil, cacheMiss, err
	}
	e := &cacheEntry{key: k, sum: sum, verified: true, check: checkOf(t), fetched: now}
	c.put(shard, k.ID, e, epoch)
	return k, e, cacheMiss, nil
}

// outcomeOf names the outcome of a verification for Metrics.Verified.
func outcomeOf(err error) string {
	switch err {
	case nil:
		return "ok"
	case ErrMalformed:
		return "malformed"
	case ErrInvalid:
		return "invalid"
	case ErrExpired:
		return "expired"
	case ErrRevoked:
		return "revoked"
	case ErrDisabled:
		return "disabled"
	case ErrPaused:
		return "paused"
	case ErrSuspended:
		return "suspended"
	}
	switch {
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrRevoked):
		return "revoked"
	case errors.Is(err, ErrDisabled):
		return "disabled"
	case errors.Is(err, ErrPaused):
		return "paused"
	case errors.Is(err, ErrSuspended):
		return "suspended"
	}
	return "unavailable"
}

// safeGet calls the store, turning a panic into an error so that a broken
// store can never let a request through.
func safeGet(ctx context.Context, get func(context.Context, string) (*Key, error), id string) (k *Key, err error) {
	defer func() {
		if r := recover(); r != nil {
			k, err = nil, panicError{r}
		}
	}()
	k, err = get(ctx, id)
	if err == nil && k == nil {
		err = errors.New("store returned no key and no error")
	}
	return k, err
}

// panicError carries a recovered panic as an error.
type panicError struct{ v any }

// Error describes the panic.
func (p panicError) Error() string { return fmt.Sprintf("panic: %v", p.v) }

// narrowedKey is a key with only the scopes within the ceiling of the
// customer record c, kept by the cache entry of the key so that a hit
// allocates nothing while the record is the same.
type narrowedKey struct {
	c *Customer
	k *Key
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
