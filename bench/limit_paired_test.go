package bench

import (
	"context"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"golang.org/x/time/rate"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/redislimit"
)

// BenchmarkLimitPaired measures the limiter targets in alternating blocks
// (see paired), so that a shared machine's changing load affects both
// sides of each ratio alike:
//
//	memlimit    memlimit (one rate) ÷ x/time/rate (a sync.Map of
//	            rate.Limiters), 10,000 keys, serial and parallel
//	redis       redislimit ÷ redis_rate with as many limits, 10,000 keys,
//	            serial and with 4×GOMAXPROCS goroutines
//	            (APIKEY_TEST_REDIS_ADDR): one rate (1/1); two rates in
//	            one call ÷ two calls (2/2); a rate and a quota (plan)
//	            ÷ two calls and ÷ one
//	middleware  Handler+Limit with memlimit and a two-limit plan beside
//	            the floor middleware, alone and writing two fixed headers
//	            of the same length, and Handler without limits (usage
//	            recording off; limits-usage has it on):
//	            (ours−bare) ÷ (floor−bare), and each one's ns/op
func BenchmarkLimitPaired(b *testing.B) {
	ctx := context.Background()
	ids := limitIDs()
	procs := runtime.GOMAXPROCS(0)
	b.Run("memlimit", func(b *testing.B) {
		var m sync.Map
		for _, id := range ids {
			m.Store(id, rate.NewLimiter(rate.Limit(limitHuge), limitHuge))
		}
		xrate := func(id string) {
			v, ok := m.Load(id)
			if !ok {
				v, _ = m.LoadOrStore(id, rate.NewLimiter(rate.Limit(limitHuge), limitHuge))
			}
			if !v.(*rate.Limiter).Allow() {
				b.Fatal("x/time/rate denied")
			}
		}
		l, err := memlimit.New(memlimit.Options{})
		if err != nil {
			b.Fatal(err)
		}
		lims := []limits.Limit{limits.Rate("per-second", limitHuge, time.Second, 0)}
		mem := func(id string) {
			if res, err := l.Allow(ctx, id, lims, 1); err != nil || !res.Allowed {
				b.Fatal("memlimit denied", err)
			}
		}
		for _, id := range ids {
			mem(id)
		}
		const ops = 2000
		paired(b, []pairCase{
			{"xtimerate-serial", cycle(ids, xrate), ops},
			{"memlimit-serial", cycle(ids, mem), ops},
			{"xtimerate-parallel", parallel(ids, procs, xrate), ops},
			{"memlimit-parallel", parallel(ids, procs, mem), ops},
		}, []pairRatio{{"serial-memlimit/xtimerate", 1, 0, -1}, {"parallel-memlimit/xtimerate", 3, 2, -1}})
	})
	b.Run("redis", func(b *testing.B) {
		c, prefix := limitRedis(b)
		rr := redis_rate.NewLimiter(c)
		perSecond := redis_rate.PerSecond(1_000_000)
		perMinute := redis_rate.PerMinute(60_000_000)
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = prefix + id
		}
		rrOne := func(key string) {
			if res, err := rr.Allow(ctx, key, perSecond); err != nil || res.Allowed == 0 {
				b.Fatal("redis_rate denied", err)
			}
		}
		// Two limits are two calls, the second on a key of its own.
		rrTwo := func(key string) {
			rrOne(key)
			if res, err := rr.Allow(ctx, key+":m", perMinute); err != nil || res.Allowed == 0 {
				b.Fatal("redis_rate denied", err)
			}
		}
		l, err := redislimit.New(c, redislimit.Options{Prefix: prefix})
		if err != nil {
			b.Fatal(err)
		}
		rate := limits.Rate("per-second", 1_000_000, time.Second, 0)
		allow := func(lims []limits.Limit) func(string) {
			return func(id string) {
				if res, err := l.Allow(ctx, id, lims, 1); err != nil || !res.Allowed {
					b.Fatal("redislimit denied", err)
				}
			}
		}
		one := allow([]limits.Limit{rate})
		two := allow([]limits.Limit{rate, limits.Rate("per-minute", 60_000_000, time.Minute, 0)})
		plan := allow([]limits.Limit{rate, limits.Quota("daily", 1e13, limits.Day)})
		const ops = 100
		par := 4 * procs
		paired(b, []pairCase{
			{"redis_rate-1-serial", cycle(keys, rrOne), ops},
			{"redislimit-1-serial", cycle(ids, one), ops},
			{"redis_rate-2-serial", cycle(keys, rrTwo), ops},
			{"redislimit-2-serial", cycle(ids, two), ops},
			{"redislimit-plan-serial", cycle(ids, plan), ops},
			{"redis_rate-1-parallel", parallel(keys, par, rrOne), 4 * ops},
			{"redislimit-1-parallel", parallel(ids, par, one), 4 * ops},
			{"redis_rate-2-parallel", parallel(keys, par, rrTwo), 4 * ops},
			{"redislimit-2-parallel", parallel(ids, par, two), 4 * ops},
			{"redislimit-plan-parallel", parallel(ids, par, plan), 4 * ops},
		}, []pairRatio{
			{"serial-1/1", 1, 0, -1}, {"serial-2/2", 3, 2, -1}, {"serial-plan/2", 4, 2, -1}, {"serial-plan/1", 4, 0, -1},
			{"parallel-1/1", 6, 5, -1}, {"parallel-2/2", 8, 7, -1}, {"parallel-plan/2", 9, 7, -1}, {"parallel-plan/1", 9, 5, -1},
		})
	})
	b.Run("middleware", func(b *testing.B) {
		// limits: optional features off (no usage recording);
		// limits-usage: usage recording on, with a key of its own.
		m, token := newLimitManagerWith(b, apikey.Options{UsageInterval: -1})
		mu, tokenU := newLimitManager(b, nil)
		l, err := memlimit.New(memlimit.Options{})
		if err != nil {
			b.Fatal(err)
		}
		mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: l}})
		if err != nil {
			b.Fatal(err)
		}
		mwU, err := apikey.NewMiddleware(mu, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: l}})
		if err != nil {
			b.Fatal(err)
		}
		serve := func(h http.Handler) func(int) { return serveOp(b, h, token) }
		// The floor writing two fixed headers as long as ours: what any
		// RateLimit headers cost (httptest's recorder copies every header).
		policy := []string{`"daily";q=10000000000000;w=86400, "per-second";q=1000000000;w=1`}
		state := []string{`"daily";r=9999999999999;t=43200, "per-second";r=999999999;t=1`}
		floor := floorMiddleware(b, token)
		headers := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Ratelimit-Policy"], h["Ratelimit"] = policy, state
			floor.ServeHTTP(w, r)
		})
		paired(b, []pairCase{
			{"bare", serve(okHandler), 0},
			{"floor", serve(floor), 0},
			{"floor-headers", serve(headers), 0},
			{"nolimits", serve(mw.Handler(okHandler)), 0},
			{"limits", serve(mw.Handler(mw.Limit(okHandler))), 0},
			{"limits-usage", serveOp(b, mwU.Handler(mwU.Limit(okHandler)), tokenU), 0},
		}, []pairRatio{{"limits-overhead/floor-overhead", 4, 1, 0}, {"limits-overhead/floor-headers-overhead", 4, 2, 0}})
	})
}
