package fastclock

import (
	"testing"
	"time"
)

func TestNowFollowsTimeNow(t *testing.T) {
	c := New()
	for range 1000 {
		before := time.Now()
		got := c.Now()
		after := time.Now()
		// Readings compare by their monotonic clock, as time.Now's do.
		if got.Before(before) || got.After(after) {
			t.Fatalf("Now() = %v, outside [%v, %v]", got, before, after)
		}
		// The wall clock agrees within the gap between the two clock reads
		// of the anchor.
		if d := got.Round(0).Sub(before.Round(0)); d < -time.Millisecond || d > after.Sub(before)+time.Millisecond {
			t.Fatalf("wall clock off by %v", d)
		}
	}
}

func TestReanchors(t *testing.T) {
	c := New()
	old := *c.anchor.Load()
	past := old.Add(-2 * reanchorAfter)
	c.anchor.Store(&past)
	got := c.Now()
	if a := *c.anchor.Load(); a.Equal(past) || got.Before(old) {
		t.Fatalf("an anchor older than %v was kept", reanchorAfter)
	}
}

func BenchmarkNow(b *testing.B) {
	c := New()
	b.Run("fastclock", func(b *testing.B) {
		for b.Loop() {
			_ = c.Now()
		}
	})
	b.Run("time.Now", func(b *testing.B) {
		for b.Loop() {
			_ = time.Now()
		}
	})
}
