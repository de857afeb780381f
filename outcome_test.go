package apikey_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
)

// TestOutcomeNames: every sentinel, bare or wrapped, has one name; a
// refusal type has its sentinel's; an error that wraps ErrUnavailable is
// unavailable whatever else it wraps, so that a failing dependency is
// never named as a verdict on the key.
func TestOutcomeNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{apikey.ErrMalformed, "malformed"},
		{apikey.ErrInvalid, "invalid"},
		{apikey.ErrExpired, "expired"},
		{apikey.ErrRevoked, "revoked"},
		{apikey.ErrDisabled, "disabled"},
		{apikey.ErrPaused, "paused"},
		{apikey.ErrSuspended, "suspended"},
		{apikey.ErrIPNotAllowed, "ip_not_allowed"},
		{apikey.ErrUnavailable, "unavailable"},
		{apikey.ErrMissingKey, "missing_key"},
		{apikey.ErrBadRequest, "bad_request"},
		{apikey.ErrInsufficientScope, "insufficient_scope"},
		{&apikey.ScopeError{Scopes: []string{"write"}}, "insufficient_scope"},
		{apikey.ErrRateLimited, "rate_limited"},
		{&apikey.RateLimitError{Result: limits.Result{}}, "rate_limited"},
		{apikey.ErrUnknownPlan, "unknown_plan"},
		{apikey.ErrInvalidOptions, "misconfigured"},
		{fmt.Errorf("apikey: lookup: %w", apikey.ErrRevoked), "revoked"},
		{apikey.ErrCircuitOpen, "unavailable"},
		{fmt.Errorf("apikey: get: %w: %w", apikey.ErrUnavailable, apikey.ErrInvalid), "unavailable"},
		{errors.New("a dependency's own error"), "unavailable"},
	} {
		assert.Equal(t, tc.want, apikey.OutcomeOf(tc.err), "%v", tc.err)
	}
}

// TestLogsAndMetricsNameOutcomesAlike: a failed verification is logged
// under the name Metrics.Verified reports it with.
func TestLogsAndMetricsNameOutcomesAlike(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var buf bytes.Buffer
	met := &recMetrics{}
	m := newManager(t, newSpy(), apikey.Options{Metrics: met, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	revoked, rk := issue(t, m, apikey.IssueParams{Owner: "ann"})
	require.NoError(t, m.Revoke(ctx, rk.ID))
	disabled, dk := issue(t, m, apikey.IssueParams{Owner: "bob"})
	_, err := m.Disable(ctx, dk.ID)
	require.NoError(t, err)
	unknown, _ := issue(t, newManager(t, newSpy(), apikey.Options{}), apikey.IssueParams{Owner: "cid"})
	met.mu.Lock()
	met.verified = nil
	met.mu.Unlock()
	buf.Reset()
	for _, token := range []string{revoked, disabled, unknown, "garbage"} { // one of each: failures are sampled per outcome
		_, err := m.Verify(ctx, token)
		require.Error(t, err)
	}
	var logged []string
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var rec struct {
			APIKey struct {
				Outcome string `json:"outcome"`
			} `json:"apikey"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &rec))
		logged = append(logged, rec.APIKey.Outcome)
	}
	met.mu.Lock()
	defer met.mu.Unlock()
	var measured []string
	for _, v := range met.verified {
		name, _, _ := strings.Cut(v, "/")
		measured = append(measured, name)
	}
	assert.Equal(t, []string{"revoked", "disabled", "invalid", "malformed"}, measured)
	assert.Equal(t, measured, logged, "logs and metrics use the same names")
}

func ExampleOutcome() {
	for _, err := range []error{nil, apikey.ErrRevoked, apikey.ErrIPNotAllowed, errors.New("dial tcp: refused")} {
		name, status, _ := apikey.Outcome(err)
		fmt.Println(name, status)
	}
	// Output:
	// ok 200
	// revoked 401
	// ip_not_allowed 403
	// unavailable 503
}
