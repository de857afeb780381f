package lease_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limitertest"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit"
	"github.com/gokeys/apikey/redislimit/lease"
)

// admission is what a fleet admitted at a time of the test's clock.
type admission struct {
	at   time.Time
	cost int64
}

// TestRateNeverExceedsOneGCRA runs leasing instances with various options
// and plain redislimit instances on one rate, under a random schedule of
// concurrent calls and clock moves while leases land in the background,
// and replays every admission, in time order, through one exact GCRA of
// the rate: the fleet never admits what it would refuse.
func TestRateNeverExceedsOneGCRA(t *testing.T) {
	t.Parallel()
	for _, burst := range []int64{0, 300} {
		clock := limitertest.NewClock(limitertest.Start())
		_, c := newMiniredis(t, clock)
		var fleet []limits.Limiter
		for _, opts := range []lease.Options{
			{}, {}, {RateReserve: 0.5}, {RateReserve: 0.05}, {Lifetime: 40 * time.Millisecond}, {MaxLease: 7},
		} {
			opts.Now = clock.Now
			fleet = append(fleet, newLimiter(t, c, opts))
		}
		for range 2 {
			plain, err := redislimit.New(c, redislimit.Options{})
			require.NoError(t, err)
			fleet = append(fleet, plain)
		}
		r := limits.Rate("per-second", 1000, time.Second, burst) // T = 1 ms
		var mu sync.Mutex
		var adm []admission
		rng := rand.New(rand.NewPCG(uint64(burst), 1))
		for range 400 {
			clock.Advance(time.Duration(rng.Int64N(int64(3 * time.Millisecond))))
			now := clock.Now()
			var wg sync.WaitGroup
			for _, l := range fleet {
				calls, seed := rng.IntN(8), rng.Uint64()
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(seed, 2))
					for range calls {
						cost := 1 + rng.Int64N(3)
						res, err := l.Allow(context.Background(), "acme", []limits.Limit{r}, cost)
						if assert.NoError(t, err) && res.Allowed {
							mu.Lock()
							adm = append(adm, admission{now, cost})
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
		}
		tt, b := gcra.GCRA(r.Count, r.Period, r.Burst, time.Microsecond)
		slices.SortFunc(adm, func(x, y admission) int { return x.at.Compare(y.at) })
		var tat, total int64
		for _, a := range adm {
			now := a.at.UnixMicro()
			tat = max(tat, now) + a.cost*tt
			require.LessOrEqual(t, tat-now, b*tt, "burst %d: admitted beyond one exact GCRA at %v", b, a.at)
			total += a.cost
		}
		t.Logf("burst %d: admitted %d units over %v", b, total, clock.Now().Sub(limitertest.Start()))
		var leased int64
		for _, l := range fleet {
			if l, ok := l.(*lease.Limiter); ok {
				leased += l.Stats().Leased
			}
		}
		assert.Positive(t, leased, "nothing was leased: the test proves nothing")
	}
}

// TestQuotaWindowsNeverExceeded runs leasing instances on a minute quota
// under a random schedule crossing many minutes: no minute admits more
// than the quota, and each busy minute admits nearly all of it.
func TestQuotaWindowsNeverExceeded(t *testing.T) {
	t.Parallel()
	clock := limitertest.NewClock(limitertest.Start())
	_, c := newMiniredis(t, clock)
	var fleet []limits.Limiter
	for range 6 {
		fleet = append(fleet, newLimiter(t, c, lease.Options{Now: clock.Now, Lifetime: 5 * time.Second}))
	}
	q := limits.Quota("per-minute", 500, limits.Minute)
	var mu sync.Mutex
	per := map[int64]int64{}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		clock.Advance(time.Duration(rng.Int64N(int64(400 * time.Millisecond))))
		minute := clock.Now().Unix() / 60
		var wg sync.WaitGroup
		for _, l := range fleet {
			calls := rng.IntN(4)
			wg.Go(func() {
				for range calls {
					res, err := l.Allow(context.Background(), "acme", []limits.Limit{q}, 1)
					if assert.NoError(t, err) && res.Allowed {
						mu.Lock()
						per[minute]++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
	}
	var counts []int64
	for m, n := range per {
		require.LessOrEqual(t, n, q.Count, "minute %d admitted beyond the quota", m)
		counts = append(counts, n)
	}
	slices.Sort(counts)
	t.Logf("%d minutes: admitted per minute %v", len(counts), counts)
	// Demand is about 1,100 a minute: all but the partial minutes at
	// either end reach the quota, less what a window's end strands.
	assert.GreaterOrEqual(t, counts[len(counts)/2], q.Count*95/100)
}

// hot makes l lease for q: calls a millisecond apart, so that demand
// reaches a thousand a second. It returns what was admitted.
func hot(t *testing.T, l *lease.Limiter, clock *limitertest.Clock, subject string, n int, ls ...limits.Limit) int64 {
	t.Helper()
	var admitted int64
	for range n {
		res, err := l.Allow(context.Background(), subject, ls, 1)
		require.NoError(t, err)
		if res.Allowed {
			admitted++
		}
		clock.Advance(time.Millisecond)
	}
	return admitted
}

// waitIdle waits for l's background round trips: until two Stats reads
// 20 ms apart agree.
func waitIdle(l *lease.Limiter) {
	for prev := l.Stats(); ; {
		time.Sleep(20 * time.Millisecond)
		s := l.Stats()
		if s == prev {
			return
		}
		prev = s
	}
}

// remaining returns what Redis has left of q for subject, by redislimit's
// Peek: what the instances hold counts as spent.
func remaining(t *testing.T, c redis.UniversalClient, subject string, q limits.Limit) int64 {
	t.Helper()
	plain, err := redislimit.New(c, redislimit.Options{})
	require.NoError(t, err)
	res, err := plain.Peek(context.Background(), subject, []limits.Limit{q})
	require.NoError(t, err)
	if !res.Allowed {
		return 0
	}
	return res.Remaining + 1
}

// Units leased by an instance that goes idle come back within a lease's
// life and a sweep, and another instance spends them: the fleet admits
// the whole quota.
func TestIdleInstanceGivesBack(t *testing.T) {
	t.Parallel()
	clock := limitertest.NewClock(limitertest.Start())
	_, c := newMiniredis(t, clock)
	opts := lease.Options{Now: clock.Now, Lifetime: 200 * time.Millisecond}
	a, b := newLimiter(t, c, opts), newLimiter(t, c, opts)
	q := limits.Quota("daily", 1000, limits.Day)
	spent := hot(t, a, clock, "acme", 100, q)
	waitIdle(a)
	held := 1000 - spent - remaining(t, c, "acme", q)
	require.Positive(t, held, "a holds nothing: the test proves nothing")
	t.Logf("a spent %d and holds %d", spent, held)
	for {
		res, err := b.Allow(context.Background(), "acme", []limits.Limit{q}, 1)
		require.NoError(t, err)
		if !res.Allowed {
			break
		}
		spent++
	}
	require.Equal(t, 1000-held, spent, "b spent what a holds")
	// a's lease ends; its sweep gives the units back.
	clock.Advance(opts.Lifetime)
	require.Eventually(t, func() bool { return remaining(t, c, "acme", q) == held }, 5*time.Second, 10*time.Millisecond)
	// Redis takes the units back before the round trip lands on a.
	require.Eventually(t, func() bool { return a.Stats().Returned == held }, 5*time.Second, 10*time.Millisecond)
	// b believes its denial an eighth of a life, then asks again in the
	// background, refusing meanwhile.
	clock.Advance(opts.Lifetime)
	res, err := b.Allow(context.Background(), "acme", []limits.Limit{q}, 1)
	require.NoError(t, err)
	require.False(t, res.Allowed)
	waitIdle(b)
	n := hot(t, b, clock, "acme", int(held)+10, q)
	assert.Equal(t, held, n, "b spent what a gave back, and no more")
}

// Close gives back what an instance holds, of quotas, credits and a rate
// whose state nothing moved since.
func TestCloseGivesBack(t *testing.T) {
	t.Parallel()
	clock := limitertest.NewClock(limitertest.Start())
	_, c := newMiniredis(t, clock)
	l, err := lease.New(c, lease.Options{Now: clock.Now})
	require.NoError(t, err)
	cr := limits.Credits("credits", 5000, limits.Never)
	cr.Subject = "key"
	q, r := limits.Quota("daily", 5000, limits.Day), limits.Rate("per-minute", 60_000, time.Minute, 0)
	spent := hot(t, l, clock, "acme", 200, q, cr, r)
	waitIdle(l)
	require.Positive(t, l.Stats().Leased)
	require.Less(t, remaining(t, c, "acme", q), 5000-spent, "nothing held: the test proves nothing")
	require.NoError(t, l.Close(context.Background()))
	assert.Equal(t, 5000-spent, remaining(t, c, "acme", q), "the quota's units came back")
	assert.Equal(t, 5000-spent, remaining(t, c, "acme", cr), "the credits came back")
	s := l.Stats()
	assert.Positive(t, s.Returned)
	// After Close, calls are decided by Redis, one round trip each.
	trips := s.Trips
	res, err := l.Allow(context.Background(), "acme", []limits.Limit{q}, 1)
	require.NoError(t, err)
	require.True(t, res.Allowed)
	assert.Equal(t, trips+1, l.Stats().Trips)
	assert.Zero(t, l.Stats().Leased-s.Leased, "a closed Limiter leased")
}

// A rate that a lease's life spans fewer than 32 intervals of is decided
// by Redis on every call, as redislimit decides it.
func TestSlowRateIsNotLeased(t *testing.T) {
	t.Parallel()
	clock := limitertest.NewClock(limitertest.Start())
	_, c := newMiniredis(t, clock)
	l := newLimiter(t, c, lease.Options{Now: clock.Now})
	r := limits.Rate("per-second", 10, time.Second, 0) // 32 intervals: 3.2 s > 1 s
	admitted := hot(t, l, clock, "acme", 100, r)
	assert.Equal(t, int64(10), admitted, "the burst, and nothing in the 99 ms after it")
	s := l.Stats()
	assert.Zero(t, s.Leased)
	assert.LessOrEqual(t, s.Trips, admitted+10, "denials are remembered until their retry")
}

// While Redis is down, an instance decides from what it holds; then it
// fails, never admitting more.
func TestRedisDownSpendsWhatIsHeld(t *testing.T) {
	t.Parallel()
	clock := limitertest.NewClock(limitertest.Start())
	mr, c := newMiniredis(t, clock)
	l, err := lease.New(c, lease.Options{Now: clock.Now})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	q := limits.Quota("daily", 100_000, limits.Day)
	hot(t, l, clock, "acme", 300, q)
	waitIdle(l)
	held := 100_000 - 300 - remaining(t, c, "acme", q)
	require.Positive(t, held)
	mr.Close()
	var admitted int64
	for {
		res, err := l.Allow(context.Background(), "acme", []limits.Limit{q}, 1)
		if err != nil {
			require.ErrorIs(t, err, apikey.ErrUnavailable)
			break
		}
		require.True(t, res.Allowed)
		admitted++
	}
	assert.Equal(t, held, admitted, "what was held, no more")
}

// Debit takes a cost from what the instance holds, without a round trip
// when it holds enough.
func TestDebitSpendsHeldUnitsFirst(t *testing.T) {
	t.Parallel()
	clock := limitertest.NewClock(limitertest.Start())
	_, c := newMiniredis(t, clock)
	l := newLimiter(t, c, lease.Options{Now: clock.Now})
	q := limits.Quota("daily", 10_000, limits.Day)
	spent := hot(t, l, clock, "acme", 100, q)
	waitIdle(l)
	before := l.Stats().Trips
	res, err := l.Debit(context.Background(), "acme", []limits.Limit{q}, 3)
	require.NoError(t, err)
	assert.Equal(t, 10_000-spent-3, res.Remaining)
	assert.Equal(t, before, l.Stats().Trips, "a round trip for what the instance holds")
	res, err = l.Debit(context.Background(), "acme", []limits.Limit{q}, 0)
	require.NoError(t, err)
	assert.Equal(t, 10_000-spent-3, res.Remaining, "Redis and the instance agree")
}

func TestNewValidatesOptions(t *testing.T) {
	t.Parallel()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = c.Close() })
	for name, opts := range map[string]lease.Options{
		"NegativeLifetime":   {Lifetime: -time.Second},
		"NegativeMaxLease":   {MaxLease: -1},
		"NegativeReserve":    {RateReserve: -0.1},
		"ReserveAboveHalf":   {RateReserve: 0.6},
		"BracedPrefix":       {Prefix: "a{b"},
		"NegativeCreditsTTL": {CreditsTTL: -time.Hour},
	} {
		_, err := lease.New(c, opts)
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions, name)
	}
	_, err := lease.New(nil, lease.Options{})
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions, "nil client")
	l, err := lease.New(c, lease.Options{})
	require.NoError(t, err)
	require.NoError(t, l.Close(context.Background()))
	require.NoError(t, l.Close(context.Background()), "a second Close")
}
