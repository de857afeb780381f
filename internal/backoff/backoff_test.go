package backoff

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestRetryBacksOffAndResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var starts []time.Duration
		begin := time.Now()
		calls := 0
		err := Retry(ctx, 100*time.Millisecond, 400*time.Millisecond, nil, "lost", nil,
			func(ctx context.Context, reset func()) error {
				calls++
				starts = append(starts, time.Since(begin))
				switch calls {
				case 5: // established: the next wait starts from the minimum again
					reset()
				case 7:
					cancel()
					<-ctx.Done()
					return ctx.Err()
				}
				return errors.New("connection refused")
			})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Retry returned %v, want context.Canceled", err)
		}
		// Waits: 100, 200, 400, 400 (capped), then 100 after the reset,
		// each plus at most 20% jitter.
		want := []time.Duration{100, 200, 400, 400, 100, 200}
		for i, w := range want {
			got := starts[i+1] - starts[i]
			lo, hi := w*time.Millisecond, w*time.Millisecond*12/10
			if got < lo || got > hi {
				t.Errorf("wait %d: %v, want between %v and %v", i+1, got, lo, hi)
			}
		}
	})
}

func TestRetryStopsDuringTheWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		err := Retry(ctx, time.Second, time.Second, nil, "lost", nil,
			func(context.Context, func()) error { return errors.New("down") })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Retry returned %v, want context.DeadlineExceeded", err)
		}
	})
}
