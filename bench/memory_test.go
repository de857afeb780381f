package bench

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gokeys/apikey"
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

// BenchmarkMemstoreGC measures one full garbage collection with a
// memstore of 1,000 or (APIKEY_BENCH_FULL=1) 1,000,000 keys alive: the
// collector's work per cycle grows with what it must trace, so this is
// what a store's layout costs every collection of a process that
// allocates (a cache miss allocates the caller's copy of the key).
// heap-MB is the live heap.
func BenchmarkMemstoreGC(b *testing.B) {
	sizes := []int{hotKeys}
	if benchFull() {
		sizes = append(sizes, bigKeys)
	}
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			s := memstore.New()
			var err error
			withoutGC(func() { _, err = fillStore(context.Background(), s, hmacHasher(b), n) })
			if err != nil {
				b.Fatal(err)
			}
			gc := startGCMeter()
			for b.Loop() {
				runtime.GC()
			}
			gc.report(b)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapAlloc)/1e6, "heap-MB")
			runtime.KeepAlive(s)
		})
	}
}

// BenchmarkCacheMemory measures the heap the verification cache holds per
// key: a Manager over a memstore of 100,000 (APIKEY_BENCH_FULL=1:
// 1,000,000) keys verifies every token once, and HeapAlloc after a GC is
// compared with what it was before. The store's own records are not
// counted, nor the tokens. One operation fills one cache; run it with
// -benchtime 1x.
func BenchmarkCacheMemory(b *testing.B) {
	n := 100_000
	if benchFull() {
		n = bigKeys
	}
	ctx := context.Background()
	s := memstore.New()
	var tokens []string
	var err error
	withoutGC(func() { tokens, err = fillStore(ctx, s, hmacHasher(b), n) })
	if err != nil {
		b.Fatal(err)
	}
	var perKey float64
	for b.Loop() {
		m, err := apikey.New(s, apikey.Options{Hasher: hmacHasher(b), CacheTTL: time.Hour, CacheMaxEntries: n})
		if err != nil {
			b.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		withoutGC(func() {
			for _, t := range tokens {
				if _, err = m.Verify(ctx, t); err != nil {
					break
				}
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perKey = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
		runtime.KeepAlive(m)
		m.Close(ctx)
	}
	b.ReportMetric(perKey, "B/key")
}
