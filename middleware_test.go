package apikey_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

const (
	challenge    = `Bearer realm="test"`
	invalidToken = `Bearer realm="test", error="invalid_token"`
	invalidReq   = `Bearer realm="test", error="invalid_request"`
	problemJSON  = "application/problem+json"
)

// fixture is a Manager and Middleware over a spy store with a few keys.
type fixture struct {
	clock   *clock
	spy     *spyStore
	m       *apikey.Manager
	valid   string // scopes read, write
	readers string // scope read only
	expired string
	revoked string
	wrong   string // a known id with a wrong secret
	unknown string // a well-formed token of an unknown id
	logs    *bytes.Buffer
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{clock: newClock(), spy: newSpy(), logs: &bytes.Buffer{}}
	logger := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.m = newManager(t, f.spy, apikey.Options{Now: f.clock.Now, Logger: logger})
	var k *apikey.Key
	f.valid, k = issue(t, f.m, apikey.IssueParams{Owner: "alice", Scopes: []string{"read", "write"}})
	f.readers, _ = issue(t, f.m, apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}})
	f.expired, _ = issue(t, f.m, apikey.IssueParams{Owner: "alice", TTL: time.Minute})
	var r *apikey.Key
	f.revoked, r = issue(t, f.m, apikey.IssueParams{Owner: "alice"})
	require.NoError(t, f.m.Revoke(context.Background(), r.ID))
	f.clock.Add(time.Hour)
	f.wrong = rebuild(t, f.m.Format(), k.ID, "")
	f.unknown, _ = f.m.Format().New()
	return f
}

func (f *fixture) middleware(t *testing.T, opts apikey.MiddlewareOptions) *apikey.Middleware {
	t.Helper()
	if opts.Realm == "" {
		opts.Realm = "test"
	}
	opts.Logger = slog.New(slog.NewTextHandler(f.logs, nil))
	mw, err := apikey.NewMiddleware(f.m, opts)
	require.NoError(t, err)
	return mw
}

type row struct {
	name      string
	req       func(f *fixture) *http.Request
	opts      apikey.MiddlewareOptions
	status    int
	challenge string // expected WWW-Authenticate ("" for none)
	storeFree bool   // must not reach the store
	sentinel  error  // what Authenticate returns
}

func rows() []row {
	return []row{
		{name: "no header", req: func(*fixture) *http.Request { return get("/") },
			status: 401, challenge: challenge, storeFree: true, sentinel: apikey.ErrMissingKey},
		{name: "Basic scheme", req: func(*fixture) *http.Request { return get("/", "Authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l") },
			status: 401, challenge: challenge, storeFree: true, sentinel: apikey.ErrMissingKey},
		{name: "bearer lowercase", req: func(f *fixture) *http.Request { return get("/", "Authorization", "bearer "+f.valid) }, status: 200},
		{name: "BEARER uppercase", req: func(f *fixture) *http.Request { return get("/", "Authorization", "BEARER "+f.valid) }, status: 200},
		{name: "X-API-Key", req: func(f *fixture) *http.Request { return get("/", "X-API-Key", f.valid) }, status: 200},
		{name: "empty Bearer", req: func(*fixture) *http.Request { return get("/", "Authorization", "Bearer ") },
			status: 400, challenge: invalidReq, storeFree: true, sentinel: apikey.ErrBadRequest},
		{name: "two Authorization headers", req: func(f *fixture) *http.Request {
			return get("/", "Authorization", "Bearer "+f.valid, "Authorization", "Bearer "+f.valid)
		}, status: 400, challenge: invalidReq, storeFree: true, sentinel: apikey.ErrBadRequest},
		{name: "header and X-API-Key", req: func(f *fixture) *http.Request {
			return get("/", "Authorization", "Bearer "+f.valid, "X-API-Key", f.valid)
		}, status: 400, challenge: invalidReq, storeFree: true, sentinel: apikey.ErrBadRequest},
		{name: "header plus query", opts: apikey.MiddlewareOptions{AllowQuery: true}, req: func(f *fixture) *http.Request {
			return get("/?api_key="+f.valid, "Authorization", "Bearer "+f.valid)
		}, status: 400, challenge: invalidReq, storeFree: true, sentinel: apikey.ErrBadRequest},
		{name: "query while query is off", req: func(f *fixture) *http.Request { return get("/?api_key=" + f.valid) },
			status: 401, challenge: challenge, storeFree: true, sentinel: apikey.ErrMissingKey},
		{name: "query while query is on", opts: apikey.MiddlewareOptions{AllowQuery: true},
			req: func(f *fixture) *http.Request { return get("/?api_key=" + f.valid) }, status: 200},
		{name: "two query keys", opts: apikey.MiddlewareOptions{AllowQuery: true},
			req:    func(f *fixture) *http.Request { return get("/?api_key=" + f.valid + "&api_key=" + f.valid) },
			status: 400, challenge: invalidReq, storeFree: true, sentinel: apikey.ErrBadRequest},
		{name: "8 KiB token", req: func(*fixture) *http.Request { return bearer(strings.Repeat("a", 8192)) },
			status: 400, challenge: invalidReq, storeFree: true, sentinel: apikey.ErrBadRequest},
		{name: "NUL byte", req: func(f *fixture) *http.Request { return bearer(f.valid[:10] + "\x00" + f.valid[11:]) },
			status: 401, challenge: invalidToken, storeFree: true, sentinel: apikey.ErrMalformed},
		{name: "CR LF", req: func(f *fixture) *http.Request { return bearer(f.valid[:10] + "\r\n" + f.valid[12:]) },
			status: 401, challenge: invalidToken, storeFree: true, sentinel: apikey.ErrMalformed},
		{name: "non-ASCII", req: func(f *fixture) *http.Request { return bearer(f.valid[:10] + "ü" + f.valid[12:]) },
			status: 401, challenge: invalidToken, storeFree: true, sentinel: apikey.ErrMalformed},
		{name: "wrong prefix", req: func(f *fixture) *http.Request { return bearer("pk" + f.valid[2:]) },
			status: 401, challenge: invalidToken, storeFree: true, sentinel: apikey.ErrMalformed},
		{name: "one flipped character", req: func(f *fixture) *http.Request { return bearer(flip(f.valid, 20)) },
			status: 401, challenge: invalidToken, storeFree: true, sentinel: apikey.ErrMalformed},
		{name: "truncated", req: func(f *fixture) *http.Request { return bearer(f.valid[:len(f.valid)-3]) },
			status: 401, challenge: invalidToken, storeFree: true, sentinel: apikey.ErrMalformed},
		{name: "unknown id", req: func(f *fixture) *http.Request { return bearer(f.unknown) },
			status: 401, challenge: invalidToken, sentinel: apikey.ErrInvalid},
		{name: "known id wrong secret", req: func(f *fixture) *http.Request { return bearer(f.wrong) },
			status: 401, challenge: invalidToken, sentinel: apikey.ErrInvalid},
		{name: "expired", req: func(f *fixture) *http.Request { return bearer(f.expired) },
			status: 401, challenge: invalidToken, sentinel: apikey.ErrExpired},
		{name: "revoked", req: func(f *fixture) *http.Request { return bearer(f.revoked) },
			status: 401, challenge: invalidToken, sentinel: apikey.ErrRevoked},
		{name: "valid", req: func(f *fixture) *http.Request { return bearer(f.valid) }, status: 200},
		{name: "store down", req: func(f *fixture) *http.Request {
			f.spy.failWith(errors.New("dial tcp: connection refused"))
			return bearer(f.valid)
		}, status: 503, sentinel: apikey.ErrUnavailable},
	}
}

func flip(s string, i int) string {
	b := []byte(s)
	if b[i] == 'a' {
		b[i] = 'b'
	} else {
		b[i] = 'a'
	}
	return string(b)
}

func TestOptionalAuthentication(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	mw := f.middleware(t, apikey.MiddlewareOptions{Optional: true})
	for _, tc := range []struct {
		name   string
		req    *http.Request
		status int
		body   string
	}{
		{"no key is anonymous", get("/"), 200, "anonymous"},
		{"valid key", bearer(f.valid), 200, ""},
		{"invalid key still refused", bearer(f.unknown), 401, ""},
		{"malformed request still refused", bearer(""), 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ran bool
			rec := httptest.NewRecorder()
			mw.Handler(okHandler(&ran)).ServeHTTP(rec, tc.req)
			assert.Equal(t, tc.status, rec.Code)
			if tc.body != "" {
				assert.Equal(t, tc.body, rec.Body.String())
			}
		})
	}
}

func TestHideCredentials(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		req  *http.Request
	}{
		{"bearer", bearer(f.valid)},
		{"header", get("/", "X-API-Key", f.valid)},
		{"query", get("/path?a=1&api_key=" + f.valid + "&b=2")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mw := f.middleware(t, apikey.MiddlewareOptions{HideCredentials: true, AllowQuery: true})
			var seen *http.Request
			h := mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r }))
			h.ServeHTTP(httptest.NewRecorder(), tc.req)
			require.NotNil(t, seen)
			dump := seen.URL.String() + seen.RequestURI
			for name, v := range seen.Header {
				dump += name + strings.Join(v, ",")
			}
			assert.NotContains(t, dump, f.valid)
			assert.NotNil(t, apikey.FromContext(seen.Context()))
			if tc.name == "query" {
				assert.Equal(t, url.Values{"a": {"1"}, "b": {"2"}}, seen.URL.Query())
			}
		})
	}
}

func TestNewMiddlewareValidates(t *testing.T) {
	t.Parallel()
	_, err := apikey.NewMiddleware(nil, apikey.MiddlewareOptions{})
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions, "a nil manager is an error, never a pass-through")
	f := newFixture(t)
	for name, opts := range map[string]apikey.MiddlewareOptions{
		"quote in realm":     {Realm: `a"b`},
		"negative cool-down": {Limits: apikey.LimitOptions{BreakerCoolDown: -time.Second}},
		"nil source":         {Sources: []apikey.KeySource{nil}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := apikey.NewMiddleware(f.m, opts)
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
		})
	}
}

func TestPanicsNeverLetRequestsThrough(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		opts apikey.MiddlewareOptions
		prep func()
	}{
		{"store panics", apikey.MiddlewareOptions{}, func() { f.spy.hook = func(string) { panic("boom") } }},
		{"source panics", apikey.MiddlewareOptions{Sources: []apikey.KeySource{func(*http.Request) (string, func(*http.Request), error) { panic("boom") }}}, func() {}},
		{"error handler panics", apikey.MiddlewareOptions{ErrorHandler: func(http.ResponseWriter, *http.Request, error) { panic("boom") }},
			func() { f.spy.failWith(errors.New("down")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.spy.hook = nil
			f.spy.failWith(nil)
			mw := f.middleware(t, tc.opts)
			tc.prep()
			var ran bool
			rec := httptest.NewRecorder()
			mw.Handler(okHandler(&ran)).ServeHTTP(rec, bearer(f.unknown))
			assert.False(t, ran)
			assert.NotEqual(t, 200, rec.Code)
		})
	}
}

// TestNoTokenInOutput runs every table case with everything captured (logs
// at debug level, response headers and bodies) and looks for the tokens.
func TestNoTokenInOutput(t *testing.T) {
	t.Parallel()
	for _, tc := range rows() {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			mw := f.middleware(t, tc.opts)
			var out bytes.Buffer
			for _, h := range []http.Handler{mw.Handler(http.NotFoundHandler()), mw.Handler(mw.RequireScopes("admin")(http.NotFoundHandler()))} {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, tc.req(f))
				rec.Result().Header.Write(&out)
				out.Write(rec.Body.Bytes())
			}
			_, err := mw.Authenticate(tc.req(f))
			if err != nil {
				out.WriteString(err.Error())
			}
			out.Write(f.logs.Bytes())
			for _, token := range []string{f.valid, f.readers, f.expired, f.revoked, f.wrong, f.unknown} {
				tok, err := f.m.Format().Parse(token)
				require.NoError(t, err)
				assert.NotContains(t, out.String(), tok.Secret)
			}
		})
	}
}

func FuzzMiddleware(f *testing.F) {
	fx := newFixture(f)
	mw, err := apikey.NewMiddleware(fx.m, apikey.MiddlewareOptions{AllowQuery: true})
	require.NoError(f, err)
	h := mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for _, s := range []string{"", "Bearer ", "Bearer " + fx.unknown, "bearer " + fx.wrong, fx.revoked, "Basic x", "Bearer \x00"} {
		f.Add(s, s, s)
	}
	f.Fuzz(func(t *testing.T, authz, xkey, query string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", authz)
		r.Header.Set("X-API-Key", xkey)
		r.URL.RawQuery = "api_key=" + url.QueryEscape(query)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code == http.StatusOK {
			t.Fatalf("a key that was not issued got 200 (authz=%q key=%q query=%q)", authz, xkey, query)
		}
	})
}

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

var benchHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "ok")
})

// BenchmarkMiddleware serves a request with a valid key through Handler
// (memstore, default options) into a ResponseRecorder.
func BenchmarkMiddleware(b *testing.B) {
	m := newManager(b, memstore.New(), apikey.Options{Peppers: testPepper})
	token, _ := issue(b, m, apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}})
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	if err != nil {
		b.Fatal(err)
	}
	serve(b, mw.Handler(benchHandler), "Bearer "+token, http.StatusOK)
}

// BenchmarkBareHandler is BenchmarkMiddleware without the middleware.
func BenchmarkBareHandler(b *testing.B) {
	serve(b, benchHandler, "Bearer sk_whatever", http.StatusOK)
}

// BenchmarkMiddlewareRejectMalformed serves a token with a bad checksum.
func BenchmarkMiddlewareRejectMalformed(b *testing.B) {
	m := newManager(b, memstore.New(), apikey.Options{Peppers: testPepper})
	token, _ := issue(b, m, apikey.IssueParams{})
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	if err != nil {
		b.Fatal(err)
	}
	serve(b, mw.Handler(benchHandler), "Bearer "+flip(token, 20), http.StatusUnauthorized)
}

func serve(b *testing.B, h http.Handler, authz string, want int) {
	req := httptest.NewRequest(http.MethodGet, "/data", nil)
	req.Header.Set("Authorization", authz)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			b.Fatalf("status %d", rec.Code)
		}
	}
}

// Deprecation carries when the key was rotated, the same on every
// response, and Deprecation and Sunset come with a 429 too.
func TestDeprecationIsTheRotationTime(t *testing.T) {
	t.Parallel()
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
	token, k := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"}) // 3 a day
	rotatedAt := e.c.Now()
	rot, err := e.m.Rotate(context.Background(), k.ID, 2*time.Hour)
	require.NoError(t, err)
	assert.True(t, rotatedAt.Equal(rot.Previous.RotatedAt))
	want := "@" + strconv.FormatInt(rotatedAt.Unix(), 10)
	sunset := rotatedAt.Add(2 * time.Hour).Format(http.TimeFormat)

	var ran bool
	h := e.handler(&ran)
	for i := range 4 {
		e.c.Add(7 * time.Minute)
		rec := hit(h, bearer(token))
		if i < 3 {
			assert.Equal(t, 200, rec.Code)
		} else {
			assert.Equal(t, 429, rec.Code, "the free plan's fourth request")
		}
		assert.Equal(t, want, rec.Header().Get("Deprecation"), "request %d", i)
		assert.Equal(t, sunset, rec.Header().Get("Sunset"), "request %d", i)
	}
	rec := hit(h, bearer(rot.Token))
	assert.Empty(t, rec.Header().Get("Deprecation"), "the successor is not deprecated")
}
