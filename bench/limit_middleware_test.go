package bench

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/redislimit"
)

// benchPlans is a two-limit plan whose limits never deny in a benchmark.
func benchPlans() limits.Plans {
	return limits.Plans{"pro": {
		limits.Quota("daily", 1e13, limits.Day),
		limits.Rate("per-second", limitHuge, time.Second, 0),
	}}
}

// newLimitManager is newBenchManager with benchPlans and a pro key.
func newLimitManager(b *testing.B, now func() time.Time) (*apikey.Manager, string) {
	return newLimitManagerWith(b, apikey.Options{Now: now})
}

// newLimitManagerWith is newLimitManager with opts, Peppers and Plans set.
func newLimitManagerWith(b *testing.B, opts apikey.Options) (*apikey.Manager, string) {
	opts.Peppers, opts.Plans = []apikey.Pepper{benchPepper}, benchPlans()
	m, err := apikey.New(memstore.New(), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close(context.Background()) })
	token, _, err := m.Issue(context.Background(), apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}, Plan: "pro"})
	if err != nil {
		b.Fatal(err)
	}
	return m, token
}

// BenchmarkLimitMiddleware serves a request with a valid key through
// Handler and Limit with memlimit and a two-limit plan (a daily quota and
// a per-second rate): the middleware with rate limits, to compare with
// BenchmarkFloorMiddleware (target: at most the floor + 400 ns, at most
// 10 allocations).
func BenchmarkLimitMiddleware(b *testing.B) {
	m, token := newLimitManager(b, nil)
	l, err := memlimit.New(memlimit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: l}})
	if err != nil {
		b.Fatal(err)
	}
	serveBench(b, mw.Handler(mw.Limit(okHandler)), "Bearer "+token, http.StatusOK)
}

// hungRedis returns the address of a TCP server that accepts connections
// and never answers, like a Redis server that hangs.
func hungRedis(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				<-done
				return
			}
			conns = append(conns, c)
		}
	}()
	b.Cleanup(func() { _ = ln.Close(); close(done) })
	return ln.Addr().String()
}

// deadRedis returns the address of a port nothing listens on, like a
// stopped Redis server.
func deadRedis(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// BenchmarkLimitOutage measures what a Redis outage adds to a request
// through Handler and Limit with redislimit and the failure policy
// FailOpen: a hung server (accepts, never answers) and a stopped one
// (connection refused), before the circuit breaker opens (every call goes
// to Redis) and once it is open (no call; the Manager's clock is fixed, so
// the cool-down never ends), with go-redis's default client options and
// with the README's (ContextTimeoutEnabled, so that the client honours
// LimitOptions.Timeout's 50 ms default; one dial, no retries). Run it with
// -benchtime 5x: a default client waits seconds for a hung server (its
// cases run with APIKEY_BENCH_FULL=1). Compare with
// BenchmarkLimitMiddleware.
func BenchmarkLimitOutage(b *testing.B) {
	noon := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	for _, client := range []struct {
		name string
		opts func(addr string) *redis.Options
	}{
		{"default", func(addr string) *redis.Options { return &redis.Options{Addr: addr} }},
		{"readme", func(addr string) *redis.Options {
			return &redis.Options{Addr: addr, DialTimeout: 100 * time.Millisecond, DialerRetries: 1, ReadTimeout: 50 * time.Millisecond,
				WriteTimeout: 50 * time.Millisecond, PoolTimeout: 50 * time.Millisecond, MaxRetries: -1, ContextTimeoutEnabled: true}
		}},
	} {
		for _, server := range []struct {
			name string
			addr func(*testing.B) string
		}{{"hung", hungRedis}, {"stopped", deadRedis}} {
			for _, breaker := range []struct {
				name     string
				failures int
			}{{"before-breaker", -1}, {"breaker-open", 1}} {
				b.Run("client="+client.name+"/redis="+server.name+"/"+breaker.name, func(b *testing.B) {
					if client.name == "default" && !benchFull() {
						b.Skip("set APIKEY_BENCH_FULL=1: a default client waits seconds for a dead Redis")
					}
					outage(b, client.opts(server.addr(b)), breaker.failures, noon)
				})
			}
		}
	}
}

func outage(b *testing.B, opts *redis.Options, failures int, noon time.Time) {
	c := redis.NewClient(opts)
	b.Cleanup(func() { _ = c.Close() })
	l, err := redislimit.New(c, redislimit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	m, token := newLimitManager(b, func() time.Time { return noon })
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{
		Limits: apikey.LimitOptions{Limiter: l, FailOpen: true, BreakerFailures: failures},
	})
	if err != nil {
		b.Fatal(err)
	}
	h := mw.Handler(mw.Limit(okHandler))
	req := httptest.NewRequest(http.MethodGet, "/data", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	h.ServeHTTP(httptest.NewRecorder(), req) // opens the breaker, when it may
	serveBench(b, h, "Bearer "+token, http.StatusOK)
}
