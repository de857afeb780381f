package gcra

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestWindowSeconds(t *testing.T) {
	t.Parallel()
	at := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 12, 0, 0, 0, time.UTC) }
	for _, tc := range []struct {
		w    uint8
		now  time.Time
		want int64
	}{
		{Never, at(2026, 3, 14), 0},
		{Minute, at(2026, 3, 14), 60},
		{Hour, at(2026, 3, 14), 3600},
		{Day, at(2026, 3, 14), 86400},
		{Month, at(2026, 2, 14), 28 * 86400},
		{Month, at(2028, 2, 14), 29 * 86400},
		{Month, at(2100, 2, 14), 28 * 86400},
		{Month, at(2026, 4, 30), 30 * 86400},
		{Month, at(2026, 12, 31), 31 * 86400},
	} {
		assert.Equal(t, tc.want, WindowSeconds(tc.w, tc.now), "%d at %v", tc.w, tc.now)
	}
	s, e := Window(Day, -1) // just before the epoch
	assert.Equal(t, -int64(24*time.Hour), s)
	assert.Equal(t, int64(0), e)
}

// A TAT further ahead than the burst window counts as now + the burst
// window, and is to be stored so even when the call is denied.
func TestRateCapsTheTAT(t *testing.T) {
	t.Parallel()
	const T, B = 10, 3 // burst window 30
	o, next, write := Rate(1_000_000, 90, 100, T, B, 1)
	assert.False(t, o.Allowed)
	assert.True(t, write)
	assert.Equal(t, int64(130), next)
	assert.Equal(t, int64(10), o.Retry)
	o, next, write = Rate(next, 100, 110, T, B, 1)
	assert.True(t, o.Allowed, "one interval later")
	assert.True(t, write)
	assert.Equal(t, int64(140), next)
	_, _, write = Rate(125, 90, 100, T, B, 3) // within the window, denied: nothing to store
	assert.False(t, write)
}

// A clock that steps back keeps what was outstanding when the state was
// written: no lockout within the burst, no burst beyond it.
func TestRateClockStepBack(t *testing.T) {
	t.Parallel()
	const T, B = 10, 3 // burst window 30
	tests := []struct {
		name      string
		tat, seen int64
		cost      int64
		allowed   bool
		next      int64
		write     bool
		retry     int64
	}{
		{"OneSpent", 1010, 1000, 2, true, 130, true, 0},
		{"OneSpentTooMuch", 1010, 1000, 3, false, 110, true, 10},
		{"AllSpent", 1030, 1000, 1, false, 130, true, 10},
		{"NothingOutstanding", 900, 1000, 3, true, 130, true, 0},
		{"NothingOutstandingCostAboveBurst", 900, 1000, 4, false, 100, false, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, next, write := Rate(tc.tat, tc.seen, 100, T, B, tc.cost)
			assert.Equal(t, tc.allowed, o.Allowed)
			assert.Equal(t, tc.next, next)
			assert.Equal(t, tc.write, write)
			assert.Equal(t, tc.retry, o.Retry)
		})
	}
	o, next, write := Rate(100, NoState, 100, T, B, 3) // no state
	assert.True(t, o.Allowed)
	assert.True(t, write)
	assert.Equal(t, int64(130), next)
}

func TestCountNeverRefilled(t *testing.T) {
	t.Parallel()
	o := Count(5, 5, 1, 0)
	assert.False(t, o.Allowed)
	assert.Zero(t, o.Retry, "no wait helps")
	o = Count(5, 2, 3, 10)
	assert.True(t, o.Allowed)
	assert.Equal(t, int64(0), o.Remaining)
	assert.Equal(t, Outcome{Allowed: true, Remaining: 3, Reset: 10}, o.Unspent(3, 0))
}

func TestGCRARoundsUp(t *testing.T) {
	t.Parallel()
	interval, b := GCRA(3, time.Second, 0, time.Nanosecond)
	assert.Equal(t, int64(333_333_334), interval)
	assert.Equal(t, int64(3), b)
	interval, _ = GCRA(3, time.Second, 5, time.Microsecond)
	assert.Equal(t, int64(333_334), interval)
	assert.NoError(t, Check("r", KindRate, 3, time.Second, 5, 0))
	assert.ErrorIs(t, Check("r", KindRate, 1, time.Duration(1)<<62, 1<<20, 0), ErrHorizon)
}

func TestDebit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ used, amount, want int64 }{
		{3, 4, 7},
		{3, -2, 1},
		{3, -5, 0}, // a refund gives back at most what was used
		{MaxUsed - 1, MaxCount, MaxUsed},
		{0, 0, 0},
	} {
		assert.Equal(t, tc.want, Debit(tc.used, tc.amount), "%d%+d", tc.used, tc.amount)
	}
	assert.NoError(t, CheckAmount(-MaxCount))
	assert.NoError(t, CheckAmount(MaxCount))
	assert.ErrorIs(t, CheckAmount(MaxCount+1), ErrAmount)
	assert.ErrorIs(t, CheckAmount(-MaxCount-1), ErrAmount)
}
