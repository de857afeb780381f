package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey/limitertest"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit"
	"github.com/gokeys/apikey/redislimit/lease"
)

// TestLeaseSimulated is the leased limits' measurement in simulated time:
// 16 instances share minute quotas of 100,000 and credits through an
// in-process Redis whose clock, and the instances', the test moves by
// 10 ms steps; background leases run in real time meanwhile, so that they
// land steps later. Customer A asks 1.2 times its quota evenly of every
// instance; customer B asks 1.2 times its quota, instance i getting
// 1/(i+1) of it, and spends credits never refilled, 3,000,000, with each
// request. A window's admissions are counted at the simulated time of
// their call. It runs APIKEY_BENCH_LEASE_SIM minute windows (default 3)
// for lease, and 1 for redislimit, whose every call is a round trip.
func TestLeaseSimulated(t *testing.T) {
	windows := 3
	if v := os.Getenv("APIKEY_BENCH_LEASE_SIM"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			t.Fatalf("APIKEY_BENCH_LEASE_SIM=%q: want a number of windows, at least 2", v)
		}
		windows = n
	}
	t.Logf("16 instances, minute quotas of 100,000 and 3,000,000 credits, %d simulated minutes for lease, 1 for redislimit", windows)
	simulate(t, "lease", windows, func(c redis.UniversalClient, clock *limitertest.Clock) limits.Limiter {
		l, err := lease.New(c, lease.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		return l
	})
	simulate(t, "redislimit", 1, func(c redis.UniversalClient, _ *limitertest.Clock) limits.Limiter {
		l, err := redislimit.New(c, redislimit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}

// simulate runs windows simulated minutes of the load on a fleet built
// by newLimiter, and logs what it admitted.
func simulate(t *testing.T, name string, windows int, newLimiter func(redis.UniversalClient, *limitertest.Clock) limits.Limiter) {
	const (
		instances = 16
		quota     = 100_000
		credits   = 3_000_000
		step      = 10 * time.Millisecond
		demand    = 1.2 * quota / 60.0 // requests per second
	)
	// A minute boundary 5 s after the start, so that the first window is
	// partial and excluded.
	start := time.Date(2026, 3, 14, 12, 0, 55, 0, time.UTC)
	clock := limitertest.NewClock(start)
	mr := miniredis.RunT(t)
	mr.SetTime(start)
	clock.OnMove(func(now time.Time, d time.Duration) {
		mr.SetTime(now)
		mr.FastForward(d)
	})
	ls := make([]limits.Limiter, instances)
	for i := range ls {
		c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { _ = c.Close() })
		ls[i] = newLimiter(c, clock)
	}
	q := limits.Quota("per-minute", quota, limits.Minute)
	cr := limits.Credits("credits", credits, limits.Never)
	cr.Subject = "key-b"
	calls := [][]limits.Limit{{q}, {q, cr}}
	var harmonic float64
	for i := range instances {
		harmonic += 1 / float64(i+1)
	}
	rates := [2][instances]float64{} // per customer and instance, requests per second
	for i := range instances {
		rates[0][i] = demand / instances
		rates[1][i] = demand / float64(i+1) / harmonic
	}

	ctx := context.Background()
	due := [2][instances]float64{}
	perWindow := [2]map[int64]int64{{}, {}}
	var spentCredits, nCalls, errs int64
	first := start.Truncate(time.Minute).Add(time.Minute).Unix() / 60
	last := first + int64(windows)
	for now := start; now.Unix()/60 < last; now = now.Add(step) {
		clock.Set(now)
		minute := now.Unix() / 60
		for i, l := range ls {
			for c := range 2 {
				due[c][i] += rates[c][i] * step.Seconds()
				for ; due[c][i] >= 1; due[c][i]-- {
					res, err := l.Allow(ctx, fmt.Sprintf("customer-%c", 'a'+c), calls[c], 1)
					nCalls++
					switch {
					case err != nil:
						errs++
					case res.Allowed:
						perWindow[c][minute]++
						if c == 1 {
							spentCredits++
						}
					}
				}
			}
		}
	}
	trips, lost := nCalls, int64(0)
	if _, ok := ls[0].(*lease.Limiter); ok {
		trips = 0
		for _, l := range ls {
			s := l.(*lease.Limiter).Stats()
			trips, lost = trips+s.Trips, lost+s.Lost
		}
	}
	for c, desc := range []string{"A: 1.2x, even", "B: 1.2x, 1/(i+1), with credits"} {
		var w []int64
		over := 0
		for m, n := range perWindow[c] {
			if n > quota {
				over++
			}
			if m >= first && m < last {
				w = append(w, n)
			}
		}
		slices.Sort(w)
		t.Logf("%-10s %-32s windows %3d: admitted/quota min %5.1f%% median %5.1f%% max %5.1f%%; windows over the quota %d",
			name, desc, len(w), 100*float64(w[0])/quota, 100*float64(w[len(w)/2])/quota, 100*float64(w[len(w)-1])/quota, over)
	}
	t.Logf("%-10s credits spent %d of %d (over: %v); calls %d, errors %d, Redis round trips per call %.4f, leased units lost %d",
		name, spentCredits, credits, spentCredits > credits, nCalls, errs, float64(trips)/float64(nCalls), lost)
	if errs > 0 || spentCredits > credits {
		t.Errorf("%s: errors or credits over-admitted", name)
	}
	for c := range perWindow {
		for m, n := range perWindow[c] {
			if n > quota {
				t.Errorf("%s: customer %d admitted %d in minute %d, over the quota", name, c, n, m)
			}
		}
	}
}
