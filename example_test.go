package apikey_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
)

// The README's quick start: a Manager over a store, a key issued once, and
// the middleware in front of a handler. The README quotes this function's
// body (TestREADMESnippets keeps them equal).
func Example_quickStart() {
	ctx := context.Background()
	pepper := []byte("an example pepper of 32+ bytes!!") // in production: from a secret manager, never the database
	store := memstore.New()                              // or sqlstore.New(db, sqlstore.Postgres, sqlstore.Options{})
	m, err := apikey.New(store, apikey.Options{
		Prefix:  "sk_live",
		Peppers: []apikey.Pepper{{Version: "1", Secret: pepper}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(ctx) // flushes last-used times

	// Show the token once: only its digest is stored; key.ID names the key.
	token, key, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}})
	if err != nil {
		log.Fatal(err)
	}

	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Realm: "api"})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /reports", mw.Handler(http.HandlerFunc(reports)))                             // wrap what you have
	mux.Handle("POST /reports", mw.Handler(mw.RequireScopes("write")(http.HandlerFunc(reports)))) // and require scopes

	for _, method := range []string{"GET", "POST"} {
		req := httptest.NewRequest(method, "/reports", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		fmt.Println(method, rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	fmt.Println(len(token), key.Owner, key.Hint == token[:8]+"..."+token[len(token)-4:])
	// Output:
	// GET 200 reports of alice
	// POST 403 {"type":"about:blank","title":"Forbidden","status":403,"detail":"The API key lacks a scope this resource requires."}
	// 73 alice true
}

// reports is the quick start's handler: the middleware puts the verified
// key in the request's context.
func reports(w http.ResponseWriter, r *http.Request) {
	key := apikey.FromContext(r.Context()) // the verified *apikey.Key
	fmt.Fprintf(w, "reports of %s", key.Owner)
}

// Limits by plan: a free key gets 3 requests per UTC day here, a pro key
// 10,000 per day and at most 100 per second. The README quotes this
// function's body.
func ExamplePlans() {
	ctx := context.Background()
	noon := func() time.Time { return time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC) } // a fixed clock for the output
	m, err := apikey.New(memstore.New(), apikey.Options{Now: noon, Plans: limits.Plans{
		"free": {limits.Quota("daily", 3, limits.Day)},
		"pro":  {limits.Quota("daily", 10_000, limits.Day), limits.Rate("per-second", 100, time.Second, 0)},
	}})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(ctx)
	limiter, err := memlimit.New(memlimit.Options{Now: noon}) // or redislimit.New(redisClient, redislimit.Options{}) to share them
	if err != nil {
		log.Fatal(err)
	}
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: limiter}})
	if err != nil {
		log.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	mux := http.NewServeMux()
	mux.Handle("GET /reports", mw.Handler(mw.Limit(ok)))                             // spends
	mux.Handle("POST /reports", mw.Handler(mw.RequireScopes("write")(mw.Limit(ok)))) // scopes first: a 403 spends nothing
	mux.Handle("GET /me", mw.Handler(ok))                                            // checks the key, spends nothing

	token, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann", Plan: "free", Scopes: []string{"read"}})
	if err != nil {
		log.Fatal(err)
	}
	for _, route := range []string{"GET /reports", "POST /reports", "GET /me", "GET /reports", "GET /reports", "GET /reports"} {
		method, path, _ := strings.Cut(route, " ")
		req := httptest.NewRequest(method, path, nil)
		req.Header.Set("X-API-Key", token)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		fmt.Println(route, rec.Code, rec.Header().Values("RateLimit"))
	}
	// Output:
	// GET /reports 200 ["daily";r=2;t=43200]
	// POST /reports 403 []
	// GET /me 200 []
	// GET /reports 200 ["daily";r=1;t=43200]
	// GET /reports 200 ["daily";r=0;t=43200]
	// GET /reports 429 ["daily";r=0;t=43200]
}

// Wrap an existing http.ServeMux handler with the middleware.
func Example_serveMux() {
	m, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_test"})
	if err != nil {
		panic(err)
	}
	defer m.Close(context.Background())
	token, _, err := m.Issue(context.Background(), apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}})
	if err != nil {
		panic(err)
	}

	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Realm: "example"})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /hello", mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", apikey.FromContext(r.Context()).Owner)
	})))

	for _, authz := range []string{"", "Bearer " + token, "Bearer sk_test_nonsense"} {
		req := httptest.NewRequest("GET", "/hello", nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		body, _ := io.ReadAll(rec.Body)
		fmt.Println(rec.Code, rec.Header().Get("WWW-Authenticate"), string(body))
	}
	// Output:
	// 401 Bearer realm="example" {"type":"about:blank","title":"Unauthorized","status":401,"detail":"A valid API key is required."}
	//
	// 200  hello alice
	// 401 Bearer realm="example", error="invalid_token" {"type":"about:blank","title":"Unauthorized","status":401,"detail":"A valid API key is required."}
}

// Require a scope on one route: the key is verified by the outer handler
// and RequireScopes refuses it with 403 where it lacks "write".
func ExampleMiddleware_RequireScopes() {
	m, err := apikey.New(memstore.New(), apikey.Options{})
	if err != nil {
		panic(err)
	}
	defer m.Close(context.Background())
	token, _, err := m.Issue(context.Background(), apikey.IssueParams{Owner: "bob", Scopes: []string{"read"}})
	if err != nil {
		panic(err)
	}
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	if err != nil {
		panic(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /data", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "data") })
	mux.Handle("POST /data", mw.RequireScopes("write")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "written") })))
	h := mw.Handler(mux)

	for _, method := range []string{"GET", "POST"} {
		req := httptest.NewRequest(method, "/data", nil)
		req.Header.Set("X-API-Key", token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Println(method, rec.Code, rec.Body.String())
	}
	// Output:
	// GET 200 data
	// POST 403 {"type":"about:blank","title":"Forbidden","status":403,"detail":"The API key lacks a scope this resource requires."}
}

// Issue a key, verify it, and see the errors of a revoked key.
func ExampleManager_Verify() {
	ctx := context.Background()
	m, err := apikey.New(memstore.New(), apikey.Options{
		Prefix:  "sk_live",
		Peppers: []apikey.Pepper{{Version: "1", Secret: []byte("an example pepper of 32+ bytes!!")}},
	})
	if err != nil {
		panic(err)
	}
	defer m.Close(ctx)
	token, key, err := m.Issue(ctx, apikey.IssueParams{Name: "ci", Owner: "alice"})
	if err != nil {
		panic(err)
	}
	fmt.Println(len(token), key.HashVersion)

	got, err := m.Verify(ctx, token)
	fmt.Println(got.ID == key.ID, err)

	last := map[bool]string{true: "y", false: "x"}[token[len(token)-1] == 'x']
	_, err = m.Verify(ctx, token[:len(token)-1]+last)
	fmt.Println(err)

	_ = m.Revoke(ctx, key.ID)
	_, err = m.Verify(ctx, token)
	fmt.Println(err)
	// Output:
	// 73 hmac-sha256:1
	// true <nil>
	// apikey: malformed token
	// apikey: key revoked
}
