package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/gokeys/apikey/outbox"
)

var _ outbox.Store = (*Store)(nil)

// outboxColumns lists the columns of the outbox table in the order the
// queries read and write them.
const outboxColumns = "id, endpoint, type, payload, created_at, due_at, state, attempts, attempted_at, last_error, claim, lease_until"

// numOutboxColumns is the number of entries in outboxColumns.
const numOutboxColumns = 12

// outboxChunk is the most events one INSERT of Append writes, 6,000
// parameters.
const outboxChunk = 500

// outboxSchema returns the statements that create the outbox table ot
// and its index (endpoint, state, due_at), idempotent.
func (d Dialect) outboxSchema(ot tableName) []string {
	q := ot.quoted(d)
	switch d {
	case Postgres:
		return []string{
			"CREATE TABLE IF NOT EXISTS " + q + ` (
	id           TEXT COLLATE "C" NOT NULL,
	endpoint     TEXT COLLATE "C" NOT NULL,
	type         TEXT NOT NULL,
	payload      BYTEA NOT NULL,
	created_at   TIMESTAMPTZ NOT NULL,
	due_at       TIMESTAMPTZ NOT NULL,
	state        TEXT NOT NULL,
	attempts     INTEGER NOT NULL,
	attempted_at TIMESTAMPTZ NULL,
	last_error   TEXT NOT NULL,
	claim        TEXT NOT NULL,
	lease_until  TIMESTAMPTZ NULL,
	PRIMARY KEY (id, endpoint)
)`,
			"CREATE INDEX IF NOT EXISTS " + d.quote(ot.dueIndex()) + " ON " + q + " (endpoint, state, due_at)",
		}
	case MySQL:
		return []string{
			"CREATE TABLE IF NOT EXISTS " + q + ` (
	id           VARBINARY(64) NOT NULL,
	endpoint     VARBINARY(64) NOT NULL,
	type         VARCHAR(64) NOT NULL,
	payload      MEDIUMBLOB NOT NULL,
	created_at   DATETIME(6) NOT NULL,
	due_at       DATETIME(6) NOT NULL,
	state        VARCHAR(16) NOT NULL,
	attempts     INT NOT NULL,
	attempted_at DATETIME(6) NULL,
	last_error   TEXT NOT NULL,
	claim        VARBINARY(64) NOT NULL,
	lease_until  DATETIME(6) NULL,
	PRIMARY KEY (id, endpoint),
	KEY endpoint_due (endpoint, state, due_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
		}
	case SQLite:
		return []string{
			"CREATE TABLE IF NOT EXISTS " + q + ` (
	id           TEXT NOT NULL,
	endpoint     TEXT NOT NULL,
	type         TEXT NOT NULL,
	payload      BLOB NOT NULL,
	created_at   INTEGER NOT NULL,
	due_at       INTEGER NOT NULL,
	state        TEXT NOT NULL,
	attempts     INTEGER NOT NULL,
	attempted_at INTEGER NULL,
	last_error   TEXT NOT NULL,
	claim        TEXT NOT NULL,
	lease_until  INTEGER NULL,
	PRIMARY KEY (id, endpoint)
) WITHOUT ROWID`,
			"CREATE INDEX IF NOT EXISTS " + d.sqliteIndex(ot, ot.dueIndex()) + " ON " + d.quote(ot.name) + " (endpoint, state, due_at)",
		}
	}
	return nil
}

// outboxQueries holds the outbox statements of one Store.
type outboxQueries struct {
	table                         string // quoted
	due, lease, settle, redeliver string
	claim                         string // PostgreSQL and SQLite
	exists, countFree, purge      string
	list                          [4]string // by id (bit 0) and by state (bit 1)
}

func buildOutboxQueries(d Dialect, ot tableName) outboxQueries {
	tb := ot.quoted(d)
	free := "(claim = '' OR lease_until <= ?)"
	q := outboxQueries{
		table: tb,
		// The due events of an endpoint that no lease holds.
		due: "SELECT id, endpoint FROM " + tb + " WHERE endpoint = ? AND state = 'pending' AND due_at <= ? AND " + free +
			" ORDER BY due_at, id LIMIT ?",
		lease: "UPDATE " + tb + " SET claim = ?, lease_until = ?, attempts = attempts + 1 WHERE endpoint = ? AND id IN ",
		// Conditional on the claim; due_at changes for a retry only.
		settle: "UPDATE " + tb + " SET state = ?, attempted_at = ?, due_at = COALESCE(?, due_at), last_error = ?, " +
			"claim = '', lease_until = NULL WHERE id = ? AND endpoint = ? AND claim = ? AND claim <> ''",
		redeliver: "UPDATE " + tb + " SET state = 'pending', attempts = 0, last_error = '', due_at = ?, claim = '', " +
			"lease_until = NULL WHERE id = ? AND " + free,
		exists:    "SELECT 1 FROM " + tb + " WHERE id = ? LIMIT 1",
		countFree: "SELECT COUNT(*) FROM " + tb + " WHERE id = ? AND " + free,
	}
	// The rows are picked once, in a CTE: PostgreSQL may run a subquery
	// of the WHERE clause again for each row, and with SKIP LOCKED pick
	// more rows than LIMIT.
	returning := outboxColumns // SQLite's RETURNING names the updated table's columns alone
	if d == Postgres {
		returning = "o." + strings.ReplaceAll(outboxColumns, ", ", ", o.")
	}
	pick := q.due
	if d == Postgres {
		pick += " FOR UPDATE SKIP LOCKED"
	}
	q.claim = d.rebind("WITH picked AS (" + pick + ") UPDATE " + tb + " AS o SET claim = ?, lease_until = ?, " +
		"attempts = o.attempts + 1 FROM picked WHERE o.endpoint = picked.endpoint AND o.id = picked.id RETURNING " + returning)
	if d == MySQL { // DELETE ... LIMIT: MySQL has no subquery over the table deleted from
		q.purge = "DELETE FROM " + tb + " WHERE state <> 'pending' AND attempted_at < ? LIMIT ?"
	} else {
		q.purge = "DELETE FROM " + tb + " WHERE (id, endpoint) IN (SELECT id, endpoint FROM " + tb +
			" WHERE state <> 'pending' AND attempted_at < ? LIMIT ?)"
	}
	for i := range q.list {
		var where []string
		if i&1 != 0 {
			where = append(where, "id = ?")
		}
		if i&2 != 0 {
			where = append(where, "state = ?")
		}
		w := ""
		if len(where) > 0 {
			w = " WHERE " + strings.Join(where, " AND ")
		}
		q.list[i] = d.rebind("SELECT " + outboxColumns + " FROM " + tb + w + " ORDER BY created_at DESC, id, endpoint LIMIT ?")
	}
	for _, s := range []*string{&q.settle, &q.redeliver, &q.exists, &q.countFree, &q.purge} {
		*s = d.rebind(*s)
	}
	return q
}

// appendStatement returns the INSERT of n events that skips those
// stored already, with d's placeholders.
func (s *Store) appendStatement(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO " + s.oq.table + " (" + outboxColumns + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(" + placeholders(numOutboxColumns) + ")")
	}
	if s.d == MySQL {
		b.WriteString(" ON DUPLICATE KEY UPDATE id = id")
	} else {
		b.WriteString(" ON CONFLICT (id, endpoint) DO NOTHING")
	}
	return s.d.rebind(b.String())
}

// appendEvents inserts evs through q, in chunks, skipping those stored
// already.
func (s *Store) appendEvents(ctx context.Context, q querier, evs []outbox.Event) error {
	for part := range slices.Chunk(evs, outboxChunk) {
		args := make([]any, 0, numOutboxColumns*len(part))
		for _, e := range part {
			due := e.DueAt
			if due.IsZero() {
				due = e.CreatedAt
			}
			payload := e.Payload
			if payload == nil {
				payload = []byte{}
			}
			args = append(args, e.ID, e.Endpoint, e.Type, payload, s.d.timeArg(e.CreatedAt), s.d.timeArg(due),
				string(outbox.Pending), 0, nil, "", "", nil)
		}
		if _, err := q.ExecContext(ctx, s.appendStatement(len(part)), args...); err != nil {
			return err
		}
	}
	return nil
}

// validEvents checks evs and returns them in (id, endpoint) order, so
// that concurrent appends lock rows in one order.
func validEvents(evs []outbox.Event) ([]outbox.Event, error) {
	for i := range evs {
		if err := evs[i].Validate(); err != nil {
			return nil, err
		}
	}
	out := slices.Clone(evs)
	slices.SortStableFunc(out, func(a, b outbox.Event) int {
		return cmp.Or(strings.Compare(a.ID, b.ID), strings.Compare(a.Endpoint, b.Endpoint))
	})
	return out, nil
}

// Append implements outbox.Store with INSERT ... ON CONFLICT DO NOTHING
// (PostgreSQL, SQLite) or ON DUPLICATE KEY UPDATE id = id (MySQL). It
// writes 500 events per statement, in one transaction when there are
// more.
func (s *Store) Append(ctx context.Context, evs []outbox.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	evs, err := validEvents(evs)
	if err != nil || len(evs) == 0 {
		return err
	}
	if len(evs) <= outboxChunk {
		err = s.appendEvents(ctx, s.db, evs)
	} else {
		err = s.inTx(ctx, func(tx *sql.Tx) error { return s.appendEvents(ctx, tx, evs) })
	}
	if err != nil {
		return s.fail(ctx, "append events", err)
	}
	return nil
}

// applyChange applies c through the transaction q: the cancelled ids
// first, then the appended events.
func (s *Store) applyChange(ctx context.Context, q querier, c *outbox.Change, evs []outbox.Event) error {
	if len(c.Cancel) > 0 {
		args := make([]any, len(c.Cancel))
		for i, id := range c.Cancel {
			args[i] = id
		}
		stmt := "DELETE FROM " + s.oq.table + " WHERE id IN (" + placeholders(len(args)) + ") AND state = 'pending' AND claim = ''"
		if _, err := q.ExecContext(ctx, s.d.rebind(stmt), args...); err != nil {
			return err
		}
	}
	return s.appendEvents(ctx, q, evs)
}

// write runs fn, the write of a change, on the DB; or, when ctx carries
// an outbox.Change, in a transaction that also applies the change if fn
// reports that it changed something, all or nothing. fn returns its
// final error (ErrNotFound, ErrConflict, or a failure it wrapped).
func (s *Store) write(ctx context.Context, op string, fn func(q querier) (changed bool, err error)) error {
	c := outbox.ChangeFrom(ctx)
	if c == nil {
		_, err := fn(s.db)
		return err
	}
	evs, err := validEvents(c.Append)
	if err != nil {
		return err
	}
	var outcome error // fn's answer, kept apart from the transaction's failures
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		changed, err := fn(tx)
		outcome = err
		if err != nil || !changed {
			return err
		}
		if err := s.applyChange(ctx, tx, c, evs); err != nil {
			outcome = s.fail(ctx, op, err)
			return err
		}
		return nil
	})
	switch {
	case outcome != nil:
		return outcome
	case err != nil: // the commit
		return s.fail(ctx, op, err)
	}
	return nil
}

// Claim implements outbox.Store. On PostgreSQL it is one UPDATE of the
// rows a CTE picks with FOR UPDATE SKIP LOCKED, RETURNING them, so that
// concurrent claims skip each other's rows. On SQLite it is the same
// UPDATE, which the database's write lock serialises. On MySQL it is a
// transaction that locks the due rows (SELECT ... FOR UPDATE), leases
// them and reads them back. Concurrent claims there wait for each other.
func (s *Store) Claim(ctx context.Context, endpoint, claim string, now, until time.Time, limit int) ([]outbox.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return []outbox.Event{}, nil
	}
	n, u := s.d.timeArg(now), s.d.timeArg(until)
	var (
		evs []outbox.Event
		err error
	)
	if s.d == MySQL {
		// READ COMMITTED: InnoDB then locks the rows picked, not the gaps
		// of the index range, which deadlocked with appends and settles.
		err = s.inTxWith(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted}, func(tx *sql.Tx) error {
			ids, err := queryIDs(ctx, tx, strings.Replace(s.oq.due, "id, endpoint", "id", 1)+" FOR UPDATE", endpoint, n, n, limit)
			if err != nil || len(ids) == 0 {
				evs = nil
				return err
			}
			args := []any{claim, u, endpoint}
			for _, id := range ids {
				args = append(args, id)
			}
			if _, err := tx.ExecContext(ctx, s.oq.lease+"("+placeholders(len(ids))+")", args...); err != nil {
				return err
			}
			evs, err = s.queryEvents(ctx, tx, "SELECT "+outboxColumns+" FROM "+s.oq.table+" WHERE endpoint = ? AND claim = ?", endpoint, claim)
			return err
		})
	} else {
		evs, err = s.queryEvents(ctx, s.db, s.oq.claim, endpoint, n, n, limit, claim, u)
	}
	if err != nil {
		return nil, s.fail(ctx, "claim", err)
	}
	slices.SortFunc(evs, func(a, b outbox.Event) int {
		return cmp.Or(a.DueAt.Compare(b.DueAt), strings.Compare(a.ID, b.ID))
	})
	if evs == nil {
		evs = []outbox.Event{}
	}
	return evs, nil
}

// queryEvents returns the events query selects, of the outboxColumns.
func (s *Store) queryEvents(ctx context.Context, q querier, query string, args ...any) ([]outbox.Event, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []outbox.Event
	for rows.Next() {
		var (
			e     outbox.Event
			state string
		)
		times := [4]timeCol{{s.d, &e.CreatedAt}, {s.d, &e.DueAt}, {s.d, &e.AttemptedAt}, {s.d, &e.LeaseUntil}}
		if err := rows.Scan(&e.ID, &e.Endpoint, &e.Type, &e.Payload, &times[0], &times[1], &state, &e.Attempts,
			&times[2], &e.LastError, &e.Claim, &times[3]); err != nil {
			return nil, err
		}
		e.State = outbox.State(state)
		if e.Payload == nil {
			e.Payload = []byte{}
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Settle implements outbox.Store with one UPDATE conditional on the
// claim. It runs again when the database aborted it to break a deadlock.
func (s *Store) Settle(ctx context.Context, r outbox.Result) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var next any
	if r.State == outbox.Pending {
		next = s.d.timeArg(r.Next)
	}
	var (
		res sql.Result
		err error
	)
	for attempt := 1; ; attempt++ {
		res, err = s.db.ExecContext(ctx, s.oq.settle, string(r.State), s.d.timeArg(r.At), next, outbox.Trunc(r.Error),
			r.ID, r.Endpoint, r.Claim)
		if err == nil || attempt == 5 || ctx.Err() != nil || !s.d.isRetryable(err) {
			break
		}
	}
	if err != nil {
		return s.fail(ctx, "settle", err)
	}
	n, err := res.RowsAffected()
	switch {
	case err != nil:
		return s.fail(ctx, "settle", err)
	case n == 0:
		return outbox.ErrLost
	}
	return nil
}

// Redeliver implements outbox.Store with one UPDATE of the unleased
// events of id. MySQL counts changed rows rather than matched ones, so
// there it counts them first, in the same transaction.
func (s *Store) Redeliver(ctx context.Context, id string, at time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	a := s.d.timeArg(at)
	n := 0
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if s.d == MySQL {
			if err := tx.QueryRowContext(ctx, s.oq.countFree+" FOR UPDATE", id, a).Scan(&n); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, s.oq.redeliver, a, id, a)
		if err != nil {
			return err
		}
		if s.d != MySQL {
			m, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n = int(m)
		}
		if n > 0 {
			return nil
		}
		var one int
		err = tx.QueryRowContext(ctx, s.oq.exists, id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return outbox.ErrNotFound
		}
		return err
	})
	switch {
	case errors.Is(err, outbox.ErrNotFound):
		return 0, err
	case err != nil:
		return 0, s.fail(ctx, "redeliver", err)
	}
	return n, nil
}

// Events implements outbox.Store with one query, newest first.
func (s *Store) Events(ctx context.Context, q outbox.Query) ([]outbox.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	i, args := 0, []any{}
	if q.ID != "" {
		i, args = i|1, append(args, q.ID)
	}
	if q.State != "" {
		i, args = i|2, append(args, string(q.State))
	}
	evs, err := s.queryEvents(ctx, s.db, s.oq.list[i], append(args, q.PageSize())...)
	if err != nil {
		return nil, s.fail(ctx, "events", err)
	}
	if evs == nil {
		evs = []outbox.Event{}
	}
	return evs, nil
}

// PurgeEvents implements outbox.Store with one DELETE of at most limit
// settled events. No index serves it, so it reads the table.
func (s *Store) PurgeEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b := s.d.timeArg(before)
	if limit <= 0 || b == nil {
		return 0, nil
	}
	res, err := s.db.ExecContext(ctx, s.oq.purge, b, limit)
	if err != nil {
		return 0, s.fail(ctx, "purge events", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, s.fail(ctx, "purge events", err)
	}
	return int(n), nil
}
