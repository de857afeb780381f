package bench

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// The hot-path benchmarks put each figure beside its floor, measured in the
// same process: the least work any verification by id must do.
//
//	BenchmarkHotPath/floor/N     the verification floor: time.Now, a map
//	                             lookup by id, SHA-256 of the 59-byte
//	                             material (id and secret), a constant-time
//	                             compare of the digests
//	BenchmarkHotPath/hit/N       Manager.Verify, memstore, cache hit
//	BenchmarkHotPath/miss/N      Manager.Verify, memstore, cache off (HMAC)
//	BenchmarkHotPath/hit-metrics/N  a cache hit with Options.Metrics set
//
// N is the number of keys in the store (1,000, and 1,000,000 with
// APIKEY_BENCH_FULL=1; the floor runs at 1,000 only). The hit and floor cases verify 1,000 keys spread
// through the store in turn, all cached; the miss cases verify every key
// of the store in turn. Each case reports the collector's CPU time per
// operation (gc-ns/op) and the number of collections during the timing.
//
// BenchmarkHotPathParallel runs floor and hit with b.RunParallel; run it at
// -cpu 1,2,4,8: ns/op at -cpu 2 divided by ns/op at -cpu 1 is how well
// verification scales with cores.
func BenchmarkHotPath(b *testing.B) {
	sizes := []int{hotKeys}
	if benchFull() {
		sizes = append(sizes, bigKeys)
	}
	for _, n := range sizes {
		fx := newHotFixture(b, n)
		if n == hotKeys {
			b.Run("floor/"+strconv.Itoa(n), func(b *testing.B) { fx.floor(b) })
		}
		b.Run("hit/"+strconv.Itoa(n), func(b *testing.B) {
			fx.verify(b, apikey.Options{CacheTTL: time.Hour}, fx.hot, true)
		})
		b.Run("miss/"+strconv.Itoa(n), func(b *testing.B) {
			fx.verify(b, apikey.Options{CacheTTL: -1}, fx.tokens, false)
		})
		b.Run("hit-metrics/"+strconv.Itoa(n), func(b *testing.B) {
			fx.verify(b, apikey.Options{CacheTTL: time.Hour, Metrics: &countMetrics{}}, fx.hot, true)
		})
		fx = nil
		runtime.GC()
	}
}

// BenchmarkHotPathParallel is BenchmarkHotPath's floor and hit at 1,000
// keys with b.RunParallel: each goroutine verifies the working set in
// turn, from its own starting point.
func BenchmarkHotPathParallel(b *testing.B) {
	fx := newHotFixture(b, hotKeys)
	b.Run("floor", func(b *testing.B) {
		b.ReportAllocs()
		var seq atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seq.Add(397)) % len(fx.hot)
			for pb.Next() {
				fx.floorOnce(b, fx.hot[i])
				if i++; i == len(fx.hot) {
					i = 0
				}
			}
		})
	})
	b.Run("hit", func(b *testing.B) {
		m := fx.manager(b, apikey.Options{CacheTTL: time.Hour}, fx.hot)
		ctx := context.Background()
		b.ReportAllocs()
		var seq atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seq.Add(397)) % len(fx.hot)
			for pb.Next() {
				if _, err := m.Verify(ctx, fx.hot[i]); err != nil {
					b.Fatal(err)
				}
				if i++; i == len(fx.hot) {
					i = 0
				}
			}
		})
	})
}

// hotFixture is a memstore of n keys, the floor's map of the same keys,
// and the tokens.
type hotFixture struct {
	store  *memstore.Store
	tokens []string // every key, in creation order
	hot    []string // at most hotKeys of them, spread through the store
	floorM map[string]*floorEntry
	prefix int // length of the prefix and its '_'
}

// floorEntry is what the floor keeps per key: the digest to compare with
// and the record.
type floorEntry struct {
	sum [sha256.Size]byte
	key *apikey.Key
}

func newHotFixture(b *testing.B, n int) *hotFixture {
	fx := &hotFixture{store: memstore.New(), floorM: make(map[string]*floorEntry, n)}
	var err error
	withoutGC(func() { fx.tokens, err = fillStore(context.Background(), fx.store, hmacHasher(b), n) })
	if err != nil {
		b.Fatal(err)
	}
	f, err := apikey.NewFormat("", 0)
	if err != nil {
		b.Fatal(err)
	}
	fx.prefix = len(f.Prefix()) + 1
	// The tokens as parts of one string: the harness should not add a
	// million objects of its own to what the collector traces.
	all := strings.Join(fx.tokens, "")
	for i, off := 0, 0; i < len(fx.tokens); i++ {
		n := len(fx.tokens[i])
		fx.tokens[i], off = all[off:off+n], off+n
	}
	// The working set gets fresh copies, side by side, as requests bring
	// their tokens in fresh buffers: at a million keys, tokens spread
	// through 67 MB would each cost the benchmark a cache miss of its own.
	hot := strings.Join(spread(fx.tokens, hotKeys), "")
	fx.hot = make([]string, 0, hotKeys)
	for off := 0; off < len(hot); off += len(fx.tokens[0]) {
		fx.hot = append(fx.hot, hot[off:off+len(fx.tokens[0])])
	}
	if n > hotKeys { // the floor is only measured over 1,000 keys
		return fx
	}
	withoutGC(func() {
		for _, token := range fx.tokens {
			id, material := fx.split(token)
			fx.floorM[strings.Clone(id)] = &floorEntry{sum: sha256.Sum256([]byte(material)), key: &apikey.Key{ID: id}}
		}
	})
	return fx
}

// split returns the id and the material (id and secret) of token.
func (fx *hotFixture) split(token string) (id, material string) {
	body := token[fx.prefix : len(token)-apikey.ChecksumLength]
	return body[:apikey.IDLength], body
}

// floorOnce is one floor verification.
func (fx *hotFixture) floorOnce(b *testing.B, token string) {
	now := time.Now()
	id, material := fx.split(token)
	e := fx.floorM[id]
	var buf [apikey.MaxTokenLength]byte
	sum := sha256.Sum256(append(buf[:0], material...))
	if e == nil || subtle.ConstantTimeCompare(sum[:], e.sum[:]) != 1 || e.key.Expired(now) {
		b.Fatal("floor: no match")
	}
}

func (fx *hotFixture) floor(b *testing.B) {
	gc := startGCMeter()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		fx.floorOnce(b, fx.hot[i])
		if i++; i == len(fx.hot) {
			i = 0
		}
	}
	gc.report(b)
}

// manager returns a Manager over the fixture's store with opts (HMAC with
// benchPepper), warmed with tokens when the cache is on.
func (fx *hotFixture) manager(b *testing.B, opts apikey.Options, warm []string) *apikey.Manager {
	opts.Peppers = []apikey.Pepper{benchPepper}
	m, err := apikey.New(fx.store, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close(context.Background()) })
	if opts.CacheTTL >= 0 {
		for _, t := range warm {
			if _, err := m.Verify(context.Background(), t); err != nil {
				b.Fatal(err)
			}
		}
	}
	return m
}

func (fx *hotFixture) verify(b *testing.B, opts apikey.Options, tokens []string, warm bool) {
	var w []string
	if warm {
		w = tokens
	}
	m := fx.manager(b, opts, w)
	ctx := context.Background()
	runtime.GC()
	gc := startGCMeter()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := m.Verify(ctx, tokens[i]); err != nil {
			b.Fatal(err)
		}
		if i++; i == len(tokens) {
			i = 0
		}
	}
	gc.report(b)
}

// gcMeter measures the collector's work during a benchmark.
type gcMeter struct {
	samples []metrics.Sample
	cycles  uint32
}

func startGCMeter() *gcMeter {
	g := &gcMeter{samples: []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}}
	metrics.Read(g.samples)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	g.cycles = ms.NumGC
	return g
}

// report adds gc-ns/op (the collector's CPU time per operation) and
// gc-cycles (collections during the benchmark).
func (g *gcMeter) report(b *testing.B) {
	before := g.samples[0].Value.Float64()
	metrics.Read(g.samples)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric((g.samples[0].Value.Float64()-before)*1e9/float64(b.N), "gc-ns/op")
	b.ReportMetric(float64(ms.NumGC-g.cycles), "gc-cycles")
}

// countMetrics is a Metrics that counts verifications by outcome in
// atomic counters, the least a real one does.
type countMetrics struct {
	ok, failed atomic.Uint64
}

func (c *countMetrics) Verified(outcome, _ string, _ time.Duration) {
	if outcome == "ok" {
		c.ok.Add(1)
		return
	}
	c.failed.Add(1)
}
func (*countMetrics) Limited(string, string)            {}
func (*countMetrics) LimiterFailed(string, bool)        {}
func (*countMetrics) Flushed(int, time.Duration, error) {}
func (*countMetrics) UsesQueued(int, int)               {}

// BenchmarkFloorMiddleware is the floor of the middleware: a hand-written
// handler that parses "Authorization: Bearer", hashes the material,
// looks the id up in a map, compares the digests, and passes the request on
// with the key in its context (WithContext). The middleware's overhead is
// BenchmarkMiddleware minus BenchmarkBareHandler; the floor's is this
// minus BenchmarkBareHandler.
func BenchmarkFloorMiddleware(b *testing.B) {
	_, token := newBenchManager(b)
	serveBench(b, floorMiddleware(b, token), "Bearer "+token, http.StatusOK)
}

// floorKey is the context key of the floor middleware, as apikey's own.
type floorKey struct{}

// floorMiddleware returns the floor middleware around okHandler, knowing
// the one key of token.
func floorMiddleware(b *testing.B, token string) http.Handler {
	fx := &hotFixture{floorM: map[string]*floorEntry{}}
	f, err := apikey.NewFormat("", 0)
	if err != nil {
		b.Fatal(err)
	}
	fx.prefix = len(f.Prefix()) + 1
	id, material := fx.split(token)
	fx.floorM[id] = &floorEntry{sum: sha256.Sum256([]byte(material)), key: &apikey.Key{ID: id}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || len(token) <= fx.prefix+apikey.ChecksumLength+apikey.IDLength {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		id, material := fx.split(token)
		var buf [apikey.MaxTokenLength]byte
		sum := sha256.Sum256(append(buf[:0], material...))
		e := fx.floorM[id]
		if e == nil || subtle.ConstantTimeCompare(sum[:], e.sum[:]) != 1 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		okHandler.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), floorKey{}, e.key)))
	})
}

// A paired benchmark runs its cases in alternating blocks of operations,
// so that every case sees the same machine: on a shared machine whose load
// changes by the second, the ratio of two cases measured block by block is
// far steadier than the ratio of two benchmarks run one after the other.
// Each case reports its ns/op (the median over blocks); each ratio is the
// median over blocks of the block ratios.
type pairCase struct {
	name  string
	block func(n int) // runs n operations
	ops   int         // operations per block; pairBlock when 0
}

// seq returns a block of n calls of op.
// serveOp is a paired case serving GET /data with token as a Bearer
// credential through h, failing on any status but 200.
func serveOp(b *testing.B, h http.Handler, token string) func(int) {
	req := httptest.NewRequest(http.MethodGet, "/data", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return seq(func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	})
}

func seq(op func()) func(int) {
	return func(n int) {
		for range n {
			op()
		}
	}
}

type pairRatio struct {
	name     string
	num, den int // indexes of cases
	minus    int // index of a case subtracted from both, or -1
}

const pairBlock = 200

func paired(b *testing.B, cases []pairCase, ratios []pairRatio) {
	times := make([][]float64, len(cases))
	for b.Loop() {
		for i, c := range cases {
			n := c.ops
			if n == 0 {
				n = pairBlock
			}
			start := time.Now()
			c.block(n)
			times[i] = append(times[i], float64(time.Since(start).Nanoseconds())/float64(n))
		}
	}
	for i, c := range cases {
		b.ReportMetric(median(times[i]), c.name+"-ns/op")
	}
	for _, r := range ratios {
		rs := make([]float64, len(times[r.num]))
		for k := range rs {
			num, den := times[r.num][k], times[r.den][k]
			if r.minus >= 0 {
				num -= times[r.minus][k]
				den -= times[r.minus][k]
			}
			rs[k] = num / den
		}
		b.ReportMetric(median(rs), r.name)
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// cycle returns a block of operations over tokens in turn.
func cycle(tokens []string, f func(string)) func(int) {
	i := 0
	return seq(func() {
		f(tokens[i])
		if i++; i == len(tokens) {
			i = 0
		}
	})
}

// verifyOp returns a block verifying tokens in turn with m.
func verifyOp(b *testing.B, m *apikey.Manager, tokens []string) func(int) {
	ctx := context.Background()
	return cycle(tokens, func(t string) {
		if _, err := m.Verify(ctx, t); err != nil {
			b.Fatal(err)
		}
	})
}

// parallel returns a block whose n operations are shared by procs
// goroutines, each going over tokens in turn from its own starting point.
func parallel(tokens []string, procs int, f func(string)) func(int) {
	return func(n int) {
		var wg sync.WaitGroup
		for p := range procs {
			wg.Go(func() {
				i := p * 397 % len(tokens)
				for range n / procs {
					f(tokens[i])
					if i++; i == len(tokens) {
						i = 0
					}
				}
			})
		}
		wg.Wait()
	}
}

// BenchmarkPaired measures each target of the hot path as a ratio to its
// floor, in alternating blocks (see paired):
//
//	verify      hit÷floor, miss÷floor, hit-metrics÷hit and Format.Parse÷floor
//	            at 1,000 keys
//	middleware  (Middleware−BareHandler) ÷ (FloorMiddleware−BareHandler),
//	            usage recording off, and on (usage-overhead/floor)
//	scale       ns/op with GOMAXPROCS goroutines ÷ ns/op with one, for
//	            the floor and for a cache hit
//	size        1,000,000 keys ÷ 1,000 keys (APIKEY_BENCH_FULL=1): hit and
//	            miss over the same 1,000 keys (spread through the million),
//	            miss-all over every key of each store
func BenchmarkPaired(b *testing.B) {
	cached := apikey.Options{CacheTTL: time.Hour}
	uncached := apikey.Options{CacheTTL: -1}
	b.Run("verify", func(b *testing.B) {
		fx := newHotFixture(b, hotKeys)
		hit := fx.manager(b, cached, fx.hot)
		metered := fx.manager(b, apikey.Options{CacheTTL: cached.CacheTTL, Metrics: &countMetrics{}}, fx.hot)
		miss := fx.manager(b, uncached, nil)
		paired(b, []pairCase{
			{"floor", cycle(fx.hot, func(t string) { fx.floorOnce(b, t) }), 0},
			{"hit", verifyOp(b, hit, fx.hot), 0},
			{"miss", verifyOp(b, miss, fx.tokens), 0},
			{"hit-metrics", verifyOp(b, metered, fx.hot), 0},
			{"parse", cycle(fx.hot, func(t string) {
				if _, err := hit.Format().Parse(t); err != nil {
					b.Fatal(err)
				}
			}), 0},
		}, []pairRatio{
			{"hit/floor", 1, 0, -1}, {"miss/floor", 2, 0, -1}, {"metrics/hit", 3, 1, -1}, {"parse/floor", 4, 0, -1},
		})
	})
	b.Run("middleware", func(b *testing.B) {
		// ours: optional features off (no usage recording); ours-usage:
		// the default options, usage recording on, with a key of its own.
		m, token := newBenchManagerWith(b, apikey.Options{UsageInterval: -1})
		mu, tokenU := newBenchManager(b)
		mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
		if err != nil {
			b.Fatal(err)
		}
		mwU, err := apikey.NewMiddleware(mu, apikey.MiddlewareOptions{})
		if err != nil {
			b.Fatal(err)
		}
		serve := func(h http.Handler) func(int) { return serveOp(b, h, token) }
		paired(b, []pairCase{
			{"bare", serve(okHandler), 0},
			{"floor", serve(floorMiddleware(b, token)), 0},
			{"ours", serve(mw.Handler(okHandler)), 0},
			{"ours-usage", serveOp(b, mwU.Handler(okHandler), tokenU), 0},
		}, []pairRatio{{"overhead/floor", 2, 1, 0}, {"usage-overhead/floor", 3, 1, 0}})
	})
	b.Run("scale", func(b *testing.B) {
		fx := newHotFixture(b, hotKeys)
		m := fx.manager(b, cached, fx.hot)
		ctx := context.Background()
		procs := runtime.GOMAXPROCS(0)
		floor := func(t string) { fx.floorOnce(b, t) }
		hit := func(t string) {
			if _, err := m.Verify(ctx, t); err != nil {
				b.Fatal(err)
			}
		}
		const ops = 50_000 // blocks of tens of milliseconds: both threads get scheduled
		paired(b, []pairCase{
			{"floor-serial", cycle(fx.hot, floor), ops},
			{"floor-parallel", parallel(fx.hot, procs, floor), ops},
			{"hit-serial", cycle(fx.hot, hit), ops},
			{"hit-parallel", parallel(fx.hot, procs, hit), ops},
		}, []pairRatio{{"floor-par/ser", 1, 0, -1}, {"hit-par/ser", 3, 2, -1}})
	})
	b.Run("size", func(b *testing.B) {
		if !benchFull() {
			b.Skip("set APIKEY_BENCH_FULL=1 to compare 1,000,000 keys with 1,000")
		}
		small := newHotFixture(b, hotKeys)
		big := newHotFixture(b, bigKeys)
		runtime.GC()
		gc := startGCMeter()
		// Hits and misses in separate groups: a block going over all the
		// million keys evicts everything from the CPU caches, which would
		// make the hits that follow it pay for the misses.
		b.Run("hit", func(b *testing.B) {
			paired(b, []pairCase{
				{"1k", verifyOp(b, small.manager(b, cached, small.hot), small.hot), 0},
				{"1M", verifyOp(b, big.manager(b, cached, big.hot), big.hot), 0},
			}, []pairRatio{{"1M/1k", 1, 0, -1}})
		})
		b.Run("miss", func(b *testing.B) { // the same 1,000 keys, spread through the million
			paired(b, []pairCase{
				{"1k", verifyOp(b, small.manager(b, uncached, nil), small.tokens), 0},
				{"1M", verifyOp(b, big.manager(b, uncached, nil), big.hot), 0},
			}, []pairRatio{{"1M/1k", 1, 0, -1}})
		})
		b.Run("miss-all", func(b *testing.B) { // every key of each store in turn
			paired(b, []pairCase{
				{"1k", verifyOp(b, small.manager(b, uncached, nil), small.tokens), 0},
				{"1M", verifyOp(b, big.manager(b, uncached, nil), big.tokens), 0},
			}, []pairRatio{{"1M/1k", 1, 0, -1}})
		})
		gc.report(b)
		runtime.KeepAlive(small)
		runtime.KeepAlive(big)
	})
}
