package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit"
)

// limitRedis returns a client for the Redis server named by
// APIKEY_TEST_REDIS_ADDR, and a key prefix of its own whose keys are
// deleted at the end. It skips the benchmark when the variable is unset.
func limitRedis(b testing.TB) (*redis.Client, string) {
	b.Helper()
	addr := os.Getenv("APIKEY_TEST_REDIS_ADDR")
	if addr == "" {
		b.Skip("APIKEY_TEST_REDIS_ADDR is not set")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	if err := c.Ping(context.Background()).Err(); err != nil {
		b.Fatalf("Redis at %s: %v", addr, err)
	}
	prefix := "apikey:bench:" + rand.Text()[:12] + ":"
	b.Cleanup(func() {
		ctx := context.Background()
		for _, pattern := range []string{prefix + "*", "rate:" + prefix + "*"} {
			iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
		}
		_ = c.Close()
	})
	return c, prefix
}

// BenchmarkRedisLimiter compares redislimit deciding a rate, and a rate and
// a quota together, to github.com/go-redis/redis_rate deciding a rate, on the
// same Redis server (APIKEY_TEST_REDIS_ADDR), over 10,000 keys, serially
// (round-trip latency) and in parallel (throughput).
func BenchmarkRedisLimiter(b *testing.B) {
	ids := limitIDs()
	ctx := context.Background()

	for _, mode := range []string{"serial", "parallel"} {
		b.Run("lib=redis_rate/limits=1/mode="+mode, func(b *testing.B) {
			c, prefix := limitRedis(b)
			l := redis_rate.NewLimiter(c)
			// A million per second, not more: redis_rate computes in
			// float seconds since 2017, whose resolution is about 6e-8 s,
			// so a smaller emission interval is lost when added to its
			// TAT, and it then never writes its state: it would decide
			// nothing while redislimit records every request.
			limit := redis_rate.PerSecond(1_000_000)
			keys := make([]string, len(ids))
			for i, id := range ids {
				keys[i] = prefix + id
			}
			if _, err := l.Allow(ctx, keys[0], limit); err != nil {
				b.Fatal(err)
			}
			if n, err := c.Exists(ctx, "rate:"+keys[0]).Result(); err != nil || n != 1 {
				b.Fatalf("redis_rate stored no state (%d, %v)", n, err)
			}
			runLimit(b, mode, keys, func(key string) bool {
				res, err := l.Allow(ctx, key, limit)
				return err == nil && res.Allowed > 0
			})
		})

		for _, lims := range [][]limits.Limit{
			{limits.Rate("per-second", 1_000_000, time.Second, 0)},
			{limits.Rate("per-second", 1_000_000, time.Second, 0), limits.Quota("daily", limitHuge, limits.Day)},
		} {
			b.Run(fmt.Sprintf("lib=redislimit/limits=%d/mode=%s", len(lims), mode), func(b *testing.B) {
				c, prefix := limitRedis(b)
				l, err := redislimit.New(c, redislimit.Options{Prefix: prefix})
				if err != nil {
					b.Fatal(err)
				}
				runLimit(b, mode, ids, func(id string) bool {
					res, err := l.Allow(ctx, id, lims, 1)
					return err == nil && res.Allowed
				})
			})
		}
	}
}
