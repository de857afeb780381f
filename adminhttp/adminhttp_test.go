package adminhttp_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/adminhttp"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memstore"
)

// plans are a free and a pro tier; free is the default.
func plans() limits.Plans {
	return limits.Plans{
		"free": {limits.Quota("daily", 100, limits.Day)},
		"pro":  {limits.Quota("daily", 10_000, limits.Day), limits.Rate("per-second", 100, time.Second, 0)},
	}
}

// env is a Manager over a customerStore, a Middleware spending with a
// peeker, the admin Handler over both, and an API route behind the
// Middleware.
type env struct {
	t     *testing.T
	store *customerStore
	lim   *peeker
	m     *apikey.Manager
	mw    *apikey.Middleware
	admin *adminhttp.Handler
	api   http.Handler
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, store: newCustomerStore(), lim: &peeker{remaining: map[string]int64{}}}
	var err error
	e.m, err = apikey.New(e.store, apikey.Options{Prefix: "sk_test", Plans: plans(), DefaultPlan: "free"})
	require.NoError(t, err)
	t.Cleanup(func() { e.m.Close(context.Background()) })
	e.mw, err = apikey.NewMiddleware(e.m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: e.lim}})
	require.NoError(t, err)
	e.admin, err = adminhttp.New(e.m, adminhttp.Options{Middleware: e.mw})
	require.NoError(t, err)
	e.api = e.mw.Handler(e.mw.Limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	return e
}

// answer is a decoded response.
type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// do sends a request to h; headers come in name, value pairs.
func do(t *testing.T, h http.Handler, method, path, body string, headers ...string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, "http://example.com"+path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	a := answer{status: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	if strings.HasPrefix(a.raw, "{") {
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &a.body), a.raw)
	}
	return a
}

func (e *env) do(method, path, body string, headers ...string) answer {
	e.t.Helper()
	return do(e.t, e.admin, method, path, body, headers...)
}

// call presents token to the API route and returns the status.
func (e *env) call(token string) int {
	req := httptest.NewRequest("GET", "/data", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	e.api.ServeHTTP(rec, req)
	return rec.Code
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	m, err := apikey.New(memstore.New(), apikey.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	for name, tc := range map[string]struct {
		m    *apikey.Manager
		opts adminhttp.Options
	}{
		"nil manager":        {nil, adminhttp.Options{}},
		"negative body size": {m, adminhttp.Options{MaxBodyBytes: -1}},
		"negative retry":     {m, adminhttp.Options{RetryAfter: -time.Second}},
		"bad origin":         {m, adminhttp.Options{TrustedOrigins: []string{"not an origin"}}},
	} {
		_, err := adminhttp.New(tc.m, tc.opts)
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions, name)
	}
	_, err = adminhttp.New(m, adminhttp.Options{})
	assert.NoError(t, err, "the zero Options are valid")
}

func TestUnknownRoutesAndMethods(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/admin", 404, ""},
		{"GET", "/admin/", 404, ""},
		{"GET", "/admin/customersx", 404, ""},
		{"GET", "/admin/customers/bob/keys", 404, ""},
		{"GET", "/api-keys", 404, ""},
		{"POST", "/admin/customers", 405, "GET, HEAD"},
		{"DELETE", "/admin/customers/bob", 405, "GET, HEAD, PUT"},
		{"PATCH", "/admin/customers/bob", 405, "GET, HEAD, PUT"},
		{"POST", "/admin/openapi.json", 405, "GET, HEAD"},
	} {
		a := e.do(tc.method, tc.path, "")
		assert.Equal(t, tc.status, a.status, "%s %s", tc.method, tc.path)
		assert.Equal(t, "application/problem+json", a.header.Get("Content-Type"), "%s %s", tc.method, tc.path)
		assert.Equal(t, tc.allow, a.header.Get("Allow"), "%s %s", tc.method, tc.path)
	}
	assert.Equal(t, 200, e.do("HEAD", "/admin/customers/bob", "").status)
	assert.Equal(t, 200, e.do("GET", "/admin/customers/", "").status, "a trailing slash lists")
}

// A browser on another origin cannot change a customer through an
// operator's session; reads and non-browser clients are not affected.
func TestCrossOriginChangesAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.do("PUT", "/admin/customers/bob", `{"plan":"pro"}`, "Sec-Fetch-Site", "cross-site")
	assert.Equal(t, http.StatusForbidden, a.status)
	a = e.do("PUT", "/admin/customers/bob", `{"plan":"pro"}`, "Origin", "https://evil.example")
	assert.Equal(t, http.StatusForbidden, a.status)
	c, err := e.m.Customer(context.Background(), "bob")
	require.NoError(t, err)
	assert.Zero(t, c.Revision, "nothing was written")
	assert.Equal(t, 200, e.do("GET", "/admin/customers/bob", "", "Sec-Fetch-Site", "cross-site").status)
	assert.Equal(t, 200, e.do("PUT", "/admin/customers/bob", `{"plan":"pro"}`, "Sec-Fetch-Site", "same-origin").status)

	m, err := apikey.New(newCustomerStore(), apikey.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	h, err := adminhttp.New(m, adminhttp.Options{TrustedOrigins: []string{"https://console.example"}})
	require.NoError(t, err)
	assert.Equal(t, 200, do(t, h, "PUT", "/admin/customers/bob", `{}`, "Origin", "https://console.example").status)
}

func TestOpenAPIRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.do("GET", "/admin/openapi.json", "")
	require.Equal(t, 200, a.status)
	assert.Equal(t, "application/json", a.header.Get("Content-Type"))
	assert.Equal(t, "3.1.0", a.body["openapi"])
	assert.JSONEq(t, string(adminhttp.OpenAPI()), a.raw)
	doc := adminhttp.OpenAPI()
	doc[0] = 'x'
	assert.Equal(t, byte('{'), adminhttp.OpenAPI()[0], "OpenAPI returns a copy")
}
