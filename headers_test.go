package apikey_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
)

func TestMonthWindowIsItsRealLength(t *testing.T) {
	t.Parallel()
	plans := limits.Plans{"m": {limits.Quota("monthly", 10, limits.Month)}}
	e := newLimitEnv(t, apikey.Options{Plans: plans}, apikey.MiddlewareOptions{})
	token, _ := issue(t, e.m, apikey.IssueParams{Plan: "m"})
	var ran bool
	rec := hit(e.handler(&ran), bearer(token))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"monthly";q=10;w=2592000`, rec.Header().Get("RateLimit-Policy"), "November has 30 days")
	e.c.Add(5 * 24 * time.Hour) // December 2
	rec = hit(e.handler(&ran), bearer(token))
	assert.Equal(t, `"monthly";q=10;w=2678400`, rec.Header().Get("RateLimit-Policy"), "December has 31 days")
	assert.Equal(t, `"monthly";r=9;t=2548800`, rec.Header().Get("RateLimit"))
}

// TestLegacyHeadersOfSpentCredits: credits that are never refilled have
// no X-RateLimit-Reset (0 would mean "retry now"), like RateLimit's t.
func TestLegacyHeadersOfSpentCredits(t *testing.T) {
	t.Parallel()
	plans := limits.Plans{"pro": {limits.Quota("daily", 1000, limits.Day)}}
	e := newLimitEnv(t, apikey.Options{Plans: plans}, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{LegacyHeaders: true}})
	var ran bool
	h := e.handler(&ran)
	token, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "pro", Limits: []limits.Limit{limits.Credits("credits", 1, limits.Never)}})
	require.Equal(t, 200, hit(h, bearer(token)).Code)
	rec := hit(h, bearer(token))
	require.Equal(t, 429, rec.Code, "credits spent")
	assert.Equal(t, "0", rec.Header().Get("X-RateLimit-Remaining"))
	assert.Empty(t, rec.Header().Values("X-RateLimit-Reset"), "no reset ever admits the request")
	assert.Empty(t, rec.Header().Get("Retry-After"))

	daily, _ := issue(t, e.m, apikey.IssueParams{Owner: "bob", Plan: "pro"})
	rec = hit(h, bearer(daily))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, "43200", rec.Header().Get("X-RateLimit-Reset"), "a quota still has its reset")
}
