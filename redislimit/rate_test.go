package redislimit_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/limitertest"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit"
)

// TestRateScriptIsLimitScript runs random calls of a single rate through
// rate.lua and through limit.lua, for two subjects on one clock, and
// requires the same answers and the same stored state, clock steps back
// included.
func TestRateScriptIsLimitScript(t *testing.T) {
	clock := limitertest.NewClock(limitertest.Start())
	mr, c := newMiniredis(t, clock)
	l := newLimiter(t, c, "")
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, lim := range []limits.Limit{
		limits.Rate("per-second", 10, time.Second, 0),
		limits.Rate("burst", 3, time.Minute, 5),
		limits.Rate("slow", 1, time.Hour, 2),
		limits.Rate("fast", 1_000_000, time.Second, 0),
	} {
		ls := []limits.Limit{lim}
		keyA, keyB := redislimit.Keys(l, "a", ls)[0], redislimit.Keys(l, "b", ls)[0]
		burst := lim.Burst
		if burst == 0 {
			burst = lim.Count
		}
		interval := lim.Period / time.Duration(lim.Count)
		for i := range 400 {
			var a, b limits.Result
			var errA, errB error
			switch r := rng.IntN(10); {
			case r == 0:
				a, errA = l.Peek(ctx, "a", ls)
				b, errB = redislimit.PeekGeneral(l, ctx, "b", ls)
			default:
				cost := 1 + rng.Int64N(min(burst+1, 4))
				if r == 1 {
					cost = burst + 1
				}
				a, errA = l.Allow(ctx, "a", ls, cost)
				b, errB = redislimit.AllowGeneral(l, ctx, "b", ls, cost)
			}
			require.NoError(t, errA)
			require.NoError(t, errB)
			require.Equal(t, b, a, "%s, call %d", lim.Name, i)
			va, _ := mr.Get(keyA)
			vb, _ := mr.Get(keyB)
			require.Equal(t, vb, va, "%s, call %d", lim.Name, i)
			require.Equal(t, mr.TTL(keyB), mr.TTL(keyA), "%s, call %d", lim.Name, i)
			switch r := rng.IntN(20); {
			case r == 0:
				clock.Set(clock.Now().Add(-time.Duration(rng.Int64N(int64(3 * interval)))))
			case r < 12:
				clock.Advance(time.Duration(rng.Int64N(int64(2*interval) + 1)))
			}
		}
	}
}
