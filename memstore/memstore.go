// Package memstore is an in-memory apikey.Store, for tests, examples and
// single-process services that can lose their keys on restart.
package memstore

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/gokeys/apikey"
)

// Store is a concurrency-safe in-memory apikey.Store. It holds its own
// copies: mutating a key passed in or returned changes nothing stored.
// Build it with New; the zero value is not usable.
type Store struct {
	mu      sync.RWMutex
	keys    map[string]*apikey.Key
	byOwner map[string]map[string]struct{}
}

var (
	_ apikey.Store        = (*Store)(nil)
	_ apikey.Revoker      = (*Store)(nil)
	_ apikey.OwnerRevoker = (*Store)(nil)
	_ apikey.Rotator      = (*Store)(nil)
)

// New returns an empty Store.
func New() *Store {
	return &Store{keys: map[string]*apikey.Key{}, byOwner: map[string]map[string]struct{}{}}
}

// Create implements apikey.Store.
func (s *Store) Create(ctx context.Context, k *apikey.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := normalize(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.create(c)
}

func (s *Store) create(c *apikey.Key) error {
	if _, ok := s.keys[c.ID]; ok {
		return apikey.ErrConflict
	}
	s.keys[c.ID] = c
	ids := s.byOwner[c.Owner]
	if ids == nil {
		ids = map[string]struct{}{}
		s.byOwner[c.Owner] = ids
	}
	ids[c.ID] = struct{}{}
	return nil
}

// Get implements apikey.Store.
func (s *Store) Get(ctx context.Context, id string) (*apikey.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	k := s.keys[id]
	s.mu.RUnlock()
	if k == nil {
		return nil, apikey.ErrNotFound
	}
	return k.Clone(), nil // stored keys are never mutated in place
}

// Update implements apikey.Store.
func (s *Store) Update(ctx context.Context, k *apikey.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := normalize(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.keys[c.ID]
	if old == nil {
		return apikey.ErrNotFound
	}
	if old.LastUsedAt.After(c.LastUsedAt) {
		c.LastUsedAt = old.LastUsedAt
	}
	if old.Owner != c.Owner {
		s.unindex(old)
		delete(s.keys, c.ID)
		return s.create(c)
	}
	s.keys[c.ID] = c
	return nil
}

// Delete implements apikey.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[id]
	if k == nil {
		return apikey.ErrNotFound
	}
	s.unindex(k)
	delete(s.keys, id)
	return nil
}

func (s *Store) unindex(k *apikey.Key) {
	ids := s.byOwner[k.Owner]
	delete(ids, k.ID)
	if len(ids) == 0 {
		delete(s.byOwner, k.Owner)
	}
}

// List implements apikey.Store.
func (s *Store) List(ctx context.Context, owner string, opts apikey.ListOptions) ([]*apikey.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := make([]string, 0, len(s.byOwner[owner]))
	for id := range s.byOwner[owner] {
		if id > opts.After {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	ids = ids[:min(len(ids), opts.PageSize())]
	out := make([]*apikey.Key, len(ids))
	for i, id := range ids {
		out[i] = s.keys[id].Clone()
	}
	return out, nil
}

// MarkUsed implements apikey.Store.
func (s *Store) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, at := range uses {
		k := s.keys[id]
		at = utc(at)
		if k != nil && at.After(k.LastUsedAt) {
			c := k.Clone()
			c.LastUsedAt = at
			s.keys[id] = c
		}
	}
	return nil
}

// Revoke implements apikey.Revoker.
func (s *Store) Revoke(ctx context.Context, id string, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[id]
	if k == nil {
		return apikey.ErrNotFound
	}
	if k.RevokedAt.IsZero() {
		c := k.Clone()
		c.RevokedAt = utc(at)
		s.keys[id] = c
	}
	return nil
}

// RevokeOwner implements apikey.OwnerRevoker.
func (s *Store) RevokeOwner(ctx context.Context, owner string, at time.Time) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.byOwner[owner] {
		if k := s.keys[id]; k.RevokedAt.IsZero() {
			c := k.Clone()
			c.RevokedAt = utc(at)
			s.keys[id] = c
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Rotate implements apikey.Rotator.
func (s *Store) Rotate(ctx context.Context, oldID string, oldExpiresAt time.Time, successor *apikey.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := normalize(successor)
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.keys[oldID]
	switch {
	case old == nil:
		return apikey.ErrNotFound
	case !old.RevokedAt.IsZero():
		return apikey.ErrRevoked
	case old.RotatedTo != "":
		return apikey.ErrRotated
	}
	if err := s.create(c); err != nil {
		return err
	}
	o := old.Clone()
	o.ExpiresAt, o.RotatedTo = utc(oldExpiresAt), c.ID
	s.keys[oldID] = o
	return nil
}

// Len returns the number of stored keys.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.keys)
}

// All returns copies of every stored key, in no particular order; for
// tests and audits.
func (s *Store) All() []*apikey.Key {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*apikey.Key, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k.Clone())
	}
	return out
}

// normalize returns a private copy of k with its times in UTC, truncated
// to the microsecond as the Store contract allows.
func normalize(k *apikey.Key) *apikey.Key {
	c := k.Clone()
	c.CreatedAt, c.ExpiresAt, c.LastUsedAt, c.RevokedAt = utc(c.CreatedAt), utc(c.ExpiresAt), utc(c.LastUsedAt), utc(c.RevokedAt)
	return c
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}
