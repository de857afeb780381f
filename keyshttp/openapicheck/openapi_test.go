package openapicheck

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/selfservice"
	"github.com/gokeys/apikey/usage"
)

// mounted is the Handler mounted under /v1, as a service would, with the
// Owner named by the X-User header.
type mounted struct {
	m   *apikey.Manager
	s   *memstore.Store
	h   http.Handler
	doc []byte
}

func mount(t *testing.T) *mounted {
	t.Helper()
	s := memstore.New()
	m, err := apikey.New(s, apikey.Options{Prefix: "sk_live", CacheTTL: -1})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	policy, err := selfservice.New(m, selfservice.Options{Scopes: []string{"read", "write"}})
	require.NoError(t, err)
	h, err := keyshttp.New(m, keyshttp.Options{
		Policy:    policy,
		Challenge: `Basic realm="keys"`,
		Owner: func(r *http.Request) (string, error) {
			if u := r.Header.Get("X-User"); u != "" {
				return u, nil
			}
			return "", errors.New("no session")
		},
	})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/v1/", http.StripPrefix("/v1", h))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "http://example.com/v1/openapi.json", nil))
	require.Equal(t, 200, rec.Code)
	return &mounted{m: m, s: s, h: mux, doc: rec.Body.Bytes()}
}

func newValidator(t *testing.T, doc []byte) validator.Validator {
	t.Helper()
	d, err := libopenapi.NewDocument(doc)
	require.NoError(t, err)
	v, errs := validator.NewValidator(d)
	require.Empty(t, errs)
	return v
}

// The document, as served under /v1, is valid OpenAPI 3.1 by the
// specification's own schema.
func TestDocumentIsValidOpenAPI31(t *testing.T) {
	t.Parallel()
	ok, errs := newValidator(t, mount(t).doc).ValidateDocument()
	for _, e := range errs {
		t.Errorf("%s: %s", e.Message, e.Reason)
		for _, f := range e.SchemaValidationErrors {
			t.Errorf("  %s", f.Reason)
		}
	}
	assert.True(t, ok)
}

// Real answers of the handler mounted under /v1, on every route, validate
// against the document it serves there, as libopenapi reads it; the
// requests it accepts validate too.
func TestAnswersMatchDocument(t *testing.T) {
	t.Parallel()
	mt := mount(t)
	v := newValidator(t, mt.doc)
	_, err := mt.m.SetCustomer(context.Background(), "capped", func(c *apikey.Customer) error { c.MaxKeys = 1; return nil })
	require.NoError(t, err)

	do := func(user, method, path, body string, wantStatus int) *http.Response {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req := httptest.NewRequest(method, "http://example.com/v1"+path, rd)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if user != "" {
			req.Header.Set("X-User", user)
		}
		rec := httptest.NewRecorder()
		mt.h.ServeHTTP(rec, req)
		res := rec.Result()
		require.Equal(t, wantStatus, res.StatusCode, "%s %s: %s", method, path, rec.Body.String())
		// Validate a fresh copy of the request (the handler read its body).
		check := httptest.NewRequest(method, "http://example.com/v1"+path, strings.NewReader(body))
		if body != "" {
			check.Header.Set("Content-Type", "application/json")
		}
		if user != "" {
			check.Header.Set("Authorization", "Basic YWxpY2U6cHc=")
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
	idOf := func(res *http.Response) string {
		body, _ := io.ReadAll(res.Body)
		id := between(string(body), `"id":"`, `"`)
		require.NotEmpty(t, id)
		return id
	}

	do("", "GET", "/openapi.json", "", 200)
	do("", "GET", "/api-keys", "", 401)
	do("alice", "POST", "/api-keys", `{"name":"ci","scopes":["read"],"ttl_seconds":3600}`, 201)
	do("alice", "POST", "/api-keys", `{"plan":"gold"}`, 403)
	do("alice", "POST", "/api-keys", `{"name":7}`, 400)
	do("capped", "POST", "/api-keys", "", 201)
	do("capped", "POST", "/api-keys", "", 409)
	id := idOf(do("alice", "POST", "/api-keys", "", 201))
	do("alice", "GET", "/api-keys?limit=1", "", 200)
	do("alice", "GET", "/api-keys?usable=true", "", 200)
	do("alice", "GET", "/api-keys?limit=0", "", 400)
	do("alice", "GET", "/api-keys/"+id, "", 200)
	do("bob", "GET", "/api-keys/"+id, "", 404)
	do("alice", "PATCH", "/api-keys/"+id, `{"name":"renamed","scopes":["read","write"]}`, 200)
	do("alice", "PATCH", "/api-keys/"+id, `{"credits":5}`, 403)
	do("alice", "POST", "/api-keys/"+id+"/pause", "", 200)
	do("alice", "POST", "/api-keys/"+id+"/resume", "", 200)
	do("alice", "POST", "/api-keys/"+id+"/disable", "", 200)
	do("alice", "POST", "/api-keys/"+id+"/enable", "", 200)
	do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":60}`, 200)
	do("alice", "POST", "/api-keys/"+id+"/rotate", "", 409)
	hour := time.Now().UTC().Truncate(time.Hour)
	require.NoError(t, mt.s.AddUsage(context.Background(), []usage.Record{
		{Customer: "alice", KeyID: id, Start: hour, Allowed: 5, Limited: 2, Refused: 1, Cost: 9},
		{Customer: "alice", KeyID: id, Start: hour.Add(-3 * time.Hour), Allowed: 1, Cost: 1},
	}))
	do("alice", "GET", "/usage", "", 200)
	do("alice", "GET", "/usage?step=hour&from="+hour.Add(-5*time.Hour).Format(time.RFC3339)+"&to="+hour.Add(time.Hour).Format(time.RFC3339), "", 200)
	do("alice", "GET", "/usage?step=week", "", 400)
	do("alice", "GET", "/usage?step=hour&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "", 400)
	do("", "GET", "/usage", "", 401)
	do("alice", "GET", "/api-keys/"+id+"/usage?step=month", "", 200)
	do("alice", "GET", "/api-keys/"+id+"/usage?from=yesterday", "", 400)
	do("bob", "GET", "/api-keys/"+id+"/usage", "", 404)
	do("alice", "POST", "/api-keys/"+id+"/revoke-chain", "", 204)
	do("alice", "POST", "/api-keys/"+id+"/resume", "", 409)
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
