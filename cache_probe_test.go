package apikey_test

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

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
