package openapicheck

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/memstore"
)

func newValidator(t *testing.T) validator.Validator {
	t.Helper()
	doc, err := libopenapi.NewDocument(keyshttp.OpenAPI())
	require.NoError(t, err)
	v, errs := validator.NewValidator(doc)
	require.Empty(t, errs)
	return v
}

// The document is valid OpenAPI 3.1 by the specification's own schema.
func TestDocumentIsValidOpenAPI31(t *testing.T) {
	t.Parallel()
	ok, errs := newValidator(t).ValidateDocument()
	for _, e := range errs {
		t.Errorf("%s: %s", e.Message, e.Reason)
		for _, f := range e.SchemaValidationErrors {
			t.Errorf("  %s", f.Reason)
		}
	}
	assert.True(t, ok)
}

// Real answers of the handler, on every route, validate against the
// document as libopenapi reads it; the requests it accepts validate too.
func TestAnswersMatchDocument(t *testing.T) {
	t.Parallel()
	v := newValidator(t)
	m, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_live"})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	h, err := keyshttp.New(m, keyshttp.Options{
		Plans: []string{"free", "pro"}, DefaultPlan: "free",
		Owner: func(r *http.Request) (string, error) {
			if u := r.Header.Get("X-User"); u != "" {
				return u, nil
			}
			return "", errors.New("no session")
		},
	})
	require.NoError(t, err)

	do := func(user, method, path, body string, wantStatus int) *http.Response {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req := httptest.NewRequest(method, "http://example.com"+path, rd)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if user != "" {
			req.Header.Set("X-User", user)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		res := rec.Result()
		require.Equal(t, wantStatus, res.StatusCode, "%s %s: %s", method, path, rec.Body.String())
		// Validate a fresh copy of the request (the handler read its body).
		check := httptest.NewRequest(method, "http://example.com"+path, strings.NewReader(body))
		if body != "" {
			check.Header.Set("Content-Type", "application/json")
		}
		var ok bool
		var errs []*liberrors.ValidationError
		if wantStatus < 300 {
			ok, errs = v.ValidateHttpRequestResponse(check, res)
		} else {
			ok, errs = v.ValidateHttpResponse(check, res)
		}
		for _, e := range errs {
			t.Errorf("%s %s %d: %s: %s", method, path, wantStatus, e.Message, e.Reason)
			for _, f := range e.SchemaValidationErrors {
				t.Errorf("  %s", f.Reason)
			}
		}
		assert.True(t, ok, "%s %s %d", method, path, wantStatus)
		res.Body = io.NopCloser(strings.NewReader(rec.Body.String()))
		return res
	}

	do("", "GET", "/openapi.json", "", 200)
	do("", "GET", "/api-keys", "", 401)
	do("alice", "POST", "/api-keys", `{"name":"ci","scopes":["read"],"plan":"pro","metadata":{"a":"b"},"ttl_seconds":3600,"credits":10}`, 201)
	do("alice", "POST", "/api-keys", `{"plan":"gold"}`, 400)
	res := do("alice", "POST", "/api-keys", "", 201)
	body, _ := io.ReadAll(res.Body)
	id := between(string(body), `"id":"`, `"`)
	require.NotEmpty(t, id)
	do("alice", "GET", "/api-keys?limit=1", "", 200)
	do("alice", "GET", "/api-keys?limit=0", "", 400)
	do("alice", "GET", "/api-keys/"+id, "", 200)
	do("bob", "GET", "/api-keys/"+id, "", 404)
	do("alice", "PATCH", "/api-keys/"+id, `{"name":"renamed","expires_at":null,"credits":5}`, 200)
	do("alice", "POST", "/api-keys/"+id+"/disable", "", 200)
	do("alice", "POST", "/api-keys/"+id+"/enable", "", 200)
	do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":60}`, 200)
	do("alice", "POST", "/api-keys/"+id+"/rotate", "", 409)
	do("alice", "DELETE", "/api-keys/"+id, "", 204)
}

func between(s, from, to string) string {
	_, rest, ok := strings.Cut(s, from)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, to)
	return v
}
