package apikey_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gokeys/apikey"
)

func TestScopes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	mw := f.middleware(t, apikey.MiddlewareOptions{})
	for _, tc := range []struct {
		name   string
		wrap   func(http.Handler) http.Handler
		token  string
		status int
		scope  string
	}{
		{"all-of satisfied", mw.RequireScopes("read", "write"), f.valid, 200, ""},
		{"all-of missing one", mw.RequireScopes("read", "write"), f.readers, 403, "read write"},
		{"any-of satisfied", mw.RequireAnyScope("admin", "read"), f.readers, 200, ""},
		{"any-of none", mw.RequireAnyScope("admin", "write"), f.readers, 403, "admin write"},
		{"no wildcard", mw.RequireScopes("re*"), f.readers, 403, "re*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ran bool
			rec := httptest.NewRecorder()
			mw.Handler(tc.wrap(okHandler(&ran))).ServeHTTP(rec, bearer(tc.token))
			assert.Equal(t, tc.status, rec.Code)
			assert.Equal(t, tc.status == 200, ran)
			if tc.status == 403 {
				assert.Equal(t, `Bearer realm="test", error="insufficient_scope", scope="`+tc.scope+`"`, rec.Header().Get("WWW-Authenticate"))
				assert.Equal(t, problemJSON, rec.Header().Get("Content-Type"))
			}
		})
	}
	t.Run("without a key", func(t *testing.T) {
		var ran bool
		rec := httptest.NewRecorder()
		mw.RequireScopes("read")(okHandler(&ran)).ServeHTTP(rec, get("/"))
		assert.Equal(t, 401, rec.Code)
		assert.False(t, ran)
	})
}
