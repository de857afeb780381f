package apikey_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memstore"
)

// A customer's plan is every one of his keys' plan: all spend one budget
// from it, a key cannot name another, and a change of plan applies to
// every key at the next request.
func TestCustomerPlanAppliesToEveryKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLimitEnvOver(t, newCustomerStore(), apikey.Options{}, apikey.MiddlewareOptions{})
	var ran bool
	h := e.handler(&ran)

	setCustomer(t, e.m, "ann", func(c *apikey.Customer) { c.Plan = "free" })
	a, ka := issue(t, e.m, apikey.IssueParams{Owner: "ann"})
	b, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"})
	_, _, err := e.m.Issue(ctx, apikey.IssueParams{Owner: "ann", Plan: "pro"})
	assertInputError(t, err, "plan", "a key chose a plan other than its customer's")
	_, err = e.m.Update(ctx, ka.ID, func(k *apikey.Key) error { k.Plan = "pro"; return nil })
	assertInputError(t, err, "plan", "an Update gave a key a plan other than its customer's")

	require.Equal(t, 200, hit(h, bearer(a)).Code)
	rec := hit(h, bearer(b))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";r=1;t=43200`, rec.Header().Get("RateLimit"), "one budget for both keys")

	setCustomer(t, e.m, "ann", func(c *apikey.Customer) { c.Plan = "pro" })
	for i, token := range []string{a, b} {
		rec := hit(h, bearer(token))
		require.Equal(t, 200, rec.Code, "the upgrade applies to every key at the next request")
		assert.Equal(t, `"daily";q=1000;w=86400, "per-second";q=2;w=1`, rec.Header().Get("RateLimit-Policy"))
		assert.Equal(t, fmt.Sprintf(`"daily";r=%d;t=43200, "per-second";r=%d;t=1`, 997-i, 1-i), rec.Header().Get("RateLimit"))
	}

	setCustomer(t, e.m, "ann", func(c *apikey.Customer) { c.Plan = "free" })
	for _, token := range []string{a, b} {
		rec := hit(h, bearer(token))
		assert.Equal(t, 429, rec.Code, "4 spent of the free plan's 3")
		assert.Equal(t, `"daily";q=3;w=86400`, rec.Header().Get("RateLimit-Policy"))
	}

	// Keys given different plans before their customer had a record (by a
	// Manager without customer records) spend the customer's plan once
	// he has one: the pro key no longer spends the free budget as pro.
	legacy := newManager(t, struct{ apikey.Store }{e.s}, apikey.Options{Now: e.c.Now, Plans: testPlans})
	pro, _ := issue(t, legacy, apikey.IssueParams{Owner: "bob", Plan: "pro"})
	free, _ := issue(t, legacy, apikey.IssueParams{Owner: "bob", Plan: "free"})
	rec = hit(h, bearer(pro))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";q=1000;w=86400, "per-second";q=2;w=1`, rec.Header().Get("RateLimit-Policy"), "no record yet: the key's plan")
	setCustomer(t, e.m, "bob", func(c *apikey.Customer) { c.Plan = "free" })
	rec = hit(h, bearer(pro))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";q=3;w=86400`, rec.Header().Get("RateLimit-Policy"))
	assert.Equal(t, `"daily";r=1;t=43200`, rec.Header().Get("RateLimit"))
	require.Equal(t, 200, hit(h, bearer(free)).Code)
	assert.Equal(t, 429, hit(h, bearer(pro)).Code, "the pro key spent beyond the customer's plan")
	assert.Equal(t, 429, hit(h, bearer(free)).Code)
}

// Credits of a customer, from his plan or granted to him, are counted per
// customer and never refilled: revoking a key and issuing another, or
// rotating, gives no fresh credits; three keys never spend more than 3.
func TestCustomerCreditsNeverRefill(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		plans limits.Plans
		set   func(*apikey.Customer)
	}{
		{"PlanCredits", limits.Plans{"trial": {limits.Credits("trial", 3, limits.Never)}}, func(c *apikey.Customer) { c.Plan = "trial" }},
		{"CreditsGrant", limits.Plans{"basic": {limits.Quota("daily", 1000, limits.Day)}}, func(c *apikey.Customer) { c.Plan, c.Credits = "basic", 3 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newLimitEnvOver(t, newCustomerStore(), apikey.Options{Plans: tc.plans}, apikey.MiddlewareOptions{})
			var ran bool
			h := e.handler(&ran)
			setCustomer(t, e.m, "ann", tc.set)

			k1, key1 := issue(t, e.m, apikey.IssueParams{Owner: "ann"})
			require.Equal(t, 200, hit(h, bearer(k1)).Code)
			require.Equal(t, 200, hit(h, bearer(k1)).Code)
			require.NoError(t, e.m.Revoke(ctx, key1.ID))
			k2, key2 := issue(t, e.m, apikey.IssueParams{Owner: "ann"})
			require.Equal(t, 200, hit(h, bearer(k2)).Code)
			rec := hit(h, bearer(k2))
			assert.Equal(t, 429, rec.Code, "a new key refilled the credits")
			assert.Empty(t, rec.Header().Get("Retry-After"), "no wait refills them")
			k3, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann"})
			assert.Equal(t, 429, hit(h, bearer(k3)).Code, "a third key refilled the credits")
			succ, _ := rotate(t, e.m, key2.ID, time.Hour)
			assert.Equal(t, 429, hit(h, bearer(succ)).Code, "a rotation refilled the credits")
			assert.Equal(t, 429, hit(h, bearer(k2)).Code, "the predecessor in grace got credits")

			// The same under concurrency: three keys, a revocation, an
			// issue and a rotation during the traffic spend 3 in all.
			setCustomer(t, e.m, "bob", tc.set)
			var tokens [3]atomic.Pointer[string]
			var keys [3]*apikey.Key
			for i := range tokens {
				token, k := issue(t, e.m, apikey.IssueParams{Owner: "bob"})
				tokens[i].Store(&token)
				keys[i] = k
			}
			var ok atomic.Int64
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					h := e.handler(new(bool)) // one per goroutine: the handler records that it ran
					for i := range 20 {
						switch code := hit(h, bearer(*tokens[(g+i)%3].Load())).Code; code {
						case 200:
							ok.Add(1)
						case 401, 429:
						default:
							t.Errorf("status %d", code)
						}
					}
				})
			}
			wg.Go(func() {
				assert.NoError(t, e.m.Revoke(ctx, keys[0].ID))
				token, _, err := e.m.Issue(ctx, apikey.IssueParams{Owner: "bob"})
				if assert.NoError(t, err) {
					tokens[0].Store(&token)
				}
			})
			wg.Go(func() {
				r, err := e.m.Rotate(ctx, keys[1].ID, time.Hour)
				if assert.NoError(t, err) {
					tokens[1].Store(&r.Token)
				}
			})
			wg.Wait()
			assert.Equal(t, int64(3), ok.Load(), "bob's keys spent more than his 3 credits")
		})
	}
}

// A suspended customer's keys are all refused with ErrSuspended, answered
// by the middleware exactly like an invalid or a disabled key; he cannot
// be issued keys; resuming restores every key.
func TestSuspendedCustomer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := newManager(t, newCustomerStore(), apikey.Options{})
	a, ka := issue(t, m, apikey.IssueParams{Owner: "ann", Scopes: []string{"read"}})
	b, _ := issue(t, m, apikey.IssueParams{Owner: "ann"})
	old := a
	a, _ = rotate(t, m, ka.ID, time.Hour) // old in grace beside a
	disabled, kd := issue(t, m, apikey.IssueParams{Owner: "bob"})
	_, err := m.Disable(ctx, kd.ID)
	require.NoError(t, err)
	other, _ := issue(t, m, apikey.IssueParams{Owner: "bob"})
	unknown, _ := m.Format().New()
	for _, token := range []string{a, b, old, other} {
		_, err := m.Verify(ctx, token) // cached
		require.NoError(t, err)
	}

	setCustomer(t, m, "ann", func(c *apikey.Customer) { c.Suspended = true })
	for _, token := range []string{a, b, old} {
		_, err := m.Verify(ctx, token)
		assert.ErrorIs(t, err, apikey.ErrSuspended, "at once, cache or not")
	}
	_, err = m.Verify(ctx, other)
	require.NoError(t, err, "another customer's key")
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
	assert.ErrorIs(t, err, apikey.ErrSuspended)

	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	answer := func(token string) *httptest.ResponseRecorder {
		var ran bool
		rec := httptest.NewRecorder()
		mw.Handler(mw.RequireScopes("read")(okHandler(&ran))).ServeHTTP(rec, bearer(token))
		assert.False(t, ran)
		return rec
	}
	invalid := answer(unknown)
	for name, token := range map[string]string{"disabled": disabled, "suspended": a, "suspended in grace": old} {
		rec := answer(token)
		assert.Equal(t, http.StatusUnauthorized, rec.Code, name)
		assert.Equal(t, invalid.Header(), rec.Header(), "%s: byte-identical to an invalid key", name)
		assert.Equal(t, invalid.Body.String(), rec.Body.String(), "%s: byte-identical to an invalid key", name)
	}

	setCustomer(t, m, "ann", func(c *apikey.Customer) { c.Suspended = false })
	for _, token := range []string{a, b, old} {
		_, err := m.Verify(ctx, token)
		assert.NoError(t, err, "resuming restores the keys")
	}
	issue(t, m, apikey.IssueParams{Owner: "ann"})
}

// A suspension made through one Manager reaches another over the same
// store within CacheTTL, and at once with a Notifier; so does resuming.
func TestSuspensionReachesOtherManagers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("WithinCacheTTL", func(t *testing.T) {
		t.Parallel()
		c := newClock()
		store := newCustomerStore()
		const ttl = 5 * time.Second
		a := newManager(t, store, apikey.Options{Now: c.Now, CacheTTL: ttl})
		b := newManager(t, store, apikey.Options{Now: c.Now, CacheTTL: ttl})
		token, _ := issue(t, a, apikey.IssueParams{Owner: "ann"})
		_, err := b.Verify(ctx, token)
		require.NoError(t, err)
		setCustomer(t, a, "ann", func(c *apikey.Customer) { c.Suspended = true })
		c.Add(ttl)
		_, err = b.Verify(ctx, token)
		assert.ErrorIs(t, err, apikey.ErrSuspended, "the other Manager ignored the suspension past CacheTTL")
		setCustomer(t, a, "ann", func(c *apikey.Customer) { c.Suspended = false })
		c.Add(ttl)
		_, err = b.Verify(ctx, token)
		assert.NoError(t, err)
	})
	t.Run("Notifier", func(t *testing.T) {
		t.Parallel()
		h := newHub()
		store := newCustomerStore()
		// An hour of cache: only the notification explains a refusal.
		a := newManager(t, store, apikey.Options{Notifier: h, CacheTTL: time.Hour})
		b := newManager(t, store, apikey.Options{Notifier: h, CacheTTL: time.Hour})
		require.Eventually(t, func() bool { return h.subscribers() == 2 }, time.Second, time.Millisecond)
		token, _ := issue(t, a, apikey.IssueParams{Owner: "ann"})
		_, err := b.Verify(ctx, token)
		require.NoError(t, err)
		setCustomer(t, a, "ann", func(c *apikey.Customer) { c.Suspended = true })
		_, err = b.Verify(ctx, token)
		assert.ErrorIs(t, err, apikey.ErrSuspended, "the notification did not reach the other Manager")
		assert.Contains(t, h.ids(), "customer:ann")
		setCustomer(t, a, "ann", func(c *apikey.Customer) { c.Suspended = false })
		_, err = b.Verify(ctx, token)
		assert.NoError(t, err)
	})
}

// The scope ceiling: Issue and Update refuse scopes beyond it with an
// *InputError on "scopes"; lowering it narrows every key at once (the
// middleware answers 403 for a scope taken away) without changing the
// stored keys, and raising it gives the scopes back.
func TestScopeCeiling(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := newManager(t, newCustomerStore(), apikey.Options{})
	setCustomer(t, m, "ann", func(c *apikey.Customer) { c.Scopes = []string{"read", "write"} })
	_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann", Scopes: []string{"read", "admin"}})
	assertInputError(t, err, "scopes")
	token, k := issue(t, m, apikey.IssueParams{Owner: "ann", Scopes: []string{"read", "write"}})
	_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.Scopes = append(k.Scopes, "admin"); return nil })
	assertInputError(t, err, "scopes")
	_, err = m.SetCustomer(ctx, "ann", func(c *apikey.Customer) error { c.Scopes = []string{"a b"}; return nil })
	assertInputError(t, err, "scopes")

	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	status := func(scope string) int {
		var ran bool
		rec := httptest.NewRecorder()
		mw.Handler(mw.RequireScopes(scope)(okHandler(&ran))).ServeHTTP(rec, bearer(token))
		assert.Equal(t, rec.Code == 200, ran)
		return rec.Code
	}
	require.Equal(t, 200, status("write"))

	setCustomer(t, m, "ann", func(c *apikey.Customer) { c.Scopes = []string{"read"} })
	got, err := m.Verify(ctx, token)
	require.NoError(t, err)
	assert.Equal(t, []string{"read"}, got.Scopes, "the lowered ceiling narrows the key at once")
	assert.Equal(t, http.StatusForbidden, status("write"))
	assert.Equal(t, 200, status("read"))
	stored, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	assert.Equal(t, []string{"read", "write"}, stored.Scopes, "the stored key is unchanged")
	_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.Name = "renamed"; return nil })
	require.NoError(t, err, "a key beyond a lowered ceiling can still be renamed")

	setCustomer(t, m, "ann", func(c *apikey.Customer) { c.Scopes = []string{} })
	got, err = m.Verify(ctx, token)
	require.NoError(t, err)
	assert.Empty(t, got.Scopes, "an empty ceiling allows none")
	assert.Equal(t, http.StatusForbidden, status("read"))

	setCustomer(t, m, "ann", func(c *apikey.Customer) { c.Scopes = nil })
	got, err = m.Verify(ctx, token)
	require.NoError(t, err)
	assert.Equal(t, []string{"read", "write"}, got.Scopes, "no ceiling")
	assert.Equal(t, 200, status("write"))
}

// A cache hit of a key narrowed by its customer's ceiling allocates
// nothing, like any hit (see TestHotPathAllocatesNothing): the narrowed
// key is kept with the cache entry.
func TestScopeCeilingHitAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, opts := range []apikey.Options{{}, {Logger: log, Metrics: nopMetrics{}}} {
		m := newManager(t, newCustomerStore(), opts)
		narrowed, _ := issue(t, m, apikey.IssueParams{Owner: "ann", Scopes: []string{"read", "write"}})
		within, _ := issue(t, m, apikey.IssueParams{Owner: "bob", Scopes: []string{"read"}})
		setCustomer(t, m, "ann", func(c *apikey.Customer) { c.Scopes = []string{"read"} })
		setCustomer(t, m, "bob", func(c *apikey.Customer) { c.Scopes = []string{"read", "write"} })
		for name, token := range map[string]string{"narrowed": narrowed, "within": within} {
			first, err := m.Verify(ctx, token)
			require.NoError(t, err)
			assert.Equal(t, []string{"read"}, first.Scopes)
			other := 0
			assert.Zero(t, testing.AllocsPerRun(1000, func() {
				if k, err := m.Verify(ctx, token); err != nil || k != first {
					other++
				}
			}), name)
			assert.Zero(t, other, "%s: a hit answered another key than the memoized one", name)
		}
	}
}

// A cache hit remembers its customer's record, but never past a change:
// a suspension, and lifting it, apply to the very next verification.
func TestCachedHitSeesEachCustomerChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := newManager(t, memstore.New(), apikey.Options{CacheTTL: time.Hour})
	token, _ := issue(t, m, apikey.IssueParams{Owner: "ann"})
	for i := range 6 {
		suspended := i%2 == 1
		_, err := m.SetCustomer(ctx, "ann", func(c *apikey.Customer) error { c.Suspended = suspended; return nil })
		require.NoError(t, err)
		for range 3 {
			_, err = m.Verify(ctx, token)
			if suspended {
				require.ErrorIs(t, err, apikey.ErrSuspended, "round %d", i)
			} else {
				require.NoError(t, err, "round %d", i)
			}
		}
	}
}

// A clock stepped back does not stretch CacheTTL for customer records:
// a suspension through another Manager is seen a TTL later whatever the
// clock read when the record was cached.
func TestSuspensionBoundSurvivesAClockSteppedBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	store := newCustomerStore()
	const ttl = 5 * time.Second
	a := newManager(t, store, apikey.Options{Now: c.Now, CacheTTL: ttl})
	b := newManager(t, store, apikey.Options{Now: c.Now, CacheTTL: ttl})
	token, _ := issue(t, a, apikey.IssueParams{Owner: "ann"})
	_, err := b.Verify(ctx, token)
	require.NoError(t, err)
	c.Add(-time.Hour)
	setCustomer(t, a, "ann", func(c *apikey.Customer) { c.Suspended = true })
	c.Add(ttl)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, err := b.Verify(ctx, token)
			assert.ErrorIs(t, err, apikey.ErrSuspended, "the suspension went unnoticed past CacheTTL")
		})
	}
	wg.Wait()
}
