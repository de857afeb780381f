package lease_test

import (
	"cmp"
	"context"
	"crypto/rand"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/internal/testserver"
	"github.com/gokeys/apikey/limitertest"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit/lease"
)

// newMiniredis starts a miniredis whose clock (TIME and key expiry)
// follows clock, and returns a client for it.
func newMiniredis(t *testing.T, clock *limitertest.Clock) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	mr := miniredis.RunT(t)
	mr.SetTime(clock.Now())
	clock.OnMove(func(now time.Time, d time.Duration) {
		mr.SetTime(now)
		if d > 0 {
			mr.FastForward(d)
		}
	})
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return mr, c
}

// newLimiter returns a Limiter on c, closed at the end of the test.
func newLimiter(t testing.TB, c redis.UniversalClient, opts lease.Options) *lease.Limiter {
	t.Helper()
	l, err := lease.New(c, opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, l.Close(ctx))
	})
	return l
}

// realRedis returns the address of the Redis server named by
// APIKEY_TEST_REDIS_ADDR after checking it answers. It skips the test when
// the variable is unset, and when the server is unreachable unless CI=true,
// where it fails.
func realRedis(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("APIKEY_TEST_REDIS_ADDR")
	if addr == "" {
		t.Skip("APIKEY_TEST_REDIS_ADDR is not set")
	}
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 2 * time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Redis at %s (APIKEY_TEST_REDIS_ADDR) is unreachable: %v", addr, err)
		}
		t.Skipf("Redis at %s (APIKEY_TEST_REDIS_ADDR) is unreachable: %v", addr, err)
	}
	return addr
}

// underAdmission is what a Limiter with opts holds back: a leased rate's
// reserve (its lease life in emission intervals), for at most a lease's
// life and a sweep.
func underAdmission(opts lease.Options) limitertest.UnderAdmission {
	life := cmp.Or(opts.Lifetime, lease.DefaultLifetime)
	reserve := cmp.Or(opts.RateReserve, lease.DefaultRateReserve)
	return limitertest.UnderAdmission{
		Units: func(l limits.Limit) int64 {
			if l.Kind != limits.KindRate {
				return 0
			}
			t, b := gcra.GCRA(l.Count, l.Period, l.Burst, time.Microsecond)
			d := min(life.Microseconds(), int64(reserve*float64(b)*float64(t)))
			if d < 32*t {
				return 0
			}
			return (d+t-1)/t + 1
		},
		Hold: life + life/4,
	}
}

func TestConformanceMiniredis(t *testing.T) {
	t.Parallel()
	limitertest.Run(t, limitertest.Config{
		New: func(t *testing.T, clock *limitertest.Clock) limits.Limiter {
			_, c := newMiniredis(t, clock)
			return newLimiter(t, c, lease.Options{Now: clock.Now})
		},
		Fleet: func(t *testing.T, clock *limitertest.Clock, n int) []limits.Limiter {
			_, c := newMiniredis(t, clock)
			ls := make([]limits.Limiter, n)
			for i := range ls {
				ls[i] = newLimiter(t, c, lease.Options{Now: clock.Now})
			}
			return ls
		},
		UnderAdmission: underAdmission(lease.Options{}),
	})
}

func TestConformanceRedis(t *testing.T) {
	t.Parallel()
	c := redis.NewClient(&redis.Options{Addr: realRedis(t)})
	t.Cleanup(func() { _ = c.Close() })
	prefix := testPrefix(t, c)
	limitertest.Run(t, limitertest.Config{
		New: func(t *testing.T, _ *limitertest.Clock) limits.Limiter {
			return newLimiter(t, c, lease.Options{Prefix: prefix})
		},
		Fleet: func(t *testing.T, _ *limitertest.Clock, n int) []limits.Limiter {
			ls := make([]limits.Limiter, n)
			for i := range ls {
				ls[i] = newLimiter(t, c, lease.Options{Prefix: prefix})
			}
			return ls
		},
		RealTime:       true,
		UnderAdmission: underAdmission(lease.Options{}),
	})
}

// testPrefix returns a prefix of its own for one test run, and deletes its
// keys at the end of the test.
func testPrefix(t testing.TB, c redis.UniversalClient) string {
	t.Helper()
	prefix := "apikey:test:" + rand.Text()[:12] + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		var keys []string
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			if keys = append(keys, iter.Val()); len(keys) == 1000 {
				c.Unlink(ctx, keys...)
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			c.Unlink(ctx, keys...)
		}
	})
	return prefix
}

func TestConformanceRedisCluster(t *testing.T) {
	t.Parallel()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testserver.RedisClusterAddrs(t)})
	t.Cleanup(func() { _ = c.Close() })
	prefix := testPrefix(t, c)
	limitertest.Run(t, limitertest.Config{
		New: func(t *testing.T, _ *limitertest.Clock) limits.Limiter {
			return newLimiter(t, c, lease.Options{Prefix: prefix})
		},
		Fleet: func(t *testing.T, _ *limitertest.Clock, n int) []limits.Limiter {
			ls := make([]limits.Limiter, n)
			for i := range ls {
				ls[i] = newLimiter(t, c, lease.Options{Prefix: prefix})
			}
			return ls
		},
		RealTime:       true,
		UnderAdmission: underAdmission(lease.Options{}),
	})
}
