package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"time"

	"github.com/gokeys/apikey"
)

// MarkUsed implements apikey.Store. Each id's last_used_at is set with a
// conditional UPDATE (... WHERE id = ? AND (last_used_at IS NULL OR
// last_used_at < ?)), so it only moves forward; unknown ids change
// nothing. A batch of several ids runs in one transaction, ids in sorted
// order so that concurrent flushes lock rows in the same order.
func (s *Store) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch len(uses) {
	case 0:
		return nil
	case 1:
		for id, at := range uses {
			a := s.d.timeArg(at)
			if _, err := s.db.ExecContext(ctx, s.q.markUsed, a, id, a); err != nil {
				return s.fail(ctx, "mark used", err)
			}
		}
		return nil
	}
	ids := make([]string, 0, len(uses))
	for id := range uses {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, s.q.markUsed)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, id := range ids {
			a := s.d.timeArg(uses[id])
			if _, err := stmt.ExecContext(ctx, a, id, a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.fail(ctx, "mark used", err)
	}
	return nil
}

// Revoke implements apikey.Revoker with one conditional UPDATE (... SET
// revoked_at = ? WHERE id = ? AND revoked_at IS NULL): the first
// revocation time stays. When no row changed, a lookup tells an unknown
// id (apikey.ErrNotFound) from a revoked key (no error).
func (s *Store) Revoke(ctx context.Context, id string, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, s.q.revoke, s.d.timeArg(at), id)
	if err != nil {
		return s.fail(ctx, "revoke", err)
	}
	return s.affected(ctx, "revoke", res, id)
}

// RevokeOwner implements apikey.OwnerRevoker: one UPDATE ... RETURNING id
// on PostgreSQL and SQLite; on MySQL, which lacks it, a transaction that
// locks the owner's unrevoked keys (SELECT ... FOR UPDATE) and revokes
// exactly those.
func (s *Store) RevokeOwner(ctx context.Context, owner string, at time.Time) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var (
		ids []string
		err error
	)
	if s.d == MySQL {
		err = s.inTx(ctx, func(tx *sql.Tx) error {
			if ids, err = queryIDs(ctx, tx, s.q.ownerIDs, owner); err != nil {
				return err
			}
			return s.revokeIDs(ctx, tx, ids, at)
		})
	} else {
		ids, err = queryIDs(ctx, s.db, s.q.revokeOwner, s.d.timeArg(at), owner)
	}
	if err != nil {
		return nil, s.fail(ctx, "revoke owner", err)
	}
	return ids, nil
}

// revokeIDs revokes ids in statements of at most 500 ids each.
func (s *Store) revokeIDs(ctx context.Context, tx *sql.Tx, ids []string, at time.Time) error {
	const chunk = 500
	for part := range slices.Chunk(ids, chunk) {
		q := "UPDATE " + s.table.quoted(s.d) + " SET revoked_at = ? WHERE revoked_at IS NULL AND id IN (" +
			placeholders(len(part)) + ")"
		args := make([]any, 0, len(part)+1)
		args = append(args, s.d.timeArg(at))
		for _, id := range part {
			args = append(args, id)
		}
		if _, err := tx.ExecContext(ctx, s.d.rebind(q), args...); err != nil {
			return err
		}
	}
	return nil
}

func queryIDs(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// Rotate implements apikey.Rotator in one transaction: a conditional
// UPDATE of the old key (expires_at, rotated_to; only if it is neither
// revoked nor rotated), then the INSERT of successor. Nothing is written
// unless both succeed. The old key's state decides the error when the
// UPDATE matched nothing: apikey.ErrNotFound, apikey.ErrRevoked or
// apikey.ErrRotated; a successor id that exists gives apikey.ErrConflict.
func (s *Store) Rotate(ctx context.Context, oldID string, oldExpiresAt time.Time, successor *apikey.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	args, err := s.keyArgs(successor)
	if err != nil {
		return err
	}
	var outcome error // a sentinel answer, not a failure
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q.rotateOld, s.d.timeArg(oldExpiresAt), successor.ID, oldID)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			if outcome, err = s.rotateRefusal(ctx, tx, oldID); err != nil || outcome != nil {
				return errors.Join(outcome, err)
			}
		}
		if _, err := tx.ExecContext(ctx, s.q.insert, args...); err != nil {
			if ctx.Err() == nil && s.d.isConflict(err) {
				outcome = apikey.ErrConflict
			}
			return err
		}
		return nil
	})
	switch {
	case outcome != nil:
		return outcome
	case err != nil:
		return s.fail(ctx, "rotate", err)
	}
	return nil
}

// rotateRefusal explains why the old key of a rotation was not updated:
// ErrNotFound, ErrRevoked or ErrRotated; nil if nothing stands in the way
// (MySQL reports no changed row when the values were already in place).
func (s *Store) rotateRefusal(ctx context.Context, tx *sql.Tx, id string) (error, error) {
	var (
		revoked   = timeCol{d: s.d, t: new(time.Time)}
		rotatedTo string
	)
	err := tx.QueryRowContext(ctx, s.q.state, id).Scan(&revoked, &rotatedTo)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return apikey.ErrNotFound, nil
	case err != nil:
		return nil, err
	case !revoked.t.IsZero():
		return apikey.ErrRevoked, nil
	case rotatedTo != "":
		return apikey.ErrRotated, nil
	}
	return nil, nil
}
