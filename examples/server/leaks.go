package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/leak"
)

// leaks are the two ways a leaked key reaches the service and is revoked.
// The first is GitHub's secret scanning alerts at POST
// /github/secret-scanning, signed by GitHub. Register the route and the
// sk_live_ format with GitHub's partner program. The second is anyone's
// report at POST /credentials/revoke. It is answered 202 whatever matched,
// and takes 60 requests an hour per address. Each
// revocation reaches every instance through the Notifier, and each leak is
// recorded as the event "leak" of the Manager's log, with its URL.
type leaks struct {
	github  *leak.GitHub
	reports *leak.Reports
}

// newLeaks builds both endpoints for m; keysURL is where GitHub's public
// keys are read (-github-keys-url).
func newLeaks(m *apikey.Manager, keysURL string, proxies *ipallow.Proxies, log *slog.Logger) (*leaks, error) {
	// Where a real service would email the owner; here, a log line.
	notify := func(ctx context.Context, l leak.Leak) {
		if log != nil && l.Changed() {
			log.LogAttrs(ctx, slog.LevelInfo, "notify the owner: a key of theirs leaked and was revoked",
				slog.String("owner", l.Key.Owner), slog.String("key_id", l.Key.ID), slog.String("url", l.URL))
		}
	}
	gh, err := leak.NewGitHub(m, leak.GitHubOptions{KeysURL: keysURL, OnLeak: notify, Logger: log})
	if err != nil {
		return nil, err
	}
	ropts := leak.ReportsOptions{OnLeak: notify, Logger: log}
	if proxies != nil { // rate-limit the client the trusted proxies name, not the proxy
		ropts.ClientAddr = func(r *http.Request) string { return proxies.ClientAddr(r).String() }
	}
	reports, err := leak.NewReports(m, ropts)
	if err != nil {
		return nil, err
	}
	return &leaks{github: gh, reports: reports}, nil
}

func (l *leaks) mount(mux *http.ServeMux) {
	mux.Handle("POST /github/secret-scanning", l.github)
	mux.Handle("POST /credentials/revoke", l.reports)
}

// close finishes the reports accepted.
func (l *leaks) close(ctx context.Context) error { return l.reports.Close(ctx) }
