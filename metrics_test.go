package apikey_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

func TestMetricsVerified(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	spy := newSpy()
	rec := &recMetrics{}
	m := newManager(t, spy, apikey.Options{Now: c.Now, Metrics: rec, CacheStaleIfError: time.Hour})
	token, k := issue(t, m, apikey.IssueParams{})
	expired, _ := issue(t, m, apikey.IssueParams{TTL: time.Minute})
	revoked, kr := issue(t, m, apikey.IssueParams{})
	require.NoError(t, m.Revoke(ctx, kr.ID))
	unknown, _ := m.Format().New()
	tok, err := m.Format().Parse(token)
	require.NoError(t, err)
	wrong := rebuild(t, m.Format(), tok.ID, "")

	for _, tk := range []string{token, token, "sk_garbage", unknown, unknown, wrong} {
		_, _ = m.Verify(ctx, tk)
	}
	c.Add(time.Hour)
	_, _ = m.Verify(ctx, expired)
	_, _ = m.Verify(ctx, revoked)
	spy.failWith(errors.New("down"))
	_, _ = m.Verify(ctx, token) // stale
	m.Invalidate(k.ID)
	_, _ = m.Verify(ctx, token) // nothing stale left
	assert.Equal(t, []string{
		"ok/miss", "ok/hit", "malformed/none", "invalid/miss", "invalid/negative", "invalid/hit",
		"expired/miss", "revoked/miss", "ok/stale", "unavailable/miss",
	}, rec.verified)

	rec2 := &recMetrics{}
	m2 := newManager(t, memstore.New(), apikey.Options{Metrics: rec2, CacheTTL: -1})
	token2, _ := issue(t, m2, apikey.IssueParams{})
	_, err = m2.Verify(ctx, token2)
	require.NoError(t, err)
	assert.Equal(t, []string{"ok/off"}, rec2.verified)
}
