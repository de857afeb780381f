package apikey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gokeys/apikey/outbox"
)

// outboxStore returns m's store as an outbox, or an error wrapping
// errors.ErrUnsupported.
func (m *Manager) outboxStore(op string) (outbox.Store, error) {
	if m.hooks != nil {
		return m.hooks.store, nil
	}
	if s, ok := m.store.(outbox.Store); ok {
		return s, nil
	}
	return nil, fmt.Errorf("apikey: %s: %w: the store does not implement outbox.Store", op, errors.ErrUnsupported)
}

// Redeliver makes the event id (the webhook-id) pending again for every
// endpoint, due at once with no attempts, whether it was delivered or is
// dead, and returns for how many endpoints. An attempt under way is left
// to finish. An unknown id gives ErrNotFound. A store without an outbox
// gives an error wrapping errors.ErrUnsupported.
func (m *Manager) Redeliver(ctx context.Context, id string) (int, error) {
	s, err := m.outboxStore("redeliver")
	if err != nil {
		return 0, err
	}
	n, err := s.Redeliver(ctx, id, m.now().UTC().Truncate(time.Microsecond))
	switch {
	case errors.Is(err, outbox.ErrNotFound):
		return 0, fmt.Errorf("apikey: redeliver: %w", ErrNotFound)
	case err != nil:
		return 0, storeErr("redeliver", err)
	}
	if m.log != nil {
		m.log.LogAttrs(ctx, slog.LevelInfo, "apikey: redeliver", slog.String("event", id), slog.Int("endpoints", n))
	}
	return n, nil
}
