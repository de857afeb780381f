package memstore

import (
	"bytes"
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/outbox"
)

var _ outbox.Store = (*Store)(nil)

// eventKey identifies an event of the outbox.
type eventKey struct{ id, endpoint string }

// events is the outbox of a Store, under its own lock. A write that
// carries a Change takes it after the lock of keys or customers, so that
// the change and its events are one step for every reader.
type events struct {
	mu   sync.Mutex
	rows map[eventKey]*outbox.Event
}

// change returns the Change ctx carries, checked, or nil.
func change(ctx context.Context) (*outbox.Change, error) {
	c := outbox.ChangeFrom(ctx)
	if c == nil {
		return nil, nil
	}
	for i := range c.Append {
		if err := c.Append[i].Validate(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// apply cancels and appends c's events; nil-safe.
func (s *Store) apply(c *outbox.Change) {
	if c == nil {
		return
	}
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	for _, id := range c.Cancel {
		for k, e := range s.out.rows {
			if k.id == id && e.State == outbox.Pending && e.Claim == "" {
				delete(s.out.rows, k)
			}
		}
	}
	s.appendLocked(c.Append)
}

func (s *Store) appendLocked(evs []outbox.Event) {
	if s.out.rows == nil {
		s.out.rows = map[eventKey]*outbox.Event{}
	}
	for _, e := range evs {
		k := eventKey{e.ID, e.Endpoint}
		if _, ok := s.out.rows[k]; ok {
			continue
		}
		e.Payload = bytes.Clone(e.Payload)
		e.CreatedAt = apikey.UTCMicro(e.CreatedAt)
		e.DueAt = apikey.UTCMicro(e.DueAt)
		if e.DueAt.IsZero() {
			e.DueAt = e.CreatedAt
		}
		e.State, e.Attempts, e.AttemptedAt, e.LastError, e.Claim, e.LeaseUntil = outbox.Pending, 0, time.Time{}, "", "", time.Time{}
		s.out.rows[k] = &e
	}
}

// copyEvent returns a copy of e the caller may change.
func copyEvent(e *outbox.Event) outbox.Event {
	c := *e
	c.Payload = bytes.Clone(e.Payload)
	return c
}

// Append implements outbox.Store.
func (s *Store) Append(ctx context.Context, evs []outbox.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for i := range evs {
		if err := evs[i].Validate(); err != nil {
			return err
		}
	}
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	s.appendLocked(evs)
	return nil
}

// Claim implements outbox.Store.
func (s *Store) Claim(ctx context.Context, endpoint, claim string, now, until time.Time, limit int) ([]outbox.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now, until = apikey.UTCMicro(now), apikey.UTCMicro(until)
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	var due []*outbox.Event
	for _, e := range s.out.rows {
		if e.Endpoint == endpoint && e.State == outbox.Pending && !e.DueAt.After(now) && (e.Claim == "" || !e.LeaseUntil.After(now)) {
			due = append(due, e)
		}
	}
	slices.SortFunc(due, func(a, b *outbox.Event) int {
		return cmp.Or(a.DueAt.Compare(b.DueAt), strings.Compare(a.ID, b.ID))
	})
	out := []outbox.Event{}
	for _, e := range due[:min(len(due), max(limit, 0))] {
		e.Claim, e.LeaseUntil = claim, until
		e.Attempts++
		out = append(out, copyEvent(e))
	}
	return out, nil
}

// Settle implements outbox.Store.
func (s *Store) Settle(ctx context.Context, r outbox.Result) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	e := s.out.rows[eventKey{r.ID, r.Endpoint}]
	if e == nil || r.Claim == "" || e.Claim != r.Claim {
		return outbox.ErrLost
	}
	e.State, e.AttemptedAt, e.LastError = r.State, apikey.UTCMicro(r.At), outbox.Trunc(r.Error)
	if r.State == outbox.Pending {
		e.DueAt = apikey.UTCMicro(r.Next)
	}
	e.Claim, e.LeaseUntil = "", time.Time{}
	return nil
}

// Redeliver implements outbox.Store.
func (s *Store) Redeliver(ctx context.Context, id string, at time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	at = apikey.UTCMicro(at)
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	found, n := false, 0
	for k, e := range s.out.rows {
		if k.id != id {
			continue
		}
		found = true
		if e.Claim != "" && e.LeaseUntil.After(at) {
			continue // an attempt is under way
		}
		e.State, e.Attempts, e.LastError, e.DueAt, e.Claim, e.LeaseUntil = outbox.Pending, 0, "", at, "", time.Time{}
		n++
	}
	if !found {
		return 0, outbox.ErrNotFound
	}
	return n, nil
}

// Events implements outbox.Store.
func (s *Store) Events(ctx context.Context, q outbox.Query) ([]outbox.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.out.mu.Lock()
	var sel []*outbox.Event
	for k, e := range s.out.rows {
		if (q.ID == "" || k.id == q.ID) && (q.State == "" || e.State == q.State) {
			sel = append(sel, e)
		}
	}
	slices.SortFunc(sel, func(a, b *outbox.Event) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(a.ID, b.ID), strings.Compare(a.Endpoint, b.Endpoint))
	})
	out := make([]outbox.Event, 0, min(len(sel), q.PageSize()))
	for _, e := range sel[:min(len(sel), q.PageSize())] {
		out = append(out, copyEvent(e))
	}
	s.out.mu.Unlock()
	return out, nil
}

// PurgeEvents implements outbox.Store.
func (s *Store) PurgeEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	before = apikey.UTCMicro(before)
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	n := 0
	for k, e := range s.out.rows {
		if n >= limit {
			break
		}
		if e.State != outbox.Pending && e.AttemptedAt.Before(before) {
			delete(s.out.rows, k)
			n++
		}
	}
	return n, nil
}
