package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/outbox"
	"github.com/gokeys/apikey/webhook"
)

// eventJSON is an event of the outbox as the CLI prints it, without its
// payload (--payload adds it).
type eventJSON struct {
	ID          string     `json:"id"`
	Endpoint    string     `json:"endpoint"`
	Type        string     `json:"type"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	CreatedAt   time.Time  `json:"created_at"`
	DueAt       time.Time  `json:"due_at"`
	AttemptedAt *time.Time `json:"attempted_at"`
	LastError   string     `json:"last_error"`
	Payload     string     `json:"payload,omitempty"`
}

// webhookCommand runs "apikey webhook list|redeliver": the events of the
// outbox the services deliver as webhooks.
func webhookCommand(fs *flag.FlagSet) runner {
	var state string
	var limit int
	var payload bool
	fs.StringVar(&state, "state", "", "list: only the events in this state: pending, delivered or dead")
	fs.IntVar(&limit, "limit", outbox.Query{}.PageSize(), "list: the most events, newest first (at most 1000)")
	fs.BoolVar(&payload, "payload", false, "list: print each event's payload too")
	return func(ctx context.Context, s *session, args []string) error {
		if len(args) == 0 {
			return usageError("webhook needs an action: list, redeliver or secret")
		}
		action, ids := args[0], args[1:]
		switch action {
		case "list":
			return s.listEvents(ctx, ids, outbox.State(state), limit, payload)
		case "redeliver":
			return s.redeliver(ctx, ids)
		}
		return usageError(fmt.Sprintf("unknown webhook action %q: list, redeliver or secret", action))
	}
}

// webhookSecret runs "apikey webhook secret": it prints a new signing
// secret, with no database.
func (c *cli) webhookSecret(args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(c.stderr, "apikey webhook secret: takes no arguments")
		return exitUsage
	}
	fmt.Fprintln(c.stdout, webhook.NewSecret())
	return exitOK
}

// listEvents prints the newest events of the outbox, of one id when given.
func (s *session) listEvents(ctx context.Context, ids []string, state outbox.State, limit int, payload bool) error {
	switch {
	case len(ids) > 1:
		return usageError("webhook list takes at most one event id")
	case state != "" && state != outbox.Pending && state != outbox.Delivered && state != outbox.Dead:
		return usageError(fmt.Sprintf("--state %q: want pending, delivered or dead", state))
	}
	q := outbox.Query{State: state, Size: limit}
	if len(ids) == 1 {
		q.ID = ids[0]
	}
	evs, err := s.store.Events(ctx, q)
	if err != nil {
		return err
	}
	out := make([]eventJSON, len(evs))
	for i, e := range evs {
		out[i] = eventJSON{ID: e.ID, Endpoint: e.Endpoint, Type: e.Type, State: string(e.State), Attempts: e.Attempts,
			CreatedAt: e.CreatedAt, DueAt: e.DueAt, LastError: e.LastError}
		if !e.AttemptedAt.IsZero() {
			out[i].AttemptedAt = &evs[i].AttemptedAt
		}
		if payload {
			out[i].Payload = string(e.Payload)
		}
	}
	return s.print(out, func(t *table) {
		t.row("ID", "ENDPOINT", "TYPE", "STATE", "ATTEMPTS", "CREATED", "DUE", "LAST ERROR")
		for _, e := range out {
			t.row(e.ID, e.Endpoint, e.Type, e.State, strconv.Itoa(e.Attempts), when(e.CreatedAt), when(e.DueAt), e.LastError)
			if payload {
				t.row("", "", "", "", "", "", "", e.Payload)
			}
		}
		t.note(fmt.Sprintf("%d events", len(out)))
	})
}

// redeliver makes each event id pending again, due at once.
func (s *session) redeliver(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return usageError("webhook redeliver takes event ids (webhook-id, msg_...)")
	}
	type result struct {
		ID        string `json:"id"`
		Endpoints int    `json:"endpoints"`
	}
	var out []result
	var done []string
	for _, id := range ids {
		n, err := s.m.Redeliver(ctx, id)
		if err != nil {
			if len(done) > 0 {
				fmt.Fprintf(s.stderr, "apikey webhook redeliver: made pending before the failure: %s\n", strings.Join(done, " "))
			}
			if errors.Is(err, apikey.ErrNotFound) {
				fmt.Fprintf(s.stderr, "apikey webhook redeliver: no event has the id %s\n", id)
				return quiet{err}
			}
			return fmt.Errorf("%s: %w", id, err)
		}
		out, done = append(out, result{id, n}), append(done, id)
	}
	return s.print(out, func(t *table) {
		t.row("ID", "ENDPOINTS")
		for _, r := range out {
			t.row(r.ID, strconv.Itoa(r.Endpoints))
		}
		t.note(fmt.Sprintf("%d events to be delivered again at once (an attempt under way is left to finish)", len(out)))
	})
}
