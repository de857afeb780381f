package apikey_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
)

func TestRateLimitedResponses(t *testing.T) {
	t.Parallel()
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{LegacyHeaders: true}})
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
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: spy}})
	token, k := issue(t, e.m, apikey.IssueParams{Plan: "free"})
	var ran bool
	hit(e.handler(&ran), bearer(token))
	assert.True(t, ran)
	assert.Equal(t, k.ID, spy.last().subject, "a key without owner is counted on its lineage")
	assert.NotContains(t, spy.last().subject, token[len(token)-10:])
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
// nothing. The RateLimit value and memlimit's per-limit states are kept in
// the allocation of the request's context (Handler's), the
// RateLimit-Policy value is precomputed, and memlimit gets no deadline.
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
	assert.Equal(t, base, lims, "Limit's allocations beyond Handler's")
	assert.Equal(t, `"daily";q=10000000000000;w=86400, "per-second";q=1000000000;w=1`, w.h.Get("RateLimit-Policy"))
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

// Middleware.Debit gives Spend's surfaces the same settlement: a debit or
// a refund of the customer's quotas and credits, with the headers of the
// balance after it.
func TestMiddlewareDebit(t *testing.T) {
	t.Parallel()
	e := newSettleEnv(t, apikey.MiddlewareOptions{})
	ctx := context.Background()
	k, err := e.m.Verify(ctx, e.token)
	require.NoError(t, err)
	require.NoError(t, e.mw.Spend(ctx, k, 10, nil))
	h := http.Header{}
	require.NoError(t, e.mw.Debit(ctx, k, -6, h), "a refund of what Spend charged beyond the cost")
	assert.Equal(t, `"daily";r=96;t=43200, "per-second";r=990;t=1`, h.Get("RateLimit"))
	assert.Equal(t, `"daily";q=100;w=86400, "per-second";q=1000;w=1`, h.Get("RateLimit-Policy"))
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	require.NoError(t, e.mw.Debit(cancelled, k, 200, nil), "a cost is owed when the client went away")
	assert.Equal(t, int64(-104), e.balance(t))
	assert.ErrorIs(t, e.mw.Spend(ctx, k, 1, nil), apikey.ErrRateLimited)

	require.ErrorIs(t, e.mw.Debit(ctx, nil, 1, nil), apikey.ErrMissingKey)
	require.ErrorIs(t, e.mw.Debit(ctx, k, 1e14, nil), apikey.ErrInvalidOptions)
	spy, err := apikey.NewMiddleware(e.m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: &limiterSpy{}}})
	require.NoError(t, err)
	require.ErrorIs(t, spy.Debit(ctx, k, 1, nil), errors.ErrUnsupported)
	unlimited, err := apikey.NewMiddleware(e.m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	require.NoError(t, unlimited.Debit(ctx, k, 1, nil), "no Limiter")
}

// Two Limit stages on one request: the second never writes over the
// RateLimit value the first sent, which lives in the request's own
// allocation.
func TestLimitTwiceKeepsTheFirstHeader(t *testing.T) {
	t.Parallel()
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
	token, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "pro"})
	var first, copied string
	capture := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			first = w.Header().Get("RateLimit")
			copied = strings.Clone(first)
			next.ServeHTTP(w, r)
		})
	}
	var ran bool
	h := e.mw.Handler(e.mw.Limit(capture(e.mw.Limit(okHandler(&ran)))))
	rec := hit(h, bearer(token))
	require.Equal(t, 200, rec.Code)
	require.True(t, ran)
	assert.NotEqual(t, first, rec.Header().Get("RateLimit"), "the second stage spent again")
	assert.Equal(t, copied, first, "the first value is intact")
}

// Limit decides the same with and without a middleware of the
// application's between Handler and Limit that wraps the request's
// context: Limit then reads the customer and the time itself, and the
// Limiter's room for its states is found through the wrapping context.
func TestLimitBehindAWrappedContext(t *testing.T) {
	plans := limits.Plans{"pro": {limits.Quota("daily", 3, limits.Day), limits.Rate("per-second", 100, time.Second, 0)}}
	e := newLimitEnv(t, apikey.Options{Plans: plans}, apikey.MiddlewareOptions{})
	token, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "pro"})
	type appKey struct{}
	var ran bool
	wrap := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), appKey{}, "x")))
		})
	}
	direct := e.mw.Handler(e.mw.Limit(okHandler(&ran)))
	wrapped := e.mw.Handler(wrap(e.mw.Limit(okHandler(&ran))))
	for i, h := range []http.Handler{direct, wrapped, direct, wrapped} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, bearer(token))
		if i < 3 {
			require.Equal(t, http.StatusOK, w.Code, "request %d", i)
			assert.Equal(t, fmt.Sprintf(`"daily";r=%d;t=43200, "per-second";r=%d;t=1`, 2-i, 99-i), w.Header().Get("RateLimit"), "request %d", i)
			continue
		}
		assert.Equal(t, http.StatusTooManyRequests, w.Code, "the fourth request is over the daily quota")
	}
}
