package apikey_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
)

// tallyPeeker gives a memlimit a limits.Peeker while memlimit has none of
// its own: it tallies what memlimit allowed per subject, limit and limit
// Subject, which answers quotas and credits within one window.
type tallyPeeker struct {
	*memlimit.Limiter
	mu    sync.Mutex
	spent map[[3]string]int64
}

func (p *tallyPeeker) Allow(ctx context.Context, subject string, ls []limits.Limit, cost int64) (limits.Result, error) {
	res, err := p.Limiter.Allow(ctx, subject, ls, cost)
	if err == nil && res.Allowed {
		p.mu.Lock()
		for _, l := range ls {
			p.spent[[3]string{subject, l.Name, l.Subject}] += cost
		}
		p.mu.Unlock()
	}
	return res, err
}

func (p *tallyPeeker) Peek(ctx context.Context, subject string, ls []limits.Limit) (limits.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	res := limits.Result{Allowed: true}
	for i, l := range ls {
		rem := max(0, l.Count-p.spent[[3]string{subject, l.Name, l.Subject}])
		res.States = append(res.States, limits.State{Remaining: rem})
		if i == 0 || rem < res.Remaining {
			res.Limit, res.Remaining = l, rem
		}
		res.Allowed = res.Allowed && rem >= 1
	}
	return res, nil
}

// peeking returns l itself when memlimit implements limits.Peeker, else l
// with a tally.
func peeking(l *memlimit.Limiter) limits.Limiter {
	if _, ok := any(l).(limits.Peeker); ok {
		return l
	}
	return &tallyPeeker{Limiter: l, spent: map[[3]string]int64{}}
}

// remaining lists the Remaining of every limit of res.
func remaining(res limits.Result) []int64 {
	var r []int64
	for _, s := range res.States {
		r = append(r, s.Remaining)
	}
	return r
}

// Balance reports what a customer has left of his plan and his grants,
// as his keys spend them (one budget for all, credits never refilled by a
// new key), without spending anything; it needs a limits.Peeker.
func TestBalance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	plans := limits.Plans{"basic": {limits.Quota("daily", 100, limits.Day)}}
	e := newLimitEnvOver(t, newCustomerStore(), apikey.Options{Plans: plans}, apikey.MiddlewareOptions{})
	mw, err := apikey.NewMiddleware(e.m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: peeking(e.l)}})
	require.NoError(t, err)
	var ran bool
	h := mw.Handler(mw.Limit(okHandler(&ran)))
	balance := func(id string) limits.Result {
		t.Helper()
		res, err := mw.Balance(ctx, id)
		require.NoError(t, err)
		return res
	}

	setCustomer(t, e.m, "ann", func(c *apikey.Customer) { c.Plan, c.Credits = "basic", 5 })
	res := balance("ann")
	assert.True(t, res.Allowed)
	assert.Equal(t, []int64{100, 5}, remaining(res), "the plan's daily quota, then the credits grant")
	for range 5 {
		balance("ann") // spends nothing
	}
	k1, key1 := issue(t, e.m, apikey.IssueParams{Owner: "ann"})
	k2, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Limits: []limits.Limit{limits.Quota("own", 50, limits.Day)}})
	rec := hit(h, bearer(k1))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";r=99;t=43200, "credits";r=4`, rec.Header().Get("RateLimit"), "Balance spent")
	require.Equal(t, 200, hit(h, bearer(k1)).Code)
	require.Equal(t, 200, hit(h, bearer(k2)).Code)
	res = balance("ann")
	assert.Equal(t, []int64{97, 2}, remaining(res), "one balance for every key")
	assert.Equal(t, apikey.CreditsLimit, res.Limit.Name, "the tightest limit")
	assert.Equal(t, int64(2), res.Remaining)

	require.NoError(t, e.m.Revoke(ctx, key1.ID))
	k3, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann"})
	assert.Equal(t, []int64{97, 2}, remaining(balance("ann")), "a new key refilled the credits")
	require.Equal(t, 200, hit(h, bearer(k3)).Code)
	require.Equal(t, 200, hit(h, bearer(k2)).Code)
	res = balance("ann")
	assert.False(t, res.Allowed)
	assert.Equal(t, []int64{95, 0}, remaining(res))
	assert.Equal(t, 429, hit(h, bearer(k3)).Code)

	// A customer without a record has the DefaultPlan, or none.
	_, err = mw.Balance(ctx, "bob")
	assert.ErrorIs(t, err, apikey.ErrUnknownPlan)
	withDefault := newLimitEnvOver(t, newCustomerStore(), apikey.Options{Plans: plans, DefaultPlan: "basic"}, apikey.MiddlewareOptions{})
	dmw, err := apikey.NewMiddleware(withDefault.m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: peeking(withDefault.l)}})
	require.NoError(t, err)
	res, err = dmw.Balance(ctx, "bob")
	require.NoError(t, err)
	assert.Equal(t, int64(100), res.Remaining)

	// Without a limits.Peeker; with a failing customer source.
	spyMW, err := apikey.NewMiddleware(e.m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: &limiterSpy{}}})
	require.NoError(t, err)
	_, err = spyMW.Balance(ctx, "ann")
	assert.ErrorIs(t, err, errors.ErrUnsupported)
	hook := &customerHook{recs: map[string]*apikey.Customer{}, fail: map[string]bool{"ann": true}}
	failing := newLimitEnvOver(t, newCustomerStore(), apikey.Options{Plans: plans, Customers: hook.get}, apikey.MiddlewareOptions{})
	fmw, err := apikey.NewMiddleware(failing.m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: peeking(failing.l)}})
	require.NoError(t, err)
	_, err = fmw.Balance(ctx, "ann")
	assert.ErrorIs(t, err, apikey.ErrUnavailable)
}
