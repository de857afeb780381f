package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/usage"
)

var _ usage.LastUsedStore = (*Store)(nil)

// MarkUsed implements apikey.Store. It writes the batch in bulk, one
// statement per chunk of ids (see markUsedChunk). Each statement joins the
// table with the batch's (id, time) pairs. It sets last_used_at only where
// that moves it forward. So a use never moves it back and unknown ids
// change nothing. The statements per dialect are these.
//
//   - PostgreSQL: UPDATE ... FROM unnest($1::text[], $2::timestamptz[]),
//     two array parameters whatever the chunk size;
//   - MySQL/MariaDB: a multi-table UPDATE joined with a derived table of
//     SELECT ?, ? UNION ALL ... rows;
//   - SQLite: UPDATE ... FROM (VALUES (?, ?), ...).
//
// Each statement commits on its own. It runs again when the database
// aborted it to break a deadlock. A failed chunk leaves the earlier ones
// written, which is safe because writing a use again changes nothing.
// Within a statement, ids are in sorted order so that concurrent flushes
// lock rows in the same order.
func (s *Store) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	_, err := s.MarkUsedGranular(ctx, uses, 0)
	return err
}

// MarkUsedGranular implements usage.LastUsedStore with the statements of
// MarkUsed, whose condition becomes last_used_at IS NULL OR last_used_at
// < the use's time minus granularity: a row already within granularity
// of a use is neither written nor locked. It returns the rows written,
// as the database reports them (RowsAffected). In a statement that
// waits for a row locked by a concurrent flush, PostgreSQL and InnoDB
// evaluate the condition again on the row as that flush left it, so of
// concurrent flushes of one key within granularity at most one writes
// it.
func (s *Store) MarkUsedGranular(ctx context.Context, uses map[string]time.Time, granularity time.Duration) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(uses) == 0 {
		return 0, nil
	}
	granularity = max(granularity, 0).Truncate(time.Microsecond)
	ids := make([]string, 0, len(uses))
	for id := range uses {
		ids = append(ids, id)
	}
	if len(ids) == 1 {
		at := uses[ids[0]]
		res, err := s.db.ExecContext(ctx, s.q.markUsed, s.d.timeArg(at), ids[0], s.d.timeArg(at.Add(-granularity)))
		if err != nil {
			return 0, s.fail(ctx, "mark used", err)
		}
		return rowsAffected(res), nil
	}
	slices.Sort(ids)
	written := 0
	for part := range slices.Chunk(ids, markUsedChunk(s.d)) {
		q, args := s.markUsedQuery(part, uses, granularity)
		res, err := s.execRetrying(ctx, q, args...)
		if err != nil {
			return written, s.fail(ctx, "mark used", err)
		}
		written += rowsAffected(res)
	}
	return written, nil
}

// rowsAffected is the number of rows res changed, 0 when the driver does
// not tell.
func rowsAffected(res sql.Result) int {
	n, err := res.RowsAffected()
	if err != nil {
		return 0
	}
	return int(n)
}

// execRetrying runs one statement, again (up to 3 times in all) when the
// database aborted it to break a deadlock, as a flush of another instance
// or a concurrent conditional write on the same rows can make it do.
func (s *Store) execRetrying(ctx context.Context, q string, args ...any) (sql.Result, error) {
	const attempts = 3
	for attempt := 1; ; attempt++ {
		res, err := s.db.ExecContext(ctx, q, args...)
		if err == nil || attempt == attempts || ctx.Err() != nil || !s.d.isRetryable(err) {
			return res, err
		}
	}
}

// markUsedChunk is the number of ids MarkUsed writes per statement: the
// arrays of PostgreSQL take any number in two parameters; MySQL and SQLite
// take two parameters per id, well under their limits (65,535 and 32,766).
func markUsedChunk(d Dialect) int {
	if d == Postgres {
		return 10_000
	}
	return 1_000
}

// markUsedQuery returns the statement and arguments that move
// last_used_at of ids forward to uses[id] where it is unset or earlier
// than uses[id] minus granularity (whole microseconds).
func (s *Store) markUsedQuery(ids []string, uses map[string]time.Time, granularity time.Duration) (string, []any) {
	micros := granularity.Microseconds()
	tb := s.table.quoted(s.d)
	switch s.d {
	case Postgres:
		// Array literals in text, so that any driver can pass them.
		var idArr, atArr strings.Builder
		idArr.WriteByte('{')
		atArr.WriteByte('{')
		for i, id := range ids {
			if i > 0 {
				idArr.WriteByte(',')
				atArr.WriteByte(',')
			}
			idArr.WriteByte('"')
			for _, c := range []byte(id) {
				if c == '"' || c == '\\' {
					idArr.WriteByte('\\')
				}
				idArr.WriteByte(c)
			}
			idArr.WriteByte('"')
			atArr.WriteString(apikey.UTCMicro(uses[id]).Format(pgArrayTime))
		}
		idArr.WriteByte('}')
		atArr.WriteByte('}')
		q := "UPDATE " + tb + " AS t SET last_used_at = v.at " +
			"FROM unnest($1::text[], $2::timestamptz[]) AS v(id, at) " +
			`WHERE t.id = v.id COLLATE "C" AND (t.last_used_at IS NULL OR t.last_used_at < v.at - $3::bigint * interval '1 microsecond')`
		return q, []any{idArr.String(), atArr.String(), micros}
	case MySQL:
		var b strings.Builder
		b.WriteString("UPDATE " + tb + " AS t JOIN (")
		args := make([]any, 0, 2*len(ids))
		for i, id := range ids {
			if i == 0 {
				b.WriteString("SELECT CAST(? AS BINARY) AS id, CAST(? AS DATETIME(6)) AS at")
			} else {
				b.WriteString(" UNION ALL SELECT ?, ?")
			}
			args = append(args, id, s.d.timeArg(uses[id]))
		}
		b.WriteString(") AS v ON t.id = v.id SET t.last_used_at = v.at " +
			"WHERE t.last_used_at IS NULL OR t.last_used_at < v.at - INTERVAL ? MICROSECOND")
		return b.String(), append(args, micros)
	default: // SQLite
		var b strings.Builder
		b.WriteString("UPDATE " + tb + " AS t SET last_used_at = v.column2 FROM (VALUES ")
		args := make([]any, 0, 2*len(ids))
		for i, id := range ids {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?)")
			args = append(args, id, s.d.timeArg(uses[id]))
		}
		b.WriteString(") AS v WHERE t.id = v.column1 AND (t.last_used_at IS NULL OR t.last_used_at < v.column2 - ?)")
		return b.String(), append(args, micros)
	}
}

// pgArrayTime is the layout of a timestamptz element of an array literal.
const pgArrayTime = "2006-01-02T15:04:05.999999Z07:00"

// Revoke implements apikey.Revoker with one conditional UPDATE (... SET
// revoked_at = ? WHERE id = ? AND revoked_at IS NULL). So the first
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

// RevokeOwner implements apikey.Revoker. On PostgreSQL and SQLite it runs
// one UPDATE ... RETURNING id. MySQL lacks RETURNING, so there it runs a
// transaction that locks the owner's unrevoked keys (SELECT ... FOR
// UPDATE) and revokes exactly those.
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
		q := "UPDATE " + s.table.quoted(s.d) + " SET revoked_at = ?, revision = revision + 1 WHERE revoked_at IS NULL AND id IN (" +
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

// Rotate implements apikey.Rotator in one transaction. It first runs a
// conditional UPDATE of the old key's expires_at, rotated_to, rotated_at
// and revision. That UPDATE applies only at old.Revision and if the key is
// neither revoked nor rotated, which the row lock makes atomic. The next
// UPDATE ends the grace of the old key's predecessor (old.RotatedFrom),
// unless it is revoked or ends sooner. Last comes the INSERT of successor.
// Nothing is written unless all succeed. When the first UPDATE matched
// nothing, the old key's state decides the error. It is
// apikey.ErrNotFound, apikey.ErrRevoked, apikey.ErrRotated, or
// apikey.ErrConflict for a changed revision. A successor id that exists
// gives apikey.ErrConflict.
func (s *Store) Rotate(ctx context.Context, old *apikey.Key, oldExpiresAt time.Time, successor *apikey.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	args, err := s.keyArgs(successor)
	if err != nil {
		return err
	}
	var outcome error // a sentinel answer, not a failure
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		outcome = nil
		until, created := s.d.timeArg(oldExpiresAt), s.d.timeArg(successor.CreatedAt)
		res, err := tx.ExecContext(ctx, s.q.rotateOld, until, until, successor.ID, created, old.ID, old.Revision)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			if outcome, err = s.rotateRefusal(ctx, tx, old.ID); err == nil && outcome == nil {
				outcome = fmt.Errorf("sqlstore: rotation of key %s at revision %d: %w", old.ID, old.Revision, apikey.ErrConflict)
			}
			return errors.Join(outcome, err)
		}
		if old.RotatedFrom != "" && created != nil {
			if _, err := tx.ExecContext(ctx, s.q.endGrace, created, old.RotatedFrom, created); err != nil {
				return err
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
	successor.Revision = 1
	return nil
}

// rotateRefusal explains why the old key of a rotation was not updated:
// ErrNotFound, ErrRevoked or ErrRotated; nil if none of them, that is if
// its revision changed.
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

// Purge implements apikey.Purger. On PostgreSQL and SQLite it runs one
// DELETE ... WHERE id IN (SELECT id ... LIMIT ?) RETURNING id. MySQL lacks
// RETURNING. There it runs a SELECT of the ids without locks, then a
// DELETE of those ids that checks the condition again. Ids that a
// concurrent change kept alive are left out of the answer. A limit of 0 or
// less deletes nothing. No index serves the condition. So each call reads
// the table until it found limit dead keys.
func (s *Store) Purge(ctx context.Context, before time.Time, limit int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return []string{}, nil
	}
	b := s.d.timeArg(before)
	if b == nil { // nothing is dead before the zero time
		return []string{}, nil
	}
	if s.d != MySQL {
		ids, err := queryIDs(ctx, s.db, s.q.purge, b, b, limit, b, b)
		if err != nil {
			return nil, s.fail(ctx, "purge", err)
		}
		if ids == nil {
			ids = []string{}
		}
		return ids, nil
	}
	ids, err := queryIDs(ctx, s.db, s.q.deadIDs, b, b, limit)
	if err != nil {
		return nil, s.fail(ctx, "purge", err)
	}
	if len(ids) == 0 {
		return []string{}, nil
	}
	in := placeholders(len(ids))
	args := make([]any, 0, len(ids)+2)
	for _, id := range ids {
		args = append(args, id)
	}
	tb := s.table.quoted(s.d)
	res, err := s.db.ExecContext(ctx, "DELETE FROM "+tb+" WHERE id IN ("+in+") AND (revoked_at < ? OR expires_at < ?)",
		append(args, b, b)...)
	if err != nil {
		return nil, s.fail(ctx, "purge", err)
	}
	if n, err := res.RowsAffected(); err != nil || int(n) < len(ids) {
		left, err := queryIDs(ctx, s.db, "SELECT id FROM "+tb+" WHERE id IN ("+in+")", args...)
		if err != nil {
			return nil, s.fail(ctx, "purge", err)
		}
		ids = slices.DeleteFunc(ids, func(id string) bool { return slices.Contains(left, id) })
	}
	return ids, nil
}
