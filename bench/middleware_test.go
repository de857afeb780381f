package bench

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// okHandler is the application handler of the middleware benchmarks.
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "ok")
})

// newBenchManager returns a Manager in the default configuration (HMAC
// with benchPepper, cache on) over a memstore holding one key, and the
// key's token.
func newBenchManager(b *testing.B) (*apikey.Manager, string) {
	return newBenchManagerWith(b, apikey.Options{})
}

// newBenchManagerWith is newBenchManager with opts, Peppers set to
// benchPepper.
func newBenchManagerWith(b *testing.B, opts apikey.Options) (*apikey.Manager, string) {
	opts.Peppers = []apikey.Pepper{benchPepper}
	m, err := apikey.New(memstore.New(), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close(context.Background()) })
	token, _, err := m.Issue(context.Background(), apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}, Plan: "free"})
	if err != nil {
		b.Fatal(err)
	}
	return m, token
}

// badChecksum returns token with its last character, part of the
// checksum, replaced by another base62 character.
func badChecksum(token string) string {
	c := byte('0')
	if token[len(token)-1] == c {
		c = '1'
	}
	return token[:len(token)-1] + string(c)
}

// serveBench serves the same request to h once per operation, into a new
// httptest.ResponseRecorder, and checks the status.
func serveBench(b *testing.B, h http.Handler, authz string, want int) {
	req := httptest.NewRequest(http.MethodGet, "/data", nil)
	req.Header.Set("Authorization", authz)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			b.Fatalf("status %d, want %d", rec.Code, want)
		}
	}
}

// BenchmarkMiddleware serves a request with a valid key through
// Middleware.Handler (default options, memstore, cache hit).
func BenchmarkMiddleware(b *testing.B) {
	m, token := newBenchManager(b)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	if err != nil {
		b.Fatal(err)
	}
	serveBench(b, mw.Handler(okHandler), "Bearer "+token, http.StatusOK)
}

// BenchmarkBareHandler serves the same request without the middleware: the
// difference with BenchmarkMiddleware is the middleware's overhead.
func BenchmarkBareHandler(b *testing.B) {
	_, token := newBenchManager(b)
	serveBench(b, okHandler, "Bearer "+token, http.StatusOK)
}

// BenchmarkMiddlewareRejectMalformed serves a token with a bad checksum
// through the middleware: a 401 without hashing or store access.
func BenchmarkMiddlewareRejectMalformed(b *testing.B) {
	m, token := newBenchManager(b)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	if err != nil {
		b.Fatal(err)
	}
	serveBench(b, mw.Handler(okHandler), "Bearer "+badChecksum(token), http.StatusUnauthorized)
}

// BenchmarkRejectMalformed measures Manager.Verify of a token with a bad
// checksum.
func BenchmarkRejectMalformed(b *testing.B) {
	m, token := newBenchManager(b)
	bad := badChecksum(token)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Verify(ctx, bad); !errors.Is(err, apikey.ErrMalformed) {
			b.Fatalf("err = %v, want ErrMalformed", err)
		}
	}
}
