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
//  4. Create stores a new key with Revision 1, whatever the given key's
//     Revision, and sets the given key's Revision to 1. A key whose ID is
//     already stored gives an error that wraps ErrConflict, and the stored
//     key is left unchanged.
//  5. Get returns the key with the given id, or an error wrapping
//     ErrNotFound. Any other error means the store failed; the Manager then
//     answers ErrUnavailable, never ErrInvalid.
//  6. Update is a conditional write (optimistic concurrency). It replaces
//     the stored key with the same ID by the given key only if the stored
//     Revision equals the given key's Revision; it then stores Revision+1
//     and sets the given key's Revision to it. If the stored Revision
//     differs (the key changed since it was read), it writes nothing and
//     returns an error wrapping ErrConflict. An unknown ID gives
//     ErrNotFound. Two fields are not simply replaced: LastUsedAt only
//     ever moves forward (the later of the stored and the given time is
//     kept), and a stored RevokedAt is never cleared or changed
//     (revocation is monotonic: once a key is revoked, no write of any
//     method makes it unrevoked). The check and the write are one atomic
//     step: of two Updates given the same Revision, exactly one succeeds.
//  7. Delete removes the key with the given id; an unknown id gives
//     ErrNotFound.
//  8. List returns the keys of one owner ordered by ID ascending (byte
//     order), starting after ListOptions.After, at most ListOptions.Limit of
//     them (100 when 0). No keys is an empty result, not an
//     error.
//  9. MarkUsed sets LastUsedAt of each id in uses to its time, but only if
//     that moves LastUsedAt forward; unknown ids are ignored. It is called
//     in batches from a background flush, never on the request path. It is
//     the only write that leaves Revision unchanged.
//  10. Values returned are the caller's: mutating them must not change what
//     is stored, and mutating a key after passing it in must not either.
//  11. Times come back in UTC, with at least microsecond precision (finer
//     precision may be truncated to the microsecond). The zero time means
//     "not set" and must come back as the zero time.
//  12. Every field of Key round-trips, including Disabled, RotatedAt,
//     Lineage, Limits and Revision, and values at the input limits the
//     Manager enforces (MaxNameLength, MaxOwnerLength, MaxPlanLength,
//     MaxScopes, MaxScopeLength, MaxMetadataEntries,
//     MaxMetadataKeyLength, MaxMetadataValueLength, MaxLimits) are held
//     exactly, and so is an ExpiresAt as late as the Manager accepts (the
//     last microsecond of the year 9999, UTC).
//  13. The optional capabilities, where implemented, keep the same
//     guarantees: Revoker.Revoke, Revoker.RevokeOwner and
//     Rotator.Rotate increment the Revision of every key they change (and
//     leave unchanged keys alone), never clear a RevokedAt, and Rotate has
//     exactly one winner among concurrent rotations of one key.
//
// Optional capabilities (Revoker, Rotator) are separate
// interfaces found by type assertion; the Manager falls back to Get,
// Create, Delete and the conditional Update without them, with the same
// guarantees.
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

// defaultListLimit is the page size of Store.List when ListOptions.Limit is 0.
const defaultListLimit = 100

// ListOptions pages through Store.List. The zero value asks for the first
// 100 keys.
type ListOptions struct {
	// After is the ID of the last key of the previous page; empty for the
	// first page.
	After string
	// Limit is the page size: 100 when 0 or negative, at most
	// MaxListLimit.
	Limit int
}

// PageSize returns the effective page size of o.
func (o ListOptions) PageSize() int {
	switch {
	case o.Limit <= 0:
		return defaultListLimit
	case o.Limit > MaxListLimit:
		return MaxListLimit
	}
	return o.Limit
}

// Revoker is an optional Store capability: revoke a key, or every key of
// an owner, in one conditional write each, without reading the keys first.
type Revoker interface {
	// Revoke sets RevokedAt of key id to at and increments its Revision,
	// unless RevokedAt is already set. An unknown id gives ErrNotFound.
	// Revoking a revoked key is not an error and keeps the first time
	// (and the Revision).
	Revoke(ctx context.Context, id string, at time.Time) error

	// RevokeOwner sets RevokedAt to at, and increments the Revision, of
	// every key of owner that is not revoked yet, and returns the ids it
	// revoked, in any order. A key created concurrently may be missed by
	// one call (PostgreSQL's READ COMMITTED does not show a row inserted
	// after the statement began): the Manager calls RevokeOwner again
	// until a call revokes nothing.
	RevokeOwner(ctx context.Context, owner string, at time.Time) ([]string, error)
}

// Rotator is an optional Store capability: rotate a key in one transaction.
type Rotator interface {
	// Rotate stores successor with Revision 1 (ErrConflict if its ID
	// exists) and changes the old key, all or nothing: its RotatedTo
	// becomes successor.ID, its RotatedAt successor.CreatedAt, its
	// ExpiresAt oldExpiresAt (unless the stored ExpiresAt is set and
	// earlier, which is kept), and its Revision is incremented. It fails
	// with ErrNotFound if the old key is unknown, with ErrRevoked if it is
	// revoked and with ErrRotated if its RotatedTo is already set; nothing
	// is written then. The check of the old key and the write are atomic,
	// so that of concurrent rotations of one key exactly one succeeds and
	// a revoked key is never rotated.
	Rotate(ctx context.Context, oldID string, oldExpiresAt time.Time, successor *Key) error
}
