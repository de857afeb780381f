package lease_test

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit"
	"github.com/gokeys/apikey/redislimit/lease"
)

// BenchmarkAllow measures a call decided from what the instance holds,
// against redislimit's round trip to an in-process server, for one
// customer with a daily quota and a rate, serially and in parallel.
func BenchmarkAllow(b *testing.B) {
	mr := miniredis.RunT(b)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	b.Cleanup(func() { _ = c.Close() })
	ls := []limits.Limit{limits.Quota("daily", 1e12, limits.Day), limits.Rate("per-second", 1e8, time.Second, 0)}
	ctx := context.Background()
	leased, err := lease.New(c, lease.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = leased.Close(ctx) })
	plain, err := redislimit.New(c, redislimit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		l    limits.Limiter
	}{{"lease", leased}, {"redislimit", plain}} {
		b.Run(tc.name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if res, err := tc.l.Allow(ctx, "acme", ls, 1); err != nil || !res.Allowed {
					b.Fatal(res, err)
				}
			}
		})
		b.Run(tc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if res, err := tc.l.Allow(ctx, "acme", ls, 1); err != nil || !res.Allowed {
						b.Fatal(res, err)
					}
				}
			})
		})
	}
	s := leased.Stats()
	b.Logf("lease: %d calls, %d round trips", s.Calls, s.Trips)
}
