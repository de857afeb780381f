package apikey

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"
)

// Pause pauses the key id on its owner's behalf. Verifications fail with
// ErrPaused until Unpause. Pausing is the owner's. Disable is the
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
// revoked. Revoking one key of a chain revokes only that key. A
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
			m.events.emit(ctx, event{Type: eventRevoke, KeyID: k.ID, Owner: k.Owner, Time: now})
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
			m.events.emit(ctx, event{Type: eventPurge, Time: before})
		}
		if len(ids) < purgeBatch {
			return n, nil
		}
	}
}

// purgeBatch is the most keys one Purger.Purge call deletes.
const purgeBatch = 500

// maxOwnerPasses bounds the passes of RevokeOwner.
const maxOwnerPasses = 64

// changed forgets what m knows about key id after a write, and tells the
// other Managers of the fleet (see Notifier).
func (m *Manager) changed(ctx context.Context, id string) {
	m.cache.invalidate(id)
	m.fleet.publish(ctx, id)
}

// Update changes the key id with change, which receives a copy of the
// stored record and may set Name, Scopes, Plan, Metadata, ExpiresAt,
// Limits and AllowedIPs. A change to any other field is refused with
// ErrInvalidOptions.
// Bad values give an *InputError (matching ErrInvalidInput). Bad values
// are values beyond the input limits (see MaxNameLength), a plan not in
// Options.Plans and scopes outside the customer's ceiling. So are a plan
// other than the one stored for the key's customer (change that with
// SetCustomer), new IP ranges outside the customer's, and an expiry
// beyond Options.MaxKeyLifetime. An error
// returned by change is returned as it is, and nothing is written.
//
// The write is conditional on the record not having changed since it was
// read (Key.Revision). On a lost race, change runs again on the new record,
// up to a bounded number of attempts. After them the error wraps
// ErrConflict. So Update never undoes a concurrent Revoke, Rotate, Disable
// or Update. Nothing changes a revoked key. Update, Disable, Enable, Pause
// and Unpause refuse it with ErrRevoked and record nothing. An expired key
// stays expired, and moving its expiry gives ErrExpired. A rotated key's
// expiry, the end of its grace period, can be moved earlier but not
// later. Update drops m's cache entry of the key and returns the updated
// key.
func (m *Manager) Update(ctx context.Context, id string, change func(*Key) error) (*Key, error) {
	if change == nil {
		return nil, fmt.Errorf("%w: nil change", ErrInvalidOptions)
	}
	return m.update(ctx, id, eventUpdate, func(k *Key) error {
		before := k.Clone()
		if err := change(k); err != nil {
			return err
		}
		return m.validChange(ctx, before, k)
	})
}

// Disable suspends the key id. Verifications fail with ErrDisabled (which
// the middleware answers exactly like an invalid key) until Enable.
// Disabling is the operator's. Pause is the owner's. It writes through
// the same conditional update as Update, and a revoked key gives
// ErrRevoked. It returns the updated key.
func (m *Manager) Disable(ctx context.Context, id string) (*Key, error) {
	return m.update(ctx, id, eventDisable, func(k *Key) error { k.Disabled = true; return nil })
}

// Enable lifts Disable, not Pause. A revoked key gives ErrRevoked, and it
// stays revoked. It returns the updated key.
func (m *Manager) Enable(ctx context.Context, id string) (*Key, error) {
	return m.update(ctx, id, eventEnable, func(k *Key) error { k.Disabled = false; return nil })
}

// update applies change to key id with a conditional Store.Update,
// retrying on ErrConflict, and reports the change as an event of type t.
func (m *Manager) update(ctx context.Context, id string, t eventType, change func(*Key) error) (*Key, error) {
	op := string(t)
	var err error
	for range maxAttempts {
		var k *Key
		if k, err = m.get(ctx, id); err != nil {
			return nil, storeErr(op, err)
		}
		if !k.RevokedAt.IsZero() { // nothing changes a revoked key
			return nil, fmt.Errorf("apikey: %s: %w", op, ErrRevoked)
		}
		before := m.hooks.snapshot(k)
		if err := change(k); err != nil {
			return nil, err
		}
		k.ExpiresAt = UTCMicro(k.ExpiresAt)
		if err = m.store.Update(m.hooks.updated(ctx, t, before, k, m.now()), k); err == nil {
			m.changed(ctx, id)
			m.events.emit(ctx, event{Type: t, KeyID: id, Owner: k.Owner, Time: m.now()})
			return k.Clone(), nil
		}
		if !isConflict(err) {
			break
		}
	}
	m.cache.invalidate(id) // a failed write may still have landed
	return nil, storeErr(op, err)
}

// validChange refuses changes Update does not allow, and checks the
// allowed fields that changed against the input limits.
func (m *Manager) validChange(ctx context.Context, before, after *Key) error {
	probe := after.Clone()
	probe.Name, probe.Scopes, probe.Plan, probe.Metadata = before.Name, before.Scopes, before.Plan, before.Metadata
	probe.ExpiresAt, probe.Limits, probe.AllowedIPs = before.ExpiresAt, before.Limits, before.AllowedIPs
	if !reflect.DeepEqual(probe, before) {
		return fmt.Errorf("%w: Update may change only Name, Scopes, Plan, Metadata, ExpiresAt, Limits and AllowedIPs", ErrInvalidOptions)
	}
	if err := m.validIPChange(ctx, before, after); err != nil {
		return err
	}
	scopes := !slices.Equal(after.Scopes, before.Scopes)
	plan := after.Plan != before.Plan && after.Plan != "" && m.custs != nil && m.custs.store != nil
	if m.custs != nil && (scopes || plan) {
		c, err := m.custs.read(ctx, after.Customer())
		if err != nil {
			return storeErr("update", err)
		}
		if scopes && !within(after, c) {
			return &InputError{Field: "scopes", Reason: "outside the customer's scopes"}
		}
		// As at Issue: the plan of a customer with a record is his.
		if plan && c.Revision != 0 && c.Plan != after.Plan {
			return &InputError{Field: "plan", Reason: "the plan is the customer's: change it on the customer"}
		}
	}
	if after.Name != before.Name {
		if err := validText("name", after.Name, MaxNameLength); err != nil {
			return err
		}
	}
	if after.Plan != before.Plan {
		if err := validPlan(m.plans, after.Plan); err != nil {
			return err
		}
	}
	if !slices.Equal(after.Scopes, before.Scopes) {
		if err := validScopes(after.Scopes); err != nil {
			return err
		}
	}
	if !maps.Equal(after.Metadata, before.Metadata) {
		if err := validMetadata(after.Metadata); err != nil {
			return err
		}
	}
	if !slices.Equal(after.Limits, before.Limits) {
		if err := validKeyLimits(after.Limits); err != nil {
			return err
		}
	}
	if !after.ExpiresAt.Equal(before.ExpiresAt) {
		if err := validExpiry(after.ExpiresAt); err != nil {
			return err
		}
		// A rotated key's expiry is the end of its grace period: it may
		// end sooner, never later (nor never).
		if before.RotatedTo != "" && (after.ExpiresAt.IsZero() || after.ExpiresAt.After(before.ExpiresAt)) {
			return &InputError{Field: "expires_at", Reason: "the key was rotated: its grace period can be shortened, not extended"}
		}
		// An expired key stays expired.
		if before.Expired(m.now()) {
			return fmt.Errorf("apikey: update: %w", ErrExpired)
		}
		if m.maxLifetime > 0 && (after.ExpiresAt.IsZero() || after.ExpiresAt.Sub(before.CreatedAt) > m.maxLifetime) {
			return &InputError{Field: "expires_at", Reason: "beyond the maximum key lifetime"}
		}
	}
	return nil
}

// Revoke revokes the key with the given id, for good. No later operation
// (Update, Enable, Rotate, concurrent or not) makes it work again. It takes
// effect at once for every verification through m. Other Managers over
// the same store notice within their cache TTL, or at once with a Notifier
// (see Notifier). Revoking a revoked key is not an error. The event
// carries the owner only when it was read anyway (stores without Revoker).
func (m *Manager) Revoke(ctx context.Context, id string) error {
	now := m.now().UTC().Truncate(time.Microsecond)
	owner, _, err := m.revoke(ctx, id, now)
	if err != nil {
		m.cache.invalidate(id)
		return storeErr("revoke", err)
	}
	m.changed(ctx, id)
	m.events.emit(ctx, event{Type: eventRevoke, KeyID: id, Owner: owner, Time: now})
	return nil
}

// revoke revokes key id at now, with the store's Revoker or with a
// conditional Update retried on conflict. It returns the owner when it
// read the key, and whether it found the key already revoked.
func (m *Manager) revoke(ctx context.Context, id string, now time.Time) (owner string, already bool, err error) {
	if !storable(id) {
		return "", false, ErrNotFound
	}
	if r, ok := m.store.(Revoker); ok {
		if m.hooks == nil {
			return "", false, r.Revoke(ctx, id, now)
		}
		k, err := m.get(ctx, id) // what key.revoked describes
		if err != nil || !k.RevokedAt.IsZero() {
			return "", err == nil, err
		}
		return k.Owner, false, r.Revoke(m.hooks.revoked(ctx, k, now), id, now)
	}
	for range maxAttempts {
		var k *Key
		if k, err = m.get(ctx, id); err != nil {
			return "", false, err
		}
		if !k.RevokedAt.IsZero() {
			return k.Owner, true, nil
		}
		k.RevokedAt = now
		if err = m.store.Update(m.hooks.revoked(ctx, k, now), k); err == nil || !isConflict(err) {
			return k.Owner, false, err
		}
	}
	return "", false, err
}

// RevokeOwner revokes every key of owner (the answer to a leak) and returns
// the ids it revoked, with one event per key.
//
// It works in passes (one Revoker.RevokeOwner call, or a List of every page and a
// Revoke of each unrevoked key) and repeats them until a pass revokes
// nothing. When it returns nil, every key of owner that existed when it
// was called is revoked. So is every successor made by a Rotate that ran
// concurrently, because a rotation needs an unrevoked key and each pass
// sees the successors of the keys the previous pass revoked. And no
// rotation of a revoked key can ever succeed afterwards. A key created by a
// concurrent plain Issue that is stored after the final pass may survive.
// Revoke it, or stop issuing to the owner first. When keys of owner keep
// being created, it gives up after a bounded number of passes with an
// error wrapping ErrConflict.
func (m *Manager) RevokeOwner(ctx context.Context, owner string) ([]string, error) {
	if !storable(owner) {
		return nil, nil // no key has this owner: Issue refuses it
	}
	now := m.now().UTC().Truncate(time.Microsecond)
	var all []string
	for range maxOwnerPasses {
		ids, err := m.revokeOwnerPass(ctx, owner, now)
		for _, id := range ids {
			m.cache.invalidate(id)
		}
		if len(ids) > 0 {
			m.fleet.publish(ctx, ids...)
		}
		for _, id := range ids {
			m.events.emit(ctx, event{Type: eventRevoke, KeyID: id, Owner: owner, Time: now})
		}
		all = append(all, ids...)
		if err != nil {
			return all, storeErr("revoke owner", err)
		}
		if len(ids) == 0 {
			return all, nil
		}
	}
	return all, fmt.Errorf("apikey: revoke owner: %w: keys kept being created during %d passes", ErrConflict, maxOwnerPasses)
}

// revokeOwnerPass revokes the unrevoked keys of owner it sees and returns
// their ids.
func (m *Manager) revokeOwnerPass(ctx context.Context, owner string, now time.Time) ([]string, error) {
	if r, ok := m.store.(Revoker); ok && m.hooks == nil { // with events, key by key: each with its key.revoked
		return r.RevokeOwner(ctx, owner, now)
	}
	var ids []string
	for opts := (ListOptions{Size: MaxPageSize}); ; {
		page, err := m.store.List(ctx, owner, opts)
		if err != nil {
			return ids, err
		}
		for _, k := range page {
			if !k.RevokedAt.IsZero() {
				continue
			}
			_, already, err := m.revoke(ctx, k.ID, now)
			switch {
			case errors.Is(err, ErrNotFound): // deleted meanwhile
			case err != nil:
				return ids, err
			case !already:
				ids = append(ids, k.ID)
			}
		}
		if len(page) < opts.PageSize() {
			return ids, nil
		}
		opts.After = page[len(page)-1].Cursor()
	}
}

// Delete removes the key with the given id from the store. Prefer Revoke,
// which keeps the record for audits. Its event carries no owner.
func (m *Manager) Delete(ctx context.Context, id string) error {
	if !storable(id) {
		return fmt.Errorf("apikey: delete: %w", ErrNotFound)
	}
	err := m.store.Delete(m.hooks.deleted(ctx, id), id)
	if err != nil {
		m.cache.invalidate(id)
		return storeErr("delete", err)
	}
	m.changed(ctx, id)
	m.events.emit(ctx, event{Type: eventDelete, KeyID: id, Time: m.now()})
	return nil
}

// validIPChange checks the ranges of a key that Update changes: valid,
// and within the customer's. An Update that leaves them as they are is
// not refused for ranges the customer lost since they were set.
func (m *Manager) validIPChange(ctx context.Context, before, after *Key) error {
	if slices.Equal(after.AllowedIPs, before.AllowedIPs) {
		return nil
	}
	if err := validIPs(&after.AllowedIPs); err != nil {
		return err
	}
	if len(after.AllowedIPs) == 0 || m.custs == nil {
		return nil
	}
	c, err := m.custs.read(ctx, after.Customer())
	if err != nil {
		return storeErr("update", err)
	}
	if !ipsWithin(after, c) {
		return errIPsOutside()
	}
	return nil
}
