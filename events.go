package apikey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// EventType names what happened to a key.
type EventType string

// The event types a Manager reports.
const (
	EventIssue  EventType = "issue"
	EventRotate EventType = "rotate"
	EventRevoke EventType = "revoke"
	EventDelete EventType = "delete"
	EventVerify EventType = "verify"
)

// Event reports one operation on a key to Options.OnEvent and
// Options.Logger. It carries ids, never a token, secret or digest.
type Event struct {
	// Type is what happened.
	Type EventType
	// KeyID is the key concerned; for a verification of a token that did
	// not parse, it is empty.
	KeyID string
	// Owner is the key's owner when known.
	Owner string
	// Err is the outcome of a verification: nil on success, otherwise one
	// of the sentinel errors (possibly wrapped).
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
	for _, s := range []error{ErrMalformed, ErrInvalid, ErrExpired, ErrRevoked, ErrUnavailable} {
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
	if m.onEvent != nil {
		defer func() {
			if r := recover(); r != nil && m.log != nil {
				m.log.Error("apikey: OnEvent panicked", slog.String("panic", fmt.Sprint(r)))
			}
		}()
		m.onEvent(ctx, e)
	}
}
