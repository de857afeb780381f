package keyspage

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/gokeys/apikey/usage"
)

func TestScale(t *testing.T) {
	t.Parallel()
	tests := []struct {
		peak, top, step int64
	}{
		{0, 0, 0},
		{1, 1, 1},
		{3, 3, 1},
		{4, 4, 1},
		{5, 6, 2},
		{7, 8, 2},
		{27, 30, 10},
		{100, 100, 50},
		{1500, 1500, 500},
		{1657, 2000, 500},
		{9_999_999, 10_000_000, 5_000_000},
	}
	for _, tt := range tests {
		top, step := scale(tt.peak)
		assert.Equal(t, tt.top, top, "top of %d", tt.peak)
		assert.Equal(t, tt.step, step, "step of %d", tt.peak)
		if tt.peak > 0 {
			assert.GreaterOrEqual(t, top, tt.peak)
			assert.Zero(t, top%step)
			assert.LessOrEqual(t, top/step, int64(5), "at most five grid lines")
		}
	}
}

func TestCount(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0", 7: "7", 999: "999", 1000: "1,000", 12345: "12,345", 1234567: "1,234,567", -1234: "-1,234"} {
		assert.Equal(t, want, count(n))
	}
}

func TestShort(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0", 500: "500", 1000: "1k", 1500: "1.5k", 20_000: "20k", 250_000: "250k", 2_500_000: "2.5M", 5_000_000_000: "5G"} {
		assert.Equal(t, want, short(n))
	}
}

// TestUsageRange is the last 30 UTC days, today included, whatever the
// time of day and zone.
func TestUsageRange(t *testing.T) {
	t.Parallel()
	want := time.Date(2026, 10, 29, 0, 0, 0, 0, time.UTC)
	for _, now := range []time.Time{
		time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 27, 23, 59, 59, 0, time.UTC),
		time.Date(2026, 11, 28, 0, 30, 0, 0, time.FixedZone("CET", 3600)), // still the 27th in UTC,
	} {
		from, to := usageRange(now)
		assert.Equal(t, want, from, now)
		assert.Equal(t, want.AddDate(0, 0, usageDays), to, now)
	}
}

// TestSparkOf draws both lines on one scale, the busiest point at the top.
func TestSparkOf(t *testing.T) {
	t.Parallel()
	days := make([]usage.Record, 3)
	days[0].Allowed, days[1].Allowed, days[1].Limited, days[2].Limited = 10, 20, 5, 20
	s := sparkOf(days, "")
	assert.Equal(t, "0,12 50,2 100,22", s.Allowed)
	assert.Equal(t, "0,22 50,17 100,2", s.Limited)
	assert.Equal(t, "30", s.Total)
	assert.Equal(t, "“(no name)”, last 30 days: 30 requests allowed, 25 limited", s.Label)
	assert.Empty(t, sparkOf(days[:1], "x").Limited, "no limited line without limited requests")
}
