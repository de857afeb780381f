package memlimit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limitertest"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	limitertest.Run(t, limitertest.Config{
		New: func(t *testing.T, clock *limitertest.Clock) limits.Limiter {
			l, err := memlimit.New(memlimit.Options{Now: clock.Now})
			require.NoError(t, err)
			return l
		},
	})
}

func TestConformanceRealClock(t *testing.T) {
	t.Parallel()
	limitertest.Run(t, limitertest.Config{
		New: func(t *testing.T, _ *limitertest.Clock) limits.Limiter {
			l, err := memlimit.New(memlimit.Options{})
			require.NoError(t, err)
			return l
		},
		RealTime: true,
	})
}

func TestNewRejectsNegativeMaxKeys(t *testing.T) {
	t.Parallel()
	_, err := memlimit.New(memlimit.Options{MaxKeys: -1})
	require.ErrorIs(t, err, apikey.ErrInvalidOptions)
}

func TestRateTooLongIsInvalid(t *testing.T) {
	t.Parallel()
	l, err := memlimit.New(memlimit.Options{})
	require.NoError(t, err)
	_, err = l.Allow(context.Background(), "k", []limits.Limit{limits.Rate("r", 1, 1<<62, 4)}, 1)
	require.ErrorIs(t, err, limits.ErrInvalid)
}

// newAt returns a limiter with MaxKeys maxKeys on a manual clock.
func newAt(t *testing.T, maxKeys int) (*memlimit.Limiter, *limitertest.Clock) {
	t.Helper()
	clock := limitertest.NewClock(limitertest.Start())
	l, err := memlimit.New(memlimit.Options{Now: clock.Now, MaxKeys: maxKeys})
	require.NoError(t, err)
	return l, clock
}

func allow(t *testing.T, l *memlimit.Limiter, id string, lims ...limits.Limit) bool {
	t.Helper()
	res, err := l.Allow(context.Background(), id, lims, 1)
	require.NoError(t, err)
	return res.Allowed
}

func TestCapEvictsExpiredStatesFirst(t *testing.T) {
	t.Parallel()
	l, clock := newAt(t, 10)
	daily := limits.Quota("daily", 1, limits.Day)
	minute := limits.Quota("minute", 1, limits.Minute)
	for i := range 5 {
		require.True(t, allow(t, l, fmt.Sprint("day", i), daily))
		require.True(t, allow(t, l, fmt.Sprint("min", i), minute))
	}
	require.Equal(t, 10, l.Len())

	clock.Advance(time.Minute) // the minute quotas' states expire
	for i := range 5 {
		require.True(t, allow(t, l, fmt.Sprint("new", i), daily))
		assert.LessOrEqual(t, l.Len(), 10)
	}
	for i := range 5 {
		assert.False(t, allow(t, l, fmt.Sprint("day", i), daily), "a live state was evicted while expired ones remained")
	}
}

func TestCapEvictsLiveStateAndNeverFails(t *testing.T) {
	t.Parallel()
	l, _ := newAt(t, 10)
	daily := limits.Quota("daily", 1, limits.Day)
	for i := range 10 {
		require.True(t, allow(t, l, fmt.Sprint("k", i), daily))
	}
	// At the cap with nothing expired, a new key is still served and kept,
	// and the limiter forgets another key: it becomes more permissive,
	// never less.
	for i := range 100 {
		id := fmt.Sprint("new", i)
		require.True(t, allow(t, l, id, daily))
		require.LessOrEqual(t, l.Len(), 10)
		require.False(t, allow(t, l, id, daily), "the newest key was evicted")
	}
	assert.True(t, allow(t, l, "k0", daily) || allow(t, l, "k1", daily), "no old key was evicted")
}

func TestCapIsHonouredAcrossShards(t *testing.T) {
	t.Parallel()
	const maxKeys = 5000
	l, _ := newAt(t, maxKeys)
	r := limits.Rate("r", 10, time.Hour, 0)
	for i := range 3 * maxKeys {
		require.True(t, allow(t, l, fmt.Sprint("k", i), r))
	}
	assert.LessOrEqual(t, l.Len(), maxKeys)
	assert.Greater(t, l.Len(), maxKeys/2)
}

func TestExpiredStatesAreSwept(t *testing.T) {
	t.Parallel()
	l, clock := newAt(t, 0)
	r := limits.Rate("r", 10, time.Second, 0)
	for i := range 5000 {
		require.True(t, allow(t, l, fmt.Sprint("old", i), r))
	}
	clock.Advance(2 * time.Second) // every state's TAT has passed
	for i := range 30000 {
		require.True(t, allow(t, l, fmt.Sprint("new", i), r))
		clock.Advance(time.Millisecond)
	}
	// Sweeps keep the limiter near its live states (those of the last
	// 100ms), far below the 35,000 states created.
	assert.Less(t, l.Len(), 20000)
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l, err := memlimit.New(memlimit.Options{})
	require.NoError(t, err)
	ctx := context.Background()
	tests := []struct {
		name   string
		lims   []limits.Limit
		allocs float64 // the States of a call with several limits
	}{
		{"Rate", []limits.Limit{limits.Rate("r", 1e9, time.Second, 0)}, 0},
		{"RateAndQuota", []limits.Limit{limits.Rate("r", 1e9, time.Second, 0), limits.Quota("q", 1<<40, limits.Day)}, 1},
		{"QuotaMonth", []limits.Limit{limits.Quota("m", 1<<40, limits.Month)}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.Allow(ctx, "key", tc.lims, 1)
			require.NoError(t, err)
			allocs := testing.AllocsPerRun(1000, func() {
				_, _ = l.Allow(ctx, "key", tc.lims, 1)
			})
			assert.Equal(t, tc.allocs, allocs)
		})
	}
}

func TestCapSmallerThanOneKeysLimits(t *testing.T) {
	t.Parallel()
	l, _ := newAt(t, 2)
	lims := []limits.Limit{
		limits.Quota("a", 1, limits.Day), limits.Quota("b", 1, limits.Day), limits.Quota("c", 1, limits.Day),
	}
	require.True(t, allow(t, l, "k", lims...))
	assert.Equal(t, 2, l.Len())
	assert.False(t, allow(t, l, "k", lims...), "the limits that fit are counted")
	require.True(t, allow(t, l, "other", lims[0]))
	assert.LessOrEqual(t, l.Len(), 2)
}

func FuzzAllow(f *testing.F) {
	for _, s := range limitertest.FuzzSeeds() {
		f.Add(s.Kind, s.Name, s.Count, s.Period, s.Burst, s.Window, s.Cost)
	}
	l, err := memlimit.New(memlimit.Options{})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, kind uint8, name string, count, period, burst int64, window uint8, cost int64) {
		limitertest.Fuzz(t, l, kind, name, count, period, burst, window, cost)
	})
}

// Credits are never evicted at the cap: forgetting them would grant them
// again.
func TestCreditsAreNeverEvicted(t *testing.T) {
	t.Parallel()
	l, _ := newAt(t, 64)
	c := limits.Credits("credits", 2, limits.Never)
	c.Subject = "key"
	require.True(t, allow(t, l, "owner", c))
	require.True(t, allow(t, l, "owner", c))
	r := limits.Rate("r", 10, time.Hour, 0)
	for i := range 1000 {
		require.True(t, allow(t, l, fmt.Sprint("other", i), r))
	}
	assert.False(t, allow(t, l, "owner", c), "spent credits came back after eviction")
	assert.LessOrEqual(t, l.Len(), 65)
}

// A subject with many states (found through an index) keeps each apart,
// and its expired states are dropped as new ones arrive, without losing
// the live ones.
func TestSubjectWithManyStates(t *testing.T) {
	t.Parallel()
	l, clock := newAt(t, 0)
	credits := func(i int) limits.Limit {
		c := limits.Credits("credits", 2, limits.Never)
		c.Subject = fmt.Sprint("key", i)
		return c
	}
	rate := func(i int) limits.Limit { return limits.Rate(fmt.Sprint("r", i), 1, time.Second, 1) }
	for i := range 50 {
		require.True(t, allow(t, l, "owner", credits(i), rate(i)))
	}
	require.Equal(t, 100, l.Len())
	for i := range 50 {
		require.False(t, allow(t, l, "owner", rate(i)), "rate %d lost its state", i)
	}
	clock.Advance(time.Second) // every rate's state expires
	for i := 50; i < 300; i++ {
		require.True(t, allow(t, l, "owner", credits(i)))
	}
	assert.Less(t, l.Len(), 300+50, "no expired state was dropped")
	assert.GreaterOrEqual(t, l.Len(), 300, "a live state was dropped")
	for i := range 300 {
		res, err := l.Allow(context.Background(), "owner", []limits.Limit{credits(i)}, 1)
		require.NoError(t, err)
		require.True(t, res.Allowed, "credits %d", i)
		require.Equal(t, int64(0), res.Remaining, "credits %d lost their state", i)
		require.False(t, allow(t, l, "owner", credits(i)))
	}
	require.True(t, allow(t, l, "owner", rate(0)), "an expired rate is whole again")
	require.False(t, allow(t, l, "owner", rate(0)))
}

// A clock that steps back before the limiter was created is one more step
// back.
func TestClockStepBackBeforeCreation(t *testing.T) {
	t.Parallel()
	l, clock := newAt(t, 0)
	r := limits.Rate("r", 10, time.Hour, 0)
	require.True(t, allow(t, l, "k", r))
	clock.Set(limitertest.Start().Add(-24 * time.Hour))
	for range 9 {
		require.True(t, allow(t, l, "k", r))
	}
	require.False(t, allow(t, l, "k", r))
}

// BenchmarkHistory times one call (a daily quota and a key's credits) for
// a subject with one past key's credits and for a subject with 10,000: a
// call costs what its own limits cost, whatever the subject's history.
func BenchmarkHistory(b *testing.B) {
	credits := func(key string, n int64) limits.Limit {
		l := limits.Credits("credits", n, limits.Never)
		l.Subject = key
		return l
	}
	for _, past := range []int{1, 10_000} {
		b.Run(fmt.Sprintf("past=%d", past), func(b *testing.B) {
			l, err := memlimit.New(memlimit.Options{})
			require.NoError(b, err)
			ctx := context.Background()
			for i := range past {
				_, err := l.Allow(ctx, "owner", []limits.Limit{credits(fmt.Sprint("key", i), 1)}, 1)
				require.NoError(b, err)
			}
			call := []limits.Limit{limits.Quota("daily", 1e13, limits.Day), credits("key0", 1e13)}
			b.ReportAllocs()
			for b.Loop() {
				if res, err := l.Allow(ctx, "owner", call, 1); err != nil || !res.Allowed {
					b.Fatal(err, res)
				}
			}
		})
	}
}
