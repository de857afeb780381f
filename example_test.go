package apikey_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

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
