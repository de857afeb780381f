// Package backoff runs a connection-holding session again and again, with
// a jittered exponential backoff between attempts, until its context ends.
// It is the reconnect loop of the notifiers.
package backoff

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Retry calls session until ctx is done, then returns ctx.Err(). After a
// session fails it logs the error on log (if not nil) with msg and waits. It
// waits lo at first, doubling up to hi after each failure. Up to 20% jitter
// is added so that a fleet does not reconnect in step. A session calls reset
// once it is established, which brings the next wait back to lo.
func Retry(ctx context.Context, lo, hi time.Duration, log *slog.Logger, msg string, attrs []slog.Attr,
	session func(ctx context.Context, reset func()) error) error {
	wait := lo
	reset := func() { wait = lo }
	for {
		err := session(ctx, reset)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if log != nil {
			a := append(attrs[:len(attrs):len(attrs)], slog.String("error", err.Error()), slog.Duration("in", wait))
			log.LogAttrs(ctx, slog.LevelWarn, msg, a...)
		}
		t := time.NewTimer(wait + time.Duration(rand.Int64N(int64(wait)/5+1)))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, hi)
	}
}
