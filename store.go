package apikey

import (
	"context"
	"time"
)

// Store keeps keys. The library ships memstore (in memory) and sqlstore
// (PostgreSQL, MySQL/MariaDB, SQLite); applications may write their own.
//
// How to implement a Store:
//
//  1. Be safe for concurrent use by many goroutines.
//  2. Store what you are given: the Key holds a digest (Hash, HashVersion),
//     never a token or a secret. Store Hash byte for byte.
//  3. Honour ctx in every method: a cancelled or expired context stops the
//     work and its error (context.Canceled, context.DeadlineExceeded) is
//     returned, possibly wrapped.
//  4. Create stores a new key. A key whose ID is already stored gives an
//     error that wraps ErrConflict, and the stored key is left unchanged.
//  5. Get returns the key with the given id, or an error wrapping
//     ErrNotFound. Any other error means the store failed; the Manager then
//     answers ErrUnavailable, never ErrInvalid.
//  6. Update replaces every field of the stored key with the same ID by the
//     given key's fields, except LastUsedAt, which only ever moves forward
//     (the later of the stored and the given time is kept). An unknown ID
//     gives ErrNotFound.
//  7. Delete removes the key with the given id; an unknown id gives
//     ErrNotFound.
//  8. List returns the keys of one owner ordered by ID ascending (byte
//     order), starting after ListOptions.After, at most ListOptions.Limit of
//     them (DefaultListLimit when 0). No keys is an empty result, not an
//     error.
//  9. MarkUsed sets LastUsedAt of each id in uses to its time, but only if
//     that moves LastUsedAt forward; unknown ids are ignored. It is called
//     in batches from a background flush, never on the request path.
//  10. Values returned are the caller's: mutating them must not change what
//     is stored, and mutating a key after passing it in must not either.
//  11. Times come back in UTC, with at least microsecond precision (finer
//     precision may be truncated to the microsecond). The zero time means
//     "not set" and must come back as the zero time.
//
// Optional capabilities (Revoker, Rotator, OwnerRevoker) are separate
// interfaces found by type assertion; the Manager falls back to Get and
// Update without them.
//
// Run storetest.Run from your tests to check an implementation.
type Store interface {
	Create(ctx context.Context, k *Key) error
	Get(ctx context.Context, id string) (*Key, error)
	Update(ctx context.Context, k *Key) error
	Delete(ctx context.Context, id string) error
	List(ctx context.Context, owner string, opts ListOptions) ([]*Key, error)
	MarkUsed(ctx context.Context, uses map[string]time.Time) error
}

// DefaultListLimit is the page size of Store.List when ListOptions.Limit is 0.
const DefaultListLimit = 100

// MaxListLimit is the largest page Store.List must serve; larger limits are
// reduced to it.
const MaxListLimit = 1000

// ListOptions pages through Store.List. The zero value asks for the first
// DefaultListLimit keys.
type ListOptions struct {
	// After is the ID of the last key of the previous page; empty for the
	// first page.
	After string
	// Limit is the page size: DefaultListLimit when 0, at most MaxListLimit.
	Limit int
}

// PageSize returns the effective page size of o.
func (o ListOptions) PageSize() int {
	switch {
	case o.Limit <= 0:
		return DefaultListLimit
	case o.Limit > MaxListLimit:
		return MaxListLimit
	}
	return o.Limit
}

// Revoker is an optional Store capability: revoke in one conditional
// write, so that concurrent updates cannot undo a revocation.
type Revoker interface {
	// Revoke sets RevokedAt of key id to at unless it is already set.
	// An unknown id gives ErrNotFound. Revoking a revoked key is not an
	// error and keeps the first time.
	Revoke(ctx context.Context, id string, at time.Time) error
}

// OwnerRevoker is an optional Store capability: revoke every key of an
// owner in one statement.
type OwnerRevoker interface {
	// RevokeOwner sets RevokedAt to at on every key of owner that is not
	// revoked yet and returns the ids it revoked, in any order.
	RevokeOwner(ctx context.Context, owner string, at time.Time) ([]string, error)
}

// Rotator is an optional Store capability: rotate a key in one transaction.
type Rotator interface {
	// Rotate stores successor (ErrConflict if its ID exists) and sets the
	// old key's ExpiresAt to oldExpiresAt and its RotatedTo to
	// successor.ID, all or nothing. It fails with ErrNotFound if the old
	// key is unknown, with ErrRevoked if it is revoked and with ErrRotated
	// if its RotatedTo is already set; nothing is written then.
	Rotate(ctx context.Context, oldID string, oldExpiresAt time.Time, successor *Key) error
}
