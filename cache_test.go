package apikey_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

func TestCacheHitNeedsNoStore(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{})
	token, _ := issue(t, m, apikey.IssueParams{})
	_, err := m.Verify(context.Background(), token)
	require.NoError(t, err)
	before := spy.calls.Load()
	for range 100 {
		_, err := m.Verify(context.Background(), token)
		require.NoError(t, err)
	}
	assert.Equal(t, before, spy.calls.Load())

	// A wrong secret for a cached id is still refused.
	tok, err := m.Format().Parse(token)
	require.NoError(t, err)
	_, err = m.Verify(context.Background(), rebuild(t, m.Format(), tok.ID, ""))
	assert.Equal(t, apikey.ErrInvalid, err)
}

// A cache hit returns the cached record itself (no allocation): callers
// share it read-only, and Clone gives them a copy of their own.
func TestCacheHitSharesTheRecord(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	token, _ := issue(t, m, apikey.IssueParams{Scopes: []string{"read"}})
	k, err := m.Verify(context.Background(), token)
	require.NoError(t, err)
	k2, err := m.Verify(context.Background(), token)
	require.NoError(t, err)
	assert.Same(t, k, k2, "a hit returns the shared record")

	c := k2.Clone()
	c.Scopes[0] = "admin"
	k3, err := m.Verify(context.Background(), token)
	require.NoError(t, err)
	assert.Equal(t, []string{"read"}, k3.Scopes, "a clone is the caller's own")
}

func TestNegativeCache(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	c := newClock()
	m := newManager(t, spy, apikey.Options{Now: c.Now})
	unknown, _ := m.Format().New()
	before := spy.calls.Load()
	for range 10 {
		_, err := m.Verify(context.Background(), unknown)
		assert.Equal(t, apikey.ErrInvalid, err)
	}
	assert.Equal(t, before+1, spy.calls.Load(), "an unknown id is asked once per negative TTL")
	c.Add(apikey.DefaultNegativeTTL)
	_, err := m.Verify(context.Background(), unknown)
	assert.Equal(t, apikey.ErrInvalid, err)
	assert.Equal(t, before+2, spy.calls.Load())
}

// Revocation through another Manager (another process) is noticed within
// the cache TTL; through this one, at once.
func TestRevocationBound(t *testing.T) {
	t.Parallel()
	store := memstore.New()
	c := newClock()
	here := newManager(t, store, apikey.Options{Now: c.Now, CacheTTL: 5 * time.Second})
	there := newManager(t, store, apikey.Options{Now: c.Now})
	token, k := issue(t, here, apikey.IssueParams{})
	_, err := here.Verify(context.Background(), token)
	require.NoError(t, err)

	require.NoError(t, there.Revoke(context.Background(), k.ID))
	c.Add(5*time.Second - time.Nanosecond)
	_, err = here.Verify(context.Background(), token)
	assert.NoError(t, err, "within the TTL the other instance's revocation may go unnoticed")
	c.Add(time.Nanosecond)
	_, err = here.Verify(context.Background(), token)
	assert.ErrorIs(t, err, apikey.ErrRevoked, "at the TTL it is noticed")

	token2, k2 := issue(t, here, apikey.IssueParams{})
	_, err = here.Verify(context.Background(), token2)
	require.NoError(t, err)
	require.NoError(t, there.Revoke(context.Background(), k2.ID))
	here.Invalidate(k2.ID) // e.g. on a pub/sub message
	_, err = here.Verify(context.Background(), token2)
	assert.ErrorIs(t, err, apikey.ErrRevoked, "Invalidate makes it effective at once")
}

// Once Revoke has returned, no later verification on that instance
// succeeds, while many goroutines verify concurrently.
func TestRevokeIsImmediateUnderConcurrency(t *testing.T) {
	t.Parallel()
	for round := range 20 {
		store := spinSpy(round % 4 * 20_000)
		m := newManager(t, store, apikey.Options{})
		tokens := make([]string, 4)
		ids := make([]string, 4)
		for i := range tokens {
			var k *apikey.Key
			tokens[i], k = issue(t, m, apikey.IssueParams{})
			ids[i] = k.ID
		}
		var revokedAt [4]atomic.Int64 // sequence number after Revoke returned
		seq := newCounter()
		var wg sync.WaitGroup
		stop := make(chan struct{})
		var violations atomic.Int64
		for w := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					n := (w + i) % 4
					start := seq.add()
					rev := revokedAt[n].Load()
					_, err := m.Verify(context.Background(), tokens[n])
					if err == nil && rev != 0 && rev < start {
						violations.Add(1)
					}
				}
			})
		}
		for i := range ids {
			seq.await(32)
			require.NoError(t, m.Revoke(context.Background(), ids[i]))
			revokedAt[i].Store(seq.add())
		}
		seq.await(128)
		close(stop)
		wg.Wait()
		require.Zero(t, violations.Load(), "a verification that started after Revoke returned succeeded")
	}
}

// counter counts the operations of worker goroutines and lets a test wait
// until they have made progress, so that what follows lands among
// operations in flight, without sleeping or spinning.
type counter struct {
	n    atomic.Int64
	tick chan struct{}
}

func newCounter() *counter { return &counter{tick: make(chan struct{}, 1)} }

// add counts one operation and returns the count.
func (c *counter) add() int64 {
	v := c.n.Add(1)
	select {
	case c.tick <- struct{}{}:
	default:
	}
	return v
}

// await returns once n more operations have been counted.
func (c *counter) await(n int64) {
	for target := c.n.Load() + n; c.n.Load() < target; {
		<-c.tick
	}
}

// spinSpy returns a spy that computes for a while in Get, widening the
// window between a lookup and its use under real concurrency. (It neither
// sleeps nor yields: a yielding goroutine can wait long behind busy ones.)
func spinSpy(spins int) *spyStore {
	return spyGet(func(ctx context.Context, id string, next func(context.Context, string) (*apikey.Key, error)) (*apikey.Key, error) {
		x := uint64(len(id))
		for i := range spins {
			x = x*6364136223846793005 + uint64(i)
		}
		spinSink.Store(x)
		return next(ctx, id)
	})
}

var spinSink atomic.Uint64

// All 50 verifications miss the cache at once; the store's Get returns only
// once every one of them waits, and they all share that one query.
func TestConcurrentMissesCollapse(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		store := slowSpy(50 * time.Millisecond)
		m := newManager(t, store, apikey.Options{})
		token, _ := issue(t, m, apikey.IssueParams{})
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				_, err := m.Verify(context.Background(), token)
				assert.NoError(t, err)
			})
		}
		wg.Wait()
		assert.EqualValues(t, 1, store.gets.Load(), "concurrent misses for one id share one query")
	})
}

func TestCacheIsBounded(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{CacheMaxEntries: 2})
	var tokens []string
	for range 3 {
		token, _ := issue(t, m, apikey.IssueParams{})
		tokens = append(tokens, token)
		_, err := m.Verify(context.Background(), token)
		require.NoError(t, err)
	}
	before := spy.calls.Load()
	for _, token := range tokens {
		_, err := m.Verify(context.Background(), token)
		require.NoError(t, err)
	}
	assert.GreaterOrEqual(t, spy.calls.Load()-before, int64(1), "one of three keys was evicted")
}

func TestStaleIfError(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	c := newClock()
	m := newManager(t, spy, apikey.Options{Now: c.Now, CacheTTL: time.Second, CacheStaleIfError: time.Minute})
	seen, _ := issue(t, m, apikey.IssueParams{})
	unseen, _ := issue(t, m, apikey.IssueParams{})
	_, err := m.Verify(context.Background(), seen)
	require.NoError(t, err)

	spy.failWith(errors.New("database down"))
	c.Add(30 * time.Second)
	_, err = m.Verify(context.Background(), seen)
	assert.NoError(t, err, "a key verified within the window keeps working while the store fails")
	_, err = m.Verify(context.Background(), unseen)
	assert.ErrorIs(t, err, apikey.ErrUnavailable, "a key not seen gets ErrUnavailable")
	c.Add(31 * time.Second)
	_, err = m.Verify(context.Background(), seen)
	assert.ErrorIs(t, err, apikey.ErrUnavailable, "past the window, the store's failure shows")
}

// Fault injection: a store that stalls past the request's deadline makes
// verification fail with ErrUnavailable within the deadline, and leaves no
// goroutine behind.
//
// It runs in a synctest bubble: the deadline passes in fake time, and the
// bubble fails the test if a goroutine it started is left blocked.
func TestStalledStoreHonoursDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := spyGet(func(ctx context.Context, _ string, _ func(context.Context, string) (*apikey.Key, error)) (*apikey.Key, error) {
			<-ctx.Done() // a store that hangs until the caller gives up
			return nil, ctx.Err()
		})
		m := newManager(t, store, apikey.Options{})
		token, _ := issue(t, m, apikey.IssueParams{})
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				start := time.Now()
				_, err := m.Verify(ctx, token)
				assert.ErrorIs(t, err, apikey.ErrUnavailable)
				assert.Equal(t, 50*time.Millisecond, time.Since(start), "it returns at the deadline")
			})
		}
		wg.Wait()
		synctest.Wait() // goroutines the Manager started for these calls are done or stuck
	})
}

// Fault injection: corrupt rows never authenticate.
func TestCorruptRowsNeverAuthenticate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		corrupt func(k *apikey.Key)
		want    error
	}{
		{"empty hash", func(k *apikey.Key) { k.Hash = nil }, apikey.ErrInvalid},
		{"short hash", func(k *apikey.Key) { k.Hash = k.Hash[:7] }, apikey.ErrInvalid},
		{"flipped hash", func(k *apikey.Key) { k.Hash[0] ^= 1 }, apikey.ErrInvalid},
		{"unknown hash version", func(k *apikey.Key) { k.HashVersion = "md5" }, apikey.ErrUnavailable},
		{"another id", func(k *apikey.Key) { k.ID = "AAAAAAAAAAAAAAAA" }, apikey.ErrInvalid},
		{"nil record", nil, apikey.ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var on atomic.Bool
			store := spyGet(func(ctx context.Context, id string, next func(context.Context, string) (*apikey.Key, error)) (*apikey.Key, error) {
				k, err := next(ctx, id)
				if err != nil || !on.Load() {
					return k, err
				}
				if tc.corrupt == nil {
					return nil, nil
				}
				tc.corrupt(k)
				return k, nil
			})
			m := newManager(t, store, apikey.Options{})
			token, _ := issue(t, m, apikey.IssueParams{})
			on.Store(true)
			_, err := m.Verify(context.Background(), token)
			assert.ErrorIs(t, err, tc.want)
		})
	}
}

// A cache hit skips the base62 check and the CRC-32 only for the very token
// that verified: a change to its checksum, its prefix or a character of its
// material is refused as before, never answered from the entry.
func TestCacheHitOnlyForTheVerifiedToken(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{Prefixes: []string{"other"}})
	token, _ := issue(t, m, apikey.IssueParams{})
	ctx := context.Background()
	for range 3 {
		_, err := m.Verify(ctx, token)
		require.NoError(t, err)
	}
	prefix := m.Format().Prefix()
	swap := func(s string, i int) string {
		c := byte('0')
		if s[i] == c {
			c = '1'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	n := len(token)
	for name, bad := range map[string]string{
		"checksum":       swap(token, n-1),
		"checksum range": token[:n-apikey.ChecksumLength] + "zzzzzz",
		"not base62":     token[:n-1] + "-",
		"secret":         swap(token, n-apikey.ChecksumLength-1),
		"material !":     token[:len(prefix)+1+apikey.IDLength] + "!" + token[len(prefix)+2+apikey.IDLength:],
		"prefix":         "other" + token[len(prefix):],
	} {
		_, err := m.Verify(ctx, bad)
		assert.ErrorIs(t, err, apikey.ErrMalformed, name)
	}
	_, err := m.Verify(ctx, token)
	require.NoError(t, err)
}

// The documented trade-off of CacheStaleIfError: while the store fails, a
// key revoked through another Manager without a Notifier keeps working for
// up to CacheTTL+CacheStaleIfError, and no longer.
func TestStaleIfErrorServesRevokedThroughAnotherManager(t *testing.T) {
	t.Parallel()
	c := newClock()
	base := memstore.New()
	b := &spyStore{Store: base}
	ma := newManager(t, base, apikey.Options{Now: c.Now})
	mb := newManager(t, b, apikey.Options{Now: c.Now, CacheTTL: 5 * time.Second, CacheStaleIfError: time.Minute})
	ctx := context.Background()
	tok, k := issue(t, ma, apikey.IssueParams{})
	_, err := mb.Verify(ctx, tok)
	require.NoError(t, err)
	require.NoError(t, ma.Revoke(ctx, k.ID))
	c.Add(10 * time.Second)
	b.failWith(errors.New("store down"))
	_, err = mb.Verify(ctx, tok)
	require.NoError(t, err, "within CacheTTL+CacheStaleIfError, a failing store lets the stale entry answer")
	c.Add(time.Minute)
	_, err = mb.Verify(ctx, tok)
	require.ErrorIs(t, err, apikey.ErrUnavailable)
}

// Wrong secrets cost the same store queries whether or not the cache holds
// the id: one per id per negative-cache period, so that the store's load
// never tells an attacker which ids were used recently. The right secret
// is never refused because of them.
func TestWrongSecretsCostTheSameStoreQueriesCachedOrNot(t *testing.T) {
	t.Parallel()
	c := newClock()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{Now: c.Now, CacheTTL: time.Hour, CacheNegativeTTL: time.Second})
	ctx := context.Background()
	cachedToken, cached := issue(t, m, apikey.IssueParams{})
	_, cold := issue(t, m, apikey.IssueParams{})
	_, err := m.Verify(ctx, cachedToken) // cached is now in the cache, cold is not
	require.NoError(t, err)

	queries := func(id string, secrets int, sameSecret bool) int64 {
		before := spy.calls.Load()
		wrong := rebuild(t, m.Format(), id, "")
		for range secrets {
			if !sameSecret {
				wrong = rebuild(t, m.Format(), id, "")
			}
			_, err := m.Verify(ctx, wrong)
			require.ErrorIs(t, err, apikey.ErrInvalid)
		}
		return spy.calls.Load() - before
	}
	unknown := rebuild(t, m.Format(), strings.Repeat("Z", apikey.IDLength), "")
	unknownID, err := m.Format().Parse(unknown)
	require.NoError(t, err)

	for _, sameSecret := range []bool{true, false} {
		c.Add(2 * time.Second) // a new negative-cache period
		got := map[string]int64{
			"cached":  queries(cached.ID, 20, sameSecret),
			"cold":    queries(cold.ID, 20, sameSecret),
			"unknown": queries(unknownID.ID, 20, sameSecret),
		}
		assert.Equal(t, map[string]int64{"cached": 1, "cold": 1, "unknown": 1}, got, "same secret: %v", sameSecret)
	}

	_, err = m.Verify(ctx, cachedToken)
	assert.NoError(t, err, "the right secret after wrong ones")
}

// No byte of a request's token outlives the request in the cache: after a
// wrong secret then the right one for the same id (which re-keys the
// entry), the token's memory is collected.
func TestCacheKeepsNoPartOfAToken(t *testing.T) {
	m := newManager(t, newSpy(), apikey.Options{CacheTTL: time.Hour, CacheNegativeTTL: time.Hour})
	ctx := context.Background()
	token, k := issue(t, m, apikey.IssueParams{})
	tok, err := m.Format().Parse(token)
	require.NoError(t, err)
	var collected atomic.Int32
	verifyCopy := func(s string) {
		buf := strings.Clone(s) // the request's own memory
		runtime.AddCleanup(unsafe.StringData(buf), func(c *atomic.Int32) { c.Add(1) }, &collected)
		m.Verify(ctx, buf)
	}
	verifyCopy(rebuild(t, m.Format(), k.ID, "")) // a wrong secret first: a negative entry
	verifyCopy(rebuild(t, m.Format(), tok.ID, tok.Secret))
	_, err = m.Verify(ctx, token)
	require.NoError(t, err)
	for range 20 {
		runtime.GC()
		if collected.Load() == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	assert.EqualValues(t, 2, collected.Load(), "a token's memory is still referenced after its request")
}

// A clock stepped back (an NTP correction, a VM resumed) must not stretch
// the revocation bound: an entry read "in the future" of the clock is
// no fresher than one read TTL ago, so it is read again.
func TestRevocationBoundSurvivesAClockSteppedBack(t *testing.T) {
	t.Parallel()
	store := memstore.New()
	c := newClock()
	here := newManager(t, store, apikey.Options{Now: c.Now, CacheTTL: 5 * time.Second})
	there := newManager(t, store, apikey.Options{Now: c.Now})
	token, k := issue(t, here, apikey.IssueParams{})
	_, err := here.Verify(context.Background(), token)
	require.NoError(t, err)

	c.Add(-time.Hour)
	require.NoError(t, there.Revoke(context.Background(), k.ID))
	c.Add(5 * time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, err := here.Verify(context.Background(), token)
			assert.ErrorIs(t, err, apikey.ErrRevoked, "a TTL after the revocation, by any reading of the clock")
		})
	}
	wg.Wait()
}

// A clock stepped back does not silence the store query a wrong secret for
// a cached id costs: the store's load still never tells whether an id is
// cached.
func TestWrongSecretsCostAStoreQueryAfterAClockSteppedBack(t *testing.T) {
	t.Parallel()
	c := newClock()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{Now: c.Now, CacheTTL: time.Hour, CacheNegativeTTL: time.Second})
	ctx := context.Background()
	token, k := issue(t, m, apikey.IssueParams{})
	_, err := m.Verify(ctx, token)
	require.NoError(t, err)
	c.Add(time.Minute)
	_, err = m.Verify(ctx, rebuild(t, m.Format(), k.ID, ""))
	require.ErrorIs(t, err, apikey.ErrInvalid)

	c.Add(-30 * time.Second) // still within the entry's TTL
	before := spy.calls.Load()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, err := m.Verify(ctx, rebuild(t, m.Format(), k.ID, ""))
			assert.ErrorIs(t, err, apikey.ErrInvalid)
		})
	}
	wg.Wait()
	assert.Equal(t, int64(1), spy.calls.Load()-before, "one store query per negative TTL, as for an id not cached")
}

// An entry that a concurrent request fetched after this one read the
// clock is younger than the request: when the store fails, it answers.
func TestStaleIfErrorServesAnEntryFetchedDuringTheRequest(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	c := newClock()
	var m *apikey.Manager
	var armed, frozen atomic.Bool
	var token string
	var at time.Time // the request's clock reading
	now := func() time.Time {
		if armed.CompareAndSwap(true, false) {
			at = c.Now()
			c.Add(time.Millisecond)
			_, err := m.Verify(context.Background(), token) // a later request refreshes the entry
			require.NoError(t, err)
			spy.failWith(errors.New("database down"))
			frozen.Store(true)
		}
		if frozen.Load() {
			return at
		}
		return c.Now()
	}
	m = newManager(t, spy, apikey.Options{Now: now, CacheTTL: time.Second, CacheStaleIfError: time.Minute})
	token, _ = issue(t, m, apikey.IssueParams{})
	_, err := m.Verify(context.Background(), token)
	require.NoError(t, err)
	c.Add(2 * time.Second) // the entry expired
	armed.Store(true)
	_, err = m.Verify(context.Background(), token)
	assert.NoError(t, err, "the entry fetched during the request answers while the store fails")
}
