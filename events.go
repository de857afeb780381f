package apikey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
)

// EventType names what happened to a key.
type EventType string

// The event types a Manager reports.
const (
	EventIssue   EventType = "issue"
	EventRotate  EventType = "rotate"
	EventUpdate  EventType = "update"
	EventDisable EventType = "disable"
	EventEnable  EventType = "enable"
	EventRevoke  EventType = "revoke"
	EventDelete  EventType = "delete"
	EventVerify  EventType = "verify"
)

// Event reports one operation on a key to Options.OnEvent and
// Options.Logger: one event per change (a RevokeOwner that revokes three
// keys reports three revoke events) and one per verification. Reporting
// costs no store access. It carries ids, never a token, secret or digest.
type Event struct {
	// Type is what happened.
	Type EventType
	// KeyID is the key concerned; for a verification of a token that did
	// not parse, it is empty.
	KeyID string
	// Owner is the key's owner when the operation read it anyway: always
	// for issue, rotate, update, disable, enable, a successful
	// verification and RevokeOwner; empty for delete and for a revoke by a
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
func (e Event) LogValue() slog.Value {
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
	for _, s := range []error{ErrMalformed, ErrInvalid, ErrExpired, ErrRevoked, ErrDisabled, ErrUnavailable} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "error"
}

func (m *Manager) emit(ctx context.Context, e Event) {
	if m.log != nil {
		level, msg := slog.LevelInfo, "apikey: "+string(e.Type)
		if e.Type == EventVerify {
			level = slog.LevelDebug
			if e.Err != nil {
				level = slog.LevelWarn
			}
		}
		m.log.LogAttrs(ctx, level, msg, slog.Any("apikey", e))
	}
	m.hook(ctx, e)
}

// hook calls OnEvent, if set, recovering a panic.
func (m *Manager) hook(ctx context.Context, e Event) {
	if m.onEvent == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil && m.log != nil {
			m.log.Error("apikey: OnEvent panicked", slog.String("panic", fmt.Sprint(r)))
		}
	}()
	m.onEvent(ctx, e)
}

// emitVerify reports a verification to OnEvent (every one) and to the
// Logger: successes at Debug level, failures at Warn level but sampled, at
// most one line per second per outcome, each line counting the failures
// of its outcome left out since the previous one. A flood of garbage
// tokens thus costs no log line per request.
func (m *Manager) emitVerify(ctx context.Context, k *Key, id string, now time.Time, err error) {
	if now.IsZero() {
		now = m.now()
	}
	if k == nil && id != "" {
		id = strings.Clone(id) // part of the token: keep none of it
	}
	e := Event{Type: EventVerify, KeyID: id, Err: err, Time: now}
	if k != nil {
		e.Owner = k.Owner
	}
	if m.log != nil {
		m.logVerify(ctx, e)
	}
	m.hook(ctx, e)
}

func (m *Manager) logVerify(ctx context.Context, e Event) {
	level, suppressed := slog.LevelDebug, uint64(0)
	if e.Err != nil {
		var log bool
		if log, suppressed = m.sampler.allow(outcomeOf(e.Err), e.Time); !log {
			return
		}
		level = slog.LevelWarn
	}
	if !m.log.Enabled(ctx, level) {
		return
	}
	if suppressed > 0 {
		m.log.LogAttrs(ctx, level, "apikey: verify", slog.Any("apikey", e), slog.Uint64("suppressed", suppressed))
		return
	}
	m.log.LogAttrs(ctx, level, "apikey: verify", slog.Any("apikey", e))
}

// logSampler lets through at most one log line per second per outcome of
// a failed verification, and counts the others. It is safe for concurrent
// use; the zero value is ready.
type logSampler struct {
	kinds [6]struct {
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
