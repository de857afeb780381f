package rpcauth

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
)

func TestNewRefusesBadConfig(t *testing.T) {
	m := newManager(t)
	for _, c := range []struct {
		name string
		m    *apikey.Manager
		c    Config
	}{
		{"nil manager", nil, Config{}},
		{"upper case? no: a bad character", m, Config{Metadata: []string{"x api key"}}},
		{"reserved metadata key", m, Config{Metadata: []string{"grpc-timeout"}}},
		{"binary metadata key", m, Config{Metadata: []string{"key-bin"}}},
		{"metadata key twice", m, Config{Metadata: []string{"x-api-key", "X-API-Key"}}},
		{"method without service", m, Config{Methods: map[string]Rule{"/Method": {}}}},
		{"method with two slashes", m, Config{Methods: map[string]Rule{"/a.B/C/D": {}}}},
		{"service with a slash", m, Config{Methods: map[string]Rule{"a.B/C": {}}}},
		{"bad scope", m, Config{Methods: map[string]Rule{"a.B": {Scopes: []string{"two words"}}}}},
		{"empty scope", m, Config{Default: Rule{Scopes: []string{""}}}},
		{"negative cost", m, Config{Default: Rule{Cost: -1}}},
		{"open with scopes", m, Config{Methods: map[string]Rule{"a.B": {Open: true, Scopes: []string{"x"}}}}},
		{"open and denied", m, Config{Default: Rule{Open: true, Deny: true}}},
		{"any scope of none", m, Config{Default: Rule{AnyScope: true}}},
		{"negative breaker cool-down", m, Config{Limits: apikey.LimitOptions{Limiter: &failingLimiter{}, BreakerCoolDown: -1}}},
		{"reported costs without a Debiter", m, Config{Limits: apikey.LimitOptions{Limiter: &failingLimiter{}, ReportedCosts: true}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.m, c.c)
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
		})
	}
	g, err := New(m, Config{Metadata: []string{"X-Tenant-Key"}})
	require.NoError(t, err)
	assert.Equal(t, []Source{{Key: "x-tenant-key", Header: "X-Tenant-Key"}}, g.Sources())
}

func TestRule(t *testing.T) {
	g, err := New(newManager(t), Config{
		Methods: map[string]Rule{
			"pkg.Svc":        {Scopes: []string{"svc"}},
			"/pkg.Svc/Own":   {Scopes: []string{"own"}},
			"/pkg.Other/Fn":  {Cost: 3},
			"grpc.health.v1": {Open: true}, // a package, not a service: matches nothing
		},
		Default: Rule{Deny: true},
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"own"}, g.Rule("/pkg.Svc/Own").Scopes)
	assert.Equal(t, []string{"svc"}, g.Rule("/pkg.Svc/Any").Scopes)
	assert.Equal(t, int64(3), g.Rule("/pkg.Other/Fn").Cost)
	assert.True(t, g.Rule("/pkg.Other/Else").Deny)
	assert.True(t, g.Rule("/grpc.health.v1.Health/Check").Deny)
	assert.True(t, g.Rule("").Deny)
	assert.True(t, g.Rule("pkg.Svc").Deny, "a bare service name is no method")
	assert.Equal(t, int64(1), g.Rule("/pkg.Svc/Own").Cost, "cost 1 by default")
}

// TestRefusalTable pins the code and message of every outcome, and that
// no refusal carries its error's text.
func TestRefusalTable(t *testing.T) {
	const (
		msgBadRequest      = "The request carries its credentials in a malformed way."
		msgUnauthenticated = "A valid API key is required."
		msgPlan            = "The API key's plan is not configured on this server."
		msgIP              = "The API key may not be used from this IP address: it is restricted to other IP ranges."
		msgRateLimited     = "The API key's rate limit is exceeded."
		msgInternal        = "The server could not process the request."
		msgUnavailable     = "Authentication is temporarily unavailable."
	)
	g, err := New(newManager(t), Config{})
	require.NoError(t, err)
	dep := fmt.Errorf("%w: dial tcp: password=hunter2", apikey.ErrUnavailable)
	for _, c := range []struct {
		err  error
		code Code
		msg  string
	}{
		{apikey.ErrMissingKey, Unauthenticated, msgUnauthenticated},
		{apikey.ErrMalformed, Unauthenticated, msgUnauthenticated},
		{apikey.ErrInvalid, Unauthenticated, msgUnauthenticated},
		{apikey.ErrRevoked, Unauthenticated, msgUnauthenticated},
		{apikey.ErrExpired, Unauthenticated, msgUnauthenticated},
		{apikey.ErrDisabled, Unauthenticated, msgUnauthenticated},
		{apikey.ErrPaused, Unauthenticated, msgUnauthenticated},
		{apikey.ErrSuspended, Unauthenticated, msgUnauthenticated},
		{fmt.Errorf("apikey: lookup: %w", apikey.ErrRevoked), Unauthenticated, msgUnauthenticated},
		{apikey.ErrBadRequest, InvalidArgument, msgBadRequest},
		{apikey.ErrUnknownPlan, PermissionDenied, msgPlan},
		{apikey.ErrIPNotAllowed, PermissionDenied, msgIP},
		{&apikey.RateLimitError{}, ResourceExhausted, msgRateLimited},
		{apikey.ErrUnavailable, Unavailable, msgUnavailable},
		{apikey.ErrCircuitOpen, Unavailable, msgUnavailable},
		{dep, Unavailable, msgUnavailable},
		{errors.New("a bug: password=hunter2"), Unavailable, msgUnavailable},
		{fmt.Errorf("%w: negative cost", apikey.ErrInvalidOptions), Internal, msgInternal},
	} {
		ref := g.refuse(context.Background(), c.err)
		assert.Equal(t, c.code, ref.Code, "%v", c.err)
		assert.Equal(t, c.msg, ref.Message, "%v", c.err)
		assert.NotContains(t, ref.Message, "hunter2")
	}
}

func TestWithKey(t *testing.T) {
	g, err := New(newManager(t), Config{})
	require.NoError(t, err)
	k := &apikey.Key{ID: "k1"}
	type other struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), other{}, "v"))
	ctx := g.WithKey(parent, k)
	assert.Same(t, k, apikey.FromContext(ctx))
	assert.Equal(t, "v", ctx.Value(other{}), "other values pass through")
	child, stop := context.WithCancel(ctx)
	defer stop()
	assert.Same(t, k, apikey.FromContext(context.WithValue(child, other{}, "w")), "through further contexts")
	cancel()
	<-child.Done() // cancellation propagates through the key's context
	assert.Nil(t, apikey.FromContext(parent))
}

// TestCost: Config.Cost replaces the rule's cost; 0 spends nothing, and a
// negative cost or a panic is an internal error, never a spend.
func TestCost(t *testing.T) {
	m := newManager(t)
	lim, err := memlimit.New(memlimit.Options{})
	require.NoError(t, err)
	k := &apikey.Key{ID: "k", Owner: "o", Limits: []limits.Limit{limits.Quota("daily", 10, limits.Day)}}
	for _, c := range []struct {
		name   string
		cost   func(context.Context, string, any, *apikey.Key) int64
		code   Code
		header bool
	}{
		{"from the request", func(_ context.Context, method string, req any, _ *apikey.Key) int64 { return req.(int64) }, 0, true},
		{"zero", func(context.Context, string, any, *apikey.Key) int64 { return 0 }, 0, false},
		{"negative", func(context.Context, string, any, *apikey.Key) int64 { return -1 }, Internal, false},
		{"panic", func(context.Context, string, any, *apikey.Key) int64 { panic("bug") }, Internal, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, err := New(m, Config{Limits: apikey.LimitOptions{Limiter: lim}, Cost: c.cost})
			require.NoError(t, err)
			h, ref := g.Spend(context.Background(), "/a.B/C", g.Rule("/a.B/C"), int64(3), k)
			if c.code == 0 {
				assert.Nil(t, ref)
			} else {
				require.NotNil(t, ref)
				assert.Equal(t, c.code, ref.Code)
			}
			assert.Equal(t, c.header, h.Get("Ratelimit") != "", "RateLimit headers: %v", h)
		})
	}
}

// failingLimiter fails every call.
type failingLimiter struct{}

func (*failingLimiter) Allow(context.Context, string, []limits.Limit, int64) (limits.Result, error) {
	return limits.Result{}, errors.New("backend down")
}

type ctxKey struct{}

// TestLimitOptionsApply: the LimitOptions of a Config rule the calls'
// spending as they rule the HTTP Middleware's: a failing Limiter fails
// closed (Unavailable) or open (FailOpen), and OnFailure hears of it with
// the call's context.
func TestLimitOptionsApply(t *testing.T) {
	m := newManager(t)
	k := &apikey.Key{ID: "k", Owner: "o", Limits: []limits.Limit{limits.Quota("daily", 10, limits.Day)}}
	for _, c := range []struct {
		name     string
		failOpen bool
		code     Code
	}{{"fail closed", false, Unavailable}, {"fail open", true, 0}} {
		t.Run(c.name, func(t *testing.T) {
			var heard []any
			g, err := New(m, Config{Limits: apikey.LimitOptions{Limiter: &failingLimiter{}, FailOpen: c.failOpen,
				OnFailure: func(ctx context.Context, err error) { heard = append(heard, ctx.Value(ctxKey{})) }}})
			require.NoError(t, err)
			ctx := context.WithValue(context.Background(), ctxKey{}, "call")
			_, ref := g.Spend(ctx, "/a.B/C", g.Rule("/a.B/C"), nil, k)
			if c.code == 0 {
				assert.Nil(t, ref)
			} else {
				require.NotNil(t, ref)
				assert.Equal(t, c.code, ref.Code)
			}
			assert.Equal(t, []any{"call"}, heard, "OnFailure gets the call's context")
		})
	}
}
