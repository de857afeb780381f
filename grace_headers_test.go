package apikey_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

// TestGraceHeadersOnEveryAnswer: a key in grace gets Deprecation and
// Sunset on every answer the middleware chain gives it, a scope refusal
// included.
func TestGraceHeadersOnEveryAnswer(t *testing.T) {
	t.Parallel()
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
	token, k := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free", Scopes: []string{"read"}})
	_, err := e.m.Rotate(context.Background(), k.ID, time.Hour)
	require.NoError(t, err)
	var ran bool
	rec := hit(e.handler(&ran, "write"), bearer(token))
	require.Equal(t, 403, rec.Code)
	assert.NotEmpty(t, rec.Header().Get("Deprecation"))
	assert.NotEmpty(t, rec.Header().Get("Sunset"))
}
