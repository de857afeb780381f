package apikey_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

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
