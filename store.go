package apikey

import (
	"context"
	"errors"
	"time"
)

// Store keeps keys. The library ships memstore (in memory) and sqlstore
// (PostgreSQL, MySQL/MariaDB, SQLite). Applications may write their own.
//
// To implement a Store, follow these rules.
//
//  1. Be safe for concurrent use by many goroutines.
//  2. Store what you are given. The Key holds a digest (Hash, HashVersion),
//     never a token or a secret. Store Hash byte for byte.
//  3. Honour ctx in every method. A cancelled or expired context stops the
//     work and its error (context.Canceled, context.DeadlineExceeded) is
//     returned, possibly wrapped.
//  4. Create stores a new key with Revision 1, whatever the given key's
//     Revision, and sets the given key's Revision to 1. A key whose ID is
//     already stored gives an error that wraps ErrConflict, and the stored
//     key is left unchanged.
//  5. Get returns the key with the given id, or an error wrapping
//     ErrNotFound. Any other error means the store failed. The Manager then
//     answers ErrUnavailable, never ErrInvalid.
//  6. Update is a conditional write (optimistic concurrency). It replaces
//     the stored key with the same ID by the given key only if the stored
//     Revision equals the given key's Revision. It then stores Revision+1
//     and sets the given key's Revision to it. If the stored Revision
//     differs (the key changed since it was read), it writes nothing and
//     returns an error wrapping ErrConflict. An unknown ID gives
//     ErrNotFound. Two fields are not simply replaced. LastUsedAt only
//     ever moves forward (the later of the stored and the given time is
//     kept). A stored RevokedAt is never cleared or changed, because
//     revocation is monotonic. Once a key is revoked, no write of any
//     method makes it unrevoked. The check and the write are one atomic
//     step. Of two Updates given the same Revision, exactly one succeeds.
//  7. Delete removes the key with the given id. An unknown id gives
//     ErrNotFound.
//  8. List returns the keys of one owner newest first, by CreatedAt
//     descending, then ID descending (byte order). It starts after the
//     cursor ListOptions.After and returns at most ListOptions.PageSize
//     keys. With ListOptions.UsableAt set it returns only the keys not
//     revoked and not expired at that time (ExpiresAt zero or after it),
//     so that a page is never made of dead keys. No keys is an empty
//     result, not an error.
//  9. MarkUsed sets LastUsedAt of each id in uses to its time, but only if
//     that moves LastUsedAt forward. Unknown ids are ignored. It is called
//     in batches from a background flush, never on the request path. It is
//     the only write that leaves Revision unchanged. Every instance of a
//     fleet flushes the keys it saw, so a store that writes each of them
//     costs one row per key, instance and flush. Implement
//     usage.LastUsedStore as well. Its conditional write (last_used_at
//     unset or older than the use minus the granularity) lets a fleet
//     write a busy key about once per Options.LastUsedGranularity, and it
//     reports the rows it wrote.
//  10. Values returned are the caller's. Mutating them must not change what
//     is stored, and mutating a key after passing it in must not either.
//  11. Times come back in UTC, truncated to the microsecond. The Manager
//     hands over times already truncated. Normalise what you read with
//     UTCMicro. The zero time means "not set" and must come back as the
//     zero time.
//  12. Every field of Key round-trips, including Disabled, RotatedAt,
//     Lineage, Limits and Revision, and values at the input limits the
//     Manager enforces (MaxNameLength, MaxOwnerLength, MaxPlanLength,
//     MaxScopes, MaxScopeLength, MaxMetadataEntries,
//     MaxMetadataKeyLength, MaxMetadataValueLength, MaxLimits) are held
//     exactly, and so is an ExpiresAt as late as the Manager accepts (the
//     last microsecond of the year 9999, UTC).
//  13. The optional capabilities, where implemented, keep the same
//     guarantees. Revoker.Revoke, Revoker.RevokeOwner and
//     Rotator.Rotate increment the Revision of every key they change (and
//     leave unchanged keys alone), never clear a RevokedAt, and Rotate has
//     exactly one winner among concurrent rotations of one key.
//
// Optional capabilities (Revoker, Rotator, Purger, CustomerStore,
// usage.Store, usage.LastUsedStore) are separate interfaces found by type
// assertion. Without a Revoker or a Rotator, the Manager falls back to
// Get, Create, Delete and the conditional Update, with the same
// guarantees.
//
// Run storetest.Run from your tests to check an implementation.
type Store interface {
	// Create stores k with Revision 1 and sets k.Revision to 1. An ID
	// already stored gives ErrConflict (rule 4). k.Hash is the digest
	// to keep byte for byte (Key.Hash is left out of JSON, so a store
	// that serialises keys stores it on its own).
	Create(ctx context.Context, k *Key) error
	// Get returns the key id or ErrNotFound (rule 5).
	Get(ctx context.Context, id string) (*Key, error)
	// Update replaces the key only over the Revision it was given, or
	// fails with ErrConflict. It never clears RevokedAt and never moves
	// LastUsedAt back (rule 6).
	Update(ctx context.Context, k *Key) error
	// Delete removes the key id, or fails with ErrNotFound (rule 7).
	Delete(ctx context.Context, id string) error
	// List pages through the keys of owner, newest first (rule 8).
	List(ctx context.Context, owner string, opts ListOptions) ([]*Key, error)
	// MarkUsed moves LastUsedAt of each id forward to its time, leaving
	// Revision alone (rule 9).
	MarkUsed(ctx context.Context, uses map[string]time.Time) error
}

// defaultPageSize is the page size of Store.List when ListOptions.Size is 0.
const defaultPageSize = 100

// ListOptions pages through Store.List. The zero value asks for the first
// 100 keys, newest first.
type ListOptions struct {
	// After is the cursor, the position of the last key of the previous
	// page (see Key.Cursor). The zero Cursor for the first page.
	After Cursor
	// Size is the page size, 100 when 0 or negative, at most
	// MaxPageSize.
	Size int
	// UsableAt, if set, lists only keys that are neither revoked nor
	// expired at that time.
	UsableAt time.Time
}

// Cursor is a position in a list of keys, newest first. It holds the
// CreatedAt and ID of the last key seen. Keys created later than a cursor
// sort before it, so a cursor stays valid while keys are added or deleted.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// Cursor returns the position of k in a list of keys.
func (k *Key) Cursor() Cursor { return Cursor{CreatedAt: k.CreatedAt, ID: k.ID} }

// IsZero reports whether c is the start of a list.
func (c Cursor) IsZero() bool { return c.ID == "" && c.CreatedAt.IsZero() }

// Precedes reports whether k sorts after c in a list newest first, that is
// whether a page that starts after c may hold k.
func (c Cursor) Precedes(k *Key) bool {
	if c.IsZero() {
		return true
	}
	if !k.CreatedAt.Equal(c.CreatedAt) {
		return k.CreatedAt.Before(c.CreatedAt)
	}
	return k.ID < c.ID
}

// Usable reports whether k is listed with ListOptions.UsableAt set to at.
// That is when it is neither revoked nor expired at that time.
func (k *Key) Usable(at time.Time) bool {
	return k.RevokedAt.IsZero() && (k.ExpiresAt.IsZero() || k.ExpiresAt.After(at))
}

// UTCMicro returns t in UTC truncated to the microsecond, the precision
// every Store keeps. The zero time stays zero.
func UTCMicro(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// PageSize returns the effective page size of o.
func (o ListOptions) PageSize() int {
	switch {
	case o.Size <= 0:
		return defaultPageSize
	case o.Size > MaxPageSize:
		return MaxPageSize
	}
	return o.Size
}

// Revoker is an optional Store capability. It revokes a key, or every key
// of an owner, in one conditional write each, without reading the keys
// first.
type Revoker interface {
	// Revoke sets RevokedAt of key id to at and increments its Revision,
	// unless RevokedAt is already set. An unknown id gives ErrNotFound.
	// Revoking a revoked key is not an error and keeps the first time
	// (and the Revision).
	Revoke(ctx context.Context, id string, at time.Time) error

	// RevokeOwner sets RevokedAt to at, and increments the Revision, of
	// every key of owner that is not revoked yet, and returns the ids it
	// revoked, in any order. A key created concurrently may be missed by
	// one call, because PostgreSQL's READ COMMITTED does not show a row
	// inserted after the statement began. So the Manager calls RevokeOwner
	// again until a call revokes nothing.
	RevokeOwner(ctx context.Context, owner string, at time.Time) ([]string, error)
}

// Rotator is an optional Store capability. It rotates a key in one
// transaction.
type Rotator interface {
	// Rotate stores successor with Revision 1 (ErrConflict if its ID
	// exists) and changes the old key, all or nothing. old is the key as
	// the Manager read it. The write happens only if the stored Revision
	// still equals old.Revision, else it fails with ErrConflict. So a
	// rotation never undoes a concurrent Disable or Update. The stored old
	// key's RotatedTo becomes successor.ID and its RotatedAt
	// successor.CreatedAt. Its ExpiresAt becomes oldExpiresAt, which is
	// never zero, but a stored ExpiresAt that is set and earlier is kept.
	// Its Revision is incremented. A chain keeps at most one predecessor
	// in grace. The key old.RotatedFrom, if stored, unrevoked and with an
	// ExpiresAt zero or later than successor.CreatedAt, gets ExpiresAt
	// successor.CreatedAt and Revision+1 in the same transaction. Rotate
	// fails with ErrNotFound if the old key is unknown, with ErrRevoked if
	// it is revoked and with ErrRotated if its RotatedTo is already set.
	// Nothing is written then. Of concurrent rotations of one key exactly
	// one succeeds, and a revoked key is never rotated.
	Rotate(ctx context.Context, old *Key, oldExpiresAt time.Time, successor *Key) error
}

// Purger is an optional Store capability. It deletes dead keys in bounded
// batches (see Manager.Purge).
type Purger interface {
	// Purge deletes at most limit keys revoked before before, or expired
	// before before (ExpiresAt set and earlier), and returns their ids.
	// Fewer than limit ids means none is left.
	Purge(ctx context.Context, before time.Time, limit int) ([]string, error)
}

// safeGet calls the store, turning a panic into an error so that a broken
// store can never let a request through.
func safeGet(ctx context.Context, get func(context.Context, string) (*Key, error), id string) (k *Key, err error) {
	defer func() {
		if r := recover(); r != nil {
			k, err = nil, panicError{r}
		}
	}()
	k, err = get(ctx, id)
	if err == nil && k == nil {
		err = errors.New("store returned no key and no error")
	}
	return k, err
}

// maxAttempts bounds the attempts of a conditional write (Update, Disable,
// Enable, a Revoke or Rotate without the store's capability) that keeps
// losing races with other writers.
const maxAttempts = 10
