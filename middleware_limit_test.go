package apikey_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
)

var testPlans = limits.Plans{
	"free": {limits.Quota("daily", 3, limits.Day)},
	"pro":  {limits.Quota("daily", 1000, limits.Day), limits.Rate("per-second", 2, time.Second, 0)},
}

// limitEnv is a Manager with testPlans, a memlimit on the same clock, and
// a Middleware over them.
type limitEnv struct {
	c  *clock
	s  apikey.Store
	m  *apikey.Manager
	l  *memlimit.Limiter
	mw *apikey.Middleware
}

func newLimitEnv(t *testing.T, opts apikey.Options, mwOpts apikey.MiddlewareOptions) *limitEnv {
	t.Helper()
	return newLimitEnvOver(t, memstore.New(), opts, mwOpts)
}

// newLimitEnvOver is newLimitEnv over store.
func newLimitEnvOver(t *testing.T, store apikey.Store, opts apikey.Options, mwOpts apikey.MiddlewareOptions) *limitEnv {
	t.Helper()
	e := &limitEnv{c: newClock()} // 12:00 UTC
	opts.Now = e.c.Now
	if opts.Plans == nil {
		opts.Plans = testPlans
	}
	e.s = store
	e.m = newManager(t, e.s, opts)
	var err error
	e.l, err = memlimit.New(memlimit.Options{Now: e.c.Now})
	require.NoError(t, err)
	if mwOpts.Limiter == nil {
		mwOpts.Limiter = e.l
	}
	e.mw, err = apikey.NewMiddleware(e.m, mwOpts)
	require.NoError(t, err)
	return e
}

// handler is the usual chain: authenticate, then scopes, then spend.
func (e *limitEnv) handler(ran *bool, scopes ...string) http.Handler {
	h := e.mw.Limit(okHandler(ran))
	if len(scopes) > 0 {
		h = e.mw.RequireScopes(scopes...)(h)
	}
	return e.mw.Handler(h)
}

func hit(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func TestRateLimitedResponses(t *testing.T) {
	t.Parallel()
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{LegacyRateLimitHeaders: true})
	free, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"})
	pro, _ := issue(t, e.m, apikey.IssueParams{Owner: "bob", Plan: "pro"})
	var ran bool
	h := e.handler(&ran)

	for i := range 3 {
		rec := hit(h, bearer(free))
		require.Equal(t, 200, rec.Code)
		assert.Equal(t, `"daily";q=3;w=86400`, rec.Header().Get("RateLimit-Policy"))
		assert.Equal(t, `"daily";r=`+string(rune('2'-i))+`;t=43200`, rec.Header().Get("RateLimit"))
		assert.Equal(t, "3", rec.Header().Get("X-RateLimit-Limit"))
	}
	ran = false
	rec := hit(h, bearer(free))
	assert.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.False(t, ran)
	assert.Equal(t, "43200", rec.Header().Get("Retry-After"))
	assert.Equal(t, problemJSON, rec.Header().Get("Content-Type"))
	assert.Equal(t, `"daily";r=0;t=43200`, rec.Header().Get("RateLimit"))
	assert.Equal(t, "0", rec.Header().Get("X-RateLimit-Remaining"))
	assert.Empty(t, rec.Header().Get("WWW-Authenticate"))

	// Every limit of the pro plan is listed: 2 per second at once, then
	// one every 500ms.
	rec = hit(h, bearer(pro))
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";q=1000;w=86400, "per-second";q=2;w=1`, rec.Header().Get("RateLimit-Policy"))
	assert.Equal(t, `"daily";r=999;t=43200, "per-second";r=1;t=1`, rec.Header().Get("RateLimit"))
	assert.Equal(t, 200, hit(h, bearer(pro)).Code)
	rec = hit(h, bearer(pro))
	assert.Equal(t, 429, rec.Code)
	assert.Equal(t, "1", rec.Header().Get("Retry-After"), "whole seconds, rounded up")
	assert.Equal(t, `"daily";r=998;t=43200, "per-second";r=0;t=1`, rec.Header().Get("RateLimit"))
	e.c.Add(500 * time.Millisecond)
	assert.Equal(t, 200, hit(h, bearer(pro)).Code)

	e.c.Add(12 * time.Hour) // past midnight UTC: the quota resets
	assert.Equal(t, 200, hit(h, bearer(free)).Code)
}

// Retry-After is the wait until every exhausted limit admits: with a rate
// and a quota both exhausted, the quota's.
func TestRetryAfterWaitsForEveryLimit(t *testing.T) {
	t.Parallel()
	plans := limits.Plans{"p": {limits.Rate("per-minute", 1, time.Minute, 0), limits.Quota("hourly", 1, limits.Hour)}}
	e := newLimitEnv(t, apikey.Options{Plans: plans}, apikey.MiddlewareOptions{})
	token, _ := issue(t, e.m, apikey.IssueParams{Plan: "p"})
	var ran bool
	h := e.handler(&ran)
	require.Equal(t, 200, hit(h, bearer(token)).Code)
	rec := hit(h, bearer(token))
	require.Equal(t, 429, rec.Code)
	assert.Equal(t, "3600", rec.Header().Get("Retry-After"), "noon to 13:00, not the rate's 60s")
}

func TestMonthWindowIsItsRealLength(t *testing.T) {
	t.Parallel()
	plans := limits.Plans{"m": {limits.Quota("monthly", 10, limits.Month)}}
	e := newLimitEnv(t, apikey.Options{Plans: plans}, apikey.MiddlewareOptions{})
	token, _ := issue(t, e.m, apikey.IssueParams{Plan: "m"})
	var ran bool
	rec := hit(e.handler(&ran), bearer(token))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"monthly";q=10;w=2592000`, rec.Header().Get("RateLimit-Policy"), "November has 30 days")
	e.c.Add(5 * 24 * time.Hour) // December 2
	rec = hit(e.handler(&ran), bearer(token))
	assert.Equal(t, `"monthly";q=10;w=2678400`, rec.Header().Get("RateLimit-Policy"), "December has 31 days")
	assert.Equal(t, `"monthly";r=9;t=2548800`, rec.Header().Get("RateLimit"))
}

// All keys of an owner share one budget; a key without owner is counted
// on its own.
func TestLimitSubject(t *testing.T) {
	t.Parallel()
	t.Run("OwnerByDefault", func(t *testing.T) {
		e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
		a, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"})
		b, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"})
		other, _ := issue(t, e.m, apikey.IssueParams{Owner: "bob", Plan: "free"})
		var ran bool
		h := e.handler(&ran)
		for _, tok := range []string{a, b, a} {
			require.Equal(t, 200, hit(h, bearer(tok)).Code)
		}
		assert.Equal(t, 429, hit(h, bearer(b)).Code, "ann's two keys got more than the plan")
		assert.Equal(t, 200, hit(h, bearer(other)).Code)
	})
	t.Run("KeyWithoutOwner", func(t *testing.T) {
		e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
		a, _ := issue(t, e.m, apikey.IssueParams{Plan: "free"})
		b, _ := issue(t, e.m, apikey.IssueParams{Plan: "free"})
		var ran bool
		h := e.handler(&ran)
		for range 3 {
			require.Equal(t, 200, hit(h, bearer(a)).Code)
		}
		assert.Equal(t, 429, hit(h, bearer(a)).Code)
		assert.Equal(t, 200, hit(h, bearer(b)).Code)
	})
}

// A rotation neither resets nor duplicates consumption.
func TestRotationKeepsTheBudget(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		owner string
		key   func(*apikey.Key) string
	}{
		{"Owner", "ann", nil},
		{"LineageWithoutOwner", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
			old, k := issue(t, e.m, apikey.IssueParams{Owner: tc.owner, Plan: "free"})
			var ran bool
			h := e.handler(&ran)
			require.Equal(t, 200, hit(h, bearer(old)).Code)
			require.Equal(t, 200, hit(h, bearer(old)).Code)
			succ, sk := rotate(t, e.m, k.ID, time.Hour)
			require.Equal(t, k.ID, sk.Lineage, "the successor continues the lineage")
			assert.Equal(t, 200, hit(h, bearer(succ)).Code)
			assert.Equal(t, 429, hit(h, bearer(succ)).Code, "the successor got a fresh budget")
			assert.Equal(t, 429, hit(h, bearer(old)).Code, "the predecessor in grace got a budget of its own")
		})
	}
}

// Only authorized requests spend: a 401, a 403 for a missing scope and a
// 403 for a plan not configured leave the budget as it was.
func TestOnlyAuthorizedRequestsSpend(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Logger: log})
	reader, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free", Scopes: []string{"read"}})
	writer, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free", Scopes: []string{"write"}})
	var ran bool
	write := e.handler(&ran, "write")
	read := e.handler(&ran, "read")

	rec := hit(read, bearer(reader))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";r=2;t=43200`, rec.Header().Get("RateLimit"))
	wrong := reader[:len(reader)-1] + "x" // another checksum: never the token itself
	if reader[len(reader)-1] == 'x' {
		wrong = reader[:len(reader)-1] + "y"
	}
	for range 5 {
		rec := hit(write, bearer(reader))
		require.Equal(t, 403, rec.Code)
		assert.Empty(t, rec.Header().Get("RateLimit"))
		require.Equal(t, 401, hit(write, bearer(wrong)).Code)
		require.Equal(t, 401, hit(write, get("/", "", "")).Code)
	}
	dtoken, dk := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free", Scopes: []string{"write"}})
	_, err := e.m.Disable(context.Background(), dk.ID)
	require.NoError(t, err)
	for range 3 {
		require.Equal(t, 401, hit(write, bearer(dtoken)).Code, "a disabled key")
	}
	rec = hit(write, bearer(writer))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";r=1;t=43200`, rec.Header().Get("RateLimit"), "a refused request spent")

	// HEAD and OPTIONS count like GET.
	for _, method := range []string{http.MethodHead} {
		r := bearer(reader)
		r.Method = method
		rec := hit(read, r)
		require.Equal(t, 200, rec.Code)
		assert.Equal(t, `"daily";r=0;t=43200`, rec.Header().Get("RateLimit"))
	}
	assert.Equal(t, 429, hit(read, bearer(reader)).Code)
}

func TestUnknownPlan(t *testing.T) {
	t.Parallel()
	t.Run("RefusedAndLoggedOnce", func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		spy := &limiterSpy{}
		e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Limiter: spy, Logger: log})
		token, _ := issueWithPlan(t, e, "gold")
		var ran bool
		h := e.handler(&ran)
		for range 3 {
			ran = false
			rec := hit(h, bearer(token))
			require.Equal(t, http.StatusForbidden, rec.Code)
			assert.False(t, ran)
			assert.Equal(t, problemJSON, rec.Header().Get("Content-Type"))
			assert.Contains(t, rec.Body.String(), "plan is not configured")
		}
		assert.Zero(t, spy.calls.Load(), "an unknown plan reached the limiter")
		assert.Equal(t, 1, strings.Count(buf.String(), "plan is not configured"), buf.String())
		assert.Contains(t, buf.String(), "plan=gold")
	})
	t.Run("DefaultPlan", func(t *testing.T) {
		e := newLimitEnv(t, apikey.Options{DefaultPlan: "free"}, apikey.MiddlewareOptions{})
		token, _ := issueWithPlan(t, e, "gold")
		var ran bool
		rec := hit(e.handler(&ran), bearer(token))
		require.Equal(t, 200, rec.Code)
		assert.Equal(t, `"daily";q=3;w=86400`, rec.Header().Get("RateLimit-Policy"))
	})
	t.Run("DefaultPlanMustExist", func(t *testing.T) {
		_, err := apikey.New(memstore.New(), apikey.Options{Plans: testPlans, DefaultPlan: "gold"})
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
		_, err = apikey.New(memstore.New(), apikey.Options{Plans: limits.Plans{"p": {limits.Quota("a b", 1, limits.Day)}}})
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
	})
}

// issueWithPlan stores a key whose plan e's Manager does not know, as if
// the plan had been removed after the key was issued.
func issueWithPlan(t *testing.T, e *limitEnv, plan string) (string, *apikey.Key) {
	t.Helper()
	m := newManager(t, e.s, apikey.Options{Now: e.c.Now, Plans: limits.Plans{plan: nil}})
	return issue(t, m, apikey.IssueParams{Plan: plan})
}

func TestCost(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{
		Logger: slog.New(slog.NewTextHandler(&buf, nil)),
		Cost: func(r *http.Request, k *apikey.Key) int64 {
			switch r.URL.Path {
			case "/free", "/":
				return map[string]int64{"/free": 0, "/": 1}[r.URL.Path]
			case "/bulk":
				return 2
			case "/huge":
				return 4
			}
			return -1
		},
	})
	token, _ := issue(t, e.m, apikey.IssueParams{Plan: "free"})
	var ran bool
	h := e.handler(&ran)
	at := func(path string) *httptest.ResponseRecorder {
		r := bearer(token)
		r.URL.Path = path
		ran = false
		return hit(h, r)
	}
	rec := at("/free")
	require.Equal(t, 200, rec.Code)
	assert.Empty(t, rec.Header().Get("RateLimit"), "a request of cost 0 is not counted")
	rec = at("/huge")
	require.Equal(t, 429, rec.Code, "a cost above capacity")
	assert.False(t, ran)
	assert.Equal(t, `"daily";r=3;t=43200`, rec.Header().Get("RateLimit"))
	rec = at("/bad")
	require.Equal(t, 500, rec.Code, "a negative cost")
	assert.False(t, ran)
	assert.Contains(t, buf.String(), "Cost returned -1")
	rec = at("/bulk")
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";r=1;t=43200`, rec.Header().Get("RateLimit"))
	require.Equal(t, 429, at("/bulk").Code)
	require.Equal(t, 200, at("/").Code)
}

// A key's own limits add to its customer's plan's and are counted per
// key lineage: credits on one key are that key's, even when its owner's
// other keys share the plan's budget, and a key's own limit never
// replaces nor widens the plan's, whatever its name or count.
func TestKeyLimitsAndCredits(t *testing.T) {
	t.Parallel()
	plans := limits.Plans{
		"pro":  {limits.Quota("daily", 1000, limits.Day), limits.Rate("per-second", 100, time.Second, 0)},
		"free": {limits.Quota("daily", 3, limits.Day)},
	}
	e := newLimitEnv(t, apikey.Options{Plans: plans}, apikey.MiddlewareOptions{})
	var ran bool
	h := e.handler(&ran)

	credited, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "pro", Limits: []limits.Limit{limits.Credits("credits", 2, limits.Never)}})
	plain, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "pro"})
	rec := hit(h, bearer(credited))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"credits";q=2, "daily";q=1000;w=86400, "per-second";q=100;w=1`, rec.Header().Get("RateLimit-Policy"))
	assert.Equal(t, `"credits";r=1, "daily";r=999;t=43200, "per-second";r=99;t=1`, rec.Header().Get("RateLimit"))
	rec = hit(h, bearer(plain))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";r=998;t=43200, "per-second";r=98;t=1`, rec.Header().Get("RateLimit"), "the owner's budget is shared")
	require.Equal(t, 200, hit(h, bearer(credited)).Code)
	rec = hit(h, bearer(credited))
	require.Equal(t, 429, rec.Code, "credits spent")
	assert.Empty(t, rec.Header().Get("Retry-After"), "credits never refilled: no wait helps")
	assert.Equal(t, `"credits";r=0, "daily";r=997;t=43200, "per-second";r=97;t=1`, rec.Header().Get("RateLimit"))
	assert.Equal(t, 200, hit(h, bearer(plain)).Code, "credits are per key")

	own, _ := issue(t, e.m, apikey.IssueParams{Owner: "bob", Plan: "pro", Limits: []limits.Limit{limits.Quota("hourly", 1, limits.Hour), limits.Credits("monthly", 5, limits.Month)}})
	rec = hit(h, bearer(own))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"hourly";q=1;w=3600, "monthly";q=5;w=2592000, "daily";q=1000;w=86400, "per-second";q=100;w=1`,
		rec.Header().Get("RateLimit-Policy"), "the key's quota is added to the plan's rate and quota")
	assert.Equal(t, `"hourly";r=0;t=3600, "monthly";r=4;t=302400, "daily";r=999;t=43200, "per-second";r=99;t=1`, rec.Header().Get("RateLimit"))
	rec = hit(h, bearer(own))
	assert.Equal(t, 429, rec.Code, "the key's own quota narrows the plan")
	assert.Equal(t, "3600", rec.Header().Get("Retry-After"))

	// A key's own limit named like the plan's, with a larger count, is
	// counted beside it: the plan still admits 3.
	wide, _ := issue(t, e.m, apikey.IssueParams{Owner: "cid", Plan: "free", Limits: []limits.Limit{limits.Quota("daily", 100, limits.Day)}})
	for range 3 {
		require.Equal(t, 200, hit(h, bearer(wide)).Code)
	}
	rec = hit(h, bearer(wide))
	assert.Equal(t, 429, rec.Code, "a key's own limit widened its plan")
	assert.Equal(t, `"daily";r=97;t=43200, "daily";r=0;t=43200`, rec.Header().Get("RateLimit"))
}

// TestLegacyHeadersOfSpentCredits: credits that are never refilled have
// no X-RateLimit-Reset (0 would mean "retry now"), like RateLimit's t.
func TestLegacyHeadersOfSpentCredits(t *testing.T) {
	t.Parallel()
	plans := limits.Plans{"pro": {limits.Quota("daily", 1000, limits.Day)}}
	e := newLimitEnv(t, apikey.Options{Plans: plans}, apikey.MiddlewareOptions{LegacyRateLimitHeaders: true})
	var ran bool
	h := e.handler(&ran)
	token, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "pro", Limits: []limits.Limit{limits.Credits("credits", 1, limits.Never)}})
	require.Equal(t, 200, hit(h, bearer(token)).Code)
	rec := hit(h, bearer(token))
	require.Equal(t, 429, rec.Code, "credits spent")
	assert.Equal(t, "0", rec.Header().Get("X-RateLimit-Remaining"))
	assert.Empty(t, rec.Header().Values("X-RateLimit-Reset"), "no reset ever admits the request")
	assert.Empty(t, rec.Header().Get("Retry-After"))

	daily, _ := issue(t, e.m, apikey.IssueParams{Owner: "bob", Plan: "pro"})
	rec = hit(h, bearer(daily))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, "43200", rec.Header().Get("X-RateLimit-Reset"), "a quota still has its reset")
}

func TestLimitWithoutKey(t *testing.T) {
	t.Parallel()
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
	var ran bool
	rec := hit(e.mw.Limit(okHandler(&ran)), get("/", "", ""))
	assert.Equal(t, 401, rec.Code, "Limit without Handler before it")
	assert.False(t, ran)

	opt := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Optional: true})
	rec = hit(opt.mw.Handler(opt.mw.Limit(okHandler(&ran))), get("/", "", ""))
	assert.Equal(t, 200, rec.Code, "an anonymous request let through by Optional")
	assert.Empty(t, rec.Header().Get("RateLimit"))
}

func TestLimiterNeverSeesSecrets(t *testing.T) {
	t.Parallel()
	spy := &limiterSpy{}
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Limiter: spy})
	token, k := issue(t, e.m, apikey.IssueParams{Plan: "free"})
	var ran bool
	hit(e.handler(&ran), bearer(token))
	assert.True(t, ran)
	assert.Equal(t, k.ID, spy.last().subject, "a key without owner is counted on its lineage")
	assert.NotContains(t, spy.last().subject, token[len(token)-10:])
}

// limiterSpy records calls, allows them, and fails while fail is set.
type limiterSpy struct {
	mu    sync.Mutex
	calls atomic.Int64
	log   []spyCall
	fail  atomic.Bool
	block atomic.Bool // wait for ctx to end
	hook  atomic.Pointer[func()]
}

type spyCall struct {
	subject  string
	lims     []limits.Limit
	deadline time.Duration // until ctx's deadline at the call; 0 without
}

func (l *limiterSpy) Allow(ctx context.Context, subject string, lims []limits.Limit, cost int64) (limits.Result, error) {
	l.calls.Add(1)
	if f := l.hook.Load(); f != nil {
		(*f)()
	}
	c := spyCall{subject: subject, lims: append([]limits.Limit(nil), lims...)}
	if d, ok := ctx.Deadline(); ok {
		c.deadline = time.Until(d)
	}
	l.mu.Lock()
	l.log = append(l.log, c)
	l.mu.Unlock()
	if l.block.Load() {
		<-ctx.Done()
		return limits.Result{}, errors.Join(apikey.ErrUnavailable, ctx.Err())
	}
	if l.fail.Load() {
		return limits.Result{}, errors.Join(apikey.ErrUnavailable, errors.New("connection refused"))
	}
	return limits.Result{Allowed: true, Limit: lims[0], Remaining: 1}, nil
}

func (l *limiterSpy) last() spyCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.log[len(l.log)-1]
}

// rotate rotates key id and returns the successor's token and record.
func rotate(t *testing.T, m *apikey.Manager, id string, grace time.Duration) (string, *apikey.Key) {
	t.Helper()
	rot, err := m.Rotate(context.Background(), id, grace)
	require.NoError(t, err)
	return rot.Token, rot.Key
}

// Every Limiter call has a deadline; after BreakerFailures consecutive
// failures, across three customers, the policy applies without calling
// the Limiter, until a probe after BreakerCoolDown succeeds.
func TestLimiterBreaker(t *testing.T) {
	t.Parallel()
	spy := &limiterSpy{}
	var policyUses atomic.Int64
	var lastErr atomic.Pointer[error]
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{
		Limiter: spy, BreakerFailures: 3, BreakerCoolDown: 10 * time.Second,
		LimiterFailed: func(_ *http.Request, err error) {
			policyUses.Add(1)
			lastErr.Store(&err)
		},
	})
	var tokens []string
	for _, owner := range []string{"ann", "bob", "cid"} {
		token, _ := issue(t, e.m, apikey.IssueParams{Owner: owner, Plan: "free"})
		tokens = append(tokens, token)
	}
	var ran bool
	h := e.handler(&ran)
	i := 0
	next := func() *http.Request { i++; return bearer(tokens[i%len(tokens)]) }

	require.Equal(t, 200, hit(h, next()).Code)
	d := spy.last().deadline
	assert.Positive(t, d, "no deadline on the Limiter call")
	assert.LessOrEqual(t, d, apikey.DefaultLimiterTimeout)

	spy.fail.Store(true)
	for range 3 {
		require.Equal(t, 503, hit(h, next()).Code)
	}
	require.EqualValues(t, 4, spy.calls.Load())
	for range 10 {
		require.Equal(t, 503, hit(h, next()).Code)
	}
	assert.EqualValues(t, 4, spy.calls.Load(), "the open circuit called the Limiter")
	assert.EqualValues(t, 13, policyUses.Load())
	assert.ErrorIs(t, *lastErr.Load(), apikey.ErrCircuitOpen)
	assert.ErrorIs(t, *lastErr.Load(), apikey.ErrUnavailable)

	e.c.Add(10 * time.Second) // half open: one probe, which fails
	require.Equal(t, 503, hit(h, next()).Code)
	require.Equal(t, 503, hit(h, next()).Code)
	assert.EqualValues(t, 5, spy.calls.Load(), "one probe after the cool-down")

	spy.fail.Store(false)
	e.c.Add(9 * time.Second)
	require.Equal(t, 503, hit(h, next()).Code, "the failed probe reopened the circuit")
	e.c.Add(time.Second)
	require.Equal(t, 200, hit(h, next()).Code, "the probe closes the circuit")
	require.Equal(t, 200, hit(h, next()).Code)
	assert.EqualValues(t, 7, spy.calls.Load())
}

// While the circuit is half open, concurrent requests send one probe.
func TestLimiterBreakerOneProbe(t *testing.T) {
	t.Parallel()
	spy := &limiterSpy{}
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{
		Limiter: spy, BreakerFailures: 1, LimiterTimeout: 100 * time.Millisecond, FailOpen: true,
	})
	token, _ := issue(t, e.m, apikey.IssueParams{Plan: "free"})
	var ran atomic.Bool
	h := e.mw.Handler(e.mw.Limit(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ran.Store(true) })))
	spy.block.Store(true) // a hung backend: every call waits for its deadline
	require.Equal(t, 200, hit(h, bearer(token)).Code, "fail open")
	require.EqualValues(t, 1, spy.calls.Load())
	e.c.Add(apikey.DefaultBreakerCoolDown)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { assert.Equal(t, 200, hit(h, bearer(token)).Code) })
	}
	wg.Wait()
	assert.EqualValues(t, 2, spy.calls.Load(), "more than one probe")
}

// A key's own limits set with Update apply at the next request, beside
// its plan's and over what was already spent; raising them never widens
// the plan.
func TestUpdatedKeyLimitsApply(t *testing.T) {
	t.Parallel()
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
	token, k := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"})
	var ran bool
	h := e.handler(&ran)
	require.Equal(t, 200, hit(h, bearer(token)).Code)
	setLimits := func(ls ...limits.Limit) {
		t.Helper()
		_, err := e.m.Update(context.Background(), k.ID, func(k *apikey.Key) error { k.Limits = ls; return nil })
		require.NoError(t, err)
	}
	setLimits(limits.Quota("hourly", 2, limits.Hour))
	rec := hit(h, bearer(token))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"hourly";q=2;w=3600, "daily";q=3;w=86400`, rec.Header().Get("RateLimit-Policy"))
	assert.Equal(t, `"hourly";r=1;t=3600, "daily";r=1;t=43200`, rec.Header().Get("RateLimit"))
	require.Equal(t, 200, hit(h, bearer(token)).Code)
	require.Equal(t, 429, hit(h, bearer(token)).Code)

	setLimits(limits.Quota("hourly", 1000, limits.Hour), limits.Quota("daily", 1000, limits.Day))
	rec = hit(h, bearer(token))
	assert.Equal(t, 429, rec.Code, "the key's own limits widened its plan")
	assert.Equal(t, `"hourly";r=998;t=3600, "daily";r=1000;t=43200, "daily";r=0;t=43200`, rec.Header().Get("RateLimit"))
	setLimits()
	assert.Equal(t, 429, hit(h, bearer(token)).Code)
	e.c.Add(12 * time.Hour) // the next day
	assert.Equal(t, 200, hit(h, bearer(token)).Code)
}

// Requests whose client went away are not failures of the Limiter: they
// never open the circuit.
func TestLimiterBreakerIgnoresCancelledRequests(t *testing.T) {
	t.Parallel()
	spy := &limiterSpy{}
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Limiter: spy, BreakerFailures: 2})
	// Two customers, so that counted failures would open the circuit.
	token, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"})
	other, _ := issue(t, e.m, apikey.IssueParams{Owner: "bob", Plan: "free"})
	var ran bool
	h := e.handler(&ran)
	spy.block.Store(true)
	for i := range 5 {
		ctx, cancel := context.WithCancel(context.Background())
		f := func() { cancel() }
		spy.hook.Store(&f) // the client goes away during the call
		require.Equal(t, 503, hit(h, bearer([]string{token, other}[i%2]).WithContext(ctx)).Code)
	}
	spy.hook.Store(nil)
	spy.block.Store(false)
	require.Equal(t, 200, hit(h, bearer(token)).Code, "the circuit opened for cancelled requests")
	assert.EqualValues(t, 6, spy.calls.Load())
}

// headerWriter is a ResponseWriter that keeps one header map, as a server
// does, without httptest's copies.
type headerWriter struct {
	h    http.Header
	code int
}

func (w *headerWriter) Header() http.Header         { return w.h }
func (w *headerWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *headerWriter) WriteHeader(code int)        { w.code = code }

// What Limit allocates per request with memlimit and a two-limit plan:
// the RateLimit value (its string and slice in one allocation) and
// memlimit's per-limit states; the RateLimit-Policy value is precomputed,
// and memlimit gets no deadline.
func TestLimitAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	plans := limits.Plans{"pro": {limits.Quota("daily", 1e13, limits.Day), limits.Rate("per-second", 1e9, time.Second, 0)}}
	e := newLimitEnv(t, apikey.Options{Plans: plans}, apikey.MiddlewareOptions{})
	token, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "pro"})
	r := bearer(token)
	var ran bool
	plain := e.mw.Handler(okHandler(&ran))
	limited := e.mw.Handler(e.mw.Limit(okHandler(&ran)))
	w := &headerWriter{h: http.Header{}}
	run := func(h http.Handler) float64 {
		h.ServeHTTP(w, r)
		require.True(t, ran)
		return testing.AllocsPerRun(1000, func() {
			clear(w.h)
			h.ServeHTTP(w, r)
		})
	}
	base := run(plain)
	lims := run(limited)
	t.Logf("allocations per request: Handler %v, Handler+Limit %v", base, lims)
	assert.Equal(t, base+2, lims, "Limit's allocations beyond Handler's")
	assert.Equal(t, `"daily";q=10000000000000;w=86400, "per-second";q=1000000000;w=1`, w.h.Get("RateLimit-Policy"))
}

// The middleware reports each rate-limit decision and each application of
// the failure policy to Options.Metrics.
func TestLimiterMetrics(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		mw     apikey.MiddlewareOptions
		policy string
		code   int
	}{
		{"fail-closed", apikey.MiddlewareOptions{}, "fail-closed", 503},
		{"fail-open", apikey.MiddlewareOptions{FailOpen: true}, "fail-open", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			met := &recMetrics{}
			spy := &limiterSpy{}
			tc.mw.Limiter, tc.mw.BreakerFailures = spy, 1
			e := newLimitEnv(t, apikey.Options{Metrics: met}, tc.mw)
			token, _ := issue(t, e.m, apikey.IssueParams{Plan: "free"})
			var ran bool
			h := e.handler(&ran)
			require.Equal(t, 200, hit(h, bearer(token)).Code)
			spy.fail.Store(true)
			require.Equal(t, tc.code, hit(h, bearer(token)).Code) // the failure opens the circuit
			require.Equal(t, tc.code, hit(h, bearer(token)).Code) // refused by the open circuit
			met.mu.Lock()
			defer met.mu.Unlock()
			assert.Equal(t, []string{"allowed/daily", "error/", "error/"}, met.limited)
			assert.Equal(t, []string{tc.policy + "/false", tc.policy + "/true"}, met.failed)
		})
	}

	met := &recMetrics{}
	e := newLimitEnv(t, apikey.Options{Metrics: met}, apikey.MiddlewareOptions{})
	token, _ := issue(t, e.m, apikey.IssueParams{Plan: "free"})
	var ran bool
	h := e.handler(&ran)
	for range 3 {
		require.Equal(t, 200, hit(h, bearer(token)).Code)
	}
	require.Equal(t, 429, hit(h, bearer(token)).Code)
	met.mu.Lock()
	defer met.mu.Unlock()
	assert.Equal(t, []string{"allowed/daily", "allowed/daily", "allowed/daily", "denied/daily"}, met.limited)
	assert.Empty(t, met.failed)
}

// One customer's budget holds under real concurrency: several keys of the
// owner, a rotation in the middle of the traffic (old key in grace beside
// its successor) and requests refused for a missing scope or a disabled
// key, all at once, admit exactly the plan's daily count, and only
// authorized requests spend it.
func TestCustomerBudgetUnderConcurrency(t *testing.T) {
	t.Parallel()
	plans := limits.Plans{"free": {limits.Quota("daily", 100, limits.Day)}}
	e := newLimitEnv(t, apikey.Options{Plans: plans}, apikey.MiddlewareOptions{})
	a, ak := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free", Scopes: []string{"read"}})
	b, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free", Scopes: []string{"read"}})
	noScope, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free", Scopes: []string{"write"}})
	disabled, dk := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free", Scopes: []string{"read"}})
	_, err := e.m.Disable(context.Background(), dk.ID)
	require.NoError(t, err)
	served := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	read := e.mw.Handler(e.mw.RequireScopes("read")(e.mw.Limit(served)))

	var ok, limited, refused atomic.Int64
	var succ atomic.Pointer[string]
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				token := []string{a, b, noScope, disabled}[(g+i)%4]
				if s := succ.Load(); s != nil && i%2 == 0 && token == a {
					token = *s
				}
				switch code := hit(read, bearer(token)).Code; code {
				case 200:
					ok.Add(1)
				case 429:
					limited.Add(1)
				case 401, 403:
					refused.Add(1)
				default:
					t.Errorf("status %d", code)
				}
			}
		})
	}
	wg.Go(func() {
		r, err := e.m.Rotate(context.Background(), ak.ID, time.Hour)
		if assert.NoError(t, err) {
			succ.Store(&r.Token)
		}
	})
	wg.Wait()
	assert.Equal(t, int64(8*40/2), refused.Load(), "missing scope and disabled key")
	assert.Equal(t, int64(100), ok.Load(), "the customer's daily count across keys and a rotation")
	assert.Equal(t, int64(8*40/2-100), limited.Load())
}
