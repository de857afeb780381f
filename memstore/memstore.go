// Package memstore is an in-memory apikey.Store, for tests, examples and
// single-process services that can lose their keys on restart.
package memstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gokeys/apikey"
)

// Store is a concurrency-safe in-memory apikey.Store. It also implements
// apikey.Revoker, apikey.Rotator, apikey.Purger, apikey.CustomerStore,
// usage.Store and usage.LastUsedStore.
// It holds its own copies. Mutating a key or customer passed in or
// returned changes nothing stored. Build it with New. The zero value is
// not usable.
//
// Its records are kept in a form the garbage collector does not have to
// trace (about one pointer-free allocation per key). So a million keys add
// little to every collection of the process. Each Get decodes a new copy
// in one allocation.
type Store struct {
	mu        sync.RWMutex
	keys      *table
	purgeFrom uint32 // the slot the next Purge looks at first

	cmu       sync.RWMutex
	customers map[string]*apikey.Customer

	umu   sync.RWMutex
	usage usageTable
}

var (
	_ apikey.Store         = (*Store)(nil)
	_ apikey.Revoker       = (*Store)(nil)
	_ apikey.Rotator       = (*Store)(nil)
	_ apikey.Purger        = (*Store)(nil)
	_ apikey.CustomerStore = (*Store)(nil)
)

// New returns an empty Store.
func New() *Store {
	return &Store{keys: newTable(), customers: map[string]*apikey.Customer{}}
}

// Create implements apikey.Store.
func (s *Store) Create(ctx context.Context, k *apikey.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := normalize(k)
	c.Revision = 1
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.create(c); err != nil {
		return err
	}
	k.Revision = 1
	return nil
}

func (s *Store) create(c *apikey.Key) error {
	if _, ok := s.keys.slot(c.ID); ok {
		return apikey.ErrConflict
	}
	s.keys.put(c)
	return nil
}

// Get implements apikey.Store.
func (s *Store) Get(ctx context.Context, id string) (*apikey.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	k := s.keys.get(id) // a new copy
	s.mu.RUnlock()
	if k == nil {
		return nil, apikey.ErrNotFound
	}
	return k, nil
}

// Update implements apikey.Store with a conditional write over k.Revision.
func (s *Store) Update(ctx context.Context, k *apikey.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := normalize(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.keys.get(c.ID)
	switch {
	case old == nil:
		return apikey.ErrNotFound
	case old.Revision != c.Revision:
		return fmt.Errorf("memstore: update of key %s at revision %d, stored %d: %w", c.ID, c.Revision, old.Revision, apikey.ErrConflict)
	}
	if old.LastUsedAt.After(c.LastUsedAt) {
		c.LastUsedAt = old.LastUsedAt
	}
	if !old.RevokedAt.IsZero() {
		c.RevokedAt = old.RevokedAt
	}
	c.Revision = old.Revision + 1
	s.keys.put(c) // a new owner is indexed as such
	k.Revision = c.Revision
	return nil
}

// Delete implements apikey.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.keys.del(id) {
		return apikey.ErrNotFound
	}
	return nil
}

// List implements apikey.Store. It returns the owner's keys newest first,
// after the cursor, only the usable ones when opts.UsableAt is set.
func (s *Store) List(ctx context.Context, owner string, opts apikey.ListOptions) ([]*apikey.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	after := apikey.Cursor{CreatedAt: apikey.UTCMicro(opts.After.CreatedAt), ID: opts.After.ID}
	at := apikey.UTCMicro(opts.UsableAt)
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := []*apikey.Key{}
	s.keys.owned(owner, func(slot uint32) {
		if k := s.keys.decode(slot); after.Precedes(k) && (at.IsZero() || k.Usable(at)) {
			out = append(out, k)
		}
	})
	slices.SortFunc(out, newestFirst)
	return out[:min(len(out), opts.PageSize())], nil
}

// newestFirst orders keys as List returns them: by CreatedAt descending,
// then by ID descending.
func newestFirst(a, b *apikey.Key) int {
	if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(b.ID, a.ID)
}

// MarkUsed implements apikey.Store.
func (s *Store) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	_, err := s.MarkUsedGranular(ctx, uses, 0)
	return err
}

// MarkUsedGranular implements usage.LastUsedStore: it sets a key's last
// use only where the stored one is unset or more than granularity
// earlier, and returns how many keys it changed.
func (s *Store) MarkUsedGranular(ctx context.Context, uses map[string]time.Time, granularity time.Duration) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, at := range uses {
		at = apikey.UTCMicro(at)
		if s.keys.setLastUsed(id, at, at.Add(-max(granularity, 0))) {
			n++
		}
	}
	return n, nil
}

// Revoke implements apikey.Revoker.
func (s *Store) Revoke(ctx context.Context, id string, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys.get(id)
	if k == nil {
		return apikey.ErrNotFound
	}
	if k.RevokedAt.IsZero() {
		c := k.Clone()
		c.RevokedAt = apikey.UTCMicro(at)
		c.Revision++
		s.keys.put(c)
	}
	return nil
}

// RevokeOwner implements apikey.Revoker.
func (s *Store) RevokeOwner(ctx context.Context, owner string, at time.Time) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	s.keys.owned(owner, func(slot uint32) {
		if k := s.keys.decode(slot); k.RevokedAt.IsZero() {
			k.RevokedAt = apikey.UTCMicro(at)
			k.Revision++
			s.keys.put(k)
			ids = append(ids, k.ID)
		}
	})
	return ids, nil
}

// Rotate implements apikey.Rotator. Under the store's lock it checks the
// old key (known, not revoked, not rotated, at old.Revision), stores the
// successor, rotates the old key and ends the grace of the old key's
// predecessor.
func (s *Store) Rotate(ctx context.Context, old *apikey.Key, oldExpiresAt time.Time, successor *apikey.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := normalize(successor)
	c.Revision = 1
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.keys.get(old.ID) // a new copy
	switch {
	case o == nil:
		return apikey.ErrNotFound
	case !o.RevokedAt.IsZero():
		return apikey.ErrRevoked
	case o.RotatedTo != "":
		return apikey.ErrRotated
	case o.Revision != old.Revision:
		return fmt.Errorf("memstore: rotation of key %s at revision %d, stored %d: %w", old.ID, old.Revision, o.Revision, apikey.ErrConflict)
	}
	if err := s.create(c); err != nil {
		return err
	}
	if until := apikey.UTCMicro(oldExpiresAt); o.ExpiresAt.IsZero() || until.Before(o.ExpiresAt) {
		o.ExpiresAt = until
	}
	o.RotatedTo, o.RotatedAt = c.ID, c.CreatedAt
	o.Revision++
	s.keys.put(o)
	if p := s.keys.get(o.RotatedFrom); p != nil && !c.CreatedAt.IsZero() && p.RevokedAt.IsZero() &&
		(p.ExpiresAt.IsZero() || p.ExpiresAt.After(c.CreatedAt)) {
		p.ExpiresAt = c.CreatedAt // its grace ends: one predecessor in grace at most
		p.Revision++
		s.keys.put(p)
	}
	successor.Revision = 1
	return nil
}

// Purge implements apikey.Purger. A call looks at each key once at most,
// starting where the previous call stopped, so that emptying a large
// store in batches looks at each key about twice. A limit of 0 or less
// deletes nothing.
func (s *Store) Purge(ctx context.Context, before time.Time, limit int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return []string{}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ids, next := s.keys.dead(apikey.UTCMicro(before), limit, s.purgeFrom)
	for _, id := range ids {
		s.keys.del(id)
	}
	s.purgeFrom = next
	if ids == nil {
		ids = []string{}
	}
	return ids, nil
}

// Len returns the number of stored keys.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys.len()
}

// All returns copies of every stored key, in no particular order. It is
// meant for tests and audits.
func (s *Store) All() []*apikey.Key {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*apikey.Key, 0, s.keys.len())
	s.keys.all(func(slot uint32) { out = append(out, s.keys.decode(slot)) })
	return out
}

// normalize returns a private copy of k with its times in UTC, truncated
// to the microsecond as the Store contract says.
func normalize(k *apikey.Key) *apikey.Key {
	c := k.Clone()
	c.CreatedAt, c.ExpiresAt, c.LastUsedAt = apikey.UTCMicro(c.CreatedAt), apikey.UTCMicro(c.ExpiresAt), apikey.UTCMicro(c.LastUsedAt)
	c.RevokedAt, c.RotatedAt = apikey.UTCMicro(c.RevokedAt), apikey.UTCMicro(c.RotatedAt)
	return c
}
