// Package leak answers reports of leaked API keys, so that a key pushed to
// a public repository stops working within seconds of the push. It has two
// handlers.
//
//   - GitHub receives GitHub's secret scanning partner alerts. GitHub POSTs
//     the tokens of your format it finds in public repositories, gists,
//     issues and npm packages, signed with ECDSA P-256. The handler checks
//     the signature, revokes (or disables) the key of each token and
//     answers GitHub's feedback labels.
//   - Reports is a public "report a leaked key" endpoint like GitHub's
//     POST /credentials/revoke. Anyone who finds tokens may submit them.
//     Those of a key are revoked, and the answer is 202 whatever matched.
//
// Mounting both takes a few lines.
//
//	gh, err := leak.NewGitHub(m, leak.GitHubOptions{}) // GitHub's public keys, revoke
//	if err != nil { ... }
//	reports, err := leak.NewReports(m, leak.ReportsOptions{})
//	if err != nil { ... }
//	defer reports.Close(ctx) // finishes the reports accepted
//	mux.Handle("POST /github/secret-scanning", gh)
//	mux.Handle("POST /credentials/revoke", reports)
//
// Both act through apikey.Manager.Leaked. The key is found whatever its
// state and revoked at most once, so a repeated report writes nothing. The
// change reaches every instance through the Manager's Notifier. Each
// report is recorded as the event "leak" of the Manager's audit log, with
// the URL where the token was found. Registering the token format with
// GitHub's partner program is described in docs/leaks.md.
//
// The handlers are safe for concurrent use.
package leak

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/gokeys/apikey"
)

// Action is what is done to the key of a leaked token.
type Action string

// The actions. The zero Action is Revoke.
const (
	// Revoke revokes the key, for good (the default).
	Revoke Action = "revoke"
	// Disable disables the key (apikey.Manager.Disable), which the
	// operator can enable again.
	Disable Action = "disable"
	// Report changes nothing. The leak is only recorded (and told to
	// OnLeak).
	Report Action = "report"
)

// check returns a, Revoke for the zero Action, or an error wrapping
// apikey.ErrInvalidOptions.
func (a Action) check() (Action, error) {
	switch a {
	case "":
		return Revoke, nil
	case Revoke, Disable, Report:
		return a, nil
	}
	return "", fmt.Errorf("%w: leak: unknown Action %q", apikey.ErrInvalidOptions, string(a))
}

// Leak is a leaked token that matched a key, as OnLeak hears of it.
type Leak struct {
	// Key is the key as it was found, before Action. Its RevokedAt and
	// Disabled say what it already was.
	Key *apikey.Key
	// URL is where the token was found, as GitHub sends it (possibly
	// empty). It is empty for Reports.
	URL string
	// Source is where GitHub found the token ("content", "commit",
	// "issue_comment", ...), or "report" for Reports.
	Source string
	// Action is what was done to the key.
	Action Action
}

// Changed reports whether the report changed the key, which was not
// revoked (nor, for Disable, disabled) when it was found. A repeated
// report of the same token changes nothing.
func (l Leak) Changed() bool {
	switch l.Action {
	case Revoke:
		return l.Key.RevokedAt.IsZero()
	case Disable:
		return l.Key.RevokedAt.IsZero() && !l.Key.Disabled
	}
	return false
}

// tell calls onLeak, if set, turning a panic into a logged error.
func tell(ctx context.Context, onLeak func(context.Context, Leak), l Leak, log *slog.Logger) {
	if onLeak == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil && log != nil {
			log.LogAttrs(ctx, slog.LevelError, "leak: OnLeak panicked", slog.String("key_id", l.Key.ID), slog.Any("panic", r))
		}
	}()
	onLeak(ctx, l)
}

// retryAfter renders a wait as whole seconds for Retry-After, at least 1.
func retryAfter(d time.Duration) string {
	return fmt.Sprint(max(int64((d+time.Second-1)/time.Second), 1))
}
