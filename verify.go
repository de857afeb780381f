package apikey

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// Verify checks a token and returns its key. It fails with ErrMalformed,
// ErrInvalid, ErrRevoked, ErrExpired, ErrDisabled, ErrPaused or
// ErrSuspended (the key's customer is suspended), checked in that order.
// ErrInvalid covers an unknown id, a wrong secret and a key issued under
// another of the accepted prefixes alike, at the same cost, store queries
// included. It fails with an error wrapping ErrUnavailable when the store
// or the hasher failed, which is never a verdict on the key. It never
// returns a nil key without an error.
//
// When the customer's scope ceiling excludes some of the key's scopes, the
// returned key holds only the scopes within it.
//
// The returned key is shared. With the cache on, it is the cached record,
// returned to every verification of the same key until the entry is
// replaced, so that a hit allocates nothing. Treat it as read-only. Call
// Clone for a copy you may change. (Changing it would change what every
// other request sees, until the entry expires.)
//
// A successful verification records a use for the next last-used flush.
// It never writes to the store itself.
//
// Verify knows no client address: a key restricted to IP ranges is
// refused with ErrIPNotAllowed (see VerifyFrom).
func (m *Manager) Verify(ctx context.Context, token string) (*Key, error) {
	k, _, err := m.verifyKey(ctx, token, nil)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// verifyKey is Verify, also returning the time it read from the clock.
// On a refusal for the state of a key whose secret verified (ErrRevoked,
// ErrExpired, ErrDisabled, ErrPaused or ErrSuspended), it also returns the
// key, so that the refusal is counted for it.
func (m *Manager) verifyKey(ctx context.Context, token string, from *origin) (*Key, time.Time, error) {
	var v verification
	m.verifyRequest(ctx, token, from, &v)
	return v.key, v.now, v.err
}

// verifyRequest is verifyKey, writing the whole verification into v: its
// key is set as verifyKey returns it, and its customer is the record the
// verification used (nil without customer records).
func (m *Manager) verifyRequest(ctx context.Context, token string, from *origin, v *verification) {
	var start time.Time
	if m.metrics != nil {
		start = time.Now()
	}
	m.verify(ctx, token, start, from, v)
	if v.err == nil && v.key == nil { // unreachable: a last defence for the contract
		v.err = fmt.Errorf("apikey: verify: %w: no key and no error", ErrUnavailable)
	}
	if m.metrics != nil {
		m.metrics.Verified(outcomeOf(v.err), v.cache, time.Since(start))
	}
	if m.events.log != nil {
		m.events.verify(ctx, v.key, v.id, v.now, v.err)
	}
	switch v.err {
	case nil, ErrRevoked, ErrExpired, ErrDisabled, ErrPaused, ErrSuspended:
	default:
		v.key = nil
	}
}

// verification is what verify found out about one token.
type verification struct {
	key    *Key        // the key; with err, set only for a refusal for its state
	id     string      // the key id the token names, once it parsed
	prefix string      // the token's prefix, once it parsed
	now    time.Time   // the clock reading; zero when the token did not parse
	cache  string      // how the cache answered (see cacheHit)
	entry  *cacheEntry // the cache entry that answered, if any
	cust   *Customer   // the key's customer record, once admit read it
	err    error
}

// verify is the verification pipeline, one stage after the other. The
// cache answers a token it has verified, byte for byte, or it does not.
// The token is parsed. Its key is loaded through the cache, which checks
// the digest and remembers the answer. The key's state and customer decide.
// start, when not zero, is a reading of time.Now to use instead of reading
// the clock again, if the Manager's clock is time.Now. from is where the
// request came from (nil: unknown). The verification is written into v.
func (m *Manager) verify(ctx context.Context, token string, start time.Time, from *origin, v *verification) {
	if len(token) > MaxTokenLength {
		*v = verification{cache: cacheNone, err: ErrMalformed}
		return
	}
	clk := clock{start: start, now: m.reqNow, real: m.realClock}
	if e, now := m.cache.quick(token, &m.format, &clk); e != nil {
		*v = verification{key: e.key, id: e.key.ID, prefix: e.key.Prefix, now: now, cache: cacheHit, entry: e}
		m.admit(ctx, v, from)
		return
	}
	t, err := m.format.Parse(token)
	if err != nil {
		*v = verification{cache: cacheNone, err: err}
		return
	}
	*v = verification{id: t.ID, prefix: t.Prefix, now: clk.read()}
	if v.key, v.entry, v.cache, v.err = m.cache.lookup(ctx, t, v.now, m.store.Get, &m.digests); v.err != nil {
		return
	}
	m.admit(ctx, v, from)
}

// admit decides v, whose key's digest matched, by the key's state and
// its customer, and records the use of an admitted key.
func (m *Manager) admit(ctx context.Context, v *verification, from *origin) {
	k, now := v.key, v.now
	switch {
	case k.Prefix != v.prefix: // a key verifies only under its own prefix
		v.key, v.err = nil, ErrInvalid
		return
	case k.Revoked():
		v.err = ErrRevoked
	case k.Expired(now):
		v.err = ErrExpired
	case k.Disabled:
		v.err = ErrDisabled
	case k.Paused:
		v.err = ErrPaused
	}
	if v.err != nil {
		return
	}
	if m.custs != nil {
		c, err := m.custs.lookupFor(ctx, v.entry, k, now)
		v.cust = c
		switch {
		case err != nil:
			v.err = err
			return
		case c.Suspended:
			v.err = ErrSuspended
			return
		case !within(k, c) || !confined(k, c):
			v.key = narrowed(v.entry, k, c)
		}
	}
	if ips := v.key.AllowedIPs; len(ips) != 0 && !from.allows(ips) {
		v.err = ErrIPNotAllowed // spends nothing, records no use
		return
	}
	m.usage.recordUse(v.entry, k.ID, now)
	return
}

// VerifyFrom is Verify for a request from the client address addr, as
// the caller found it (for example with an ipallow.Proxies): a key or
// customer restricted to IP ranges that do not hold addr is refused with
// ErrIPNotAllowed, after every other check, and records no use. The zero
// addr is in no range.
func (m *Manager) VerifyFrom(ctx context.Context, token string, addr netip.Addr) (*Key, error) {
	k, _, err := m.verifyKey(ctx, token, &origin{addr: addr})
	if err != nil {
		return nil, err
	}
	return k, nil
}
