package adminhttp_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memstore"
)

// customerStore is a memstore that keeps customer records, per the
// apikey.CustomerStore contract, and fails on demand: every customer call
// fails while down is set, and every write loses a race while conflict
// is set.
type customerStore struct {
	*memstore.Store
	down, conflict atomic.Bool

	mu        sync.Mutex
	customers map[string]*apikey.Customer
}

func newCustomerStore() *customerStore {
	return &customerStore{Store: memstore.New(), customers: map[string]*apikey.Customer{}}
}

var errDown = errors.New("connection refused")

func (s *customerStore) GetCustomer(ctx context.Context, id string) (*apikey.Customer, error) {
	if s.down.Load() {
		return nil, errDown
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.customers[id]
	if !ok {
		return nil, fmt.Errorf("customer %q: %w", id, apikey.ErrNotFound)
	}
	return c.Clone(), nil
}

func (s *customerStore) PutCustomer(ctx context.Context, c *apikey.Customer) error {
	if s.down.Load() {
		return errDown
	}
	if s.conflict.Load() {
		return apikey.ErrConflict
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.customers[c.ID]
	switch {
	case c.Revision == 0 && ok, c.Revision != 0 && ok && cur.Revision != c.Revision:
		return apikey.ErrConflict
	case c.Revision != 0 && !ok:
		return apikey.ErrNotFound
	}
	c.Revision++
	s.customers[c.ID] = c.Clone()
	return nil
}

func (s *customerStore) ListCustomers(ctx context.Context, after string, limit int) ([]*apikey.Customer, error) {
	if s.down.Load() {
		return nil, errDown
	}
	if limit <= 0 {
		limit = 100
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*apikey.Customer
	for _, c := range s.customers {
		if c.ID > after {
			out = append(out, c.Clone())
		}
	}
	slices.SortFunc(out, func(a, b *apikey.Customer) int { return strings.Compare(a.ID, b.ID) })
	return out[:min(limit, len(out))], nil
}

// peeker is a Limiter that allows everything and peeks a fixed balance:
// remaining[name] for each limit (its count when absent), allowed unless
// deny is set. It fails while fail is set, and records the limits of
// every call.
type peeker struct {
	remaining  map[string]int64
	fail, deny atomic.Bool

	mu    sync.Mutex
	calls [][]limits.Limit
}

func (p *peeker) Allow(ctx context.Context, subject string, ls []limits.Limit, cost int64) (limits.Result, error) {
	p.record(ls)
	return limits.Result{Allowed: true}, nil
}

func (p *peeker) Peek(ctx context.Context, subject string, ls []limits.Limit) (limits.Result, error) {
	if p.fail.Load() {
		return limits.Result{}, fmt.Errorf("%w: peeker down", apikey.ErrUnavailable)
	}
	p.record(ls)
	res := limits.Result{Allowed: !p.deny.Load(), Remaining: -1}
	for _, l := range ls {
		n, ok := p.remaining[l.Name]
		if !ok {
			n = l.Count
		}
		if res.Remaining < 0 || n < res.Remaining {
			res.Limit, res.Remaining = l, n
		}
		res.States = append(res.States, limits.State{Remaining: n})
	}
	if len(ls) < 2 {
		res.States = nil
	}
	return res, nil
}

func (p *peeker) record(ls []limits.Limit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, slices.Clone(ls))
}

// last returns the limits of the last call.
func (p *peeker) last() []limits.Limit {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.calls) == 0 {
		return nil
	}
	return p.calls[len(p.calls)-1]
}

var (
	_ apikey.CustomerStore = (*customerStore)(nil)
	_ limits.Peeker        = (*peeker)(nil)
)
