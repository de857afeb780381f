package apikey

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Rotation is the result of a successful Manager.Rotate. It holds
// everything the caller needs, so that no second read (which could fail
// after the rotation happened) is required.
type Rotation struct {
	// Token is the successor's token, in its only appearance.
	Token string
	// Key is the successor.
	Key *Key
	// Previous is the old key after the rotation. It has its RotatedTo,
	// its RotatedAt and its new ExpiresAt, the end of its grace period.
	Previous *Key
}

// Rotate replaces the key id with a new one and returns the new token (its
// only appearance), the successor and the old key as changed. The successor
// inherits prefix, name, owner, scopes, plan, metadata, limits and the
// Disabled state, continues the old key's Lineage, and never outlives the
// original's expiry. The old key keeps working until now+grace (a zero
// grace stops it at once) and is refused after. During the grace period
// Key.InGrace reports true and the middleware sends Deprecation (the
// rotation time, Key.RotatedAt) and Sunset headers. The two records link to
// each other through RotatedTo and RotatedFrom.
//
// The rotation happens entirely or not at all, and of concurrent rotations
// of one key exactly one succeeds. It runs in one transaction when the store
// implements Rotator. Otherwise it works by creating the successor, then
// writing the old key with a conditional Update at the revision read, and
// deleting the successor again if that write lost. The token is returned
// only when the rotation was written. Rotating a revoked key fails with
// ErrRevoked (also when the revocation lands while Rotate runs), an expired
// one with ErrExpired, an already rotated one with ErrRotated and an unknown
// one with ErrNotFound. A negative grace gives an *InputError.
func (m *Manager) Rotate(ctx context.Context, id string, grace time.Duration) (*Rotation, error) {
	if grace < 0 {
		return nil, &InputError{Field: "grace", Reason: "negative"}
	}
	var err error
	for range maxAttempts {
		var r *Rotation
		r, err = m.rotate(ctx, id, grace)
		if err == nil {
			m.changed(ctx, id)
			m.events.emit(ctx, event{Type: eventRotate, KeyID: id, Owner: r.Previous.Owner, Time: r.Key.CreatedAt})
			return r, nil
		}
		if !errors.Is(err, errLostRace) {
			break
		}
	}
	m.cache.invalidate(id)
	if errors.Is(err, errLostRace) {
		return nil, fmt.Errorf("apikey: rotate: %w", ErrConflict)
	}
	return nil, err
}

// errLostRace reports a rotation whose conditional write lost to another
// change that does not forbid rotating (an Update, a Disable). Rotate
// tries again.
var errLostRace = errors.New("apikey: lost a race")

func (m *Manager) rotate(ctx context.Context, id string, grace time.Duration) (*Rotation, error) {
	old, err := m.get(ctx, id)
	if err != nil {
		return nil, storeErr("rotate", err)
	}
	now := m.now().UTC().Truncate(time.Microsecond)
	switch {
	case !old.RevokedAt.IsZero():
		return nil, fmt.Errorf("apikey: rotate: %w", ErrRevoked)
	case old.RotatedTo != "":
		return nil, fmt.Errorf("apikey: rotate: %w", ErrRotated)
	case old.Expired(now):
		return nil, fmt.Errorf("apikey: rotate: %w", ErrExpired)
	}
	f, ok := m.formats[old.Prefix]
	if !ok {
		return nil, fmt.Errorf("%w: rotate: the key's prefix %q is not accepted by this Manager", ErrInvalidOptions, old.Prefix)
	}
	until := now.Add(grace)
	if !old.ExpiresAt.IsZero() && old.ExpiresAt.Before(until) {
		until = old.ExpiresAt
	}
	lineage := old.Lineage
	if lineage == "" {
		lineage = old.ID
	}
	succ := &Key{
		Prefix: old.Prefix, Name: old.Name, Owner: old.Owner, Scopes: old.Scopes, Plan: old.Plan,
		Metadata: old.Metadata, Limits: old.Limits, AllowedIPs: old.AllowedIPs, Disabled: old.Disabled, Paused: old.Paused,
		CreatedAt: now, ExpiresAt: old.ExpiresAt, RotatedFrom: old.ID, Lineage: lineage,
	}
	if succ.ExpiresAt.IsZero() && m.ttl > 0 {
		succ.ExpiresAt = now.Add(m.ttl)
	}
	if succ.ExpiresAt.IsZero() && m.maxLifetime > 0 {
		succ.ExpiresAt = now.Add(m.maxLifetime)
	}
	prev := old.Clone()
	prev.ExpiresAt, prev.RotatedAt = until, now

	if r, ok := m.store.(Rotator); ok {
		save := func(ctx context.Context, k *Key) error { return r.Rotate(ctx, old, until, k) }
		token, err := m.create(ctx, f, succ, "rotate", save)
		if isConflict(err) { // the key changed since it was read: read it again
			return nil, errLostRace
		}
		if err != nil {
			return nil, err
		}
		if old.RotatedFrom != "" {
			m.changed(ctx, old.RotatedFrom) // its grace ended
		}
		prev.RotatedTo = succ.ID
		prev.Revision++
		return &Rotation{Token: token, Key: succ.Clone(), Previous: prev}, nil
	}

	token, err := m.create(ctx, f, succ, "rotate", m.store.Create)
	if err != nil {
		return nil, err
	}
	prev.RotatedTo = succ.ID
	err = m.store.Update(ctx, prev) // conditional on the revision read
	if err == nil {
		m.endGrace(ctx, old.RotatedFrom, now)
		return &Rotation{Token: token, Key: succ.Clone(), Previous: prev}, nil
	}
	// Lost or failed: the successor must not survive. Undo with a context
	// of its own: ctx may be what failed.
	undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if derr := m.store.Delete(undo, succ.ID); derr != nil && !errors.Is(derr, ErrNotFound) {
		return nil, fmt.Errorf("%w (and the successor %s could not be removed: %w)", storeErr("rotate", err), succ.ID, derr)
	}
	if !isConflict(err) {
		return nil, storeErr("rotate", err)
	}
	cur, gerr := m.get(undo, id)
	switch {
	case gerr != nil:
		return nil, storeErr("rotate", gerr)
	case !cur.RevokedAt.IsZero():
		return nil, fmt.Errorf("apikey: rotate: %w", ErrRevoked)
	case cur.RotatedTo != "":
		return nil, fmt.Errorf("apikey: rotate: %w", ErrRotated)
	}
	return nil, errLostRace
}

// endGrace ends the grace period of key id, a predecessor whose successor
// was just rotated, so that a chain keeps at most one predecessor in
// grace (a Rotator does this in its transaction).
func (m *Manager) endGrace(ctx context.Context, id string, now time.Time) {
	if id == "" {
		return
	}
	for range maxAttempts {
		k, err := m.get(ctx, id)
		if err != nil || !k.RevokedAt.IsZero() || (!k.ExpiresAt.IsZero() && !k.ExpiresAt.After(now)) {
			break
		}
		k.ExpiresAt = now
		if err = m.store.Update(ctx, k); err == nil || !isConflict(err) {
			break
		}
	}
	m.changed(ctx, id)
}
