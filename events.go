package apikey

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
)

// eventType names what happened to a key.
type eventType string

// The events a Manager logs.
const (
	eventIssue    eventType = "issue"
	eventRotate   eventType = "rotate"
	eventUpdate   eventType = "update"
	eventDisable  eventType = "disable"
	eventEnable   eventType = "enable"
	eventRevoke   eventType = "revoke"
	eventDelete   eventType = "delete"
	eventPause    eventType = "pause"
	eventResume   eventType = "resume"
	eventCustomer eventType = "customer"
	eventPurge    eventType = "purge"
	eventVerify   eventType = "verify"
)

// event reports one operation on a key to Options.Logger: one event per
// change (a RevokeOwner that revokes three keys reports three revoke
// events) and one per verification. Reporting costs no store access. It
// carries ids, never a token, secret or digest.
type event struct {
	// Type is what happened.
	Type eventType
	// KeyID is the key concerned. For a verification of a token that did
	// not parse, it is empty.
	KeyID string
	// Owner is the key's owner when the operation read it anyway: always
	// for issue, rotate, update, disable, enable, a successful
	// verification and RevokeOwner. Empty for delete and for a revoke by a
	// store's Revoker.
	Owner string
	// Err is the outcome of a verification: nil on success, otherwise one
	// of the sentinel errors (possibly wrapped): ErrDisabled for a disabled
	// key, which the middleware answers like ErrInvalid.
	Err error
	// Time is when it happened, by the Manager's clock.
	Time time.Time
}

// LogValue renders the event for log/slog.
func (e event) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("event", string(e.Type)), slog.String("key_id", e.KeyID)}
	if e.Owner != "" {
		attrs = append(attrs, slog.String("owner", e.Owner))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("outcome", outcome(e.Err)))
	}
	return slog.GroupValue(attrs...)
}

// outcome names a verification error by its sentinel, so that logs never
// carry a wrapped message from a dependency.
func outcome(err error) string {
	for _, s := range []error{ErrMalformed, ErrInvalid, ErrExpired, ErrRevoked, ErrDisabled, ErrPaused, ErrSuspended, ErrUnavailable} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "error"
}

// eventLog writes events to a Manager's Options.Logger. Its zero value
// (no logger) writes nothing.
type eventLog struct {
	log     *slog.Logger
	now     func() time.Time
	sampler logSampler // failed verifications
}

// emit writes e.
func (l *eventLog) emit(ctx context.Context, e event) {
	if l.log != nil {
		level, msg := slog.LevelInfo, "apikey: "+string(e.Type)
		if e.Type == eventVerify {
			level = slog.LevelDebug
			if e.Err != nil {
				level = slog.LevelWarn
			}
		}
		l.log.LogAttrs(ctx, level, msg, slog.Any("apikey", e))
	}
}

// verify reports a verification to the Logger: successes at Debug
// level, failures at Warn level but sampled, at most one line per second
// per outcome, each line counting the failures
// of its outcome left out since the previous one. A flood of garbage
// tokens thus costs no log line per request.
func (l *eventLog) verify(ctx context.Context, k *Key, id string, now time.Time, err error) {
	if l.log == nil {
		return
	}
	if now.IsZero() {
		now = l.now()
	}
	if k == nil && id != "" {
		id = strings.Clone(id) // part of the token: keep none of it
	}
	e := event{Type: eventVerify, KeyID: id, Err: err, Time: now}
	if k != nil {
		e.Owner = k.Owner
	}
	l.logVerify(ctx, e)
}

// logVerify writes a verification event, sampling failures.
func (l *eventLog) logVerify(ctx context.Context, e event) {
	level, suppressed := slog.LevelDebug, uint64(0)
	if e.Err != nil {
		var log bool
		if log, suppressed = l.sampler.allow(outcomeOf(e.Err), e.Time); !log {
			return
		}
		level = slog.LevelWarn
	}
	if !l.log.Enabled(ctx, level) {
		return
	}
	if suppressed > 0 {
		l.log.LogAttrs(ctx, level, "apikey: verify", slog.Any("apikey", e), slog.Uint64("suppressed", suppressed))
		return
	}
	l.log.LogAttrs(ctx, level, "apikey: verify", slog.Any("apikey", e))
}

// logSampler lets through at most one log line per second per outcome of
// a failed verification, and counts the others. It is safe for concurrent
// use. The zero value is ready.
type logSampler struct {
	kinds [8]struct {
		next       atomic.Int64  // Unix nanoseconds before which lines are left out
		suppressed atomic.Uint64 // lines left out since the last one
		_          [48]byte      // one cache line each
	}
}

// allow reports whether a failure of outcome at now may be logged, and how
// many of its kind were left out before it.
func (s *logSampler) allow(outcome string, now time.Time) (bool, uint64) {
	i := 0
	switch outcome {
	case "malformed":
		i = 1
	case "invalid":
		i = 2
	case "expired":
		i = 3
	case "revoked":
		i = 4
	case "disabled":
		i = 5
	case "paused":
		i = 6
	case "suspended":
		i = 7
	}
	kind := &s.kinds[i]
	t := now.UnixNano()
	next := kind.next.Load()
	if t < next || !kind.next.CompareAndSwap(next, t+int64(time.Second)) {
		kind.suppressed.Add(1)
		return false, 0
	}
	return true, kind.suppressed.Swap(0)
}

// outcomeOf names the outcome of a verification for Metrics.Verified.
func outcomeOf(err error) string {
	switch err {
	case nil:
		return "ok"
	case ErrMalformed:
		return "malformed"
	case ErrInvalid:
		return "invalid"
	case ErrExpired:
		return "expired"
	case ErrRevoked:
		return "revoked"
	case ErrDisabled:
		return "disabled"
	case ErrPaused:
		return "paused"
	case ErrSuspended:
		return "suspended"
	}
	switch {
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrRevoked):
		return "revoked"
	case errors.Is(err, ErrDisabled):
		return "disabled"
	case errors.Is(err, ErrPaused):
		return "paused"
	case errors.Is(err, ErrSuspended):
		return "suspended"
	}
	return "unavailable"
}
