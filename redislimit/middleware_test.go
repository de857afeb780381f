package redislimit_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/redislimit"
)

// Closing Redis in the middle of a test produces each outage policy's
// behaviour, and never a 429.
func TestMiddlewareOutagePolicies(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failOpen  bool
		fallback  bool
		wantCodes []int // for requests after the outage
	}{
		{"FailClosed", false, false, []int{503, 503, 503}},
		{"FailOpen", true, false, []int{200, 200, 200}},
		{"Fallback", false, true, []int{200, 200, 429}}, // the fallback's own quota of 2 for this key
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mr := miniredis.RunT(t)
			rc := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
			t.Cleanup(func() { rc.Close() })
			rl, err := redislimit.New(rc, redislimit.Options{})
			require.NoError(t, err)
			fallback, err := memlimit.New(memlimit.Options{})
			require.NoError(t, err)
			m, err := apikey.New(memstore.New(), apikey.Options{Plans: limits.Plans{"": {limits.Quota("daily", 2, limits.Day)}}})
			require.NoError(t, err)
			t.Cleanup(func() { m.Close(context.Background()) })
			var failures atomic.Int64
			opts := apikey.MiddlewareOptions{Limits: apikey.LimitOptions{
				Limiter:  rl,
				FailOpen: tc.failOpen,
				// The outage is a closed server, which fails at once: a
				// deadline longer than the default keeps a slow call on a
				// loaded machine (-race) from counting as one.
				Timeout: 2 * time.Second,
				OnFailure: func(_ context.Context, err error) {
					assert.ErrorIs(t, err, apikey.ErrUnavailable)
					failures.Add(1)
				},
			}}
			if tc.fallback {
				opts.Limits.Fallback = fallback
			}
			mw, err := apikey.NewMiddleware(m, opts)
			require.NoError(t, err)
			token, _, err := m.Issue(context.Background(), apikey.IssueParams{})
			require.NoError(t, err)
			var ran bool
			h := mw.Handler(mw.Limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ran = true })))
			do := func() *httptest.ResponseRecorder {
				r := httptest.NewRequest("GET", "/", nil)
				r.Header.Set("Authorization", "Bearer "+token)
				rec := httptest.NewRecorder()
				ran = false
				h.ServeHTTP(rec, r)
				return rec
			}
			require.Equal(t, 200, do().Code, "Redis up")

			mr.Close()
			for i, want := range tc.wantCodes {
				rec := do()
				assert.Equal(t, want, rec.Code, "request %d after the outage", i+1)
				assert.Equal(t, want == 200, ran)
				if want == 503 {
					assert.Equal(t, "5", rec.Header().Get("Retry-After"))
				}
			}
			assert.EqualValues(t, len(tc.wantCodes), failures.Load(), "the hook reports each failure handled")
		})
	}
}

// A cost reported after the work is taken from the quota in Redis before
// the response header is written; when Redis goes away before the debit,
// it is retried, and given up only once counted.
func TestMiddlewareReportedCosts(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rc := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialerRetries: 1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rc.Close() })
	rl, err := redislimit.New(rc, redislimit.Options{})
	require.NoError(t, err)
	plan := []limits.Limit{limits.Quota("daily", 10, limits.Day)}
	m, err := apikey.New(memstore.New(), apikey.Options{Plans: limits.Plans{"": plan}})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: rl, ReportedCosts: true, Timeout: 2 * time.Second}})
	require.NoError(t, err)
	token, k, err := m.Issue(context.Background(), apikey.IssueParams{Owner: "ann"})
	require.NoError(t, err)
	var outage atomic.Bool
	h := mw.Handler(mw.Limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if outage.Load() {
			mr.Close()
		}
		apikey.ReportCost(r.Context(), 4)
	})))
	do := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	rec := do()
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";r=6;t=`, rec.Header().Get("RateLimit")[:len(`"daily";r=6;t=`)])
	res, err := rl.Debit(context.Background(), k.Owner, plan, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(6), res.Remaining)

	outage.Store(true)
	rec = do()
	require.Equal(t, 200, rec.Code, "admitted before the outage")
	assert.Contains(t, rec.Header().Get("RateLimit"), `"daily";r=5;`, "the balance before the debit")
	st := m.Stats()
	assert.Equal(t, uint64(2), st.DebitRetries)
	assert.Equal(t, uint64(1), st.DebitFailures)
}
