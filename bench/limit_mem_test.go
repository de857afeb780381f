package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
)

// limitKeys is the number of distinct key ids the limiter benchmarks spread
// their requests over.
const limitKeys = 10_000

// limitIDs returns limitKeys key ids.
func limitIDs() []string {
	ids := make([]string, limitKeys)
	for i := range ids {
		ids[i] = fmt.Sprintf("key%06d", i)
	}
	return ids
}

// limitHuge is a rate high enough that every request is allowed, so both
// sides measure the cost of an allowed request: one per nanosecond, the
// most limits.Limit.Validate accepts.
const limitHuge = 1_000_000_000

// BenchmarkMemLimiter compares memlimit, with one Rate limit per key, to
// golang.org/x/time/rate with one rate.Limiter per key in a sync.Map, over
// 10,000 keys, serially and in parallel.
func BenchmarkMemLimiter(b *testing.B) {
	ids := limitIDs()
	ctx := context.Background()

	for _, mode := range []string{"serial", "parallel"} {
		b.Run("lib=xtimerate/mode="+mode, func(b *testing.B) {
			var m sync.Map
			for _, id := range ids {
				m.Store(id, rate.NewLimiter(rate.Limit(limitHuge), limitHuge))
			}
			allow := func(id string) bool {
				v, ok := m.Load(id)
				if !ok {
					v, _ = m.LoadOrStore(id, rate.NewLimiter(rate.Limit(limitHuge), limitHuge))
				}
				return v.(*rate.Limiter).Allow()
			}
			runLimit(b, mode, ids, allow)
		})

		b.Run("lib=memlimit/mode="+mode, func(b *testing.B) {
			l, err := memlimit.New(memlimit.Options{})
			if err != nil {
				b.Fatal(err)
			}
			lims := []limits.Limit{limits.Rate("per-second", limitHuge, time.Second, 0)}
			allow := func(id string) bool {
				res, err := l.Allow(ctx, id, lims, 1)
				return err == nil && res.Allowed
			}
			for _, id := range ids {
				allow(id)
			}
			runLimit(b, mode, ids, allow)
		})
	}
}

// runLimit calls allow over ids, serially or from GOMAXPROCS goroutines,
// and fails the benchmark if a request is denied.
func runLimit(b *testing.B, mode string, ids []string, allow func(id string) bool) {
	b.ReportAllocs()
	var denied atomic.Int64
	if mode == "serial" {
		i := 0
		for b.Loop() {
			if !allow(ids[i]) {
				denied.Add(1)
			}
			if i++; i == len(ids) {
				i = 0
			}
		}
	} else {
		var worker atomic.Int64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(worker.Add(1)*7919) % len(ids)
			for pb.Next() {
				if !allow(ids[i]) {
					denied.Add(1)
				}
				if i++; i == len(ids) {
					i = 0
				}
			}
		})
	}
	if n := denied.Load(); n > 0 {
		b.Fatalf("%d requests denied or failed", n)
	}
}
