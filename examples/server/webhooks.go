package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/outbox"
	"github.com/gokeys/apikey/webhook"
)

// webhooks sends the Manager's events to -webhook-url, signed with
// -webhook-secret as the Standard Webhooks specification says. The events
// are key.created, key.rotated, key.revoked, key.disabled, key.enabled,
// key.leaked (with the URL where GitHub found the token), key.expiring (7
// days ahead), customer.suspended, customer.credits_low and
// customer.quota_exhausted. The Manager writes each event in the
// database's outbox in the same transaction as its change. Every instance
// delivers them, none twice at once, retrying with backoff (1 s, 5 s, 30
// s, ...). So an event survives a crash of any instance and an endpoint
// that is down. README.md shows a receiver that verifies the signatures.
type webhooks struct {
	d    *webhook.Dispatcher
	stop context.CancelFunc
	done sync.WaitGroup
}

// outboxPolicy is what the Manager writes with -webhook-url: every event,
// for the one endpoint.
func outboxPolicy(f flags) *outbox.Policy {
	if f.webhookURL == "" {
		return nil
	}
	return &outbox.Policy{}
}

// startWebhooks starts delivering the events of store to -webhook-url, or
// does nothing without it.
func startWebhooks(store apikey.Store, f flags, log *slog.Logger) (*webhooks, error) {
	if f.webhookURL == "" {
		if f.webhookSecret != "" {
			return nil, errors.New("-webhook-secret needs -webhook-url")
		}
		return nil, nil
	}
	if f.webhookSecret == "" {
		return nil, errors.New("-webhook-url needs -webhook-secret (whsec_ and the base64 of 24 to 64 random bytes; apikey webhook secret prints one)")
	}
	os, ok := store.(outbox.Store)
	if !ok {
		return nil, errors.New("the store keeps no outbox")
	}
	d, err := webhook.New(os, webhook.Options{
		Endpoints: []webhook.Endpoint{{URL: f.webhookURL, Secrets: []string{f.webhookSecret}}},
		Logger:    log,
	})
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	w := &webhooks{d: d, stop: stop}
	w.done.Go(func() { _ = d.Run(ctx) })
	return w, nil
}

// close stops the deliveries; the attempts under way are released to the
// other instances (or to this one's next start).
func (w *webhooks) close() {
	if w != nil {
		w.stop()
		w.done.Wait()
	}
}
