// Package limitertest is the conformance suite of limits.Limiter. An
// implementation calls Run from one test:
//
//	func TestConformance(t *testing.T) {
//		limitertest.Run(t, limitertest.Config{
//			New: func(t *testing.T, clock *limitertest.Clock) limits.Limiter {
//				l, err := mylimit.New(mylimit.Options{Now: clock.Now})
//				require.NoError(t, err)
//				return l
//			},
//		})
//	}
//
// Each subtest gets a fresh limiter and a fresh Clock. A limiter whose time
// the test cannot control (a real Redis server) sets Config.RealTime; the
// subtests that need to move time are then skipped and the others avoid
// depending on it. The subtests of Peek run when the limiter implements
// limits.Peeker, those of Debit when it implements limits.Debiter.
package limitertest

import (
	"context"
	"errors"
	"runtime"
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

// Start returns the time a Clock shows when a subtest begins,
// 2026-03-14T12:00:00Z: noon UTC, so that a day's quota has 12 hours left.
func Start() time.Time { return time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC) }

// Clock is a manual clock moved by the suite. A limiter under test reads
// it with Now, or registers with OnMove to be told of every move (to move
// the clock of a server, such as miniredis's SetTime and FastForward). It
// is safe for concurrent use; OnMove callbacks run one at a time, in the
// order of the moves.
type Clock struct {
	mu    sync.Mutex
	now   time.Time
	hooks []func(now time.Time, d time.Duration)
}

// NewClock returns a Clock showing t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set moves the clock to t, forward or backward, and calls the OnMove
// callbacks with t and the (possibly negative) move.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := t.Sub(c.now)
	c.now = t
	for _, f := range c.hooks {
		f(t, d)
	}
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// OnMove registers f to be called after every move of the clock with the
// new time and the move. f must not call the Clock's methods.
func (c *Clock) OnMove(f func(now time.Time, d time.Duration)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hooks = append(c.hooks, f)
}

// Config describes the limiter under test.
type Config struct {
	// New returns a fresh limiter whose time follows clock; it registers
	// its cleanup with t.Cleanup. Required. Key ids are random in every
	// subtest, so limiters may share a backend.
	New func(t *testing.T, clock *Clock) limits.Limiter

	// RealTime reports that the limiter ignores clock and reads real time.
	// The subtests that move time are then skipped, and the others do not
	// check exact durations.
	RealTime bool

	// Fleet, when set, returns n limiters sharing one backend, as the
	// instances of one application do, whose time follows clock; the
	// fleet subtests then run. They never accept more admissions than a
	// limit allows, from all instances together.
	Fleet func(t *testing.T, clock *Clock, n int) []limits.Limiter

	// UnderAdmission states what the limiter may leave unadmitted by
	// design; the zero value demands exactness.
	UnderAdmission UnderAdmission
}

// UnderAdmission states what a limiter that decides locally may leave
// unadmitted, as one that leases parts of a budget to each instance does
// (redislimit/lease). The suite relaxes only under-admission: it never
// accepts more admissions than a limit allows.
type UnderAdmission struct {
	// Units, when set, returns how many units of l the limiter may hold
	// back from its subject for good: a rate whose leases hold back part
	// of its burst admits that many fewer at once, and reports that many
	// fewer remaining. Nil means none.
	Units func(l limits.Limit) int64

	// Hold is how long units an idle instance holds may stay unavailable
	// to the other instances of a fleet, after which they may all be
	// spent elsewhere. Zero means none.
	Hold time.Duration
}

// units returns what ua lets a limiter hold back of l.
func (ua UnderAdmission) units(l limits.Limit) int64 {
	if ua.Units == nil {
		return 0
	}
	return ua.Units(l)
}

// env is what a subtest works with.
type env struct {
	l     limits.Limiter
	clock *Clock
	real  bool
	under UnderAdmission
}

// Run runs the conformance suite against cfg.
func Run(t *testing.T, cfg Config) {
	t.Helper()
	require.NotNil(t, cfg.New, "limitertest: Config.New is required")
	tests := []struct {
		name  string
		clock bool // needs a controlled clock
		fn    func(*testing.T, env)
	}{
		{"NoLimitsAllows", false, testNoLimits},
		{"CostBelowOneIsAnError", false, testBadCost},
		{"InvalidLimitIsAnErrorAndConsumesNothing", false, testInvalidLimits},
		{"QuotaAdmitsExactlyItsCount", false, testQuotaExact},
		{"QuotaResetsAtUTCBoundary", true, testQuotaBoundary},
		{"QuotaIsCalendarNotSliding", true, testQuotaCalendar},
		{"DenialConsumesNothingFromOtherLimits", false, testAllOrNothing},
		{"RateAdmitsBurstAtOnce", false, testRateBurst},
		{"RateIsSmooth", true, testRateSmooth},
		{"RateRemainingAndReset", true, testRateRemaining},
		{"CostAboveOne", false, testCost},
		{"CostAboveCapacityIsDeniedUntilReset", false, testCostAboveCapacity},
		{"TightestLimitIsReported", false, testTightest},
		{"DistinctKeysAreIndependent", false, testKeys},
		{"DistinctLimitNamesAreIndependent", false, testNames},
		{"ChangedCountAppliesToNextRequest", false, testPlanChange},
		{"ConcurrentUseAdmitsExactly", false, testConcurrent},
		{"CancelledContextIsAnError", false, testCancelled},
		{"EmptySubjectIsAnError", false, testEmptySubject},
		{"SubjectsAreIndependent", false, testSubjects},
		{"LimitSubjectsAreIndependent", false, testLimitSubjects},
		{"StatesOfEveryLimit", false, testStates},
		{"CreditsNeverRefilled", false, testCreditsNever},
		{"CreditsRefillAtUTCBoundary", true, testCreditsRefill},
		{"CreditsDecidedWithOtherLimits", false, testCreditsAllOrNothing},
		{"CreditsConcurrentUseAdmitsExactly", false, testCreditsConcurrent},
		{"OverrideReplacesLimitOfSameName", false, testOverride},
		{"ClockStepBackLocksOutAtMostTheBurstWindow", true, testStepBack},
		{"ClockStepBackNeverDeniesWithinTheBurst", true, testStepBackWithinBurst},
		{"HistoryDoesNotSlowACall", false, testHistory},
		{"PeekConsumesNothingAndAgreesWithAllow", false, testPeek},
		{"PeekConcurrentWithAllowConsumesNothing", false, testPeekConcurrent},
		{"DebitTakesQuotasAndCreditsNotRates", false, testDebit},
		{"DebitMayOverdrawAndTheNextRequestIsRefused", false, testDebitOverdraw},
		{"DebitQuotaDebtEndsWithItsWindow", true, testDebitQuotaDebt},
		{"DebitCreditsDebtStays", true, testDebitCreditsDebt},
		{"DebitInvalidIsAnErrorAndDebitsNothing", false, testDebitInvalid},
		{"PostHocCostsUnderConcurrencyDebitExactlyAndBoundTheDebt", false, testPostHoc},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.clock && cfg.RealTime {
				t.Skip("limitertest: needs a clock the test controls")
			}
			clock := NewClock(Start())
			l := cfg.New(t, clock)
			require.NotNil(t, l, "limitertest: New returned nil")
			tc.fn(t, env{l: l, clock: clock, real: cfg.RealTime, under: cfg.UnderAdmission})
		})
	}
	if cfg.Fleet != nil {
		runFleet(t, cfg)
	}
}

// allow calls Allow and requires no error.
func allow(t *testing.T, l limits.Limiter, id string, cost int64, lims ...limits.Limit) limits.Result {
	t.Helper()
	res, err := l.Allow(context.Background(), id, lims, cost)
	require.NoError(t, err)
	return res
}

func testNoLimits(t *testing.T, e env) {
	id := apikey.NewID()
	for _, lims := range [][]limits.Limit{nil, {}} {
		res := allow(t, e.l, id, 1, lims...)
		assert.True(t, res.Allowed)
		assert.Zero(t, res.RetryAfter)
	}
}

func testBadCost(t *testing.T, e env) {
	id := apikey.NewID()
	q := limits.Quota("daily", 5, limits.Day)
	for _, cost := range []int64{0, -1, -1 << 62} {
		for _, lims := range [][]limits.Limit{nil, {q}} {
			_, err := e.l.Allow(context.Background(), id, lims, cost)
			require.ErrorIs(t, err, limits.ErrInvalid, "cost %d", cost)
		}
	}
	res := allow(t, e.l, id, 1, q)
	assert.Equal(t, int64(4), res.Remaining, "a rejected call consumed something")
}

func testInvalidLimits(t *testing.T, e env) {
	good := limits.Quota("good", 1, limits.Day)
	tests := []struct {
		name string
		lims []limits.Limit
	}{
		{"NoName", []limits.Limit{limits.Quota("", 1, limits.Day)}},
		{"ZeroCount", []limits.Limit{limits.Quota("q", 0, limits.Day)}},
		{"NegativeCount", []limits.Limit{limits.Rate("r", -1, time.Second, 0)}},
		{"ZeroPeriod", []limits.Limit{limits.Rate("r", 1, 0, 0)}},
		{"NegativePeriod", []limits.Limit{limits.Rate("r", 1, -time.Second, 0)}},
		{"NegativeBurst", []limits.Limit{limits.Rate("r", 1, time.Second, -1)}},
		{"ZeroWindow", []limits.Limit{limits.Quota("q", 1, 0)}},
		{"UnknownWindow", []limits.Limit{limits.Quota("q", 1, limits.Month+1)}},
		{"ZeroKind", []limits.Limit{{Name: "x", Count: 1, Period: time.Second, Window: limits.Day}}},
		{"UnknownKind", []limits.Limit{{Name: "x", Kind: 9, Count: 1, Period: time.Second, Window: limits.Day}}},
		{"DuplicateName", []limits.Limit{limits.Quota("q", 5, limits.Day), limits.Rate("q", 5, time.Second, 0)}},
	}
	id := apikey.NewID()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.l.Allow(context.Background(), id, tc.lims, 1)
			require.ErrorIs(t, err, limits.ErrInvalid)
			_, err = e.l.Allow(context.Background(), id, append([]limits.Limit{good}, tc.lims...), 1)
			require.ErrorIs(t, err, limits.ErrInvalid)
		})
	}
	res := allow(t, e.l, id, 1, good)
	assert.True(t, res.Allowed, "a rejected call consumed the valid limit")

	// A limit is validated on every call, even when a valid limit of the
	// same name and kind already has a state for the subject (a limiter
	// may skip validating the very limit it stored, never a changed one).
	t.Run("AfterValidState", func(t *testing.T) {
		sub := apikey.NewID()
		rate := limits.Rate("r", 5, time.Second, 0)
		quota := limits.Quota("q", 5, limits.Day)
		for range 2 {
			assert.True(t, allow(t, e.l, sub, 1, rate).Allowed)
			assert.True(t, allow(t, e.l, sub, 1, quota).Allowed)
		}
		for name, bad := range map[string]limits.Limit{
			"RateZeroCount":   limits.Rate("r", 0, time.Second, 0),
			"RateZeroPeriod":  limits.Rate("r", 5, 0, 0),
			"RateBadBurst":    limits.Rate("r", 5, time.Second, -1),
			"RateTooFast":     limits.Rate("r", 5, time.Nanosecond, 0),
			"QuotaZeroCount":  limits.Quota("q", 0, limits.Day),
			"QuotaBadWindow":  limits.Quota("q", 5, limits.Month+1),
			"QuotaZeroWindow": limits.Quota("q", 5, 0),
		} {
			_, err := e.l.Allow(context.Background(), sub, []limits.Limit{bad}, 1)
			assert.ErrorIs(t, err, limits.ErrInvalid, name)
			other := quota
			if bad.Name == quota.Name {
				other = rate
			}
			_, err = e.l.Allow(context.Background(), sub, []limits.Limit{other, bad}, 1)
			assert.ErrorIs(t, err, limits.ErrInvalid, name+" with another")
		}
		// The same valid limit twice is a duplicate, however known.
		_, err := e.l.Allow(context.Background(), sub, []limits.Limit{quota, quota}, 1)
		assert.ErrorIs(t, err, limits.ErrInvalid, "twice")
		// The valid limits were not spent by the rejected calls.
		res := allow(t, e.l, sub, 1, quota)
		assert.Equal(t, int64(2), res.Remaining)
	})
}

func testQuotaExact(t *testing.T, e env) {
	id := apikey.NewID()
	q := limits.Quota("daily", 100, limits.Day)
	for i := range int64(100) {
		res := allow(t, e.l, id, 1, q)
		require.True(t, res.Allowed, "request %d", i+1)
		require.Equal(t, 99-i, res.Remaining, "request %d", i+1)
		require.Equal(t, q, res.Limit)
		require.Zero(t, res.RetryAfter)
		require.Positive(t, res.Reset)
		require.LessOrEqual(t, res.Reset, 24*time.Hour)
	}
	for range 2 {
		res := allow(t, e.l, id, 1, q)
		require.False(t, res.Allowed, "request 101 allowed")
		assert.Equal(t, int64(0), res.Remaining)
		assert.Equal(t, q, res.Limit)
		assert.Positive(t, res.RetryAfter)
		assert.LessOrEqual(t, res.RetryAfter, 24*time.Hour)
		assert.Equal(t, res.Reset, res.RetryAfter, "a quota's RetryAfter is the end of its window")
		if !e.real {
			assert.Equal(t, 12*time.Hour, res.RetryAfter, "from noon to midnight UTC")
		}
	}
}

func testQuotaBoundary(t *testing.T, e env) {
	tests := []struct {
		name     string
		window   limits.Window
		boundary time.Time
		next     time.Time // the end of the window that starts at boundary
	}{
		{"Minute", limits.Minute, date(2026, 3, 14, 12, 35), date(2026, 3, 14, 12, 36)},
		{"Hour", limits.Hour, date(2026, 3, 14, 13, 0), date(2026, 3, 14, 14, 0)},
		{"Day", limits.Day, date(2026, 3, 15, 0, 0), date(2026, 3, 16, 0, 0)},
		{"MonthOf31To28Days", limits.Month, date(2026, 2, 1, 0, 0), date(2026, 3, 1, 0, 0)},
		{"MonthOf28To31Days", limits.Month, date(2026, 3, 1, 0, 0), date(2026, 4, 1, 0, 0)},
		{"MonthOf30To31Days", limits.Month, date(2026, 5, 1, 0, 0), date(2026, 6, 1, 0, 0)},
		{"LeapFebruary", limits.Month, date(2028, 3, 1, 0, 0), date(2028, 4, 1, 0, 0)},
		{"IntoLeapFebruary", limits.Month, date(2028, 2, 1, 0, 0), date(2028, 3, 1, 0, 0)},
		{"NewYear", limits.Month, date(2027, 1, 1, 0, 0), date(2027, 2, 1, 0, 0)},
		{"Century", limits.Month, date(2100, 3, 1, 0, 0), date(2100, 4, 1, 0, 0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := apikey.NewID()
			q := limits.Quota("q", 3, tc.window)
			e.clock.Set(tc.boundary.Add(-500 * time.Millisecond))
			for i := range int64(3) {
				res := allow(t, e.l, id, 1, q)
				require.True(t, res.Allowed)
				require.Equal(t, 2-i, res.Remaining)
				require.Equal(t, 500*time.Millisecond, res.Reset)
			}
			res := allow(t, e.l, id, 1, q)
			require.False(t, res.Allowed)
			assert.Equal(t, int64(0), res.Remaining)
			assert.Equal(t, 500*time.Millisecond, res.RetryAfter)
			assert.Equal(t, 500*time.Millisecond, res.Reset)

			e.clock.Advance(time.Second)
			res = allow(t, e.l, id, 1, q)
			require.True(t, res.Allowed, "not reset at the UTC boundary")
			assert.Equal(t, int64(2), res.Remaining)
			assert.Equal(t, tc.next.Sub(e.clock.Now()), res.Reset)
		})
	}
}

func testQuotaCalendar(t *testing.T, e env) {
	id := apikey.NewID()
	q := limits.Quota("daily", 2, limits.Day)
	e.clock.Set(date(2026, 3, 14, 0, 0).Add(time.Millisecond))
	require.True(t, allow(t, e.l, id, 2, q).Allowed)
	e.clock.Set(date(2026, 3, 14, 23, 59).Add(59 * time.Second))
	res := allow(t, e.l, id, 1, q)
	require.False(t, res.Allowed, "100 per day means at most 100 in that day")
	assert.Equal(t, time.Second, res.RetryAfter)
	e.clock.Advance(time.Second)
	require.True(t, allow(t, e.l, id, 2, q).Allowed)
	require.False(t, allow(t, e.l, id, 1, q).Allowed)
}

func testAllOrNothing(t *testing.T, e env) {
	t.Run("QuotaDeniesQuotaUntouched", func(t *testing.T) {
		id := apikey.NewID()
		big, small := limits.Quota("big", 10, limits.Day), limits.Quota("small", 2, limits.Day)
		for range 2 {
			require.True(t, allow(t, e.l, id, 1, big, small).Allowed)
		}
		for range 3 {
			res := allow(t, e.l, id, 1, big, small)
			require.False(t, res.Allowed)
			assert.Equal(t, "small", res.Limit.Name)
		}
		res := allow(t, e.l, id, 1, big)
		require.True(t, res.Allowed)
		assert.Equal(t, int64(7), res.Remaining, "denied calls consumed from big")
	})
	t.Run("RateDeniesQuotaUntouched", func(t *testing.T) {
		id := apikey.NewID()
		r, q := limits.Rate("hourly", 1, time.Hour, 1), limits.Quota("daily", 10, limits.Day)
		require.True(t, allow(t, e.l, id, 1, r, q).Allowed)
		for range 3 {
			res := allow(t, e.l, id, 1, q, r)
			require.False(t, res.Allowed)
			assert.Equal(t, "hourly", res.Limit.Name)
		}
		res := allow(t, e.l, id, 1, q)
		require.True(t, res.Allowed)
		assert.Equal(t, int64(8), res.Remaining, "denied calls consumed from the quota")
	})
	t.Run("QuotaDeniesRateUntouched", func(t *testing.T) {
		id := apikey.NewID()
		r, q := limits.Rate("hourly", 5, time.Hour, 5), limits.Quota("daily", 1, limits.Day)
		require.True(t, allow(t, e.l, id, 1, r, q).Allowed)
		for range 3 {
			res := allow(t, e.l, id, 1, r, q)
			require.False(t, res.Allowed)
			assert.Equal(t, "daily", res.Limit.Name)
		}
		res := allow(t, e.l, id, 1, r)
		require.True(t, res.Allowed)
		assert.Equal(t, int64(3), res.Remaining, "denied calls consumed from the rate")
	})
}

func testRateBurst(t *testing.T, e env) {
	tests := []struct {
		name   string
		limit  limits.Limit
		burst  int64
		period time.Duration // emission interval
	}{
		{"BurstDefaultsToCount", limits.Rate("r", 10, time.Hour, 0), 10, 6 * time.Minute},
		{"BurstBelowCount", limits.Rate("r", 10, time.Hour, 3), 3, 6 * time.Minute},
		{"BurstAboveCount", limits.Rate("r", 2, time.Hour, 5), 5, 30 * time.Minute},
		{"BurstOfOne", limits.Rate("r", 1, time.Hour, 1), 1, time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := apikey.NewID()
			for i := range tc.burst {
				res := allow(t, e.l, id, 1, tc.limit)
				require.True(t, res.Allowed, "request %d of a burst of %d", i+1, tc.burst)
				require.Equal(t, tc.burst-1-i, res.Remaining)
				require.Equal(t, tc.limit, res.Limit)
				if !e.real {
					require.Equal(t, time.Duration(i+1)*tc.period, res.Reset)
				}
			}
			res := allow(t, e.l, id, 1, tc.limit)
			require.False(t, res.Allowed, "burst exceeded")
			assert.Equal(t, int64(0), res.Remaining)
			assert.Positive(t, res.RetryAfter)
			assert.LessOrEqual(t, res.RetryAfter, tc.period)
			if !e.real {
				assert.Equal(t, tc.period, res.RetryAfter)
				assert.Equal(t, time.Duration(tc.burst)*tc.period, res.Reset)
			}
		})
	}
}

func testRateSmooth(t *testing.T, e env) {
	id := apikey.NewID()
	r := limits.Rate("r", 10, time.Second, 2) // one every 100ms
	require.True(t, allow(t, e.l, id, 1, r).Allowed)
	require.True(t, allow(t, e.l, id, 1, r).Allowed)
	res := allow(t, e.l, id, 1, r)
	require.False(t, res.Allowed)
	assert.Equal(t, 100*time.Millisecond, res.RetryAfter)

	e.clock.Advance(50 * time.Millisecond)
	res = allow(t, e.l, id, 1, r)
	require.False(t, res.Allowed)
	assert.Equal(t, 50*time.Millisecond, res.RetryAfter)

	e.clock.Advance(50 * time.Millisecond)
	res = allow(t, e.l, id, 1, r)
	require.True(t, res.Allowed, "not allowed after one emission interval")
	assert.Equal(t, int64(0), res.Remaining)

	// Trying every 10ms for a second admits one request per 100ms.
	admitted := 0
	for range 100 {
		e.clock.Advance(10 * time.Millisecond)
		if allow(t, e.l, id, 1, r).Allowed {
			admitted++
		}
	}
	assert.Equal(t, 10, admitted)

	// After a quiet period the burst is available again, no more.
	e.clock.Advance(time.Hour)
	assert.True(t, allow(t, e.l, id, 2, r).Allowed)
	assert.False(t, allow(t, e.l, id, 1, r).Allowed)
}

func testRateRemaining(t *testing.T, e env) {
	id := apikey.NewID()
	r := limits.Rate("r", 5, time.Second, 0) // T = 200ms, B = 5
	var res limits.Result
	for range 3 {
		res = allow(t, e.l, id, 1, r)
	}
	assert.Equal(t, int64(2), res.Remaining)
	assert.Equal(t, 600*time.Millisecond, res.Reset)

	e.clock.Advance(200 * time.Millisecond)
	res = allow(t, e.l, id, 1, r)
	assert.Equal(t, int64(2), res.Remaining)
	assert.Equal(t, 600*time.Millisecond, res.Reset)

	e.clock.Advance(100 * time.Millisecond) // half an interval: not a whole request yet
	res = allow(t, e.l, id, 2, r)
	assert.True(t, res.Allowed)
	assert.Equal(t, int64(0), res.Remaining)
	assert.Equal(t, 900*time.Millisecond, res.Reset)
	res = allow(t, e.l, id, 1, r)
	assert.False(t, res.Allowed)
	assert.Equal(t, 100*time.Millisecond, res.RetryAfter)
	assert.Equal(t, 900*time.Millisecond, res.Reset)
}

func testCost(t *testing.T, e env) {
	t.Run("Quota", func(t *testing.T) {
		id := apikey.NewID()
		q := limits.Quota("q", 10, limits.Day)
		for _, want := range []int64{6, 2} {
			res := allow(t, e.l, id, 4, q)
			require.True(t, res.Allowed)
			require.Equal(t, want, res.Remaining)
		}
		res := allow(t, e.l, id, 4, q)
		require.False(t, res.Allowed)
		assert.Equal(t, int64(2), res.Remaining)
		assert.Positive(t, res.RetryAfter)
		res = allow(t, e.l, id, 2, q)
		require.True(t, res.Allowed, "a denied cost consumed something")
		assert.Equal(t, int64(0), res.Remaining)
	})
	t.Run("Rate", func(t *testing.T) {
		id := apikey.NewID()
		r := limits.Rate("r", 10, time.Hour, 0) // T = 6m
		res := allow(t, e.l, id, 3, r)
		require.True(t, res.Allowed)
		require.Equal(t, int64(7), res.Remaining)
		res = allow(t, e.l, id, 8, r)
		require.False(t, res.Allowed)
		assert.Equal(t, int64(7), res.Remaining)
		if !e.real {
			assert.Equal(t, 6*time.Minute, res.RetryAfter)
		}
		res = allow(t, e.l, id, 7, r)
		require.True(t, res.Allowed, "a denied cost consumed something")
		assert.Equal(t, int64(0), res.Remaining)
		if !e.real {
			assert.Equal(t, time.Hour, res.Reset)
		}
	})
}

func testCostAboveCapacity(t *testing.T, e env) {
	tests := []struct {
		name  string
		limit limits.Limit
		cap   int64
	}{
		{"Quota", limits.Quota("q", 5, limits.Day), 5},
		{"Rate", limits.Rate("r", 10, time.Hour, 5), 5},
		{"RateDefaultBurst", limits.Rate("r", 5, time.Hour, 0), 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := apikey.NewID()
			for range 2 {
				res := allow(t, e.l, id, tc.cap+1, tc.limit)
				require.False(t, res.Allowed)
				assert.Equal(t, tc.limit, res.Limit)
				assert.Positive(t, res.RetryAfter)
				assert.Equal(t, res.Reset, res.RetryAfter, "a cost above capacity waits until reset")
				assert.Equal(t, tc.cap, res.Remaining)
			}
			res := allow(t, e.l, id, tc.cap, tc.limit)
			require.True(t, res.Allowed, "a denied cost consumed something")
			assert.Equal(t, int64(0), res.Remaining)
		})
	}
}

func testTightest(t *testing.T, e env) {
	id := apikey.NewID()
	q := limits.Quota("daily", 100, limits.Day)
	r := limits.Rate("hourly", 10, time.Hour, 0)
	res := allow(t, e.l, id, 1, q, r)
	require.True(t, res.Allowed)
	assert.Equal(t, r, res.Limit, "the limit with the fewest remaining")
	assert.Equal(t, int64(9), res.Remaining)

	small := limits.Quota("small", 3, limits.Day)
	res = allow(t, e.l, id, 1, q, r, small)
	require.True(t, res.Allowed)
	assert.Equal(t, small, res.Limit)
	assert.Equal(t, int64(2), res.Remaining)

	// Both deny: the longer wait is reported.
	id = apikey.NewID()
	q1 := limits.Quota("daily", 1, limits.Day)
	r1 := limits.Rate("hourly", 1, time.Hour, 1)
	require.True(t, allow(t, e.l, id, 1, r1, q1).Allowed)
	res = allow(t, e.l, id, 1, r1, q1)
	require.False(t, res.Allowed)
	if !e.real {
		assert.Equal(t, q1, res.Limit)
		assert.Equal(t, 12*time.Hour, res.RetryAfter)
	}
}

func testKeys(t *testing.T, e env) {
	a, b := apikey.NewID(), apikey.NewID()
	q := limits.Quota("daily", 2, limits.Day)
	r := limits.Rate("hourly", 2, time.Hour, 0)
	require.True(t, allow(t, e.l, a, 2, q).Allowed)
	require.True(t, allow(t, e.l, a, 2, r).Allowed)
	require.False(t, allow(t, e.l, a, 1, q).Allowed)
	require.False(t, allow(t, e.l, a, 1, r).Allowed)
	res := allow(t, e.l, b, 1, q, r)
	require.True(t, res.Allowed, "another key's consumption applied")
	assert.Equal(t, int64(1), res.Remaining)
}

func testNames(t *testing.T, e env) {
	id := apikey.NewID()
	require.True(t, allow(t, e.l, id, 1, limits.Quota("a", 1, limits.Day)).Allowed)
	require.False(t, allow(t, e.l, id, 1, limits.Quota("a", 1, limits.Day)).Allowed)
	require.True(t, allow(t, e.l, id, 1, limits.Quota("b", 1, limits.Day)).Allowed)
	require.True(t, allow(t, e.l, id, 1, limits.Rate("a", 1, time.Hour, 1)).Allowed,
		"a rate shares state with a quota of the same name")
}

func testPlanChange(t *testing.T, e env) {
	id := apikey.NewID()
	require.True(t, allow(t, e.l, id, 5, limits.Quota("daily", 5, limits.Day)).Allowed)
	require.False(t, allow(t, e.l, id, 1, limits.Quota("daily", 5, limits.Day)).Allowed)
	res := allow(t, e.l, id, 1, limits.Quota("daily", 10, limits.Day))
	require.True(t, res.Allowed, "a raised count is not applied")
	assert.Equal(t, int64(4), res.Remaining, "the window's consumption was lost")
}

func testConcurrent(t *testing.T, e env) {
	const workers, each = 16, 25
	tests := []struct {
		name  string
		limit limits.Limit
		want  int64
	}{
		{"Quota", limits.Quota("daily", 100, limits.Day), 100},
		{"Rate", limits.Rate("hourly", 60, time.Hour, 0), 60},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := apikey.NewID()
			var admitted, errs atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					own := apikey.NewID()
					for range each {
						res, err := e.l.Allow(context.Background(), id, []limits.Limit{tc.limit}, 1)
						if err != nil {
							errs.Add(1)
							continue
						}
						if res.Allowed {
							admitted.Add(1)
						}
						if res, err := e.l.Allow(context.Background(), own, []limits.Limit{tc.limit}, 1); err != nil || !res.Allowed {
							errs.Add(1)
						}
					}
				})
			}
			wg.Wait()
			assert.Zero(t, errs.Load(), "errors, or a key disturbed by another")
			assert.Equal(t, tc.want, admitted.Load())
		})
	}
}

func testCancelled(t *testing.T, e env) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e.l.Allow(ctx, apikey.NewID(), []limits.Limit{limits.Quota("daily", 1, limits.Day)}, 1)
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.Canceled), "error %v does not wrap context.Canceled", err)
}

func testEmptySubject(t *testing.T, e env) {
	_, err := e.l.Allow(context.Background(), "", []limits.Limit{limits.Quota("daily", 1, limits.Day)}, 1)
	require.ErrorIs(t, err, limits.ErrInvalid)
}

// Subjects of any shape (an owner name, an email, a key id) are counted
// apart.
func testSubjects(t *testing.T, e env) {
	q := limits.Quota("daily", 1, limits.Day)
	base := apikey.NewID()
	subjects := []string{base, base + "x", "user:" + base, base + "@example.com", base + " {tag}", base + "=1", base + "\u00fc"}
	for _, s := range subjects {
		require.True(t, allow(t, e.l, s, 1, q).Allowed, "%q", s)
	}
	for _, s := range subjects {
		require.False(t, allow(t, e.l, s, 1, q).Allowed, "%q shares a budget with another subject", s)
	}
}

// A limit with its own Subject has a state per (call subject, name, kind,
// Subject): the same credits name counts per key, and apart from a limit
// without Subject.
func testLimitSubjects(t *testing.T, e env) {
	id := apikey.NewID()
	keyA, keyB := apikey.NewID(), apikey.NewID()
	credits := func(key string) limits.Limit {
		l := limits.Credits("credits", 2, limits.Never)
		l.Subject = key
		return l
	}
	plain := limits.Quota("credits", 2, limits.Day)
	res := allow(t, e.l, id, 2, credits(keyA))
	require.True(t, res.Allowed)
	assert.Equal(t, int64(0), res.Remaining)
	require.False(t, allow(t, e.l, id, 1, credits(keyA)).Allowed)
	res = allow(t, e.l, id, 1, credits(keyB))
	require.True(t, res.Allowed, "another key's credits were spent")
	assert.Equal(t, int64(1), res.Remaining)
	res = allow(t, e.l, id, 1, plain)
	require.True(t, res.Allowed, "a quota of the same name shares state with credits")
	assert.Equal(t, int64(1), res.Remaining)
	rate := limits.Rate("credits", 1, time.Hour, 1)
	rate.Subject = keyA
	require.True(t, allow(t, e.l, id, 1, rate).Allowed, "a rate with a Subject shares state with credits")
	res = allow(t, e.l, apikey.NewID(), 1, credits(keyA))
	require.True(t, res.Allowed, "another call subject shares the state")
	// Two limits of one call may share a name with distinct Subjects.
	res = allow(t, e.l, id, 1, credits(keyB), credits(apikey.NewID()))
	require.True(t, res.Allowed)
	require.Len(t, res.States, 2)
	assert.Equal(t, int64(0), res.States[0].Remaining)
	assert.Equal(t, int64(1), res.States[1].Remaining)
}

// States reports every limit of a call in order, allowed or denied, and a
// denied call reports the limits that would have allowed as unspent.
func testStates(t *testing.T, e env) {
	id := apikey.NewID()
	q := limits.Quota("daily", 10, limits.Day)
	r := limits.Rate("hourly", 4, time.Hour, 0) // T = 15m
	c := limits.Credits("credits", 3, limits.Never)
	res := allow(t, e.l, id, 1, q, r, c)
	require.True(t, res.Allowed)
	require.Len(t, res.States, 3)
	assert.Equal(t, []int64{9, 3, 2}, remaining(res))
	assert.Zero(t, res.States[2].Reset, "credits never refilled never reset")
	assert.Equal(t, c, res.Limit, "the fewest remaining")
	if !e.real {
		assert.Equal(t, 12*time.Hour, res.States[0].Reset)
		assert.Equal(t, 15*time.Minute, res.States[1].Reset)
	}
	res = allow(t, e.l, id, 3, q, r, c)
	require.False(t, res.Allowed, "credits 2 < cost 3")
	assert.Equal(t, c, res.Limit)
	assert.Equal(t, []int64{9, 3, 2}, remaining(res), "a denied call reports what it did not spend")
	assert.Zero(t, res.RetryAfter, "no wait helps credits never refilled")
	assert.Zero(t, res.States[0].RetryAfter)
	assert.Zero(t, res.States[1].RetryAfter)
	if !e.real {
		assert.Equal(t, 15*time.Minute, res.States[1].Reset, "a denied call moved the rate")
	}
	res = allow(t, e.l, id, 2, q, r, c)
	require.True(t, res.Allowed)
	assert.Equal(t, []int64{7, 1, 0}, remaining(res))
}

func remaining(res limits.Result) []int64 {
	var out []int64
	for _, s := range res.States {
		out = append(out, s.Remaining)
	}
	return out
}

func testCreditsNever(t *testing.T, e env) {
	id := apikey.NewID()
	c := limits.Credits("credits", 3, limits.Never)
	for i := range int64(3) {
		res := allow(t, e.l, id, 1, c)
		require.True(t, res.Allowed)
		require.Equal(t, 2-i, res.Remaining)
		require.Zero(t, res.Reset)
	}
	moves := []time.Duration{0, 24 * time.Hour, 40 * 24 * time.Hour, 400 * 24 * time.Hour}
	if e.real {
		moves = moves[:1]
	}
	for _, d := range moves {
		e.clock.Advance(d)
		res := allow(t, e.l, id, 1, c)
		require.False(t, res.Allowed, "credits came back after %v", d)
		assert.Equal(t, int64(0), res.Remaining)
		assert.Zero(t, res.RetryAfter)
		assert.Zero(t, res.Reset)
	}
}

func testCreditsRefill(t *testing.T, e env) {
	tests := []struct {
		name     string
		refill   limits.Window
		boundary time.Time
		next     time.Time
	}{
		{"Day", limits.Day, date(2026, 3, 15, 0, 0), date(2026, 3, 16, 0, 0)},
		{"Month", limits.Month, date(2026, 4, 1, 0, 0), date(2026, 5, 1, 0, 0)},
		{"February", limits.Month, date(2028, 2, 1, 0, 0), date(2028, 3, 1, 0, 0)},
		{"NewYear", limits.Month, date(2027, 1, 1, 0, 0), date(2027, 2, 1, 0, 0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := apikey.NewID()
			c := limits.Credits("credits", 2, tc.refill)
			c.Subject = apikey.NewID()
			e.clock.Set(tc.boundary.Add(-time.Second))
			require.True(t, allow(t, e.l, id, 2, c).Allowed)
			res := allow(t, e.l, id, 1, c)
			require.False(t, res.Allowed)
			assert.Equal(t, time.Second, res.RetryAfter, "until the refill")
			assert.Equal(t, time.Second, res.Reset)
			e.clock.Set(tc.boundary)
			res = allow(t, e.l, id, 1, c)
			require.True(t, res.Allowed, "not refilled at the UTC boundary")
			assert.Equal(t, int64(1), res.Remaining, "refilled to its count, not beyond")
			assert.Equal(t, tc.next.Sub(tc.boundary), res.Reset)
		})
	}
}

func testCreditsAllOrNothing(t *testing.T, e env) {
	id := apikey.NewID()
	c := limits.Credits("credits", 5, limits.Never)
	c.Subject = apikey.NewID()
	q := limits.Quota("daily", 1, limits.Day)
	require.True(t, allow(t, e.l, id, 1, q, c).Allowed)
	for range 3 {
		res := allow(t, e.l, id, 1, q, c)
		require.False(t, res.Allowed)
		assert.Equal(t, q, res.Limit)
	}
	res := allow(t, e.l, id, 1, c)
	require.True(t, res.Allowed)
	assert.Equal(t, int64(3), res.Remaining, "a call denied by the quota spent credits")

	other := apikey.NewID()
	big := limits.Quota("daily", 100, limits.Day)
	c = limits.Credits("credits", 3, limits.Never)
	c.Subject = apikey.NewID()
	require.True(t, allow(t, e.l, other, 3, big, c).Allowed)
	res = allow(t, e.l, other, 1, big, c)
	require.False(t, res.Allowed, "credits exhausted")
	res = allow(t, e.l, other, 1, big)
	assert.Equal(t, int64(96), res.Remaining, "a call denied by credits spent the quota")
}

// Concurrent calls of the owners of one key's credits never spend more
// than the credits, even when their other limits are per owner.
func testCreditsConcurrent(t *testing.T, e env) {
	const workers, each = 16, 20
	key := apikey.NewID()
	c := limits.Credits("credits", 50, limits.Never)
	c.Subject = key
	q := limits.Quota("daily", 1000, limits.Day)
	id := apikey.NewID()
	var admitted, errs atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				res, err := e.l.Allow(context.Background(), id, []limits.Limit{q, c}, 1)
				switch {
				case err != nil:
					errs.Add(1)
				case res.Allowed:
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	require.Zero(t, errs.Load())
	assert.Equal(t, int64(50), admitted.Load())
	res := allow(t, e.l, id, 1, q)
	assert.Equal(t, int64(1000-50-1), res.Remaining, "denied calls spent the quota")
}

// A key's override is a limit of the same name with another count or
// kind: the next call applies it to the state so far.
func testOverride(t *testing.T, e env) {
	id := apikey.NewID()
	require.True(t, allow(t, e.l, id, 3, limits.Quota("daily", 5, limits.Day)).Allowed)
	res := allow(t, e.l, id, 1, limits.Quota("daily", 3, limits.Day))
	require.False(t, res.Allowed, "a lowered count does not apply to what was spent")
	res = allow(t, e.l, id, 1, limits.Quota("daily", 100, limits.Day))
	require.True(t, res.Allowed)
	assert.Equal(t, int64(96), res.Remaining)
}

// A clock that steps back (an NTP correction, a failover to a Redis whose
// clock is behind) never locks a subject out for longer than a rate's
// burst window.
func testStepBack(t *testing.T, e env) {
	id := apikey.NewID()
	r := limits.Rate("per-second", 2, time.Second, 0) // burst window 1s
	require.True(t, allow(t, e.l, id, 2, r).Allowed)
	e.clock.Set(e.clock.Now().Add(-time.Hour))
	res := allow(t, e.l, id, 1, r)
	require.False(t, res.Allowed)
	assert.LessOrEqual(t, res.RetryAfter, time.Second, "locked out for the length of the step")
	assert.LessOrEqual(t, res.Reset, time.Second)
	e.clock.Advance(time.Second)
	res = allow(t, e.l, id, 1, r)
	assert.True(t, res.Allowed, "still locked out a burst window after the step")
}

func date(y int, m time.Month, d, h, min int) time.Time {
	return time.Date(y, m, d, h, min, 0, 0, time.UTC)
}

// A clock that steps back never denies a request within a rate's burst,
// whatever the step and the rate: the time before the step counts as not
// having passed. Nor does the step grant more than the burst: what was
// spent before it still counts.
func testStepBackWithinBurst(t *testing.T, e env) {
	tests := []struct {
		name     string
		limit    limits.Limit
		interval time.Duration
		step     time.Duration
	}{
		{"Fast", limits.Rate("per-second", 100, time.Second, 0), 10 * time.Millisecond, 10 * time.Minute},
		{"Slow", limits.Rate("hourly", 10, time.Hour, 0), 6 * time.Minute, 10 * time.Minute},
		{"StepLongerThanTheBurstWindow", limits.Rate("hourly", 10, time.Hour, 0), 6 * time.Minute, 24 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := apikey.NewID()
			require.True(t, allow(t, e.l, id, 1, tc.limit).Allowed)
			e.clock.Set(e.clock.Now().Add(-tc.step))
			for i := int64(1); i < tc.limit.Count; i++ {
				res := allow(t, e.l, id, 1, tc.limit)
				require.True(t, res.Allowed, "request %d of a burst of %d denied after the clock stepped back %v", i+1, tc.limit.Count, tc.step)
				require.Equal(t, tc.limit.Count-1-i, res.Remaining)
			}
			res := allow(t, e.l, id, 1, tc.limit)
			require.False(t, res.Allowed, "the step back granted more than the burst")
			assert.Equal(t, tc.interval, res.RetryAfter)
			// A second step back grants nothing either.
			e.clock.Set(e.clock.Now().Add(-tc.step))
			res = allow(t, e.l, id, 1, tc.limit)
			require.False(t, res.Allowed, "a second step back granted more than the burst")
			assert.Equal(t, tc.interval, res.RetryAfter)
			// The clock goes on from where it stepped to.
			e.clock.Advance(tc.interval)
			assert.True(t, allow(t, e.l, id, 1, tc.limit).Allowed, "one interval after the step")
			assert.False(t, allow(t, e.l, id, 1, tc.limit).Allowed)
		})
	}
}

// A subject's past limits with a Subject of their own (the credits of
// every key it ever had) do not slow its calls: a call costs what its own
// limits cost. The suite times calls of one shape for a subject with 2,000
// past entries and for a subject with one, in interleaved samples, and
// compares the fastest sample of each with a generous factor: the noise of
// a busy machine only adds time, while a cost that grows with the history
// slows every sample.
func testHistory(t *testing.T, e env) {
	const past, batch, samples, factor = 2000, 50, 9, 25
	credits := func(sub string, n int64) limits.Limit {
		c := limits.Credits("credits", n, limits.Never)
		c.Subject = sub
		return c
	}
	old, fresh := apikey.NewID(), apikey.NewID()
	ls := make([]limits.Limit, batch)
	for range past / batch {
		for j := range ls {
			ls[j] = credits(apikey.NewID(), 1)
		}
		require.True(t, allow(t, e.l, old, 1, ls...).Allowed)
	}
	call := func(subject string) []limits.Limit {
		return []limits.Limit{limits.Quota("daily", limitsMax, limits.Day), credits(subject+"-key", limitsMax)}
	}
	oldCall, freshCall := call(old), call(fresh)
	run := func(subject string, ls []limits.Limit, n int) time.Duration {
		start := time.Now()
		for range n {
			res, err := e.l.Allow(context.Background(), subject, ls, 1)
			if err != nil || !res.Allowed {
				require.NoError(t, err)
				require.True(t, res.Allowed)
			}
		}
		return time.Since(start)
	}
	// As many calls per sample as take 4ms for the fresh subject, after a
	// few calls of each.
	run(old, oldCall, 3)
	run(fresh, freshCall, 3)
	n := 1
	for min(run(fresh, freshCall, n), run(fresh, freshCall, n)) < 4*time.Millisecond && n < 1<<20 {
		n *= 2
	}
	var freshT, oldT []time.Duration
	runtime.GC() // the setup's garbage
	for range samples {
		freshT = append(freshT, run(fresh, freshCall, n))
		oldT = append(oldT, run(old, oldCall, n))
	}
	f, o := slices.Min(freshT), slices.Min(oldT)
	t.Logf("%d calls: %v for a subject with %d past entries, %v for one with 1 (the fastest of %d samples)", n, o, past, f, samples)
	assert.LessOrEqual(t, o, factor*f, "a call for a subject with %d past entries took %.1f times as long", past, float64(o)/float64(f))
}

// limitsMax is the largest count of a limit.
const limitsMax = 100_000_000_000_000 - 1

// peek calls Peek and requires no error.
func peek(t *testing.T, p limits.Peeker, id string, lims ...limits.Limit) limits.Result {
	t.Helper()
	res, err := p.Peek(context.Background(), id, lims)
	require.NoError(t, err)
	return res
}

// peeker returns the limiter as an limits.Peeker, or skips the test.
func peeker(t *testing.T, e env) limits.Peeker {
	p, ok := e.l.(limits.Peeker)
	if !ok {
		t.Skip("limitertest: the limiter does not implement limits.Peeker")
	}
	return p
}

// Peek answers what Allow with a cost of 1 answers next, and consumes
// nothing, allowed or denied.
func testPeek(t *testing.T, e env) {
	p := peeker(t, e)
	_, err := p.Peek(context.Background(), "", []limits.Limit{limits.Quota("q", 1, limits.Day)})
	require.ErrorIs(t, err, limits.ErrInvalid, "empty subject")
	_, err = p.Peek(context.Background(), apikey.NewID(), []limits.Limit{limits.Quota("q", 0, limits.Day)})
	require.ErrorIs(t, err, limits.ErrInvalid, "invalid limit")
	q := limits.Quota("q", 1, limits.Day)
	_, err = p.Peek(context.Background(), apikey.NewID(), []limits.Limit{q, q})
	require.ErrorIs(t, err, limits.ErrInvalid, "a name twice")
	assert.True(t, peek(t, p, apikey.NewID()).Allowed, "no limits")

	id := apikey.NewID()
	c := limits.Credits("credits", 4, limits.Never)
	c.Subject = apikey.NewID()
	lims := []limits.Limit{
		limits.Quota("daily", 3, limits.Day),
		limits.Rate("hourly", 5, time.Hour, 0),
		c,
	}
	// Each limit alone, then all of them: the quota denies the fourth call.
	calls := [][]limits.Limit{lims[:1], lims[1:2], lims[2:], lims}
	for _, ls := range calls {
		for i := range 3 {
			first := peek(t, p, id, ls...)
			again := peek(t, p, id, ls...)
			samePeek(t, e, first, again, "a second Peek, call %d of %d limits", i+1, len(ls))
			res := allow(t, e.l, id, 1, ls...)
			samePeek(t, e, first, res, "Peek and the next Allow, call %d of %d limits", i+1, len(ls))
		}
	}
	// Every limit has been spent 3 times: the quota denies, consuming
	// nothing, and Peek says so.
	res := peek(t, p, id, lims...)
	require.False(t, res.Allowed)
	assert.Equal(t, lims[0], res.Limit)
	assert.Equal(t, []int64{0, 2, 1}, remaining(res))
	denied := allow(t, e.l, id, 1, lims...)
	samePeek(t, e, res, denied, "a denied call")
	res = peek(t, p, id, lims[1:]...)
	require.True(t, res.Allowed)
	assert.Equal(t, []int64{1, 0}, remaining(res), "the denied call or Peek consumed something")
}

// samePeek checks that a Peek answered what b answered. A limiter on real
// time may answer durations that moved between the calls.
func samePeek(t *testing.T, e env, a, b limits.Result, msg string, args ...any) {
	t.Helper()
	m := append([]any{msg}, args...)
	assert.Equal(t, a.Allowed, b.Allowed, m...)
	assert.Equal(t, a.Limit, b.Limit, m...)
	assert.Equal(t, a.Remaining, b.Remaining, m...)
	assert.Equal(t, remaining(a), remaining(b), m...)
	if !e.real {
		assert.Equal(t, a, b, m...)
	}
}

// Peeks concurrent with Allow calls consume nothing: the calls admit
// exactly the quota.
func testPeekConcurrent(t *testing.T, e env) {
	p := peeker(t, e)
	const workers, each, quota = 8, 25, 20
	id := apikey.NewID()
	// A rate slow enough that a slow run sees none of it refilled.
	lims := []limits.Limit{limits.Quota("daily", quota, limits.Day), limits.Rate("slow", 1000, 100*time.Hour, 0)}
	var admitted, errs atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				for range 3 {
					if res, err := p.Peek(context.Background(), id, lims); err != nil || res.Remaining < 0 {
						errs.Add(1)
					}
				}
				res, err := e.l.Allow(context.Background(), id, lims, 1)
				switch {
				case err != nil:
					errs.Add(1)
				case res.Allowed:
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	require.Zero(t, errs.Load())
	assert.Equal(t, int64(quota), admitted.Load())
	res := peek(t, p, id, lims[1:]...)
	assert.Equal(t, int64(1000-quota-1), res.Remaining, "a Peek consumed from the rate")
}
