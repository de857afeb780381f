package apikey_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

func TestMiddlewareTable(t *testing.T) {
	t.Parallel()
	for _, tc := range rows() {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			mw := f.middleware(t, tc.opts)
			before := f.spy.calls.Load()

			var ran bool
			rec := httptest.NewRecorder()
			mw.Handler(okHandler(&ran)).ServeHTTP(rec, tc.req(f))
			res := rec.Result()
			assert.Equal(t, tc.status, res.StatusCode)
			assert.Equal(t, tc.challenge, res.Header.Get("WWW-Authenticate"))
			assert.Equal(t, tc.status == 200, ran, "whether the handler ran")
			if tc.status != 200 {
				assert.Equal(t, problemJSON, res.Header.Get("Content-Type"))
				assert.Equal(t, "no-store", res.Header.Get("Cache-Control"))
			} else {
				assert.Equal(t, "text/plain; charset=utf-8", res.Header.Get("Content-Type"), "the handler's own response")
			}
			if tc.status == 503 {
				assert.Equal(t, "5", res.Header.Get("Retry-After"))
				assert.NotContains(t, rec.Body.String(), "connection refused")
			}
			if tc.storeFree {
				assert.Equal(t, before, f.spy.calls.Load(), "reached the store")
			}

			// The same request through Authenticate.
			f.spy.calls.Store(before)
			k, err := mw.Authenticate(tc.req(f))
			if tc.status == 200 {
				require.NoError(t, err)
				assert.NotNil(t, k)
			} else {
				assert.ErrorIs(t, err, tc.sentinel)
				assert.Nil(t, k)
			}
			if tc.storeFree {
				assert.Equal(t, before, f.spy.calls.Load(), "Authenticate reached the store")
			}
		})
	}
}

func TestInvalidResponsesAreIdentical(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	mw := f.middleware(t, apikey.MiddlewareOptions{})
	var want *httptest.ResponseRecorder
	for _, token := range []string{f.unknown, f.wrong, f.expired, f.revoked, flip(f.valid, 30), "sk_garbage"} {
		var ran bool
		rec := httptest.NewRecorder()
		mw.Handler(okHandler(&ran)).ServeHTTP(rec, bearer(token))
		require.False(t, ran)
		if want == nil {
			want = rec
			continue
		}
		assert.Equal(t, want.Code, rec.Code)
		assert.Equal(t, want.Header(), rec.Header())
		assert.Equal(t, want.Body.String(), rec.Body.String())
	}
	assert.JSONEq(t, `{"type":"about:blank","title":"Unauthorized","status":401,"detail":"A valid API key is required."}`, want.Body.String())
}

func TestErrorHandlerGetsSentinels(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var got []error
	mw := f.middleware(t, apikey.MiddlewareOptions{ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
		got = append(got, err)
		w.WriteHeader(http.StatusTeapot)
	}})
	h := mw.Handler(mw.RequireScopes("admin")(http.NotFoundHandler()))
	for _, r := range []*http.Request{get("/"), bearer(f.unknown), bearer(f.expired), bearer(f.valid)} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		assert.Equal(t, http.StatusTeapot, rec.Code)
	}
	f.spy.failWith(errors.New("secret internal detail"))
	h.ServeHTTP(httptest.NewRecorder(), bearer(f.readers))
	require.Len(t, got, 5)
	assert.Equal(t, apikey.ErrMissingKey, got[0])
	assert.Equal(t, apikey.ErrInvalid, got[1])
	assert.Equal(t, apikey.ErrExpired, got[2])
	assert.ErrorIs(t, got[3], apikey.ErrInsufficientScope)
	assert.Equal(t, apikey.ErrUnavailable, got[4], "a dependency's error is never handed on")
}

// TestErrorAnswersEachOutcome: Error answers every sentinel with its
// outcome's status, a problem+json body of that status, and the
// challenge RFC 6750 calls for; a key refused for its state is answered
// byte for byte like an unknown one.
func TestErrorAnswersEachOutcome(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	mw := f.middleware(t, apikey.MiddlewareOptions{Realm: "r"})
	invalid := httptest.NewRecorder()
	mw.Error(invalid, httptest.NewRequest("GET", "/", nil), apikey.ErrInvalid)
	for _, tc := range []struct {
		err    error
		status int
		auth   string
	}{
		{apikey.ErrMissingKey, 401, `Bearer realm="r"`},
		{apikey.ErrBadRequest, 400, `Bearer realm="r", error="invalid_request"`},
		{apikey.ErrMalformed, 401, `Bearer realm="r", error="invalid_token"`},
		{apikey.ErrExpired, 401, `Bearer realm="r", error="invalid_token"`},
		{apikey.ErrRevoked, 401, `Bearer realm="r", error="invalid_token"`},
		{apikey.ErrDisabled, 401, `Bearer realm="r", error="invalid_token"`},
		{apikey.ErrPaused, 401, `Bearer realm="r", error="invalid_token"`},
		{apikey.ErrSuspended, 401, `Bearer realm="r", error="invalid_token"`},
		{apikey.ErrInsufficientScope, 403, `Bearer realm="r", error="insufficient_scope"`},
		{&apikey.ScopeError{Scopes: []string{"a", "b"}}, 403, `Bearer realm="r", error="insufficient_scope", scope="a b"`},
		{apikey.ErrUnknownPlan, 403, ""},
		{apikey.ErrIPNotAllowed, 403, ""},
		{&apikey.RateLimitError{}, 429, ""},
		{apikey.ErrUnavailable, 503, ""},
		{errors.New("a dependency failed"), 503, ""},
		{apikey.ErrInvalidOptions, 500, ""},
	} {
		rec := httptest.NewRecorder()
		mw.Error(rec, httptest.NewRequest("GET", "/", nil), tc.err)
		assert.Equal(t, tc.status, rec.Code, "%v", tc.err)
		assert.Equal(t, tc.auth, rec.Header().Get("WWW-Authenticate"), "%v", tc.err)
		assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
		var body struct{ Status int }
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
		assert.Equal(t, tc.status, body.Status)
		if tc.auth == `Bearer realm="r", error="invalid_token"` {
			assert.Equal(t, invalid.Body.String(), rec.Body.String(), "%v is answered like an unknown key", tc.err)
		}
	}
}
