package limitertest

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/gokeys/apikey/limits"
)

// Seed is one input of a fuzz target over Fuzz.
type Seed struct {
	Kind                 uint8
	Name                 string
	Count, Period, Burst int64
	Window               uint8
	Cost                 int64
}

// FuzzSeeds returns extreme limit values for a fuzz target over Fuzz.
func FuzzSeeds() []Seed {
	var seeds []Seed
	for _, k := range []uint8{0, 1, 2, 3, 4, 255} {
		for _, c := range []int64{0, 1, 2, math.MaxInt64, math.MaxInt64 - 1, math.MinInt64, -1, 1e9, 1e14 - 1, 1e14} {
			seeds = append(seeds,
				Seed{k, "r", c, int64(time.Second), 0, 3, 1},
				Seed{k, "r", 1, c, c, 4, c},
				Seed{k, "a:b/c", c, math.MaxInt64, 1, 0, 2},
			)
		}
	}
	return append(seeds, Seed{1, "", 1, 1, 1, 1, 1}, Seed{2, "a\nb", 1, 1, 1, 1, 1})
}

// Fuzz checks one call of l against its limit's Validate: an invalid limit
// or cost is an error wrapping limits.ErrInvalid, a valid one is never an
// error, never panics, and answers within the limit's bounds. Call it from
// a fuzz target seeded with FuzzSeeds.
func Fuzz(t *testing.T, l limits.Limiter, kind uint8, name string, count, period, burst int64, window uint8, cost int64) {
	lim := limits.Limit{Name: name, Kind: limits.Kind(kind), Count: count, Period: time.Duration(period), Burst: burst, Window: limits.Window(window)}
	verr := lim.Validate()
	for range 2 {
		res, err := l.Allow(context.Background(), "fuzz", []limits.Limit{lim}, cost)
		switch {
		case verr != nil || cost < 1:
			if !errors.Is(err, limits.ErrInvalid) {
				t.Fatalf("%+v cost %d: Validate says %v, Allow %v", lim, cost, verr, err)
			}
			return
		case err != nil:
			t.Fatalf("%+v cost %d: valid, but Allow failed: %v", lim, cost, err)
		}
		capacity := count
		if lim.Kind == limits.KindRate && burst > 0 {
			capacity = burst
		}
		if res.Remaining < 0 || res.Remaining > capacity || res.Reset < 0 || res.RetryAfter < 0 {
			t.Fatalf("%+v cost %d: out of bounds: %+v", lim, cost, res)
		}
		if cost > capacity && res.Allowed {
			t.Fatalf("%+v cost %d: a cost above capacity was allowed", lim, cost)
		}
		if res.Allowed && res.RetryAfter != 0 {
			t.Fatalf("%+v cost %d: allowed with a RetryAfter", lim, cost)
		}
	}
}
