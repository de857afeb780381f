package bench

import (
	"context"
	"runtime"
	"testing"

	"github.com/gokeys/apikey/memstore"
)

// memoryKeys is the number of keys BenchmarkMemstoreMemory stores.
const memoryKeys = 1_000_000

// BenchmarkMemstoreMemory measures the heap memstore holds per key, with
// 1,000,000 keys in the default configuration's shape (HMAC-SHA-256
// digest, an owner per key, two scopes, a plan): HeapAlloc after a GC,
// before and after filling the store. The tokens are dropped before the
// second measurement; only the store's records and indexes remain. The
// store is filled with the collector off (see withoutGC), which changes
// nothing in what remains after the final collection. One operation fills
// one store; run it with -benchtime 1x.
func BenchmarkMemstoreMemory(b *testing.B) {
	h := hmacHasher(b)
	ctx := context.Background()
	var perKey float64
	b.ReportAllocs()
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := memstore.New()
		var err error
		withoutGC(func() { _, err = fillStore(ctx, s, h, memoryKeys) })
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(s)
		perKey = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / memoryKeys
	}
	b.ReportMetric(perKey, "B/key")
}
