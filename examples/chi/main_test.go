package main

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

func TestRouter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, err := apikey.New(memstore.New(), apikey.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(ctx) })
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	token, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "bob", Scopes: []string{"read"}})
	require.NoError(t, err)
	h := router(mw)

	for _, tc := range []struct {
		name, method, token string
		code                int
		body                string
	}{
		{"read with a key", "GET", token, 200, "data for bob"},
		{"write without the scope", "POST", token, 403, ""},
		{"no key", "GET", "", 401, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "/data", nil)
			if tc.token != "" {
				req.Header.Set("X-API-Key", tc.token)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			assert.Equal(t, tc.code, rec.Code)
			if tc.body != "" {
				assert.Equal(t, tc.body, rec.Body.String())
			}
		})
	}
}
