package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey/internal/testserver"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit"
	"github.com/gokeys/apikey/redislimit/lease"
)

// TestLeaseRedisCost measures what a round trip costs Redis: the CPU time
// of a private redis-server (user and system, from INFO), divided by the
// round trips it served, while 32 goroutines call a limiter over 10,000
// customers (redislimit) or 100 hot ones (lease, whose round trips are
// then leases given in the background). CPU time does not depend on how
// busy the machine is; a Redis process uses one core, so a core serves
// 1/(CPU per round trip) round trips a second. It needs redis-server.
func TestLeaseRedisCost(t *testing.T) {
	if os.Getenv("APIKEY_BENCH_LEASE") == "" {
		t.Skip("a measurement: set APIKEY_BENCH_LEASE to run it")
	}
	if testing.Short() {
		t.Skip("starts a private redis-server")
	}
	srv := testserver.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64})
	t.Cleanup(func() { _ = c.Close() })
	rate := limits.Rate("per-100ms", 10_000, 100*time.Millisecond, 0)
	quota := limits.Quota("daily", 1e12, limits.Day)
	plain, err := redislimit.New(c, redislimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	leased, err := lease.New(c, lease.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leased.Close(context.Background()) })
	for _, tc := range []struct {
		name      string
		l         limits.Limiter
		customers int
		ls        []limits.Limit
	}{
		{"redislimit, a rate", plain, 10_000, []limits.Limit{rate}},
		{"redislimit, a rate and a quota", plain, 10_000, []limits.Limit{rate, quota}},
		{"lease, a rate", leased, 100, []limits.Limit{rate}},
		{"lease, a rate and a quota", leased, 100, []limits.Limit{rate, quota}},
	} {
		before := redisCPU(t, c)
		trips0 := leased.Stats().Trips
		var mu sync.Mutex
		var calls int64
		var wg sync.WaitGroup
		end := time.Now().Add(3 * time.Second)
		for g := range 32 {
			wg.Go(func() {
				var n int64
				for i := g; time.Now().Before(end); i++ {
					if _, err := tc.l.Allow(context.Background(), "c"+strconv.Itoa(i%tc.customers), tc.ls, 1); err != nil {
						t.Error(err)
						return
					}
					n++
				}
				mu.Lock()
				calls += n
				mu.Unlock()
			})
		}
		wg.Wait()
		cpu := redisCPU(t, c) - before
		trips := calls
		if tc.l == limits.Limiter(leased) {
			trips = leased.Stats().Trips - trips0
		}
		perTrip := cpu / time.Duration(trips)
		t.Logf("%-32s calls %8d, round trips %8d, Redis CPU %v: %v per round trip, %.0f round trips a second per Redis core",
			tc.name, calls, trips, cpu.Round(time.Millisecond), perTrip, float64(time.Second)/float64(perTrip))
	}
}

// redisCPU returns the CPU time Redis used since it started.
func redisCPU(t *testing.T, c *redis.Client) time.Duration {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatal(err)
			}
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}
