package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limitertest"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit"
	"github.com/gokeys/apikey/redislimit/lease"
)

// TestLeaseSimulated is the leased limits' measurement in simulated time:
// 16 instances share customers' limits through an in-process Redis whose
// clock, and the instances', the test moves by steps. Within a step the
// instances' calls are made one after another at the step's time. Leases
// asked in the background run in real time meanwhile; the clock never
// moves more than 2 ms past one's start before it has landed, so that a
// round trip takes up to 2 ms of simulated time (a call's own round trip
// takes none). Every admission is checked at the simulated time of its call:
// a rate's, in time order, against one exact GCRA; a quota's against its
// count per window; credits against their count.
//
// The loads: a rate of 10,000 per 100 ms asked 1.2 times evenly (rate,
// uniform); the same rate asked 1.2 times by a hot customer, instance i
// getting 1/(i+1), with another customer asking a quarter evenly (rate,
// skewed); minute quotas of 100,000 asked 1.2 times, evenly by one
// customer and as 1/(i+1) by another that also spends 3,000,000 credits
// never refilled (quota and credits). APIKEY_BENCH_LEASE_SIM is the number
// of windows per load for lease (default 20); redislimit, whose every
// call is a round trip to the in-process Redis, runs a tenth of them (at
// least 2).
func TestLeaseSimulated(t *testing.T) {
	if os.Getenv("APIKEY_BENCH_LEASE_SIM") == "" {
		t.Skip("a measurement: set APIKEY_BENCH_LEASE_SIM to run it")
	}
	windows := 20
	if v := os.Getenv("APIKEY_BENCH_LEASE_SIM"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			t.Fatalf("APIKEY_BENCH_LEASE_SIM=%q: want a number of windows, at least 2", v)
		}
		windows = n
	}
	newLease := func(t *testing.T, c redis.UniversalClient, clock *limitertest.Clock) limits.Limiter {
		l, err := lease.New(c, lease.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		return l
	}
	newPlain := func(t *testing.T, c redis.UniversalClient, _ *limitertest.Clock) limits.Limiter {
		l, err := redislimit.New(c, redislimit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	for _, sc := range simScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			simulate(t, sc, "lease", windows, newLease)
			simulate(t, sc, "redislimit", max(2, windows/10), newPlain)
		})
	}
}

// simCustomer is one customer of a simulated load: the limits of its
// calls and its demand per instance, in requests per second.
type simCustomer struct {
	desc  string
	ls    []limits.Limit
	rates [simInstances]float64
}

// simScenario is a simulated load.
type simScenario struct {
	name      string
	step      time.Duration
	window    time.Duration // of the first limit of every customer
	count     int64         // per window
	customers []simCustomer
}

const simInstances = 16

// simScenarios returns the simulated loads.
func simScenarios() []simScenario {
	var harmonic float64
	for i := range simInstances {
		harmonic += 1 / float64(i+1)
	}
	even := func(total float64) (r [simInstances]float64) {
		for i := range r {
			r[i] = total / simInstances
		}
		return r
	}
	skew := func(total float64) (r [simInstances]float64) {
		for i := range r {
			r[i] = total / float64(i+1) / harmonic
		}
		return r
	}
	rate := limits.Rate("per-100ms", 10_000, 100*time.Millisecond, 0)
	perSecond := 100_000.0
	q := limits.Quota("per-minute", 100_000, limits.Minute)
	cr := limits.Credits("credits", 3_000_000, limits.Never)
	cr.Subject = "key-b"
	perMinute := 100_000.0 / 60
	return []simScenario{
		{"rate, uniform", time.Millisecond, 100 * time.Millisecond, 10_000, []simCustomer{
			{"1.2x, even", []limits.Limit{rate}, even(1.2 * perSecond)},
		}},
		{"rate, skewed", time.Millisecond, 100 * time.Millisecond, 10_000, []simCustomer{
			{"hot: 1.2x, instance i gets 1/(i+1)", []limits.Limit{rate}, skew(1.2 * perSecond)},
			{"other: 0.25x, even", []limits.Limit{rate}, even(0.25 * perSecond)},
		}},

		{"quota and credits", 10 * time.Millisecond, time.Minute, 100_000, []simCustomer{
			{"1.2x, even", []limits.Limit{q}, even(1.2 * perMinute)},
			{"1.2x, 1/(i+1), with credits", []limits.Limit{q, cr}, skew(1.2 * perMinute)},
		}},
	}
}

// simulate runs windows of a load on a fleet built by newLimiter, and
// logs what it admitted; it fails on any over-admission.
func simulate(t *testing.T, sc simScenario, name string, windows int, newLimiter func(*testing.T, redis.UniversalClient, *limitertest.Clock) limits.Limiter) {
	// The first window starts a second after the start, at a boundary of
	// the calendar, so that it is whole.
	start := time.Date(2026, 3, 14, 12, 0, 59, 0, time.UTC)
	first := start.Add(time.Second)
	clock := limitertest.NewClock(start)
	mr := miniredis.RunT(t)
	mr.SetTime(start)
	clock.OnMove(func(now time.Time, d time.Duration) {
		mr.SetTime(now)
		mr.FastForward(d)
	})
	trips := &simTrips{clock: clock, rtt: 2 * time.Millisecond, open: map[*int]time.Time{}}
	ls := make([]limits.Limiter, simInstances)
	for i := range ls {
		c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		c.AddHook(trips)
		t.Cleanup(func() { _ = c.Close() })
		ls[i] = newLimiter(t, c, clock)
	}
	ctx := context.Background()
	type record struct {
		calls, admitted, credits int64
		per                      map[int64]int64 // admitted per window index
		tat                      int64           // the rate's replay through one exact GCRA, in µs
		over                     int64
	}
	recs := make([]record, len(sc.customers))
	for c := range recs {
		recs[c].per = map[int64]int64{}
	}
	due := make([][simInstances]float64, len(sc.customers))
	var errs int64
	end := first.Add(time.Duration(windows) * sc.window)
	for now := start; now.Before(end); now = now.Add(sc.step) {
		trips.settle(now)
		clock.Set(now)
		w := int64(now.Sub(first) / sc.window)
		if now.Before(first) {
			w = -1
		}
		us := now.UnixMicro()
		for i, l := range ls {
			for c, cu := range sc.customers {
				due[c][i] += cu.rates[i] * sc.step.Seconds()
				for ; due[c][i] >= 1; due[c][i]-- {
					res, err := l.Allow(ctx, fmt.Sprintf("customer-%d", c), cu.ls, 1)
					r := &recs[c]
					r.calls++
					switch {
					case err != nil:
						errs++
					case res.Allowed:
						r.admitted++
						r.per[w]++
						for _, lim := range cu.ls {
							switch lim.Kind {
							case limits.KindCredits:
								r.credits++
							case limits.KindRate:
								tt, b := gcra.GCRA(lim.Count, lim.Period, lim.Burst, time.Microsecond)
								r.tat = max(r.tat, us) + tt
								if r.tat-us > b*tt {
									r.over++
									r.tat -= tt
								}
							}
						}
					}
				}
			}
		}
	}
	var nTrips, calls, lost int64
	for _, l := range ls {
		if l, ok := l.(*lease.Limiter); ok {
			s := l.Stats()
			nTrips, lost = nTrips+s.Trips, lost+s.Lost
		}
	}
	for c, cu := range sc.customers {
		r := &recs[c]
		calls += r.calls
		var w []int64
		over := r.over
		for i, n := range r.per {
			if i >= 0 && i < int64(windows) {
				w = append(w, n)
			}
			if cu.ls[0].Kind == limits.KindQuota && n > sc.count {
				over += n - sc.count
			}
		}
		if cr := cu.ls[len(cu.ls)-1]; cr.Kind == limits.KindCredits && r.credits > cr.Count {
			over += r.credits - cr.Count
		}
		slices.Sort(w)
		pct := func(q float64) float64 { return 100 * float64(w[int(q*float64(len(w)-1))]) / float64(sc.count) }
		t.Logf("%-17s %-10s %-34s calls %9d admitted %9d windows %4d: admitted/limit min %5.1f%% p5 %5.1f%% median %5.1f%% max %5.1f%%; over-admitted %d",
			sc.name, name, cu.desc, r.calls, r.admitted, len(w), pct(0), pct(0.05), pct(0.5), pct(1), over)
		if over > 0 {
			t.Errorf("%s, %s, %s: %d units over-admitted", sc.name, name, cu.desc, over)
		}
	}
	if nTrips == 0 {
		nTrips = calls
	}
	t.Logf("%-17s %-10s fleet: calls %d, errors %d, Redis round trips per call %.4f, leased units lost %d",
		sc.name, name, calls, errs, float64(nTrips)/float64(calls), lost)
	if errs > 0 {
		t.Errorf("%s, %s: %d errors", sc.name, name, errs)
	}
}

// simTrips gives the simulated fleet's round trips a simulated time: a
// round trip made at time t lands by t + rtt, for the simulation does not
// move its clock beyond that until it has. Round trips made by the
// simulation's own calls land at once.
type simTrips struct {
	clock *limitertest.Clock
	rtt   time.Duration
	mu    sync.Mutex
	open  map[*int]time.Time // round trips in progress and when they began
}

func (*simTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *simTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		id := new(int)
		h.mu.Lock()
		h.open[id] = h.clock.Now()
		h.mu.Unlock()
		err := next(ctx, cmd)
		h.mu.Lock()
		delete(h.open, id)
		h.mu.Unlock()
		return err
	}
}

func (*simTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// settle waits, in real time, until every round trip begun more than rtt
// before next has landed.
func (h *simTrips) settle(next time.Time) {
	for {
		h.mu.Lock()
		late := false
		for _, began := range h.open {
			if next.Sub(began) > h.rtt {
				late = true
				break
			}
		}
		h.mu.Unlock()
		if !late {
			return
		}
		time.Sleep(20 * time.Microsecond)
	}
}
