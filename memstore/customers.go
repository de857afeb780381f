package memstore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/gokeys/apikey"
)

// GetCustomer implements apikey.CustomerStore.
func (s *Store) GetCustomer(ctx context.Context, id string) (*apikey.Customer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.cmu.RLock()
	c := s.customers[id].Clone()
	s.cmu.RUnlock()
	if c == nil {
		return nil, apikey.ErrNotFound
	}
	return c, nil
}

// PutCustomer implements apikey.CustomerStore with a conditional write
// over c.Revision. Revision 0 creates the record.
func (s *Store) PutCustomer(ctx context.Context, c *apikey.Customer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch, err := change(ctx)
	if err != nil {
		return err
	}
	n := c.Clone()
	n.CreatedAt, n.UpdatedAt = apikey.UTCMicro(n.CreatedAt), apikey.UTCMicro(n.UpdatedAt)
	s.cmu.Lock()
	defer s.cmu.Unlock()
	old, ok := s.customers[c.ID]
	switch {
	case c.Revision == 0 && ok:
		return fmt.Errorf("memstore: customer %s exists: %w", c.ID, apikey.ErrConflict)
	case c.Revision != 0 && !ok:
		return apikey.ErrNotFound
	case ok && old.Revision != c.Revision:
		return fmt.Errorf("memstore: write of customer %s at revision %d, stored %d: %w", c.ID, c.Revision, old.Revision, apikey.ErrConflict)
	}
	n.Revision = c.Revision + 1
	s.customers[c.ID] = n
	s.apply(ch)
	c.Revision = n.Revision
	return nil
}

// ListCustomers implements apikey.CustomerStore.
func (s *Store) ListCustomers(ctx context.Context, after string, limit int) ([]*apikey.Customer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limit = apikey.ListOptions{Size: limit}.PageSize()
	s.cmu.RLock()
	ids := make([]string, 0, len(s.customers))
	for id := range s.customers {
		if id > after {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, strings.Compare)
	out := make([]*apikey.Customer, 0, min(len(ids), limit))
	for _, id := range ids[:min(len(ids), limit)] {
		out = append(out, s.customers[id].Clone())
	}
	s.cmu.RUnlock()
	return out, nil
}
