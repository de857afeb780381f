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
			e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Limiter: l, LimiterTimeout: 5 * time.Millisecond})
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
		failures int // MiddlewareOptions.BreakerFailures
		bad      []string
		sequence []string // failing calls, in order
	}{
		{"Default", 0, []string{"a", "b", "c"}, []string{"a", "b", "a", "c", "b"}},
		{"TwoOfTwo", 2, []string{"a", "b"}, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newSubjectLimiter(false, tc.bad...)
			e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Limiter: l, BreakerFailures: tc.failures})
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
