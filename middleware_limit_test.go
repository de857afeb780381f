package apikey_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
)

var testPlans = apikey.Plans{
	"free": {apikey.Quota("daily", 3, apikey.Day)},
	"pro":  {apikey.Quota("daily", 1000, apikey.Day), apikey.Rate("per-second", 2, time.Second, 0)},
}

func TestRateLimitedResponses(t *testing.T) {
	t.Parallel()
	c := newClock() // 12:00 UTC
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now})
	lim, err := memlimit.New(memlimit.Options{Now: c.Now})
	require.NoError(t, err)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limiter: lim, Plans: testPlans, LegacyRateLimitHeaders: true})
	require.NoError(t, err)
	free, _ := issue(t, m, apikey.IssueParams{Plan: "free"})
	pro, _ := issue(t, m, apikey.IssueParams{Plan: "pro"})
	var ran bool
	h := mw.Handler(okHandler(&ran))
	do := func(token string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		ran = false
		h.ServeHTTP(rec, bearer(token))
		return rec
	}

	for i := range 3 {
		rec := do(free)
		require.Equal(t, 200, rec.Code)
		assert.Equal(t, `"daily";q=3;w=86400`, rec.Header().Get("RateLimit-Policy"))
		assert.Equal(t, `"daily";r=`+string(rune('2'-i))+`;t=43200`, rec.Header().Get("RateLimit"))
		assert.Equal(t, "3", rec.Header().Get("X-RateLimit-Limit"))
	}
	rec := do(free)
	assert.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.False(t, ran)
	assert.Equal(t, "43200", rec.Header().Get("Retry-After"))
	assert.Equal(t, problemJSON, rec.Header().Get("Content-Type"))
	assert.Equal(t, `"daily";r=0;t=43200`, rec.Header().Get("RateLimit"))
	assert.Equal(t, "0", rec.Header().Get("X-RateLimit-Remaining"))
	assert.Empty(t, rec.Header().Get("WWW-Authenticate"))

	// The pro plan's tightest limit is its rate: 2 at once, then one every 500ms.
	assert.Equal(t, 200, do(pro).Code)
	rec = do(pro)
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";q=1000;w=86400, "per-second";q=2;w=1`, rec.Header().Get("RateLimit-Policy"))
	rec = do(pro)
	assert.Equal(t, 429, rec.Code)
	assert.Equal(t, "1", rec.Header().Get("Retry-After"), "whole seconds, rounded up")
	c.Add(500 * time.Millisecond)
	assert.Equal(t, 200, do(pro).Code)

	c.Add(12 * time.Hour) // past midnight UTC: the quota resets
	assert.Equal(t, 200, do(free).Code)
}

func TestLimitsForOverride(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now})
	lim, err := memlimit.New(memlimit.Options{Now: c.Now})
	require.NoError(t, err)
	var limit atomic.Int64
	limit.Store(1)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limiter: lim, LimitsFor: func(k *apikey.Key) []apikey.Limit {
		return []apikey.Limit{apikey.Quota("custom", limit.Load(), apikey.Hour)}
	}})
	require.NoError(t, err)
	token, _ := issue(t, m, apikey.IssueParams{})
	var ran bool
	h := mw.Handler(okHandler(&ran))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, bearer(token))
	assert.Equal(t, 200, rec.Code)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, bearer(token))
	assert.Equal(t, 429, rec.Code)
	limit.Store(5) // a plan change applies to the next request
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, bearer(token))
	assert.Equal(t, 200, rec.Code)
}

func TestLimiterNeverSeesSecrets(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	spy := &limiterSpy{}
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limiter: spy, Plans: testPlans})
	require.NoError(t, err)
	token, k := issue(t, m, apikey.IssueParams{Plan: "free"})
	var ran bool
	mw.Handler(okHandler(&ran)).ServeHTTP(httptest.NewRecorder(), bearer(token))
	assert.True(t, ran)
	assert.Equal(t, k.ID, spy.lastID, "limits are kept by key id")
}

type limiterSpy struct{ lastID string }

func (l *limiterSpy) Allow(_ context.Context, id string, limits []apikey.Limit, cost int64) (apikey.LimitResult, error) {
	l.lastID = id
	return apikey.LimitResult{Allowed: true, Limit: limits[0], Remaining: 1}, nil
}
