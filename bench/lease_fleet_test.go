package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit"
	"github.com/gokeys/apikey/redislimit/lease"
)

// The fleet measurement of leased limits (docs/scale.md, "Leased
// limits"): 16 instances share customers' rates of 10,000 per 100 ms
// through one Redis reached through a proxy that adds 1 ms each way,
// under a uniform and a skewed load, in turns within one run: a no-op
// limiter (what the harness and the machine add), lease with its defaults
// and with RateReserve 1/2, and plain redislimit. It reports admissions
// against the limit per 100 ms window (also over the windows whose calls
// reached the limit), over-admissions (admissions one exact GCRA could
// not have made, whatever the time within its call each was decided at),
// Redis round trips per request, the latency of Allow, and a PING through
// the proxy every 10 ms meanwhile.
//
//	cd bench
//	APIKEY_TEST_REDIS_ADDR=127.0.0.1:6379 APIKEY_BENCH_LEASE=1000 \
//	  go test -run '^TestLease' -v -timeout 60m . | tee results/lease.txt
//
// APIKEY_BENCH_LEASE is the number of 100 ms windows per scenario and
// limiter (default 20, a smoke run); it needs APIKEY_TEST_REDIS_ADDR.
// APIKEY_BENCH_LEASE_LIMITERS picks fleets by name (comma-separated).
const (
	fleetInstances = 16
	fleetWindow    = 100 * time.Millisecond
	fleetCount     = 10_000 // per window
	fleetBlock     = 100    // windows per turn
	fleetDemand    = 1.2    // demand over the limit of a limited customer
)

// fleetLimit is the customers' limit.
var fleetLimit = limits.Rate("per-100ms", fleetCount, fleetWindow, 0)

// stream is the demand of one customer on one instance, in requests per
// second.
type stream struct {
	customer int
	rate     float64
}

// scenario is a load: the customers, whether each is limited (demand
// above its limit) and the streams of each instance.
type scenario struct {
	name      string
	customers []string // descriptions
	limited   []bool
	streams   [fleetInstances][]stream
}

// scenarios returns the loads: uniform, one customer asking 1.2 times
// the limit evenly of every instance; skewed, one hot customer asking 1.2
// times the limit of the instances as 1/(i+1), and another asking a
// quarter of the limit evenly.
func scenarios() []scenario {
	per := float64(fleetCount) / fleetWindow.Seconds() // the limit in requests per second
	var uniform, skewed scenario
	uniform.name = "uniform"
	uniform.customers = []string{"1.2x, even"}
	uniform.limited = []bool{true}
	skewed.name = "skewed"
	skewed.customers = []string{"hot: 1.2x, instance i gets 1/(i+1)", "other: 0.25x, even"}
	skewed.limited = []bool{true, false}
	var harmonic float64
	for i := range fleetInstances {
		harmonic += 1 / float64(i+1)
	}
	for i := range fleetInstances {
		uniform.streams[i] = append(uniform.streams[i], stream{0, fleetDemand * per / fleetInstances})
		skewed.streams[i] = append(skewed.streams[i],
			stream{0, fleetDemand * per / float64(i+1) / harmonic},
			stream{1, 0.25 * per / fleetInstances})
	}
	return []scenario{uniform, skewed}
}

// fleetLimiter builds the instances of one fleet; goroutines share each
// stream of demand, enough that redislimit, whose calls wait a round
// trip, can keep up while Redis does.
type fleetLimiter struct {
	name       string
	goroutines int
	new        func(t *testing.T, c *redis.Client, prefix string) limits.Limiter
}

var fleetLimiters = []fleetLimiter{
	// The reference: what the harness and the machine add to a call that
	// does nothing, and the demand they can make.
	{"no-op", 1, func(*testing.T, *redis.Client, string) limits.Limiter { return noopLimiter{} }},
	{"lease", 1, func(t *testing.T, c *redis.Client, prefix string) limits.Limiter {
		l, err := lease.New(c, lease.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}},
	// Leases living twice as long (50 ms for this rate): twice the round
	// trip's tail under load fits in one.
	{"lease-0.5", 1, func(t *testing.T, c *redis.Client, prefix string) limits.Limiter {
		l, err := lease.New(c, lease.Options{Prefix: prefix, RateReserve: 0.5})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}},
	{"redislimit", 16, func(t *testing.T, c *redis.Client, prefix string) limits.Limiter {
		l, err := redislimit.New(c, redislimit.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}},
}

// noopLimiter allows every call at once.
type noopLimiter struct{}

func (noopLimiter) Allow(context.Context, string, []limits.Limit, int64) (limits.Result, error) {
	return limits.Result{Allowed: true}, nil
}

// chosenLimiters returns the fleets to run: APIKEY_BENCH_LEASE_LIMITERS,
// a comma-separated list of names, or all.
func chosenLimiters() []fleetLimiter {
	v := os.Getenv("APIKEY_BENCH_LEASE_LIMITERS")
	if v == "" {
		return fleetLimiters
	}
	var out []fleetLimiter
	for _, fl := range fleetLimiters {
		if slices.Contains(strings.Split(v, ","), fl.name) {
			out = append(out, fl)
		}
	}
	return out
}

func TestLeaseFleet(t *testing.T) {
	if os.Getenv("APIKEY_BENCH_LEASE") == "" {
		t.Skip("a measurement: set APIKEY_BENCH_LEASE to run it")
	}
	addr := os.Getenv("APIKEY_TEST_REDIS_ADDR")
	if addr == "" {
		t.Skip("APIKEY_TEST_REDIS_ADDR is not set")
	}
	windows := 20
	if v := os.Getenv("APIKEY_BENCH_LEASE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 3 {
			t.Fatalf("APIKEY_BENCH_LEASE=%q: want a number of windows, at least 3", v)
		}
		windows = n
	}
	proxy := startProxyProcess(t, addr, time.Millisecond)
	t.Logf("%d instances, a rate of %d per %v (burst %d) per customer, %d windows per scenario and limiter in turns of %d, Redis %s through a proxy adding 1 ms each way (round trip %v), GOMAXPROCS %d",
		fleetInstances, fleetCount, fleetWindow, fleetCount, windows, min(windows, fleetBlock), addr, proxyRTT(t, proxy), runtime.GOMAXPROCS(0))
	for _, sc := range scenarios() {
		total := map[string]*fleetResult{}
		for done := 0; done < windows; done += fleetBlock {
			n := min(fleetBlock, windows-done)
			for _, fl := range chosenLimiters() {
				r := runFleet(t, proxy, sc, fl, n)
				if total[fl.name] == nil {
					total[fl.name] = r
				} else {
					total[fl.name].add(r)
				}
			}
		}
		for _, fl := range chosenLimiters() {
			total[fl.name].report(t, sc, fl.name, windows)
		}
	}
}

// proxyRTT measures a PING through the proxy: the median of 50.
func proxyRTT(t *testing.T, addr string) time.Duration {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	var ds []time.Duration
	for range 50 {
		start := time.Now()
		if err := c.Ping(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	return ds[len(ds)/2].Round(10 * time.Microsecond)
}

// fleetResult is what one fleet did, summed over its turns.
type fleetResult struct {
	calls, errs, trips, waited int64
	lost                       int64
	perWindow                  [][]int64 // per customer: admitted per window, the first of each turn excluded
	calledPerWindow            [][]int64 // per customer: calls begun per window, the same windows
	over                       []int     // per customer: over-admissions
	admitted                   []int64   // per customer
	calls1                     []int64   // per customer: calls
	lat                        histogram
	ping                       histogram // PINGs through the proxy meanwhile
}

func (r *fleetResult) add(o *fleetResult) {
	r.calls += o.calls
	r.errs += o.errs
	r.trips += o.trips
	r.waited += o.waited
	r.lost += o.lost
	for c := range r.perWindow {
		r.perWindow[c] = append(r.perWindow[c], o.perWindow[c]...)
		r.calledPerWindow[c] = append(r.calledPerWindow[c], o.calledPerWindow[c]...)
		r.over[c] += o.over[c]
		r.admitted[c] += o.admitted[c]
		r.calls1[c] += o.calls1[c]
	}
	r.lat.add(&o.lat)
	r.ping.add(&o.ping)
}

// report logs one line per customer and one for the fleet.
func (r *fleetResult) report(t *testing.T, sc scenario, name string, windows int) {
	var offered float64
	for _, ss := range sc.streams {
		for _, s := range ss {
			offered += s.rate * (time.Duration(windows) * fleetWindow).Seconds()
		}
	}
	for c, desc := range sc.customers {
		w := slices.Clone(r.perWindow[c])
		slices.Sort(w)
		pct := func(q float64) float64 {
			if len(w) == 0 {
				return 0
			}
			return 100 * float64(w[int(q*float64(len(w)-1))]) / fleetCount
		}
		over := strconv.Itoa(r.over[c])
		if r.over[c] < 0 {
			over = "not checked"
		}
		t.Logf("%-8s %-10s %-36s calls %9d admitted %9d windows %4d: admitted/limit min %5.1f%% p5 %5.1f%% median %5.1f%% max %5.1f%%; over-admissions %s",
			sc.name, name, desc, r.calls1[c], r.admitted[c], len(w), pct(0), pct(0.05), pct(0.5), pct(1), over)
		if sc.limited[c] {
			// Steady demand: the windows in which the calls made reached
			// the limit.
			var sat []int64
			var satAdm, satLimit int64
			for i, n := range r.calledPerWindow[c] {
				if n >= fleetCount {
					sat = append(sat, r.perWindow[c][i])
					satAdm += r.perWindow[c][i]
					satLimit += fleetCount
				}
			}
			slices.Sort(sat)
			q := func(x float64) float64 {
				if len(sat) == 0 {
					return 0
				}
				return 100 * float64(sat[int(x*float64(len(sat)-1))]) / fleetCount
			}
			share := 0.0
			if satLimit > 0 {
				share = 100 * float64(satAdm) / float64(satLimit)
			}
			t.Logf("%-8s %-10s %-36s windows whose calls reached the limit %4d of %4d: admitted/limit %5.1f%% overall, min %5.1f%% p5 %5.1f%% median %5.1f%%",
				sc.name, name, desc, len(sat), len(w), share, q(0), q(0.05), q(0.5))
		}
	}
	t.Logf("%-8s %-10s fleet: calls %d (%.1f%% of the demand), errors %d, Redis round trips per call %.4f, calls that waited for Redis %.3f%%, leased units lost %d; Allow latency p50 %v p99 %v p99.9 %v max %v",
		sc.name, name, r.calls, 100*float64(r.calls)/offered, r.errs, float64(r.trips)/float64(r.calls), 100*float64(r.waited)/float64(r.calls), r.lost,
		r.lat.quantile(0.5), r.lat.quantile(0.99), r.lat.quantile(0.999), r.lat.quantile(1))
	t.Logf("%-8s %-10s a PING through the proxy every 10 ms meanwhile: p50 %v p99 %v max %v",
		sc.name, name, r.ping.quantile(0.5), r.ping.quantile(0.99), r.ping.quantile(1))
}

// generator is one goroutine of demand: its share of a stream.
type generator struct {
	in       int // instance
	customer int
	rate     float64
}

// genRecord is what one generator saw.
type genRecord struct {
	calls, errs, admitted int64
	spans                 []span
	called                []int64 // calls begun per window
	lat                   histogram
}

// runFleet runs one turn of windows of a scenario on a fresh fleet with
// fresh customers.
func runFleet(t *testing.T, addr string, sc scenario, fl fleetLimiter, windows int) *fleetResult {
	ctx := context.Background()
	prefix := "apikey:bench:" + rand.Text()[:12] + ":"
	clients := make([]*redis.Client, fleetInstances)
	ls := make([]limits.Limiter, fleetInstances)
	for i := range ls {
		clients[i] = redis.NewClient(&redis.Options{Addr: addr, PoolSize: 4 * fl.goroutines * len(sc.customers)})
		ls[i] = fl.new(t, clients[i], prefix)
	}
	defer func() {
		for i, l := range ls {
			if c, ok := l.(*lease.Limiter); ok {
				_ = c.Close(ctx)
			}
			_ = clients[i].Close()
		}
		cleanPrefix(addr, prefix)
	}()
	if fl.name != "no-op" {
		// Open every pool's connections before the clock starts, so that
		// no call waits for one.
		var warm sync.WaitGroup
		for _, c := range clients {
			for range c.Options().PoolSize {
				warm.Go(func() { _ = c.Ping(ctx).Err() })
			}
		}
		warm.Wait()
	}
	ids := make([]string, len(sc.customers))
	for c := range ids {
		ids[c] = fmt.Sprintf("customer-%d", c)
	}

	var gens []generator
	for i, ss := range sc.streams {
		for _, s := range ss {
			for range fl.goroutines {
				gens = append(gens, generator{i, s.customer, s.rate / float64(fl.goroutines)})
			}
		}
	}
	recs := make([]genRecord, len(gens))
	limit := []limits.Limit{fleetLimit}
	start := time.Now()
	end := start.Add(time.Duration(windows) * fleetWindow)
	var wg sync.WaitGroup
	var ping histogram
	wg.Go(func() {
		// The round trip the limiters see, measured aside.
		c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1})
		defer c.Close()
		for time.Now().Before(end) {
			t0 := time.Now()
			if c.Ping(ctx).Err() == nil {
				ping.record(time.Since(t0))
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	for g, gen := range gens {
		wg.Go(func() {
			rec := &recs[g]
			rec.called = make([]int64, windows)
			l, id := ls[gen.in], ids[gen.customer]
			// Open loop: issue what is due, in batches of about 4; a
			// generator more than 50 ms behind drops what it missed.
			pause := max(time.Millisecond, time.Duration(4/gen.rate*float64(time.Second)))
			var issued float64
			for {
				now := time.Now()
				if !now.Before(end) {
					return
				}
				due := now.Sub(start).Seconds() * gen.rate
				if behind := due - issued; behind > 0.05*gen.rate {
					issued = due - 0.05*gen.rate
				}
				if issued+1 > due {
					time.Sleep(pause)
					continue
				}
				for issued+1 <= due {
					issued++
					t0 := time.Now()
					res, err := l.Allow(ctx, id, limit, 1)
					t1 := time.Now()
					rec.calls++
					if w := int(t0.Sub(start) / fleetWindow); w < windows {
						rec.called[w]++
					}
					rec.lat.record(t1.Sub(t0))
					switch {
					case err != nil:
						rec.errs++
					case res.Allowed:
						rec.admitted++
						rec.spans = append(rec.spans, span{uint32(t0.Sub(start).Microseconds()), uint32(t1.Sub(start).Microseconds())})
					}
				}
			}
		})
	}
	wg.Wait()

	r := &fleetResult{
		ping:            ping,
		perWindow:       make([][]int64, len(sc.customers)),
		calledPerWindow: make([][]int64, len(sc.customers)),
		over:            make([]int, len(sc.customers)),
		admitted:        make([]int64, len(sc.customers)),
		calls1:          make([]int64, len(sc.customers)),
	}
	tt, b := gcra.GCRA(fleetLimit.Count, fleetLimit.Period, fleetLimit.Burst, time.Microsecond)
	for c := range sc.customers {
		var adm []span
		called := make([]int64, windows)
		for g, gen := range gens {
			if gen.customer == c {
				adm = append(adm, recs[g].spans...)
				r.calls1[c] += recs[g].calls
				for w, n := range recs[g].called {
					called[w] += n
				}
			}
		}
		r.calledPerWindow[c] = called[1:]
		r.admitted[c] = int64(len(adm))
		per := make([]int64, windows)
		for _, s := range adm {
			if w := int(time.Duration(s.start) * time.Microsecond / fleetWindow); w < windows {
				per[w]++
			}
		}
		r.perWindow[c] = per[1:] // the first window starts with a whole burst
		r.over[c] = -1
		if fl.name != "no-op" {
			r.over[c] = overAdmitted(adm, tt, b)
		}
	}
	for g := range recs {
		r.calls += recs[g].calls
		r.errs += recs[g].errs
		r.lat.add(&recs[g].lat)
	}
	for _, l := range ls {
		if c, ok := l.(*lease.Limiter); ok {
			s := c.Stats()
			r.trips += s.Trips
			r.waited += s.Waited
			r.lost += s.Lost
		} else if fl.name == "redislimit" {
			r.trips, r.waited = r.calls, r.calls
		}
	}
	return r
}

// cleanPrefix deletes the keys of a run.
func cleanPrefix(addr, prefix string) {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		c.Unlink(ctx, iter.Val())
	}
}

// histogram counts durations: by 100 ns up to 100 µs, by 10 µs up to
// 10 ms, by 1 ms up to 10 s; the last bucket holds longer ones.
type histogram struct {
	n      int64
	counts [1000 + 990 + 9990]int64
}

func (h *histogram) record(d time.Duration) {
	h.n++
	switch {
	case d < 100*time.Microsecond:
		h.counts[d/(100*time.Nanosecond)]++
	case d < 10*time.Millisecond:
		h.counts[1000+(d-100*time.Microsecond)/(10*time.Microsecond)]++
	default:
		h.counts[min(1990+int((d-10*time.Millisecond)/time.Millisecond), len(h.counts)-1)]++
	}
}

func (h *histogram) add(o *histogram) {
	h.n += o.n
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h *histogram) quantile(q float64) time.Duration {
	want := int64(math.Ceil(q * float64(h.n)))
	var sum int64
	for i, c := range h.counts {
		if sum += c; sum >= want && c > 0 {
			switch {
			case i < 1000:
				return time.Duration(i+1) * 100 * time.Nanosecond
			case i < 1990:
				return 100*time.Microsecond + time.Duration(i-1000+1)*10*time.Microsecond
			default:
				return 10*time.Millisecond + time.Duration(i-1990+1)*time.Millisecond
			}
		}
	}
	return 0
}
