package apikey

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Rotate replaces the key id with a new one and returns the new token (its
// only appearance) and record. The successor inherits name, owner, scopes,
// plan and metadata and never outlives the original's expiry. The old key
// keeps working until now+grace (a zero grace stops it at once) and is
// refused after; during the grace period Key.InGrace reports true and the
// middleware sends Deprecation and Sunset headers. The two records link to
// each other through RotatedTo and RotatedFrom.
//
// The rotation happens entirely or not at all: in one transaction when the
// store implements Rotator, otherwise by creating the successor, updating
// the original and deleting the successor again if that update fails.
// Rotating a revoked key fails with ErrRevoked, an expired one with
// ErrExpired, an already rotated one with ErrRotated and an unknown one
// with ErrNotFound.
func (m *Manager) Rotate(ctx context.Context, id string, grace time.Duration) (string, *Key, error) {
	if grace < 0 {
		return "", nil, fmt.Errorf("%w: negative grace period", ErrInvalidOptions)
	}
	old, err := m.store.Get(ctx, id)
	if err != nil {
		return "", nil, storeErr("rotate", err)
	}
	now := m.now().UTC().Truncate(time.Microsecond)
	switch {
	case old.Revoked(now):
		return "", nil, fmt.Errorf("apikey: rotate: %w", ErrRevoked)
	case old.RotatedTo != "":
		return "", nil, fmt.Errorf("apikey: rotate: %w", ErrRotated)
	case old.Expired(now):
		return "", nil, fmt.Errorf("apikey: rotate: %w", ErrExpired)
	}
	until := now.Add(grace)
	if !old.ExpiresAt.IsZero() && old.ExpiresAt.Before(until) {
		until = old.ExpiresAt
	}
	succ := &Key{
		Prefix: m.format.prefix, Name: old.Name, Owner: old.Owner, Scopes: old.Scopes, Plan: old.Plan,
		Metadata: old.Metadata, CreatedAt: now, ExpiresAt: old.ExpiresAt, RotatedFrom: old.ID,
	}
	if succ.ExpiresAt.IsZero() && m.ttl > 0 {
		succ.ExpiresAt = now.Add(m.ttl)
	}
	save := func(ctx context.Context, k *Key) error { return m.rotateInStore(ctx, old, until, k) }
	token, err := m.create(ctx, succ, save)
	m.cache.invalidate(id)
	if err != nil {
		return "", nil, err
	}
	m.fleet.publish(ctx, id)
	m.emit(ctx, Event{Type: EventRotate, KeyID: old.ID, Owner: old.Owner, Time: now})
	return token, succ.Clone(), nil
}

// rotateInStore stores succ and shortens old's life to until, all or
// nothing.
func (m *Manager) rotateInStore(ctx context.Context, old *Key, until time.Time, succ *Key) error {
	if r, ok := m.store.(Rotator); ok {
		return r.Rotate(ctx, old.ID, until, succ)
	}
	if err := m.store.Create(ctx, succ); err != nil {
		return err
	}
	updated := old.Clone()
	updated.ExpiresAt, updated.RotatedTo = until, succ.ID
	if err := m.store.Update(ctx, updated); err != nil {
		// Undo with a context of its own: ctx may be what failed.
		undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if derr := m.store.Delete(undo, succ.ID); derr != nil && !errors.Is(derr, ErrNotFound) {
			return fmt.Errorf("%w (and the successor %s could not be removed: %w)", err, succ.ID, derr)
		}
		return err
	}
	return nil
}

// Due returns the keys of owner, not revoked, not rotated and not expired,
// that were created more than maxAge ago: the keys a rotation policy (for
// example "every 90 days") says to rotate now.
func (m *Manager) Due(ctx context.Context, owner string, maxAge time.Duration) ([]*Key, error) {
	now := m.now()
	var due []*Key
	for opts := (ListOptions{Limit: MaxListLimit}); ; {
		page, err := m.List(ctx, owner, opts)
		if err != nil {
			return due, err
		}
		for _, k := range page {
			if !k.Revoked(now) && !k.Expired(now) && k.RotatedTo == "" && now.Sub(k.CreatedAt) > maxAge {
				due = append(due, k)
			}
		}
		if len(page) < opts.PageSize() {
			return due, nil
		}
		opts.After = page[len(page)-1].ID
	}
}
