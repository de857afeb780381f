package apikey_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
)

// subjectLimiter allows every call, except those of the subjects in bad:
// they fail, at once or (slow) when the call's deadline passes. It counts
// the calls of each subject.
type subjectLimiter struct {
	slow  bool
	mu    sync.Mutex
	bad   map[string]bool
	calls map[string]int
}

func newSubjectLimiter(slow bool, bad ...string) *subjectLimiter {
	l := &subjectLimiter{slow: slow, bad: map[string]bool{}, calls: map[string]int{}}
	for _, s := range bad {
		l.bad[s] = true
	}
	return l
}

func (l *subjectLimiter) Allow(ctx context.Context, subject string, ls []limits.Limit, cost int64) (limits.Result, error) {
	l.mu.Lock()
	l.calls[subject]++
	bad := l.bad[subject]
	l.mu.Unlock()
	if !bad {
		return limits.Result{Allowed: true, Limit: ls[0], Remaining: 1}, nil
	}
	if l.slow {
		<-ctx.Done()
		return limits.Result{}, errors.Join(apikey.ErrUnavailable, ctx.Err())
	}
	return limits.Result{}, errors.Join(apikey.ErrUnavailable, errors.New("evil: connection reset"))
}

func (l *subjectLimiter) callsOf(subject string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls[subject]
}

// One customer whose Limiter calls fail or time out never opens the
// circuit for the others, however many of his calls fail, sequentially
// or among their concurrent requests: theirs keep reaching the Limiter
// and getting 200, while his are answered by the failure policy (503).
func TestBreakerIgnoresOneFailingSubject(t *testing.T) {
	t.Parallel()
	for name, slow := range map[string]bool{"Failing": false, "Slow": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l := newSubjectLimiter(slow, "evil")
			e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: l, Timeout: 5 * time.Millisecond}})
			evil, _ := issue(t, e.m, apikey.IssueParams{Owner: "evil", Plan: "free"})
			good, _ := issue(t, e.m, apikey.IssueParams{Owner: "good", Plan: "free"})
			h := e.mw.Handler(e.mw.Limit(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))

			for range 3 * apikey.DefaultBreakerFailures {
				require.Equal(t, http.StatusServiceUnavailable, hit(h, bearer(evil)).Code)
			}
			for range 5 {
				require.Equal(t, 200, hit(h, bearer(good)).Code, "one subject's failures opened the circuit")
			}
			assert.Equal(t, 5, l.callsOf("good"))

			var wg sync.WaitGroup
			var goodOK atomic.Int64
			for g := range 8 {
				wg.Go(func() {
					for range 20 {
						if g%2 == 0 {
							assert.Equal(t, http.StatusServiceUnavailable, hit(h, bearer(evil)).Code)
						} else if assert.Equal(t, 200, hit(h, bearer(good)).Code) {
							goodOK.Add(1)
						}
					}
				})
			}
			wg.Wait()
			assert.Equal(t, int64(80), goodOK.Load())
			assert.Equal(t, 85, l.callsOf("good"), "a good request skipped the Limiter")
			assert.Equal(t, 3*apikey.DefaultBreakerFailures+80, l.callsOf("evil"), "the circuit never opened for evil either")
		})
	}
}

// Consecutive failures across three subjects (or as many as
// BreakerFailures, if lower) still open the circuit: then even a subject
// whose calls would succeed is answered by the failure policy without
// calling the Limiter.
func TestBreakerOpensOnFailuresAcrossSubjects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		failures int // LimitOptions.BreakerFailures
		bad      []string
		sequence []string // failing calls, in order
	}{
		{"Default", 0, []string{"a", "b", "c"}, []string{"a", "b", "a", "c", "b"}},
		{"TwoOfTwo", 2, []string{"a", "b"}, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newSubjectLimiter(false, tc.bad...)
			e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: l, BreakerFailures: tc.failures}})
			tokens := map[string]string{}
			for _, s := range append(tc.bad, "good") {
				tokens[s], _ = issue(t, e.m, apikey.IssueParams{Owner: s, Plan: "free"})
			}
			h := e.mw.Handler(e.mw.Limit(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))

			// Many failures of fewer subjects, then a success, leave it closed.
			for range 10 {
				require.Equal(t, 503, hit(h, bearer(tokens[tc.bad[0]])).Code)
			}
			require.Equal(t, 200, hit(h, bearer(tokens["good"])).Code)

			for _, s := range tc.sequence {
				require.Equal(t, 503, hit(h, bearer(tokens[s])).Code)
			}
			calls := l.callsOf("good")
			assert.Equal(t, 503, hit(h, bearer(tokens["good"])).Code, "the circuit is open")
			assert.Equal(t, calls, l.callsOf("good"), "the open circuit called the Limiter")

			e.c.Add(apikey.DefaultBreakerCoolDown)
			assert.Equal(t, 200, hit(h, bearer(tokens["good"])).Code, "a probe closes it")
			assert.Equal(t, 200, hit(h, bearer(tokens["good"])).Code)
		})
	}
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
		Limits: apikey.LimitOptions{Limiter: spy, BreakerFailures: 3, BreakerCoolDown: 10 * time.Second, OnFailure: func(_ context.Context, err error) {
			policyUses.Add(1)
			lastErr.Store(&err)
		}},
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
		Limits: apikey.LimitOptions{Limiter: spy, BreakerFailures: 1, Timeout: 100 * time.Millisecond, FailOpen: true},
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

// Requests whose client went away are not failures of the Limiter: they
// never open the circuit.
func TestLimiterBreakerIgnoresCancelledRequests(t *testing.T) {
	t.Parallel()
	spy := &limiterSpy{}
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: spy, BreakerFailures: 2}})
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
