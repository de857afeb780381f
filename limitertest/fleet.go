package limitertest

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
)

// fleetSize is the number of instances of the fleet subtests.
const fleetSize = 8

// runFleet runs the subtests of Config.Fleet.
func runFleet(t *testing.T, cfg Config) {
	tests := []struct {
		name string
		fn   func(*testing.T, fleet)
	}{
		{"FleetAdmitsAtMostTheLimit", testFleetLimit},
		{"FleetAppliesAChangedLimit", testFleetChange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := NewClock(Start())
			ls := cfg.Fleet(t, clock, fleetSize)
			require.Len(t, ls, fleetSize, "limitertest: Fleet returned the wrong number of limiters")
			tc.fn(t, fleet{ls: ls, clock: clock, real: cfg.RealTime, under: cfg.UnderAdmission})
		})
	}
}

// fleet is what a fleet subtest works with.
type fleet struct {
	ls    []limits.Limiter
	clock *Clock
	real  bool
	under UnderAdmission
}

// advance moves the fleet's time by d: the clock, or real time.
func (f fleet) advance(d time.Duration) {
	if f.real {
		time.Sleep(d)
		return
	}
	f.clock.Advance(d)
}

// Instances sharing a budget, called concurrently in steps of time with
// single limits and all of them at once, admit together at most a quota's
// and credits' counts, and at most what one exact GCRA admits of a rate
// given the times of the admissions. Once the instances go idle for
// UnderAdmission.Hold, the rest of the counts can be spent, so that the
// fleet admits all but UnderAdmission.Units of them.
func testFleetLimit(t *testing.T, f fleet) {
	const steps, workers, each = 20, 2, 10
	id := apikey.NewID()
	q := limits.Quota("daily", 1000, limits.Day)
	c := limits.Credits("credits", 600, limits.Never)
	c.Subject = apikey.NewID()
	r := limits.Rate("per-second", 1000, time.Second, 0) // T = 1ms, B = 1000
	calls := [][]limits.Limit{{q}, {c}, {r}, {q, r, c}}

	var mu sync.Mutex
	var errs, rateDenied atomic.Int64
	spent := map[string]int64{} // units admitted per limit
	var rate []int64            // the rate's admissions: the step (ms since start) of each unit
	step := time.Duration(0)    // the time of the current step since the start
	record := func(ls []limits.Limit, cost int64) {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range ls {
			spent[l.Name] += cost
			if l.Kind == limits.KindRate {
				for range cost {
					rate = append(rate, step.Milliseconds())
				}
			}
		}
	}
	for s := range steps {
		var wg sync.WaitGroup
		for i, l := range f.ls {
			for w := range workers {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(s), uint64(i*workers+w)))
					for range each {
						ls, cost := calls[rng.IntN(len(calls))], 1+rng.Int64N(3)
						res, err := l.Allow(context.Background(), id, ls, cost)
						switch {
						case err != nil:
							errs.Add(1)
						case res.Allowed:
							record(ls, cost)
						case len(ls) == 1 && ls[0] == r:
							rateDenied.Add(1)
						}
					}
				})
			}
		}
		wg.Wait()
		f.advance(10 * time.Millisecond)
		step += 10 * time.Millisecond
	}
	require.Zero(t, errs.Load())
	t.Logf("admitted %d of the quota's %d, %d of the credits' %d, %d of the rate", spent["daily"], q.Count, spent["credits"], c.Count, spent["per-second"])
	assert.LessOrEqual(t, spent["daily"], q.Count, "the fleet admitted more than the quota")
	assert.LessOrEqual(t, spent["credits"], c.Count, "the fleet admitted more than the credits")
	if !f.real {
		// Replay the admissions, in time order, through one exact GCRA
		// of the rate (interval 1 ms, burst 1000).
		slices.Sort(rate)
		tat, over := int64(-1<<62), 0
		for _, ms := range rate {
			tat = max(tat, ms) + 1
			if tat-ms > 1000 {
				over++
				tat--
			}
		}
		assert.Zero(t, over, "the fleet admitted more of the rate than one exact GCRA would")
		assert.Positive(t, rateDenied.Load(), "the rate never ran out: the test proves nothing")
	}

	// The idle fleet: after Hold, every unit can be spent by someone.
	f.advance(f.under.Hold)
	for _, l := range []limits.Limit{q, c} {
		n := spent[l.Name] + f.drain(t, id, l, l.Count-spent[l.Name])
		assert.LessOrEqual(t, n, l.Count, "%s: the fleet admitted more than the count", l.Name)
		assert.GreaterOrEqual(t, n, l.Count-f.under.units(l), "%s: units stayed held by idle instances", l.Name)
	}
}

// drain spends l for id on every instance in turn, until left units were
// admitted or, when the fleet holds some back, 30 s and Hold passed, moving
// time for what idle instances hold to come back. It returns what was
// admitted.
func (f fleet) drain(t *testing.T, id string, l limits.Limit, left int64) int64 {
	t.Helper()
	var n int64
	deadline := time.Now().Add(30*time.Second + f.under.Hold) // generous: a loaded machine delays what is given back
	for {
		for _, in := range f.ls {
			for n < left {
				res, err := in.Allow(context.Background(), id, []limits.Limit{l}, 1)
				require.NoError(t, err)
				if !res.Allowed {
					break
				}
				n++
			}
		}
		if n >= left-f.under.units(l) || time.Now().After(deadline) {
			// One more round finds any excess.
			for _, in := range f.ls {
				res, err := in.Allow(context.Background(), id, []limits.Limit{l}, 1)
				require.NoError(t, err)
				if res.Allowed {
					n++
				}
			}
			return n
		}
		f.advance(f.under.Hold/8 + time.Millisecond)
		time.Sleep(10 * time.Millisecond) // for what is given back in the background
	}
}

// A limit lowered below what was spent applies to every instance's next
// call, whatever the instances hold of it.
func testFleetChange(t *testing.T, f fleet) {
	id := apikey.NewID()
	q := limits.Quota("daily", 1000, limits.Day)
	var wg sync.WaitGroup
	var admitted, errs atomic.Int64
	spend := func(q limits.Limit) {
		for _, l := range f.ls {
			wg.Go(func() {
				for range 50 {
					res, err := l.Allow(context.Background(), id, []limits.Limit{q}, 1)
					switch {
					case err != nil:
						errs.Add(1)
					case res.Allowed:
						admitted.Add(1)
					}
					f.advance(time.Millisecond)
				}
			})
		}
		wg.Wait()
	}
	spend(q)
	require.Zero(t, errs.Load())
	require.Equal(t, int64(fleetSize*50), admitted.Load())
	admitted.Store(0)
	spend(limits.Quota("daily", 200, limits.Day))
	require.Zero(t, errs.Load())
	assert.Zero(t, admitted.Load(), "an instance admitted under a limit lowered below what was spent")
	raised := limits.Quota("daily", 500, limits.Day)
	spend(raised)
	require.Zero(t, errs.Load())
	f.advance(f.under.Hold)
	n := admitted.Load() + f.drain(t, id, raised, 100-admitted.Load())
	assert.LessOrEqual(t, n, int64(100), "a raised limit admitted more than it adds")
	assert.GreaterOrEqual(t, n, 100-f.under.units(raised), "a raised limit admitted less than it adds")
}
