package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/gokeys/apikey"
)

// Create implements apikey.Store with one INSERT, with revision 1. A
// duplicate id gives an error wrapping apikey.ErrConflict and leaves the
// stored key unchanged.
func (s *Store) Create(ctx context.Context, k *apikey.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	args, err := s.keyArgs(k)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, s.q.insert, args...); err != nil {
		if ctx.Err() == nil && s.d.isConflict(err) {
			return apikey.ErrConflict
		}
		return s.fail(ctx, "create", err)
	}
	k.Revision = 1
	return nil
}

// Get implements apikey.Store with one query by primary key. An unknown id
// gives apikey.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*apikey.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rows, err := s.queryGet(ctx, id)
	if err != nil {
		return nil, s.fail(ctx, "get", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, s.fail(ctx, "get", err)
		}
		return nil, apikey.ErrNotFound
	}
	k, err := newKeyScanner(s.d).scan(rows)
	if err == nil {
		err = rows.Close()
	}
	if err != nil {
		return nil, s.fail(ctx, "get", err)
	}
	return k, nil
}

// Update implements apikey.Store with one conditional UPDATE of every column
// but id (... WHERE id = ? AND revision = ?), which increments revision,
// keeps a stored revoked_at (COALESCE) and moves last_used_at only
// forward. When it changed no row, a lookup tells an unknown id
// (apikey.ErrNotFound) from a changed one (apikey.ErrConflict).
func (s *Store) Update(ctx context.Context, k *apikey.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	args, err := s.updateArgs(k)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, s.q.update, args...)
	if err != nil {
		return s.fail(ctx, "update", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.fail(ctx, "update", err)
	}
	if n == 0 {
		ok, err := s.exists(ctx, s.db, k.ID)
		switch {
		case err != nil:
			return s.fail(ctx, "update", err)
		case !ok:
			return apikey.ErrNotFound
		}
		return fmt.Errorf("sqlstore: update of key %s at revision %d: %w", k.ID, k.Revision, apikey.ErrConflict)
	}
	k.Revision++
	return nil
}

// affected turns an UPDATE that changed no row into apikey.ErrNotFound if
// the id is unknown. MySQL counts changed rows, not matched ones, so an
// update that writes the stored values changes none of a present key.
func (s *Store) affected(ctx context.Context, op string, res sql.Result, id string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return s.fail(ctx, op, err)
	}
	if n > 0 {
		return nil
	}
	ok, err := s.exists(ctx, s.db, id)
	switch {
	case err != nil:
		return s.fail(ctx, op, err)
	case !ok:
		return apikey.ErrNotFound
	}
	return nil
}

// Delete implements apikey.Store with one DELETE. An unknown id gives
// apikey.ErrNotFound.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, s.q.delete, id)
	if err != nil {
		return s.fail(ctx, "delete", err)
	}
	n, err := res.RowsAffected()
	switch {
	case err != nil:
		return s.fail(ctx, "delete", err)
	case n == 0:
		return apikey.ErrNotFound
	}
	return nil
}

// List implements apikey.Store with keyset paging over the (owner,
// created_at, id) index, newest first. After a cursor it runs WHERE owner
// = ? AND created_at <= ? AND (created_at < ? OR id < ?) ORDER BY
// created_at DESC, id DESC LIMIT ?. That reads one range of the index
// backwards. Keys without a
// creation time (NULL) come last, read by a second query when the page
// has room for them. With opts.UsableAt set, the WHERE clause also skips
// revoked keys and keys expired at that time.
func (s *Store) List(ctx context.Context, owner string, opts apikey.ListOptions) ([]*apikey.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n, u := opts.PageSize(), 0
	var usable []any
	if !opts.UsableAt.IsZero() {
		u, usable = 1, []any{s.d.timeArg(opts.UsableAt)}
	}
	args := func(a ...any) []any { return append(append(a, usable...), n) }
	c := opts.After
	out := []*apikey.Key{}
	var err error
	switch {
	case c.IsZero():
		out, err = s.listQuery(ctx, out, s.q.listFirst[u], args(owner)...)
	case c.CreatedAt.IsZero():
		out, err = s.listQuery(ctx, out, s.q.listNullBefore[u], args(owner, c.ID)...)
	default:
		at := s.d.timeArg(c.CreatedAt)
		out, err = s.listQuery(ctx, out, s.q.listAfter[u], args(owner, at, at, c.ID)...)
		if err == nil && len(out) < n {
			n -= len(out)
			out, err = s.listQuery(ctx, out, s.q.listNull[u], args(owner)...)
		}
	}
	if err != nil {
		return nil, s.fail(ctx, "list", err)
	}
	return out, nil
}

// listQuery appends the keys query returns to out.
func (s *Store) listQuery(ctx context.Context, out []*apikey.Key, query string, args ...any) ([]*apikey.Key, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ks := newKeyScanner(s.d)
	for rows.Next() {
		k, err := ks.scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}
