package apikey

import (
	"context"
	"log/slog"
	"strings"
	"sync"
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

// event reports one operation on a key to Options.Logger. There is one
// event per change (a RevokeOwner that revokes three keys reports three
// revoke events) and one per verification. Reporting costs no store
// access. It carries ids, never a token, secret or digest.
type event struct {
	// Type is what happened.
	Type eventType
	// KeyID is the key concerned. For a verification of a token that did
	// not parse, it is empty.
	KeyID string
	// Owner is the key's owner when the operation read it anyway. It is
	// always set for issue, rotate, update, disable, enable, a successful
	// verification and RevokeOwner. It is empty for delete and for a
	// revoke by a store's Revoker.
	Owner string
	// Err is the outcome of a verification. It is nil on success,
	// otherwise one of the sentinel errors (possibly wrapped). A disabled
	// key gives ErrDisabled, which the middleware answers like ErrInvalid.
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
		attrs = append(attrs, slog.String("outcome", outcomeOf(e.Err)))
	}
	return slog.GroupValue(attrs...)
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

// verify reports a verification to the Logger. Successes go at Debug level.
// Failures go at Warn level but sampled, at most one line per second per
// outcome. Each line counts the failures of its outcome left out since the
// previous one. A flood of garbage tokens thus costs no log line per
// request.
func (l *eventLog) verify(ctx context.Context, k *Key, id string, now time.Time, err error) {
	if l.log == nil {
		return
	}
	if now.IsZero() {
		now = l.now()
	}
	if k != nil {
		id = k.ID // the record's, not the token's
	} else if id != "" {
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
		if log, suppressed = l.sampler.allow(classify(e.Err), e.Time); !log {
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
	kinds [numOutcomes]struct {
		next       atomic.Int64  // Unix nanoseconds before which lines are left out
		suppressed atomic.Uint64 // lines left out since the last one
		mu         sync.Mutex    // held to start a window
		_          [40]byte      // one cache line each
	}
}

// allow reports whether a failure of outcome o at now may be logged, and
// how many of its kind were left out before it. A line left out is counted
// by the next line of its kind, never by one that began its window before
// it: the count is taken before the window moves.
func (s *logSampler) allow(o outcome, now time.Time) (bool, uint64) {
	kind := &s.kinds[o]
	t := now.UnixNano()
	// A t more than a second before next is a clock stepped back.
	within := func(next int64) bool { return t < next && next-t <= int64(time.Second) }
	if within(kind.next.Load()) {
		kind.suppressed.Add(1)
		return false, 0
	}
	kind.mu.Lock()
	if within(kind.next.Load()) { // another call started the window meanwhile
		kind.mu.Unlock()
		kind.suppressed.Add(1)
		return false, 0
	}
	n := kind.suppressed.Swap(0)
	kind.next.Store(t + int64(time.Second))
	kind.mu.Unlock()
	return true, n
}
