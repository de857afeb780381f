package apikey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/gokeys/apikey/limits"
)

// IssueParams describes a key to issue. All fields are optional. The zero
// value issues a key under Options.Prefix with no owner, scopes, plan or
// metadata, expiring after Options.DefaultTTL (never by default).
type IssueParams struct {
	// Name is a human-readable label.
	Name string
	// Owner identifies the user or service the key belongs to.
	Owner string
	// Scopes are the permissions granted. Each must be a non-empty RFC
	// 6749 scope token (printable ASCII without spaces, '"' or '\').
	Scopes []string
	// Plan names the key's rate-limit tier.
	Plan string
	// Metadata is copied onto the key.
	Metadata map[string]string
	// ExpiresAt, if set, is when the key stops working. It must be in the
	// future. It wins over TTL.
	ExpiresAt time.Time
	// Prefix is the token prefix. It is Options.Prefix when empty, else one
	// of Options.Prefixes.
	Prefix string
	// Limits are the key's own limits (see Key.Limits).
	Limits []limits.Limit
	// AllowedIPs, if set, restrict the key to these IP ranges, which must
	// lie within its customer's (see Key.AllowedIPs).
	AllowedIPs []netip.Prefix
	// TTL, if positive, is the key's lifetime. A negative TTL is refused
	// with an *InputError. Without ExpiresAt and TTL,
	// Options.DefaultTTL applies.
	TTL time.Duration
}

// Issue creates a key and returns its token and record. The token is
// returned exactly once, and only its digest is stored. Show it to the user
// and forget it. Bad input gives an *InputError (matching ErrInvalidInput).
// Bad input is input beyond the documented limits (see MaxNameLength), an
// unknown plan (when Options.Plans is set), an invalid limit or a prefix
// the Manager does not accept. So is an expiry in the past or beyond
// Options.MaxKeyLifetime, scopes outside the customer's ceiling, or IP
// ranges that are invalid or outside the customer's. A key
// with an owner is refused with ErrSuspended while its customer is
// suspended, and with ErrTooManyKeys at the customer's key cap (see
// Customer).
func (m *Manager) Issue(ctx context.Context, p IssueParams) (string, *Key, error) {
	now := m.now().UTC().Truncate(time.Microsecond)
	f := m.formats[m.format.prefix]
	if p.Prefix != "" {
		var ok bool
		if f, ok = m.formats[p.Prefix]; !ok {
			return "", nil, &InputError{Field: "prefix", Reason: "not a prefix this Manager accepts"}
		}
	}
	k := &Key{
		Prefix: f.prefix, Name: p.Name, Owner: p.Owner, Plan: p.Plan,
		Scopes: append([]string(nil), p.Scopes...), CreatedAt: now,
		Metadata: maps.Clone(p.Metadata), Limits: slices.Clone(p.Limits), AllowedIPs: slices.Clone(p.AllowedIPs),
	}
	for i := range k.Limits {
		k.Limits[i].Subject = "" // set per request, never stored
	}
	if len(k.Metadata) == 0 {
		k.Metadata = nil
	}
	if err := validKey(k, m.plans); err != nil {
		return "", nil, err
	}
	switch {
	case !p.ExpiresAt.IsZero():
		if !p.ExpiresAt.After(now) {
			return "", nil, &InputError{Field: "expires_at", Reason: "not in the future"}
		}
		if err := validExpiry(p.ExpiresAt); err != nil {
			return "", nil, err
		}
		k.ExpiresAt = p.ExpiresAt.UTC().Truncate(time.Microsecond)
	case p.TTL < 0:
		return "", nil, &InputError{Field: "ttl", Reason: "negative"}
	case p.TTL > 0:
		k.ExpiresAt = now.Add(p.TTL)
	case m.ttl > 0:
		k.ExpiresAt = now.Add(m.ttl)
	}
	if m.maxLifetime > 0 {
		switch {
		case k.ExpiresAt.IsZero():
			k.ExpiresAt = now.Add(m.maxLifetime)
		case k.ExpiresAt.Sub(now) > m.maxLifetime:
			return "", nil, &InputError{Field: "expires_at", Reason: "beyond the maximum key lifetime"}
		}
	}
	token, err := m.issue(ctx, f, k, now)
	if err != nil {
		return "", nil, err
	}
	m.events.emit(ctx, event{Type: eventIssue, KeyID: k.ID, Owner: k.Owner, Time: now})
	return token, k.Clone(), nil
}

// create gives k a fresh id, secret and digest of format f, and stores it
// with save, drawing a new id if the first one happens to exist already.
func (m *Manager) create(ctx context.Context, f Format, k *Key, op string, save func(context.Context, *Key) error) (string, error) {
	for attempt := 0; ; attempt++ {
		token, t := f.New()
		digest, version, err := m.digests.hasher.Hash([]byte(t.material))
		if err != nil {
			return "", fmt.Errorf("apikey: hash: %w: %w", ErrUnavailable, err)
		}
		k.ID, k.Hint, k.Hash, k.HashVersion = t.ID, t.Hint(), digest, version
		err = save(ctx, k)
		if err == nil {
			return token, nil
		}
		// A Rotator's ErrConflict is about the successor's id too.
		if !isConflict(err) || attempt == 2 {
			return "", storeErr(op, err)
		}
	}
}

// issue stores the new key k of format f and returns its token. A key with
// an owner is checked against its customer. The customer must not be
// suspended, the scopes must be within the ceiling, and the key under the
// key cap. The cap is kept under concurrency by a conditional write of the
// customer record (its Revision) after the key is stored. Of concurrent
// Issues that counted the same keys, those whose write loses remove their
// key and count again, so the cap is never exceeded. The token of a removed
// key never leaves the Manager. The record checked is the Revision the write
// is conditional on, so that a cap lowered (or a suspension set) by a
// SetCustomer that returned decides every Issue that counts after it.
// Without a cap, the record is read again once the key is stored, and a
// change that landed meanwhile removes the key and decides again. A
// key's IP ranges must lie within the customer's; ranges the customer
// loses later are enforced at verification (see effectiveIPs).
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
		case !ipsWithin(k, c):
			return "", errIPsOutside()
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
	for opts := (ListOptions{Size: MaxPageSize, UsableAt: now}); ; {
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
