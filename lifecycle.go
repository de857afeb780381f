package apikey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// issue stores the new key k of format f and returns its token. A key
// with an owner is checked against its customer: not suspended, scopes
// within the ceiling, and under the key cap. The cap is kept under
// concurrency by a conditional write of the customer record (its
// Revision) after the key is stored: of concurrent Issues that counted
// the same keys, those whose write loses remove their key and count
// again, so the cap is never exceeded; the token of a removed key never
// leaves the Manager. The record checked is the Revision the write is
// conditional on, so that a cap lowered (or a suspension set) by a
// SetCustomer that returned decides every Issue that counts after it.
// Without a cap, the record is read again once the key is stored, and a
// change that landed meanwhile removes the key and decides again.
func (m *Manager) issue(ctx context.Context, f Format, k *Key, now time.Time) (string, error) {
	if m.custs == nil {
		return m.create(ctx, f, k, "issue", m.createAnnounced)
	}
	if k.Owner == "" { // its own customer
		token, err := m.create(ctx, f, k, "issue", m.createAnnounced)
		if err != nil || k.Plan == "" || m.custs.store == nil {
			return token, err
		}
		c := &Customer{ID: k.ID, Plan: k.Plan, CreatedAt: now, UpdatedAt: now}
		if err := m.custs.store.PutCustomer(ctx, c); err != nil {
			m.undoCreate(ctx, k.ID)
			return "", storeErr("issue", err)
		}
		return token, nil
	}
	var err error
	for range maxAttempts {
		var c *Customer
		if c, err = m.custs.read(ctx, k.Owner); err != nil {
			return "", storeErr("issue", err)
		}
		if k.Plan != "" && c.Plan != k.Plan && m.custs.store != nil {
			if c.Revision != 0 {
				return "", &InputError{Field: "plan", Reason: "the plan is the customer's: change it on the customer"}
			}
			// The first key of a customer without a record sets his plan.
			c = &Customer{ID: k.Owner, Plan: k.Plan, CreatedAt: now, UpdatedAt: now}
			if err = m.custs.store.PutCustomer(ctx, c); err != nil {
				if isConflict(err) {
					continue
				}
				return "", storeErr("issue", err)
			}
			m.CustomerChanged(ctx, k.Owner)
		}
		switch {
		case c.Suspended:
			return "", fmt.Errorf("apikey: issue: %w", ErrSuspended)
		case !within(k, c):
			return "", &InputError{Field: "scopes", Reason: "outside the customer's scopes"}
		case c.MaxKeys == 0:
			token, err := m.create(ctx, f, k, "issue", m.createAnnounced)
			if err != nil {
				return "", err
			}
			// No write guards the record: read it again, so that a change
			// that landed before the key did decides this Issue.
			again, err := m.custs.read(ctx, k.Owner)
			if err == nil && !again.Suspended && within(k, again) && again.MaxKeys == 0 {
				return token, nil
			}
			m.undoCreate(ctx, k.ID)
			if err != nil {
				return "", storeErr("issue", err)
			}
			continue
		}
		cs, _ := m.store.(CustomerStore)
		var lock *Customer
		if cs != nil {
			if lock, err = m.capLock(ctx, cs, k.Owner); err != nil {
				if isConflict(err) {
					continue
				}
				return "", storeErr("issue", err)
			}
			if m.custs.store != nil && lock.Revision != c.Revision {
				continue // the record changed since it was checked: check it again
			}
		}
		n, err := m.countUsable(ctx, k.Owner, now, c.MaxKeys)
		if err != nil {
			return "", storeErr("issue", err)
		}
		if n >= c.MaxKeys {
			return "", fmt.Errorf("apikey: issue: %w (%d)", ErrTooManyKeys, c.MaxKeys)
		}
		save := m.store.Create // the write of the record below decides, and carries key.created
		if cs == nil {
			save = m.createAnnounced
		}
		token, err := m.create(ctx, f, k, "issue", save)
		if err != nil || cs == nil {
			return token, err
		}
		if err = cs.PutCustomer(m.hooks.created(ctx, k), lock); err == nil {
			return token, nil
		}
		m.undoCreate(ctx, k.ID)
		if !isConflict(err) {
			return "", storeErr("issue", err)
		}
	}
	return "", fmt.Errorf("apikey: issue: %w: the customer's keys kept changing", ErrConflict)
}

// createAnnounced stores the new key k with its key.created event.
func (m *Manager) createAnnounced(ctx context.Context, k *Key) error {
	return m.store.Create(m.hooks.created(ctx, k), k)
}

// capLock reads the stored record of customer id, whose Revision guards
// the key cap, creating an empty one when there is none (a customer
// answered by Options.Customers).
func (m *Manager) capLock(ctx context.Context, cs CustomerStore, id string) (*Customer, error) {
	c, err := cs.GetCustomer(ctx, id)
	if !errors.Is(err, ErrNotFound) {
		return c, err
	}
	now := m.now().UTC().Truncate(time.Microsecond)
	c = &Customer{ID: id, CreatedAt: now, UpdatedAt: now}
	if err := cs.PutCustomer(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

// undoCreate removes a key whose token was never handed out, revoking it
// when it cannot be removed.
func (m *Manager) undoCreate(ctx context.Context, id string) {
	undo, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := m.store.Delete(m.hooks.uncreated(undo, id), id); err != nil && !errors.Is(err, ErrNotFound) {
		if _, _, err := m.revoke(undo, id, m.now().UTC().Truncate(time.Microsecond)); err != nil {
			if m.log != nil {
				m.log.LogAttrs(undo, slog.LevelError, "apikey: a key over the customer's cap could not be removed",
					slog.String("key_id", id), slog.String("error", err.Error()))
			}
		}
	}
}

// countUsable counts the usable rotation chains of owner at now (keys not
// revoked, not expired, not rotated), stopping at max.
func (m *Manager) countUsable(ctx context.Context, owner string, now time.Time, max int) (int, error) {
	n := 0
	for opts := (ListOptions{Limit: MaxListLimit, UsableAt: now}); ; {
		page, err := m.store.List(ctx, owner, opts)
		if err != nil {
			return 0, err
		}
		for _, k := range page {
			if k.RotatedTo == "" && k.Usable(now) {
				n++
			}
		}
		if n >= max || len(page) < opts.PageSize() {
			return n, nil
		}
		opts.After = page[len(page)-1].Cursor()
	}
}

// Pause pauses the key id on its owner's behalf: verifications fail with
// ErrPaused until Unpause. Pausing is the owner's; Disable is the
// operator's, and Unpause never lifts it. It returns the updated key.
func (m *Manager) Pause(ctx context.Context, id string) (*Key, error) {
	return m.update(ctx, id, eventPause, func(k *Key) error { k.Paused = true; return nil })
}

// Unpause lifts Pause. A disabled key stays disabled.
func (m *Manager) Unpause(ctx context.Context, id string) (*Key, error) {
	return m.update(ctx, id, eventResume, func(k *Key) error { k.Paused = false; return nil })
}

// RevokeChain revokes the key id and every key of its rotation chain (its
// predecessors still in grace and its successors), and returns the ids it
// revoked. Revoking one key of a chain revokes only that key: a
// predecessor in grace keeps working until its grace ends, and a
// successor keeps working. After a leak, revoke the chain. A successor
// made by a rotation that runs concurrently is revoked too, since a
// revoked key can never be rotated afterwards.
func (m *Manager) RevokeChain(ctx context.Context, id string) ([]string, error) {
	k, err := m.get(ctx, id)
	if err != nil {
		return nil, storeErr("revoke chain", err)
	}
	for seen := 0; k.RotatedFrom != "" && seen < maxChain; seen++ {
		prev, err := m.get(ctx, k.RotatedFrom)
		if errors.Is(err, ErrNotFound) {
			break // deleted or purged
		}
		if err != nil {
			return nil, storeErr("revoke chain", err)
		}
		k = prev
	}
	now := m.now().UTC().Truncate(time.Microsecond)
	var ids []string
	for seen := 0; k != nil && seen < maxChain; seen++ {
		_, already, err := m.revoke(ctx, k.ID, now)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return ids, storeErr("revoke chain", err)
		}
		if err == nil && !already && k.RevokedAt.IsZero() {
			ids = append(ids, k.ID)
			m.changed(ctx, k.ID)
			m.emit(ctx, event{Type: eventRevoke, KeyID: k.ID, Owner: k.Owner, Time: now})
		}
		// Read again: a rotation that landed before the revocation set
		// RotatedTo, and none can land after it.
		next := ""
		if cur, err := m.get(ctx, k.ID); err == nil {
			next = cur.RotatedTo
		} else if !errors.Is(err, ErrNotFound) {
			return ids, storeErr("revoke chain", err)
		}
		k = nil
		if next != "" {
			if k, err = m.get(ctx, next); errors.Is(err, ErrNotFound) {
				k = nil
			} else if err != nil {
				return ids, storeErr("revoke chain", err)
			}
		}
	}
	return ids, nil
}

// maxChain bounds the keys RevokeChain follows.
const maxChain = 10_000

// Purge deletes the keys revoked or expired more than retention ago, in
// batches, and returns how many it deleted. It needs a store that
// implements Purger. Deleted keys are answered ErrInvalid afterwards.
func (m *Manager) Purge(ctx context.Context, retention time.Duration) (int, error) {
	p, ok := m.store.(Purger)
	if !ok {
		return 0, fmt.Errorf("apikey: purge: %w: the store does not implement Purger", errors.ErrUnsupported)
	}
	if retention < 0 {
		return 0, &InputError{Field: "retention", Reason: "negative"}
	}
	before := m.now().UTC().Truncate(time.Microsecond).Add(-retention)
	n := 0
	for {
		ids, err := p.Purge(ctx, before, purgeBatch)
		for _, id := range ids {
			m.cache.invalidate(id)
		}
		n += len(ids)
		if err != nil {
			return n, storeErr("purge", err)
		}
		if len(ids) > 0 {
			m.emit(ctx, event{Type: eventPurge, Time: before})
		}
		if len(ids) < purgeBatch {
			return n, nil
		}
	}
}

// purgeBatch is the most keys one Purger.Purge call deletes.
const purgeBatch = 500
