package apikey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"unicode/utf8"
)

// Identify returns the stored key whose digest matches token, whatever
// the key's state. A revoked, disabled, paused, expired or rotated key is
// returned like a usable one. It is the lookup of a leak response (see
// Leaked), which must recognise a token as a key of this store for as long
// as its record exists. Use Verify to authenticate a request.
//
// A token that does not parse fails with ErrMalformed, before any store
// access. An unknown id, a wrong secret and a key issued under another of
// the accepted prefixes fail with ErrInvalid, at the same cost (one store
// read and one constant-time digest comparison). A store or hasher failure
// wraps ErrUnavailable. Identify reads the store every time, never the
// cache. It records no use and logs nothing.
func (m *Manager) Identify(ctx context.Context, token string) (*Key, error) {
	if len(token) > MaxTokenLength {
		return nil, ErrMalformed
	}
	t, err := m.format.Parse(token)
	if err != nil {
		return nil, err
	}
	k, err := safeGet(ctx, m.store.Get, t.ID)
	switch {
	case errors.Is(err, ErrNotFound):
		k = nil // compared with the dummy digest, the same work as a wrong secret
	case err != nil:
		return nil, fmt.Errorf("apikey: identify: %w: %w", ErrUnavailable, err)
	}
	if err := m.digests.check(t, k); err != nil {
		return nil, err
	}
	if k.Prefix != t.Prefix { // a key is only what it was issued as
		return nil, ErrInvalid
	}
	return k, nil
}

// The actions of Leaked.
const (
	leakRevoke  = "revoke"
	leakDisable = "disable"
	leakReport  = "report"
)

// maxLeakURL is the most bytes of a leak's URL kept in the audit log.
const maxLeakURL = 2048

// eventLeak is the audit event of Leaked.
const eventLeak eventType = "leak"

// Leaked answers the report that token was found where others can read
// it, at url (empty when unknown). It finds the key whose digest matches
// token, whatever its state (see Identify), and applies action. "revoke"
// (or "") revokes the key, "disable" disables it (see Disable), and
// "report" changes nothing. A key already revoked (or, for "disable",
// already disabled) is left alone, so a repeated report writes nothing.
// Revoke and Disable publish the change to every instance through the
// Notifier.
//
// Every report of a key is recorded in the audit log (Options.Logger) as
// the event "leak" at Info level, with key_id, owner, url, action and
// changed (whether this report changed the key). The url is cut to 2,048
// bytes, and any token in it is replaced by its hint. This event is the
// one place where a leak is announced to whatever listens to the
// Manager's events.
//
// Leaked returns the key as it was found, before the action. Its RevokedAt
// and Disabled say what the key already was. A token of no key fails like
// Identify (ErrMalformed, ErrInvalid) and is not recorded. A store failure
// wraps ErrUnavailable, and the report may then be made again, since it is
// idempotent. An unknown action gives ErrInvalidOptions.
func (m *Manager) Leaked(ctx context.Context, token, url, action string) (*Key, error) {
	switch action {
	case "":
		action = leakRevoke
	case leakRevoke, leakDisable, leakReport:
	default:
		return nil, fmt.Errorf("%w: leak action %q: want revoke, disable or report", ErrInvalidOptions, action)
	}
	k, err := m.Identify(ctx, token)
	if err != nil {
		return nil, err
	}
	changed := false
	switch {
	case action == leakRevoke && k.RevokedAt.IsZero():
		err = m.Revoke(ctx, k.ID)
		changed = err == nil
	case action == leakDisable && k.RevokedAt.IsZero() && !k.Disabled:
		_, err = m.Disable(ctx, k.ID)
		changed = err == nil
	}
	// A key revoked or deleted since it was read needs nothing more.
	if err != nil && !errors.Is(err, ErrRevoked) && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	m.events.leak(ctx, leakEvent{KeyID: k.ID, Owner: k.Owner, URL: clip(m.format.Redact(url), maxLeakURL),
		Action: action, Changed: changed})
	return k, nil
}

// leak writes the event of one report of a leaked key, at Info level.
func (l *eventLog) leak(ctx context.Context, e leakEvent) {
	if l.log != nil {
		l.log.LogAttrs(ctx, slog.LevelInfo, "apikey: "+string(eventLeak), slog.Any("apikey", e))
	}
}

// leakEvent is the audit event of one report of a leaked key. It has the
// fields of an event, where the token was found and what was done.
type leakEvent struct {
	KeyID, Owner string
	// URL is where the token was found. It is empty when unknown.
	URL string
	// Action is revoke, disable or report.
	Action string
	// Changed says whether this report changed the key. It is false when
	// the key was revoked (or disabled) already, and for the action report.
	Changed bool
}

// LogValue renders the event for log/slog, in the group of every event.
func (e leakEvent) LogValue() slog.Value {
	return slog.GroupValue(slog.String("event", string(eventLeak)), slog.String("key_id", e.KeyID),
		slog.String("owner", e.Owner), slog.String("url", e.URL), slog.String("action", e.Action),
		slog.Bool("changed", e.Changed))
}

// clip returns s cut to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
