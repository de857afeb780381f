package apikey_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memstore"
)

// All keys of an owner share one budget; a key without owner is counted
// on its own.
func TestLimitSubject(t *testing.T) {
	t.Parallel()
	t.Run("OwnerByDefault", func(t *testing.T) {
		e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
		a, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"})
		b, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"})
		other, _ := issue(t, e.m, apikey.IssueParams{Owner: "bob", Plan: "free"})
		var ran bool
		h := e.handler(&ran)
		for _, tok := range []string{a, b, a} {
			require.Equal(t, 200, hit(h, bearer(tok)).Code)
		}
		assert.Equal(t, 429, hit(h, bearer(b)).Code, "ann's two keys got more than the plan")
		assert.Equal(t, 200, hit(h, bearer(other)).Code)
	})
	t.Run("KeyWithoutOwner", func(t *testing.T) {
		e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
		a, _ := issue(t, e.m, apikey.IssueParams{Plan: "free"})
		b, _ := issue(t, e.m, apikey.IssueParams{Plan: "free"})
		var ran bool
		h := e.handler(&ran)
		for range 3 {
			require.Equal(t, 200, hit(h, bearer(a)).Code)
		}
		assert.Equal(t, 429, hit(h, bearer(a)).Code)
		assert.Equal(t, 200, hit(h, bearer(b)).Code)
	})
}

// A rotation neither resets nor duplicates consumption.
func TestRotationKeepsTheBudget(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		owner string
		key   func(*apikey.Key) string
	}{
		{"Owner", "ann", nil},
		{"LineageWithoutOwner", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
			old, k := issue(t, e.m, apikey.IssueParams{Owner: tc.owner, Plan: "free"})
			var ran bool
			h := e.handler(&ran)
			require.Equal(t, 200, hit(h, bearer(old)).Code)
			require.Equal(t, 200, hit(h, bearer(old)).Code)
			succ, sk := rotate(t, e.m, k.ID, time.Hour)
			require.Equal(t, k.ID, sk.Lineage, "the successor continues the lineage")
			assert.Equal(t, 200, hit(h, bearer(succ)).Code)
			assert.Equal(t, 429, hit(h, bearer(succ)).Code, "the successor got a fresh budget")
			assert.Equal(t, 429, hit(h, bearer(old)).Code, "the predecessor in grace got a budget of its own")
		})
	}
}

func TestUnknownPlan(t *testing.T) {
	t.Parallel()
	t.Run("RefusedAndLoggedOnce", func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		spy := &limiterSpy{}
		e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: spy}, Logger: log})
		token, _ := issueWithPlan(t, e, "gold")
		var ran bool
		h := e.handler(&ran)
		for range 3 {
			ran = false
			rec := hit(h, bearer(token))
			require.Equal(t, http.StatusForbidden, rec.Code)
			assert.False(t, ran)
			assert.Equal(t, problemJSON, rec.Header().Get("Content-Type"))
			assert.Contains(t, rec.Body.String(), "plan is not configured")
		}
		assert.Zero(t, spy.calls.Load(), "an unknown plan reached the limiter")
		assert.Equal(t, 1, strings.Count(buf.String(), "plan is not configured"), buf.String())
		assert.Contains(t, buf.String(), "plan=gold")
	})
	t.Run("DefaultPlan", func(t *testing.T) {
		e := newLimitEnv(t, apikey.Options{DefaultPlan: "free"}, apikey.MiddlewareOptions{})
		token, _ := issueWithPlan(t, e, "gold")
		var ran bool
		rec := hit(e.handler(&ran), bearer(token))
		require.Equal(t, 200, rec.Code)
		assert.Equal(t, `"daily";q=3;w=86400`, rec.Header().Get("RateLimit-Policy"))
	})
	t.Run("DefaultPlanMustExist", func(t *testing.T) {
		_, err := apikey.New(memstore.New(), apikey.Options{Plans: testPlans, DefaultPlan: "gold"})
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
		_, err = apikey.New(memstore.New(), apikey.Options{Plans: limits.Plans{"p": {limits.Quota("a b", 1, limits.Day)}}})
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
	})
}

// issueWithPlan stores a key whose plan e's Manager does not know, as if
// the plan had been removed after the key was issued.
func issueWithPlan(t *testing.T, e *limitEnv, plan string) (string, *apikey.Key) {
	t.Helper()
	m := newManager(t, e.s, apikey.Options{Now: e.c.Now, Plans: limits.Plans{plan: nil}})
	return issue(t, m, apikey.IssueParams{Plan: plan})
}

// A key's own limits add to its customer's plan's and are counted per
// key lineage: credits on one key are that key's, even when its owner's
// other keys share the plan's budget, and a key's own limit never
// replaces nor widens the plan's, whatever its name or count.
func TestKeyLimitsAndCredits(t *testing.T) {
	t.Parallel()
	plans := limits.Plans{
		"pro":  {limits.Quota("daily", 1000, limits.Day), limits.Rate("per-second", 100, time.Second, 0)},
		"free": {limits.Quota("daily", 3, limits.Day)},
	}
	e := newLimitEnv(t, apikey.Options{Plans: plans}, apikey.MiddlewareOptions{})
	var ran bool
	h := e.handler(&ran)

	credited, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "pro", Limits: []limits.Limit{limits.Credits("credits", 2, limits.Never)}})
	plain, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "pro"})
	rec := hit(h, bearer(credited))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"credits";q=2, "daily";q=1000;w=86400, "per-second";q=100;w=1`, rec.Header().Get("RateLimit-Policy"))
	assert.Equal(t, `"credits";r=1, "daily";r=999;t=43200, "per-second";r=99;t=1`, rec.Header().Get("RateLimit"))
	rec = hit(h, bearer(plain))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";r=998;t=43200, "per-second";r=98;t=1`, rec.Header().Get("RateLimit"), "the owner's budget is shared")
	require.Equal(t, 200, hit(h, bearer(credited)).Code)
	rec = hit(h, bearer(credited))
	require.Equal(t, 429, rec.Code, "credits spent")
	assert.Empty(t, rec.Header().Get("Retry-After"), "credits never refilled: no wait helps")
	assert.Equal(t, `"credits";r=0, "daily";r=997;t=43200, "per-second";r=97;t=1`, rec.Header().Get("RateLimit"))
	assert.Equal(t, 200, hit(h, bearer(plain)).Code, "credits are per key")

	own, _ := issue(t, e.m, apikey.IssueParams{Owner: "bob", Plan: "pro", Limits: []limits.Limit{limits.Quota("hourly", 1, limits.Hour), limits.Credits("monthly", 5, limits.Month)}})
	rec = hit(h, bearer(own))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"hourly";q=1;w=3600, "monthly";q=5;w=2592000, "daily";q=1000;w=86400, "per-second";q=100;w=1`,
		rec.Header().Get("RateLimit-Policy"), "the key's quota is added to the plan's rate and quota")
	assert.Equal(t, `"hourly";r=0;t=3600, "monthly";r=4;t=302400, "daily";r=999;t=43200, "per-second";r=99;t=1`, rec.Header().Get("RateLimit"))
	rec = hit(h, bearer(own))
	assert.Equal(t, 429, rec.Code, "the key's own quota narrows the plan")
	assert.Equal(t, "3600", rec.Header().Get("Retry-After"))

	// A key's own limit named like the plan's, with a larger count, is
	// counted beside it: the plan still admits 3.
	wide, _ := issue(t, e.m, apikey.IssueParams{Owner: "cid", Plan: "free", Limits: []limits.Limit{limits.Quota("daily", 100, limits.Day)}})
	for range 3 {
		require.Equal(t, 200, hit(h, bearer(wide)).Code)
	}
	rec = hit(h, bearer(wide))
	assert.Equal(t, 429, rec.Code, "a key's own limit widened its plan")
	assert.Equal(t, `"daily";r=97;t=43200, "daily";r=0;t=43200`, rec.Header().Get("RateLimit"))
}

// A key's own limits set with Update apply at the next request, beside
// its plan's and over what was already spent; raising them never widens
// the plan.
func TestUpdatedKeyLimitsApply(t *testing.T) {
	t.Parallel()
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
	token, k := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"})
	var ran bool
	h := e.handler(&ran)
	require.Equal(t, 200, hit(h, bearer(token)).Code)
	setLimits := func(ls ...limits.Limit) {
		t.Helper()
		_, err := e.m.Update(context.Background(), k.ID, func(k *apikey.Key) error { k.Limits = ls; return nil })
		require.NoError(t, err)
	}
	setLimits(limits.Quota("hourly", 2, limits.Hour))
	rec := hit(h, bearer(token))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"hourly";q=2;w=3600, "daily";q=3;w=86400`, rec.Header().Get("RateLimit-Policy"))
	assert.Equal(t, `"hourly";r=1;t=3600, "daily";r=1;t=43200`, rec.Header().Get("RateLimit"))
	require.Equal(t, 200, hit(h, bearer(token)).Code)
	require.Equal(t, 429, hit(h, bearer(token)).Code)

	setLimits(limits.Quota("hourly", 1000, limits.Hour), limits.Quota("daily", 1000, limits.Day))
	rec = hit(h, bearer(token))
	assert.Equal(t, 429, rec.Code, "the key's own limits widened its plan")
	assert.Equal(t, `"hourly";r=998;t=3600, "daily";r=1000;t=43200, "daily";r=0;t=43200`, rec.Header().Get("RateLimit"))
	setLimits()
	assert.Equal(t, 429, hit(h, bearer(token)).Code)
	e.c.Add(12 * time.Hour) // the next day
	assert.Equal(t, 200, hit(h, bearer(token)).Code)
}
