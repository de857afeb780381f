package apikey_test

import (
	"context"
	"errors"
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

// setCustomer changes the record of customer id through m.
func setCustomer(t testing.TB, m *apikey.Manager, id string, change func(*apikey.Customer)) *apikey.Customer {
	t.Helper()
	c, err := m.SetCustomer(context.Background(), id, func(c *apikey.Customer) error { change(c); return nil })
	require.NoError(t, err)
	return c
}

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

// The key cap holds under concurrent Issues: of 16 at once, exactly
// MaxKeys succeed, the others get ErrTooManyKeys, and no refused key is
// left in the store.
func TestMaxKeysUnderConcurrentIssues(t *testing.T) {
	t.Parallel()
	const maxKeys, n = 5, 16
	store := newCustomerStore()
	m := newManager(t, store, apikey.Options{})
	ctx := context.Background()
	for trial := range 20 {
		owner := fmt.Sprintf("c%d", trial)
		setCustomer(t, m, owner, func(c *apikey.Customer) { c.MaxKeys = maxKeys })
		var ok, tooMany atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range n {
			wg.Go(func() {
				<-start
				token, _, err := m.Issue(ctx, apikey.IssueParams{Owner: owner})
				switch {
				case err == nil:
					ok.Add(1)
					_, err := m.Verify(ctx, token)
					assert.NoError(t, err, "an issued token does not work")
				case errors.Is(err, apikey.ErrTooManyKeys):
					tooMany.Add(1)
				default:
					t.Errorf("issue: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		require.Equal(t, int64(maxKeys), ok.Load(), "trial %d", trial)
		require.Equal(t, int64(n-maxKeys), tooMany.Load(), "trial %d", trial)
		keys, err := m.List(ctx, owner, apikey.ListOptions{})
		require.NoError(t, err)
		assert.Len(t, keys, maxKeys, "trial %d: keys over the cap were left in the store", trial)
	}
}

// Rotations never bypass the key cap (a chain counts once, before and
// after), keys revoked or expired free their place, and repeated
// rotations leave one predecessor in grace: the others are expired.
func TestMaxKeysAndRotations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	m := newManager(t, newCustomerStore(), apikey.Options{Now: c.Now})
	setCustomer(t, m, "ann", func(c *apikey.Customer) { c.MaxKeys = 2 })
	a, ka := issue(t, m, apikey.IssueParams{Owner: "ann"})
	_, kx := issue(t, m, apikey.IssueParams{Owner: "ann"})
	_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
	require.ErrorIs(t, err, apikey.ErrTooManyKeys)

	tokens, ids := []string{a}, []string{ka.ID}
	for range 3 { // A -> B -> C -> D
		c.Add(time.Minute)
		token, k := rotate(t, m, ids[len(ids)-1], time.Hour)
		tokens, ids = append(tokens, token), append(ids, k.ID)
		_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
		require.ErrorIs(t, err, apikey.ErrTooManyKeys, "a rotation freed a place")
	}
	for i, want := range []error{apikey.ErrExpired, apikey.ErrExpired, nil, nil} {
		_, err := m.Verify(ctx, tokens[i])
		if want == nil {
			assert.NoError(t, err, "key %c", 'A'+i)
		} else {
			assert.ErrorIs(t, err, want, "key %c: more than one predecessor in grace", 'A'+i)
		}
	}
	c.Add(time.Hour) // C's grace ends: still one usable chain
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
	require.ErrorIs(t, err, apikey.ErrTooManyKeys)

	require.NoError(t, m.Revoke(ctx, kx.ID))
	issue(t, m, apikey.IssueParams{Owner: "ann"}) // a revoked key frees its place
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
	require.ErrorIs(t, err, apikey.ErrTooManyKeys)

	// Under concurrency: rotations of a full customer's keys, with and
	// without the store's Rotator, never let an Issue through.
	for name, store := range map[string]func() apikey.Store{
		"Rotator": newCustomerStore,
		"GetUpdate": func() apikey.Store {
			s := newCustomerStore()
			return &customersOnly{Store: struct{ apikey.Store }{s}, CustomerStore: s.(apikey.CustomerStore)}
		},
	} {
		t.Run(name, func(t *testing.T) {
			m := newManager(t, store(), apikey.Options{CacheTTL: -1})
			setCustomer(t, m, "bob", func(c *apikey.Customer) { c.MaxKeys = 3 })
			var ids [3]atomic.Pointer[string]
			for i := range ids {
				_, k := issue(t, m, apikey.IssueParams{Owner: "bob"})
				ids[i].Store(&k.ID)
			}
			var wg sync.WaitGroup
			for g := range 3 {
				wg.Go(func() {
					for range 10 {
						r, err := m.Rotate(ctx, *ids[g].Load(), time.Hour)
						if assert.NoError(t, err) {
							ids[g].Store(&r.Key.ID)
						}
					}
				})
			}
			for range 4 {
				wg.Go(func() {
					for range 10 {
						_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "bob"})
						assert.ErrorIs(t, err, apikey.ErrTooManyKeys, "an Issue beyond the cap during rotations")
					}
				})
			}
			wg.Wait()
		})
	}
}

// customersOnly is a store with CustomerStore and none of the optional
// key capabilities (Revoker, Rotator).
type customersOnly struct {
	apikey.Store
	apikey.CustomerStore
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

// customerHook answers Options.Customers from a map, and fails or panics
// for the ids told to.
type customerHook struct {
	mu    sync.Mutex
	recs  map[string]*apikey.Customer
	fail  map[string]bool
	panic atomic.Bool
	calls atomic.Int64
}

func (h *customerHook) get(ctx context.Context, id string) (*apikey.Customer, error) {
	h.calls.Add(1)
	if h.panic.Load() {
		panic("billing database on fire")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail[id] {
		return nil, errors.New("billing: connection refused")
	}
	c, ok := h.recs[id]
	if !ok {
		return nil, fmt.Errorf("billing: customer %q: %w", id, apikey.ErrNotFound)
	}
	return c.Clone(), nil
}

func (h *customerHook) set(id string, c *apikey.Customer, fail bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c != nil {
		h.recs[id] = c
	}
	h.fail[id] = fail
}

// Options.Customers answers the customer records: its answers are used
// (plan, ceiling, suspension) and cached, ErrNotFound means the zero
// record, a failure or a panic is ErrUnavailable (503), never a verdict
// on the key, and CustomerChanged makes a change effective at once.
func TestCustomersHook(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := &customerHook{recs: map[string]*apikey.Customer{}, fail: map[string]bool{}}
	h.set("ann", &apikey.Customer{ID: "ann", Plan: "pro", Scopes: []string{"read"}, Revision: 7}, false)
	h.set("sus", &apikey.Customer{ID: "sus", Suspended: true, Revision: 1}, false)
	e := newLimitEnvOver(t, memstore.New(), apikey.Options{Customers: h.get}, apikey.MiddlewareOptions{})
	m := e.m
	var ran bool
	handler := e.handler(&ran)

	_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann", Scopes: []string{"write"}})
	assertInputError(t, err, "scopes")
	ann, _ := issue(t, m, apikey.IssueParams{Owner: "ann", Scopes: []string{"read"}, Plan: "free"})
	rec := hit(handler, bearer(ann))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";q=1000;w=86400, "per-second";q=2;w=1`, rec.Header().Get("RateLimit-Policy"), "the hook's plan")
	calls := h.calls.Load()
	for range 3 {
		e.c.Add(time.Second)
		require.Equal(t, 200, hit(handler, bearer(ann)).Code)
	}
	assert.Equal(t, calls, h.calls.Load(), "answers are cached for CacheTTL")

	bob, _ := issue(t, m, apikey.IssueParams{Owner: "bob", Plan: "free"})
	rec = hit(handler, bearer(bob))
	require.Equal(t, 200, rec.Code, "ErrNotFound: the zero record")
	assert.Equal(t, `"daily";q=3;w=86400`, rec.Header().Get("RateLimit-Policy"), "the zero record keeps the key's plan")
	zero, err := m.Customer(ctx, "bob")
	require.NoError(t, err)
	assert.Equal(t, &apikey.Customer{ID: "bob"}, zero)
	got, err := m.Customer(ctx, "ann")
	require.NoError(t, err)
	assert.Equal(t, "pro", got.Plan)

	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "sus"})
	assert.ErrorIs(t, err, apikey.ErrSuspended)

	// A failing hook: 503, never a verdict on the key.
	broken, _ := issue(t, m, apikey.IssueParams{Owner: "broken"})
	h.set("broken", nil, true)
	_, err = m.Verify(ctx, broken)
	require.ErrorIs(t, err, apikey.ErrUnavailable)
	for _, verdict := range []error{apikey.ErrInvalid, apikey.ErrSuspended, apikey.ErrRevoked, apikey.ErrDisabled} {
		assert.NotErrorIs(t, err, verdict)
	}
	ran = false
	rec = hit(handler, bearer(broken))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.NotEmpty(t, rec.Header().Get("Retry-After"))
	assert.NotContains(t, rec.Body.String(), "connection refused")
	assert.False(t, ran)
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "broken"})
	assert.ErrorIs(t, err, apikey.ErrUnavailable)
	_, err = m.Customer(ctx, "broken")
	assert.ErrorIs(t, err, apikey.ErrUnavailable)

	e.c.Add(time.Hour) // past every cache entry
	h.panic.Store(true)
	_, err = m.Verify(ctx, ann)
	assert.ErrorIs(t, err, apikey.ErrUnavailable, "a panicking hook")
	assert.Equal(t, http.StatusServiceUnavailable, hit(handler, bearer(ann)).Code)
	h.panic.Store(false)
	require.Equal(t, 200, hit(handler, bearer(ann)).Code)

	// A change is served from the cache until CustomerChanged.
	h.set("ann", &apikey.Customer{ID: "ann", Plan: "pro", Suspended: true, Revision: 8}, false)
	calls = h.calls.Load()
	_, err = m.Verify(ctx, ann)
	require.NoError(t, err, "cached for CacheTTL")
	assert.Equal(t, calls, h.calls.Load())
	m.CustomerChanged(ctx, "ann")
	_, err = m.Verify(ctx, ann)
	assert.ErrorIs(t, err, apikey.ErrSuspended, "CustomerChanged did not invalidate")
	h.set("ann", &apikey.Customer{ID: "ann", Plan: "pro", Revision: 9}, false)
	m.InvalidateAll()
	_, err = m.Verify(ctx, ann)
	assert.NoError(t, err, "InvalidateAll kept a customer record")

	_, err = m.SetCustomer(ctx, "ann", func(*apikey.Customer) error { return nil })
	assert.ErrorIs(t, err, errors.ErrUnsupported, "the application keeps its records")
	_, err = m.Customers(ctx, "", 0)
	assert.ErrorIs(t, err, errors.ErrUnsupported)
}

// SetCustomer validates what it writes, keeps what the Manager owns
// (ID, CreatedAt, Revision), retries lost races so that concurrent
// changes all land, and Customers pages through the records.
func TestSetCustomer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	log := &eventLog{}
	m := newManager(t, newCustomerStore(), apikey.Options{Now: c.Now, Plans: testPlans, Logger: slog.New(log)})

	zero, err := m.Customer(ctx, "ann")
	require.NoError(t, err)
	assert.Equal(t, &apikey.Customer{ID: "ann"}, zero)

	for field, change := range map[string]func(*apikey.Customer){
		"plan":     func(c *apikey.Customer) { c.Plan = "gold" },
		"scopes":   func(c *apikey.Customer) { c.Scopes = []string{""} },
		"max_keys": func(c *apikey.Customer) { c.MaxKeys = -1 },
		"credits":  func(c *apikey.Customer) { c.Credits = -1 },
		"limits":   func(c *apikey.Customer) { c.Limits = []limits.Limit{{Name: "x"}} },
		"metadata": func(c *apikey.Customer) { c.Metadata = map[string]string{"": "v"} },
	} {
		_, err := m.SetCustomer(ctx, "ann", func(c *apikey.Customer) error { change(c); return nil })
		assertInputError(t, err, field)
	}
	_, err = m.SetCustomer(ctx, "ann", func(c *apikey.Customer) error {
		c.Credits, c.Limits = 5, []limits.Limit{limits.Credits(apikey.CreditsLimit, 1, limits.Never)}
		return nil
	})
	assertInputError(t, err, "limits", "a limit named like the credits grant")
	_, err = m.SetCustomer(ctx, "a\x00b", func(*apikey.Customer) error { return nil })
	assertInputError(t, err, "id")
	mine := errors.New("mine")
	_, err = m.SetCustomer(ctx, "ann", func(*apikey.Customer) error { return mine })
	assert.Same(t, mine, err)
	_, err = m.Customer(ctx, "ann")
	require.NoError(t, err)
	assert.Empty(t, types(log.take(), false), "refused changes are not recorded")

	created := c.Now()
	got := setCustomer(t, m, "ann", func(c *apikey.Customer) {
		c.Plan, c.ID, c.Revision, c.CreatedAt = "pro", "mallory", 42, time.Time{}.Add(time.Hour)
	})
	assert.Equal(t, "ann", got.ID)
	assert.Equal(t, int64(1), got.Revision)
	assert.True(t, created.Equal(got.CreatedAt))
	c.Add(time.Minute)
	got = setCustomer(t, m, "ann", func(c *apikey.Customer) { c.MaxKeys = 3 })
	assert.Equal(t, "pro", got.Plan)
	assert.Equal(t, int64(2), got.Revision)
	assert.True(t, created.Equal(got.CreatedAt))
	assert.True(t, c.Now().Equal(got.UpdatedAt))
	assert.Equal(t, []loggedEvent{{Type: "customer", Owner: "ann"}, {Type: "customer", Owner: "ann"}}, log.take())

	// Concurrent changes are all applied, none lost.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := m.SetCustomer(ctx, "ann", func(c *apikey.Customer) error {
				if c.Metadata == nil {
					c.Metadata = map[string]string{}
				}
				c.Metadata[fmt.Sprint(i)] = "x"
				return nil
			})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	got, err = m.Customer(ctx, "ann")
	require.NoError(t, err)
	assert.Len(t, got.Metadata, 8, "a concurrent change was lost")
	assert.Equal(t, int64(10), got.Revision)

	for _, id := range []string{"bob", "cid", "dan"} {
		setCustomer(t, m, id, func(*apikey.Customer) {})
	}
	page, err := m.Customers(ctx, "", 2)
	require.NoError(t, err)
	require.Len(t, page, 2)
	assert.Equal(t, []string{"ann", "bob"}, []string{page[0].ID, page[1].ID})
	page, err = m.Customers(ctx, "bob", 0)
	require.NoError(t, err)
	require.Len(t, page, 2)
	assert.Equal(t, []string{"cid", "dan"}, []string{page[0].ID, page[1].ID})

	plain := newManager(t, newSpy(), apikey.Options{}) // a Store without CustomerStore
	_, err = plain.SetCustomer(ctx, "ann", func(*apikey.Customer) error { return nil })
	assert.ErrorIs(t, err, errors.ErrUnsupported)
	got, err = plain.Customer(ctx, "ann")
	require.NoError(t, err)
	assert.Equal(t, &apikey.Customer{ID: "ann"}, got, "without customer records, the zero record")
}

// hookedCustomers is a memstore whose GetCustomer runs before, when set,
// ahead of answering: a change that lands between two reads.
type hookedCustomers struct {
	*memstore.Store
	before atomic.Pointer[func()]
	create atomic.Pointer[func()] // runs once before the next Create
}

func (s *hookedCustomers) Create(ctx context.Context, k *apikey.Key) error {
	if f := s.create.Swap(nil); f != nil {
		(*f)()
	}
	return s.Store.Create(ctx, k)
}

func (s *hookedCustomers) GetCustomer(ctx context.Context, id string) (*apikey.Customer, error) {
	if f := s.before.Swap(nil); f != nil {
		(*f)()
	}
	return s.Store.GetCustomer(ctx, id)
}

// An Issue never counts against a key cap it read before a SetCustomer
// that returned: once the operator lowered the cap (or suspended the
// customer) while an Issue was under way, that Issue is decided by the
// new record, and the customer never holds more keys than it allows.
func TestMaxKeysLoweredDuringIssue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, change := range map[string]func(*apikey.Customer){
		"cap":     func(c *apikey.Customer) { c.MaxKeys = 1 },
		"suspend": func(c *apikey.Customer) { c.Suspended = true },
	} {
		t.Run(name, func(t *testing.T) {
			store := &hookedCustomers{Store: memstore.New()}
			m := newManager(t, store, apikey.Options{})
			setCustomer(t, m, "ann", func(c *apikey.Customer) { c.MaxKeys = 5 })
			issue(t, m, apikey.IssueParams{Owner: "ann"})
			issue(t, m, apikey.IssueParams{Owner: "ann"})
			// The Issue reads the record (cap 5), then the operator's
			// change lands before the Issue's next read of it.
			var reads atomic.Int64
			var hook func()
			hook = func() {
				if reads.Add(1) == 2 {
					setCustomer(t, m, "ann", change)
					return
				}
				store.before.Store(&hook)
			}
			store.before.Store(&hook)
			_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
			require.Error(t, err, "an Issue passed on a record changed before it decided")
			keys, err := m.List(ctx, "ann", apikey.ListOptions{})
			require.NoError(t, err)
			assert.Len(t, keys, 2)
		})
	}
}

// A suspension, a narrower ceiling or a key cap set by a SetCustomer that
// returned before an Issue stored its key decides that Issue, also for a
// customer without a cap: the customer is not handed a key created after
// the operator's change.
func TestIssueDecidedByAChangeThatLandsBeforeTheKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, tc := range map[string]struct {
		change func(*apikey.Customer)
		want   error
	}{
		"suspend": {func(c *apikey.Customer) { c.Suspended = true }, apikey.ErrSuspended},
		"ceiling": {func(c *apikey.Customer) { c.Scopes = []string{"read"} }, apikey.ErrInvalidInput},
		"cap":     {func(c *apikey.Customer) { c.MaxKeys = 1 }, apikey.ErrTooManyKeys},
	} {
		t.Run(name, func(t *testing.T) {
			store := &hookedCustomers{Store: memstore.New()}
			m := newManager(t, store, apikey.Options{})
			setCustomer(t, m, "ann", func(c *apikey.Customer) { c.Metadata = map[string]string{"tier": "a"} })
			issue(t, m, apikey.IssueParams{Owner: "ann"})
			hook := func() { setCustomer(t, m, "ann", tc.change) }
			store.create.Store(&hook)
			_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann", Scopes: []string{"write"}})
			require.ErrorIs(t, err, tc.want)
			keys, err := m.List(ctx, "ann", apikey.ListOptions{})
			require.NoError(t, err)
			assert.Len(t, keys, 1, "a key issued after the change was left in the store")
		})
	}
}

// A key without owner is its own customer, named by its lineage: nobody
// can share it by choosing that id as an Owner.
func TestOwnerCannotNameAKeysOwnCustomer(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	_, k := issue(t, m, apikey.IssueParams{})
	_, _, err := m.Issue(context.Background(), apikey.IssueParams{Owner: k.ID})
	var ie *apikey.InputError
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, "owner", ie.Field)
	_, _, err = m.Issue(context.Background(), apikey.IssueParams{Owner: k.ID[:apikey.IDLength-1]})
	assert.NoError(t, err, "other owners are fine")
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
