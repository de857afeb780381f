package apikey_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
)

// meteredPlans has a quota that costs reported after the work spend,
// and a rate they do not.
var meteredPlans = limits.Plans{"metered": {
	limits.Quota("daily", 100, limits.Day),
	limits.Rate("per-second", 1000, time.Second, 0),
}}

// settleEnv is a limitEnv with meteredPlans, reported costs, CostHeader
// X-Cost and a log, and a key of customer "ann" on the metered plan.
type settleEnv struct {
	*limitEnv
	token string
	log   *bytes.Buffer
}

func newSettleEnv(t *testing.T, mwOpts apikey.MiddlewareOptions) *settleEnv {
	t.Helper()
	e := &settleEnv{log: &bytes.Buffer{}}
	mwOpts.Limits.ReportedCosts = true
	if mwOpts.CostHeader == "" {
		mwOpts.CostHeader = "X-Cost"
	}
	mwOpts.Logger = slog.New(slog.NewTextHandler(&syncWriter{w: e.log}, nil))
	e.limitEnv = newLimitEnv(t, apikey.Options{Plans: meteredPlans}, mwOpts)
	e.token, _ = issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "metered"})
	return e
}

// serve runs h behind Handler and Limit for one request of ann's.
func (e *settleEnv) serve(h http.HandlerFunc) *httptest.ResponseRecorder {
	return hit(e.mw.Handler(e.mw.Limit(h)), bearer(e.token))
}

// balance is what ann's daily quota holds, below zero for a debt.
func (e *settleEnv) balance(t *testing.T) int64 {
	t.Helper()
	res, err := e.l.Debit(context.Background(), "ann", meteredPlans["metered"], 0)
	require.NoError(t, err)
	return res.States[0].Remaining
}

// syncWriter serializes the writes of concurrent requests' logs.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// A cost reported before the response header is written is debited
// before it, and the RateLimit headers show the balance after the debit;
// one reported after it is debited when the handler returns, and the
// headers, already sent, show the balance before it.
func TestReportCost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler http.HandlerFunc
		header  string // the daily quota's RateLimit item
		balance int64
	}{
		{"BeforeTheHeader", func(w http.ResponseWriter, r *http.Request) {
			assert.True(t, apikey.ReportCost(r.Context(), 5))
			assert.True(t, apikey.ReportCost(r.Context(), 2), "reports add up")
			io.WriteString(w, "done")
		}, `"daily";r=93;t=43200`, 93},
		{"WithoutWriting", func(w http.ResponseWriter, r *http.Request) {
			apikey.ReportCost(r.Context(), 7)
		}, `"daily";r=93;t=43200`, 93},
		{"AfterTheHeader", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusAccepted)
			apikey.ReportCost(r.Context(), 7)
		}, `"daily";r=99;t=43200`, 93},
		{"BeforeAndAfter", func(w http.ResponseWriter, r *http.Request) {
			apikey.ReportCost(r.Context(), 3)
			w.(http.Flusher).Flush()
			apikey.ReportCost(r.Context(), 4)
		}, `"daily";r=97;t=43200`, 93},
		{"Nothing", func(w http.ResponseWriter, r *http.Request) {}, `"daily";r=99;t=43200`, 99},
		{"Zero", func(w http.ResponseWriter, r *http.Request) {
			apikey.ReportCost(r.Context(), 0)
		}, `"daily";r=100;t=43200`, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newSettleEnv(t, apikey.MiddlewareOptions{})
			rec := e.serve(tc.handler)
			assert.Less(t, rec.Code, 300)
			assert.Equal(t, tc.header+`, "per-second";r=999;t=1`, rec.Header().Get("RateLimit"))
			assert.Equal(t, tc.balance, e.balance(t))
			assert.Zero(t, e.m.Stats().DebitFailures)
		})
	}
}

// A cost in CostHeader, as a header or as a trailer, is debited like a
// reported one and never reaches the client; one that is not a cost is
// logged and ignored.
func TestCostHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler http.HandlerFunc
		header  string
		balance int64
	}{
		{"Header", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Cost", "12")
			io.WriteString(w, "done")
		}, `"daily";r=88`, 88},
		{"HeaderAndReportCost", func(w http.ResponseWriter, r *http.Request) {
			apikey.ReportCost(r.Context(), 2)
			w.Header().Set("x-cost", "10")
		}, `"daily";r=88`, 88},
		{"DeclaredTrailer", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Other, X-Cost")
			io.WriteString(w, "done")
			w.Header().Set("X-Cost", "12")
			w.Header().Set("X-Other", "kept")
		}, `"daily";r=99`, 88},
		{"PrefixedTrailer", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "done")
			w.Header().Set(http.TrailerPrefix+"X-Cost", "12")
		}, `"daily";r=99`, 88},
		{"NotACost", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Cost", "twelve")
		}, `"daily";r=99`, 99},
		{"Negative", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Cost", "-5")
		}, `"daily";r=99`, 99},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newSettleEnv(t, apikey.MiddlewareOptions{})
			srv := httptest.NewServer(e.mw.Handler(e.mw.Limit(tc.handler)))
			t.Cleanup(srv.Close)
			req, err := http.NewRequest("GET", srv.URL, nil)
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+e.token)
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			_, err = io.ReadAll(resp.Body)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, 200, resp.StatusCode)
			assert.Contains(t, resp.Header.Get("RateLimit"), tc.header)
			assert.Empty(t, resp.Header.Values("X-Cost"), "the cost reached the client")
			assert.Empty(t, resp.Trailer.Values("X-Cost"), "the cost reached the client")
			assert.NotContains(t, resp.Header.Get("Trailer"), "Cost")
			if tc.name == "DeclaredTrailer" {
				assert.Equal(t, "kept", resp.Trailer.Get("X-Other"), "another trailer")
			}
			assert.Equal(t, tc.balance, e.balance(t))
			if tc.balance == 99 {
				assert.Contains(t, e.log.String(), "cost header ignored")
			}
		})
	}
}

// A reported cost below the Cost charged on admission refunds the
// difference, one above it debits the difference, and with no report the
// request costs Cost.
func TestReportedCostRefundsTheReservation(t *testing.T) {
	t.Parallel()
	e := newSettleEnv(t, apikey.MiddlewareOptions{Cost: func(*http.Request, *apikey.Key) int64 { return 10 }})
	var report atomic.Int64
	h := func(w http.ResponseWriter, r *http.Request) {
		if n := report.Load(); n >= 0 {
			apikey.ReportCost(r.Context(), n)
		}
	}
	for _, step := range []struct{ report, balance int64 }{
		{3, 97},  // a refund of 7
		{0, 97},  // a refund of 10
		{25, 72}, // a debit of 15
		{-1, 62}, // no report: the request costs Cost
		{10, 52}, // as reserved
	} {
		report.Store(step.report)
		rec := e.serve(h)
		require.Equal(t, 200, rec.Code)
		assert.Equal(t, step.balance, e.balance(t), "after a report of %d", step.report)
		assert.Contains(t, rec.Header().Get("RateLimit"), `"daily";r=`+strconv.FormatInt(step.balance, 10)+";")
	}
}

// A request admitted while budget remained may take the balance below
// zero by what it costs; the next request is refused until the balance
// recovers, and the headers never show a negative remaining.
func TestReportedCostOverdraws(t *testing.T) {
	t.Parallel()
	e := newSettleEnv(t, apikey.MiddlewareOptions{})
	rec := e.serve(func(w http.ResponseWriter, r *http.Request) { apikey.ReportCost(r.Context(), 130) })
	require.Equal(t, 200, rec.Code)
	assert.Contains(t, rec.Header().Get("RateLimit"), `"daily";r=0;`)
	assert.Equal(t, int64(-30), e.balance(t))
	ran := false
	rec = e.serve(func(http.ResponseWriter, *http.Request) { ran = true })
	require.Equal(t, 429, rec.Code, "a debt refuses the next request")
	assert.False(t, ran)
	k, err := e.m.Verify(context.Background(), e.token)
	require.NoError(t, err)
	require.NoError(t, e.mw.Debit(context.Background(), k, -31, nil), "a refund")
	assert.Equal(t, 200, e.serve(func(http.ResponseWriter, *http.Request) {}).Code, "the balance recovered")
	e.c.Add(12 * time.Hour) // the quota's debt ends with its window
	assert.Equal(t, int64(100), e.balance(t))
}

// 64 concurrent requests with random costs reported after the work: the
// total debited equals the total reported exactly, and the balance never
// falls below minus the sum of the costs of the requests in flight.
func TestReportedCostsUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := newSettleEnv(t, apikey.MiddlewareOptions{})
	const workers, each = 64, 10
	var inflight, peak, reported, low atomic.Int64
	h := e.mw.Handler(e.mw.Limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cost := rand.Int64N(9)
		for n := inflight.Add(cost); ; {
			if p := peak.Load(); n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		apikey.ReportCost(r.Context(), cost)
		reported.Add(cost)
		w.WriteHeader(200) // settles
		b := e.balance(t)
		for l := low.Load(); b < l && !low.CompareAndSwap(l, b); l = low.Load() {
		}
		inflight.Add(-cost)
	})))
	var codes [600]atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				codes[hit(h, bearer(e.token)).Code].Add(1)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int64(workers*each), codes[200].Load()+codes[429].Load())
	require.Positive(t, codes[429].Load(), "the budget never ran out: the test proves nothing")
	assert.Equal(t, 100-reported.Load(), e.balance(t), "the total debited is not the total reported")
	assert.GreaterOrEqual(t, low.Load(), -peak.Load())
	t.Logf("admitted %d, refused %d, reported %d, lowest balance %d, peak in flight %d",
		codes[200].Load(), codes[429].Load(), reported.Load(), low.Load(), peak.Load())
}

// flakyDebiter is a memlimit.Limiter whose Allow fails while failAllow is
// set, and whose next failDebits debits fail (all while negative).
type flakyDebiter struct {
	*memlimit.Limiter
	failAllow  atomic.Bool
	failDebits atomic.Int64
	debits     atomic.Int64
}

func (l *flakyDebiter) Allow(ctx context.Context, subject string, ls []limits.Limit, cost int64) (limits.Result, error) {
	if l.failAllow.Load() {
		return limits.Result{}, errors.Join(apikey.ErrUnavailable, errors.New("connection refused"))
	}
	return l.Limiter.Allow(ctx, subject, ls, cost)
}

func (l *flakyDebiter) Debit(ctx context.Context, subject string, ls []limits.Limit, amount int64) (limits.Result, error) {
	l.debits.Add(1)
	if n := l.failDebits.Load(); n < 0 || n > 0 && l.failDebits.CompareAndSwap(n, n-1) {
		return limits.Result{}, errors.Join(apikey.ErrUnavailable, errors.New("connection reset"))
	}
	return l.Limiter.Debit(ctx, subject, ls, amount)
}

// A debit that fails is retried, and counted; one that fails every
// retry is counted and logged with its customer and amount, never
// dropped silently.
func TestFailedDebitIsRetriedAndCounted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                      string
		fail                      int64
		debits, retries, failures uint64
		balance                   int64
		header                    string
	}{
		{"Succeeds", 0, 1, 0, 0, 93, `"daily";r=93;`},
		{"FailsBeforeTheHeader", 1, 2, 0, 0, 93, `"daily";r=99;`},
		{"FailsTwiceMore", 3, 4, 2, 0, 93, `"daily";r=99;`},
		{"FailsAlways", -1, 4, 2, 1, 99, `"daily";r=99;`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newClock()
			inner, err := memlimit.New(memlimit.Options{Now: c.Now})
			require.NoError(t, err)
			fl := &flakyDebiter{Limiter: inner}
			e := newSettleEnv(t, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: fl}})
			e.l = inner
			fl.failDebits.Store(tc.fail)
			rec := e.serve(func(w http.ResponseWriter, r *http.Request) { apikey.ReportCost(r.Context(), 7) })
			require.Equal(t, 200, rec.Code)
			assert.Contains(t, rec.Header().Get("RateLimit"), tc.header)
			assert.Equal(t, int64(tc.debits), fl.debits.Load(), "debit attempts")
			st := e.m.Stats()
			assert.Equal(t, tc.retries, st.DebitRetries)
			assert.Equal(t, tc.failures, st.DebitFailures)
			assert.Equal(t, tc.balance, e.balance(t))
			if tc.failures > 0 {
				assert.Contains(t, e.log.String(), "debit given up")
				assert.Contains(t, e.log.String(), "customer=ann amount=6")
			}
		})
	}
}

// While the Limiter fails, the Fallback that admitted a request
// takes its reported cost.
func TestReportedCostOnTheFallback(t *testing.T) {
	t.Parallel()
	c := newClock()
	primary, err := memlimit.New(memlimit.Options{Now: c.Now})
	require.NoError(t, err)
	fl := &flakyDebiter{Limiter: primary}
	fl.failAllow.Store(true)
	e := newSettleEnv(t, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: fl}})
	e.mw, err = apikey.NewMiddleware(e.m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: fl, Fallback: e.l, ReportedCosts: true}})
	require.NoError(t, err)
	rec := e.serve(func(w http.ResponseWriter, r *http.Request) { apikey.ReportCost(r.Context(), 7) })
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, int64(93), e.balance(t), "the fallback's balance")
	assert.Zero(t, fl.debits.Load(), "the failing Limiter was debited")
}

// ReportedCosts needs Limiters that can debit; outside such a request,
// for a free one, after the handler returned, or for a negative cost,
// ReportCost does nothing and says so.
func TestReportCostOnlyWhereSettled(t *testing.T) {
	t.Parallel()
	for _, opts := range []apikey.MiddlewareOptions{
		{Limits: apikey.LimitOptions{ReportedCosts: true}},
		{CostHeader: "X-Cost"},
		{Limits: apikey.LimitOptions{ReportedCosts: true, Limiter: &limiterSpy{}}},
		{Limits: apikey.LimitOptions{ReportedCosts: true, Limiter: mustMemlimit(t), Fallback: &limiterSpy{}}},
	} {
		_, err := apikey.NewMiddleware(newManager(t, newSpy(), apikey.Options{}), opts)
		require.ErrorIs(t, err, apikey.ErrInvalidOptions)
	}
	assert.False(t, apikey.ReportCost(context.Background(), 1))

	e := newSettleEnv(t, apikey.MiddlewareOptions{Cost: func(r *http.Request, _ *apikey.Key) int64 {
		if r.URL.Path == "/free" {
			return 0
		}
		return 1
	}})
	var late context.Context
	rec := e.serve(func(w http.ResponseWriter, r *http.Request) {
		assert.False(t, apikey.ReportCost(r.Context(), -1))
		assert.False(t, apikey.ReportCost(r.Context(), 1e14))
		late = r.Context()
	})
	require.Equal(t, 200, rec.Code)
	assert.False(t, apikey.ReportCost(late, 5), "after the handler returned")
	assert.Equal(t, int64(99), e.balance(t))

	r := bearer(e.token)
	r.URL.Path = "/free"
	rec = hit(e.mw.Handler(e.mw.Limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.False(t, apikey.ReportCost(r.Context(), 5), "a free request")
		w.Header().Set("X-Cost", "5")
	}))), r)
	assert.Empty(t, rec.Header().Get("X-Cost"), "the cost header of a free request reached the client")
	assert.Equal(t, int64(99), e.balance(t))
}

func mustMemlimit(t *testing.T) *memlimit.Limiter {
	l, err := memlimit.New(memlimit.Options{})
	require.NoError(t, err)
	return l
}

// BenchmarkReportedCost compares a request behind Limit whose handler
// reports its cost with one that does not, on memlimit.
func BenchmarkReportedCost(b *testing.B) {
	plans := limits.Plans{"pro": {limits.Quota("daily", 1e13, limits.Day), limits.Rate("per-second", 1e9, time.Second, 0)}}
	for _, tc := range []struct {
		name string
		opts apikey.MiddlewareOptions
		h    http.HandlerFunc
	}{
		{"Limit", apikey.MiddlewareOptions{}, func(http.ResponseWriter, *http.Request) {}},
		{"ReportedCosts", apikey.MiddlewareOptions{Limits: apikey.LimitOptions{ReportedCosts: true}}, func(w http.ResponseWriter, r *http.Request) {
			apikey.ReportCost(r.Context(), 3)
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			l, err := memlimit.New(memlimit.Options{})
			require.NoError(b, err)
			tc.opts.Limits.Limiter = l
			m := newManager(b, newSpy(), apikey.Options{Plans: plans})
			mw, err := apikey.NewMiddleware(m, tc.opts)
			require.NoError(b, err)
			token, _ := issue(b, m, apikey.IssueParams{Owner: "ann", Plan: "pro"})
			h := mw.Handler(mw.Limit(tc.h))
			r := bearer(token)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &headerWriter{h: http.Header{}}
				for pb.Next() {
					clear(w.h)
					h.ServeHTTP(w, r)
				}
			})
		})
	}
}
