// Package selfservicetest is a Store for tests of owner-facing code
// (selfservice, keyshttp, keyspage): memstore, with customer records
// (apikey.CustomerStore) and the owner's pause (Key.Paused) kept beside
// it, so that tests set customers with apikey.Manager.SetCustomer and
// pause keys through the Manager.
package selfservicetest

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// Store is memstore with customer records and paused keys. It is safe for
// concurrent use; build it with New.
type Store struct {
	keys *memstore.Store

	mu        sync.Mutex // makes each key operation and its pause one step
	paused    map[string]bool
	customers map[string]*apikey.Customer
}

var (
	_ apikey.Store         = (*Store)(nil)
	_ apikey.Revoker       = (*Store)(nil)
	_ apikey.Rotator       = (*Store)(nil)
	_ apikey.CustomerStore = (*Store)(nil)
)

// New returns an empty Store.
func New() *Store {
	return &Store{keys: memstore.New(), paused: map[string]bool{}, customers: map[string]*apikey.Customer{}}
}

// Create implements apikey.Store.
func (s *Store) Create(ctx context.Context, k *apikey.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.keys.Create(ctx, k)
	if err == nil {
		s.paused[k.ID] = k.Paused
	}
	return err
}

// Get implements apikey.Store.
func (s *Store) Get(ctx context.Context, id string) (*apikey.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.keys.Get(ctx, id)
	if err == nil {
		k.Paused = s.paused[id]
	}
	return k, err
}

// Update implements apikey.Store.
func (s *Store) Update(ctx context.Context, k *apikey.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.keys.Update(ctx, k)
	if err == nil {
		s.paused[k.ID] = k.Paused
	}
	return err
}

// Delete implements apikey.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.keys.Delete(ctx, id)
	if err == nil {
		delete(s.paused, id)
	}
	return err
}

// List implements apikey.Store.
func (s *Store) List(ctx context.Context, owner string, opts apikey.ListOptions) ([]*apikey.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ks, err := s.keys.List(ctx, owner, opts)
	for _, k := range ks {
		k.Paused = s.paused[k.ID]
	}
	return ks, err
}

// MarkUsed implements apikey.Store.
func (s *Store) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	return s.keys.MarkUsed(ctx, uses)
}

// Revoke implements apikey.Revoker.
func (s *Store) Revoke(ctx context.Context, id string, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys.Revoke(ctx, id, at)
}

// RevokeOwner implements apikey.Revoker.
func (s *Store) RevokeOwner(ctx context.Context, owner string, at time.Time) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys.RevokeOwner(ctx, owner, at)
}

// Rotate implements apikey.Rotator.
func (s *Store) Rotate(ctx context.Context, old *apikey.Key, oldExpiresAt time.Time, successor *apikey.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.keys.Rotate(ctx, old, oldExpiresAt, successor)
	if err == nil {
		s.paused[successor.ID] = successor.Paused
	}
	return err
}

// GetCustomer implements apikey.CustomerStore.
func (s *Store) GetCustomer(ctx context.Context, id string) (*apikey.Customer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.customers[id]
	if !ok {
		return nil, apikey.ErrNotFound
	}
	return c.Clone(), nil
}

// PutCustomer implements apikey.CustomerStore.
func (s *Store) PutCustomer(ctx context.Context, c *apikey.Customer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.customers[c.ID]
	switch {
	case c.Revision == 0 && ok, ok && old.Revision != c.Revision:
		return apikey.ErrConflict
	case c.Revision != 0 && !ok:
		return apikey.ErrNotFound
	}
	n := c.Clone()
	n.CreatedAt, n.UpdatedAt = apikey.UTCMicro(n.CreatedAt), apikey.UTCMicro(n.UpdatedAt)
	n.Revision = c.Revision + 1
	s.customers[c.ID] = n
	c.Revision = n.Revision
	return nil
}

// ListCustomers implements apikey.CustomerStore.
func (s *Store) ListCustomers(ctx context.Context, after string, limit int) ([]*apikey.Customer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limit = apikey.ListOptions{Limit: limit}.PageSize()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []*apikey.Customer{}
	for _, id := range slices.Sorted(maps.Keys(s.customers)) {
		if id > after && len(out) < limit {
			out = append(out, s.customers[id].Clone())
		}
	}
	return out, nil
}
