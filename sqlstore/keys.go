package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/gokeys/apikey"
)

// Create implements apikey.Store: one INSERT, with revision 1. A
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

// Get implements apikey.Store: one query by primary key. An unknown id
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

// Update implements apikey.Store: one conditional UPDATE of every column
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

// Delete implements apikey.Store: one DELETE. An unknown id gives
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

// List implements apikey.Store with keyset paging over the (owner, id)
// index: WHERE owner = ? AND id > ? ORDER BY id LIMIT ?.
func (s *Store) List(ctx context.Context, owner string, opts apikey.ListOptions) ([]*apikey.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, s.q.list, owner, opts.After, opts.PageSize())
	if err != nil {
		return nil, s.fail(ctx, "list", err)
	}
	defer rows.Close()
	out := []*apikey.Key{}
	ks := newKeyScanner(s.d)
	for rows.Next() {
		k, err := ks.scan(rows)
		if err != nil {
			return nil, s.fail(ctx, "list", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, "list", err)
	}
	return out, nil
}
