package apikey_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

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
		{"fail-open", apikey.MiddlewareOptions{Limits: apikey.LimitOptions{FailOpen: true}}, "fail-open", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			met := &recMetrics{}
			spy := &limiterSpy{}
			tc.mw.Limits.Limiter, tc.mw.Limits.BreakerFailures = spy, 1
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
