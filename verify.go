package apikey

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"
)

// Verify checks a token and returns its key. It fails with ErrMalformed,
// ErrInvalid (unknown id and wrong secret alike, at the same cost),
// ErrRevoked or ErrExpired, checked in that order, or with an error
// wrapping ErrUnavailable when the store or the hasher failed, which is
// never a verdict on the key. The returned key is the caller's copy.
//
// A successful verification records a use for the next last-used flush;
// it never writes to the store itself.
func (m *Manager) Verify(ctx context.Context, token string) (*Key, error) {
	k, id, now, err := m.verify(ctx, token)
	if m.onEvent != nil || m.log != nil {
		if now.IsZero() {
			now = m.now()
		}
		e := Event{Type: EventVerify, KeyID: id, Err: err, Time: now}
		if k != nil {
			e.Owner = k.Owner
		}
		m.emit(ctx, e)
	}
	if err != nil {
		return nil, err
	}
	return k, nil
}

// verify returns the key of token, the key id, and the time it read from
// the clock (zero when the token did not parse: garbage costs no clock
// reading).
func (m *Manager) verify(ctx context.Context, token string) (*Key, string, time.Time, error) {
	if len(token) > MaxTokenLength {
		return nil, "", time.Time{}, ErrMalformed
	}
	t, err := m.format.Parse(token)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	now := m.now()
	k, err := m.lookup(ctx, t, now)
	switch {
	case err != nil:
		return nil, t.ID, now, err
	case k.Revoked(now):
		return k, k.ID, now, ErrRevoked
	case k.Expired(now):
		return k, k.ID, now, ErrExpired
	}
	m.usage.record(k.ID, now)
	return k, k.ID, now, nil
}

// check compares t's material with the digest of k (the dummy digest when
// k is nil) and reports ErrInvalid on a mismatch.
func (m *Manager) check(t Token, k *Key) error {
	digest, version := m.dummyDigest, m.dummyVersion
	if k != nil {
		digest, version = k.Hash, k.HashVersion
	}
	buf, _ := m.scratch.Get().(*[MaxTokenLength]byte)
	if buf == nil {
		buf = new([MaxTokenLength]byte)
	}
	ok, err := m.hasher.Compare(append(buf[:0], t.material...), digest, version)
	m.scratch.Put(buf)
	switch {
	case err != nil:
		return fmt.Errorf("apikey: compare: %w: %w", ErrUnavailable, err)
	case !ok || k == nil || k.ID != t.ID:
		return ErrInvalid
	}
	return nil
}

// lookup finds the key of t and checks its secret, through the cache.
func (m *Manager) lookup(ctx context.Context, t Token, now time.Time) (*Key, error) {
	c := m.cache
	if c == nil {
		k, err := safeGet(ctx, m.store.Get, t.ID)
		return m.checkFetched(t, k, err)
	}
	var buf [MaxTokenLength]byte
	sum := sha256.Sum256(append(buf[:0], t.material...))
	if e, ok := c.get(t.ID, now, 0); ok {
		if e.key != nil && subtle.ConstantTimeCompare(e.sum[:], sum[:]) == 1 {
			return e.key.Clone(), nil
		}
		return nil, m.check(t, e.key) // a wrong secret (or an unknown id) costs what it costs uncached
	}
	k, epoch, err := c.load(ctx, t.ID, m.store.Get)
	if err != nil && !errors.Is(err, ErrNotFound) && c.stale > 0 {
		if e, ok := c.get(t.ID, now, c.stale); ok && e.key != nil && subtle.ConstantTimeCompare(e.sum[:], sum[:]) == 1 {
			return e.key.Clone(), nil
		}
	}
	notFound := errors.Is(err, ErrNotFound)
	k, err = m.checkFetched(t, k, err)
	switch {
	case err == nil:
		c.put(t.ID, cacheEntry{key: k.Clone(), sum: sum, fetched: now}, epoch)
	case notFound && c.negTTL > 0:
		c.put(t.ID, cacheEntry{fetched: now}, epoch)
	}
	return k, err
}

// checkFetched turns the result of a store Get into a verified key or an
// error: not found and a wrong secret both give ErrInvalid after the same
// hashing work; any other store error gives ErrUnavailable.
func (m *Manager) checkFetched(t Token, k *Key, err error) (*Key, error) {
	switch {
	case errors.Is(err, ErrNotFound):
		if err := m.check(t, nil); err != nil && !errors.Is(err, ErrInvalid) {
			return nil, err
		}
		return nil, ErrInvalid
	case err != nil:
		return nil, fmt.Errorf("apikey: lookup: %w: %w", ErrUnavailable, err)
	}
	if err := m.check(t, k); err != nil {
		return nil, err
	}
	return k, nil
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
