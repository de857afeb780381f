package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/gokeys/apikey"
)

// GetCustomer implements apikey.CustomerStore with one query by primary key.
// An unknown id gives apikey.ErrNotFound.
func (s *Store) GetCustomer(ctx context.Context, id string) (*apikey.Customer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cs, err := s.queryCustomers(ctx, s.q.customerGet, id)
	switch {
	case err != nil:
		return nil, s.fail(ctx, "get customer", err)
	case len(cs) == 0:
		return nil, apikey.ErrNotFound
	}
	return cs[0], nil
}

// PutCustomer implements apikey.CustomerStore. It runs an INSERT with
// revision 1 when c.Revision is 0 (a duplicate id gives
// apikey.ErrConflict). Otherwise it runs one
// conditional UPDATE (... WHERE id = ? AND revision = ?) that increments
// the revision. When the UPDATE changed no row, a lookup tells an unknown
// id (apikey.ErrNotFound) from a changed one (apikey.ErrConflict).
func (s *Store) PutCustomer(ctx context.Context, c *apikey.Customer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	args, err := s.customerArgs(c, 1)
	if err != nil {
		return err
	}
	if c.Revision == 0 {
		err := s.write(ctx, "put customer", func(q querier) (bool, error) {
			if _, err := q.ExecContext(ctx, s.q.customerInsert, args...); err != nil {
				if ctx.Err() == nil && s.d.isConflict(err) {
					return false, fmt.Errorf("sqlstore: customer %s exists: %w", c.ID, apikey.ErrConflict)
				}
				return false, s.fail(ctx, "put customer", err)
			}
			return true, nil
		})
		if err != nil {
			return err
		}
		c.Revision = 1
		return nil
	}
	// The update's arguments: every column but id and revision, then the
	// id and the revision read.
	upd := append(slices.Clone(args[1:numCustomerColumns-1]), c.ID, c.Revision)
	err = s.write(ctx, "put customer", func(q querier) (bool, error) {
		res, err := q.ExecContext(ctx, s.q.customerUpdate, upd...)
		if err != nil {
			return false, s.fail(ctx, "put customer", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return false, s.fail(ctx, "put customer", err)
		}
		if n == 0 {
			var one int
			err := q.QueryRowContext(ctx, s.q.customerExists, c.ID).Scan(&one)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				return false, apikey.ErrNotFound
			case err != nil:
				return false, s.fail(ctx, "put customer", err)
			}
			return false, fmt.Errorf("sqlstore: write of customer %s at revision %d: %w", c.ID, c.Revision, apikey.ErrConflict)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	c.Revision++
	return nil
}

// ListCustomers implements apikey.CustomerStore with keyset paging over
// the primary key, as in WHERE id > ? ORDER BY id LIMIT ?.
func (s *Store) ListCustomers(ctx context.Context, after string, limit int) ([]*apikey.Customer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cs, err := s.queryCustomers(ctx, s.q.customerList, after, apikey.ListOptions{Size: limit}.PageSize())
	if err != nil {
		return nil, s.fail(ctx, "list customers", err)
	}
	return cs, nil
}

func (s *Store) queryCustomers(ctx context.Context, query string, args ...any) ([]*apikey.Customer, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*apikey.Customer{}
	for rows.Next() {
		c, err := scanCustomer(s.d, rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
