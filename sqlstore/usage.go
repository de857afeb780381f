package sqlstore

import (
	"context"
	"database/sql"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/usage"
)

// usageColumns lists the columns of the usage table in the order the
// queries read and write them.
const usageColumns = "key_id, start, customer, allowed, limited, refused, cost"

// numUsageColumns is the number of entries in usageColumns.
const numUsageColumns = 7

// usageChunk is the most records one statement of AddUsage writes. That is
// 7,000 parameters, under every dialect's limit (PostgreSQL and MySQL
// 65,535, SQLite 32,766).
const usageChunk = 1000

// usagePurgeBatch is the most records one DELETE of PurgeUsage removes on
// MySQL.
const usagePurgeBatch = 10_000

// AddUsage implements usage.Store with upserts that add. It runs one INSERT ...
// ON CONFLICT (key_id, start) DO UPDATE SET allowed = allowed +
// excluded.allowed, ... (PostgreSQL, SQLite) or INSERT ... ON DUPLICATE
// KEY UPDATE allowed = allowed + VALUES(allowed), ... (MySQL, MariaDB)
// per 1,000 records, with multi-row VALUES. Records of one key and hour
// are summed first, and the rows are written in (key_id, start) order, so
// that concurrent calls lock rows in the same order. Up to 1,000 records
// (the Manager's batches) are one statement. More are written in one
// transaction. Either way a call adds all of its records or none, and
// runs again, a few times, when the database aborted it to break a
// deadlock. An existing record keeps its customer.
//
// A record without KeyID, or whose Start is not a whole hour, is an
// *apikey.InputError, and nothing is written.
func (s *Store) AddUsage(ctx context.Context, records []usage.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rs, err := mergeUsage(records)
	if err != nil || len(rs) == 0 {
		return err
	}
	if len(rs) <= usageChunk {
		q, args := s.addUsageQuery(rs)
		if _, err := s.execRetrying(ctx, q, args...); err != nil {
			return s.fail(ctx, "add usage", err)
		}
		return nil
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		for i := 0; i < len(rs); i += usageChunk {
			q, args := s.addUsageQuery(rs[i:min(i+usageChunk, len(rs))])
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.fail(ctx, "add usage", err)
	}
	return nil
}

// usageKey identifies a stored usage record.
type usageKey struct {
	id    string
	start int64 // Unix microseconds
}

// mergeUsage checks records and returns them in a new slice, one record
// per key and hour (the sum of the given ones), sorted by key id then
// start, Start in UTC.
func mergeUsage(records []usage.Record) ([]usage.Record, error) {
	out := make([]usage.Record, 0, len(records))
	at := make(map[usageKey]int, len(records))
	for _, r := range records {
		switch {
		case r.KeyID == "":
			return nil, &apikey.InputError{Field: "key_id", Reason: "a usage record needs a key"}
		case r.Start.IsZero() || !r.Start.Equal(r.Start.Truncate(time.Hour)):
			return nil, &apikey.InputError{Field: "start", Reason: "must be the start of an hour"}
		}
		r.Start = r.Start.UTC()
		k := usageKey{r.KeyID, r.Start.UnixMicro()}
		i, ok := at[k]
		if !ok {
			at[k] = len(out)
			out = append(out, r)
			continue
		}
		p := &out[i]
		p.Allowed += r.Allowed
		p.Limited += r.Limited
		p.Refused += r.Refused
		p.Cost += r.Cost
	}
	sortUsage(out)
	return out, nil
}

// sortUsage sorts records by key id (bytes) then start.
func sortUsage(rs []usage.Record) {
	slices.SortFunc(rs, func(a, b usage.Record) int {
		if c := strings.Compare(a.KeyID, b.KeyID); c != 0 {
			return c
		}
		return a.Start.Compare(b.Start)
	})
}

// addUsageQuery returns the upsert of rs and its arguments.
func (s *Store) addUsageQuery(rs []usage.Record) (string, []any) {
	q := s.q.addUsageChunk
	if len(rs) != usageChunk {
		q = addUsageStatement(s.d, s.usage, len(rs))
	}
	args := make([]any, 0, numUsageColumns*len(rs))
	for _, r := range rs {
		args = append(args, r.KeyID, s.d.timeArg(r.Start), r.Customer, r.Allowed, r.Limited, r.Refused, r.Cost)
	}
	return q, args
}

// addUsageStatement returns the upsert of n records into the usage table
// ut, with d's placeholders.
func addUsageStatement(d Dialect, ut tableName, n int) string {
	var b strings.Builder
	b.Grow(128 + n*(numUsageColumns*7+4) + 256)
	b.WriteString("INSERT INTO " + ut.quoted(d))
	if d != MySQL {
		b.WriteString(" AS u")
	}
	b.WriteString(" (" + usageColumns + ") VALUES ")
	p := 0
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := range numUsageColumns {
			if c > 0 {
				b.WriteString(", ")
			}
			p++
			if d == Postgres {
				b.WriteByte('$')
				b.WriteString(strconv.Itoa(p))
			} else {
				b.WriteByte('?')
			}
		}
		b.WriteByte(')')
	}
	if d == MySQL {
		b.WriteString(" ON DUPLICATE KEY UPDATE allowed = allowed + VALUES(allowed), limited = limited + VALUES(limited), " +
			"refused = refused + VALUES(refused), cost = cost + VALUES(cost)")
	} else {
		b.WriteString(" ON CONFLICT (key_id, start) DO UPDATE SET allowed = u.allowed + excluded.allowed, " +
			"limited = u.limited + excluded.limited, refused = u.refused + excluded.refused, cost = u.cost + excluded.cost")
	}
	return b.String()
}

// Usage implements usage.Store with one query. It reads by the primary key
// (key_id, start) when q.KeyID is set, else by the index (customer,
// start, key_id). A zero q.From selects from the first record. A q.To not
// after q.From selects nothing. q.Step is ignored, since the records are
// hours.
func (s *Store) Usage(ctx context.Context, q usage.Query) ([]usage.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := []usage.Record{}
	if q.To.IsZero() || (!q.From.IsZero() && !q.To.After(q.From)) {
		return out, nil
	}
	query, who := s.q.usageByCustomer, q.Customer
	if q.KeyID != "" {
		query, who = s.q.usageByKey, q.KeyID
	}
	args := []any{who, s.d.timeArg(q.To)}
	i := 0
	if !q.From.IsZero() {
		args = []any{who, s.d.timeArg(q.From), s.d.timeArg(q.To)}
		i = 1
	}
	rows, err := s.db.QueryContext(ctx, query[i], args...)
	if err != nil {
		return nil, s.fail(ctx, "usage", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r usage.Record
		start := timeCol{d: s.d, t: &r.Start}
		if err := rows.Scan(&r.KeyID, &start, &r.Customer, &r.Allowed, &r.Limited, &r.Refused, &r.Cost); err != nil {
			return nil, s.fail(ctx, "usage", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, "usage", err)
	}
	return out, nil
}

// PurgeUsage implements usage.Store with DELETE ... WHERE start < ?. On
// MySQL it deletes in batches of 10,000 rows, each committed on its own,
// since InnoDB locks every row a DELETE reads. No index serves the
// condition, so a purge reads the whole table.
func (s *Store) PurgeUsage(ctx context.Context, before time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b := s.d.timeArg(before)
	if b == nil {
		return 0, nil
	}
	total := 0
	for {
		args := []any{b}
		if s.d == MySQL {
			args = append(args, usagePurgeBatch)
		}
		res, err := s.db.ExecContext(ctx, s.q.usagePurge, args...)
		if err != nil {
			return total, s.fail(ctx, "purge usage", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, s.fail(ctx, "purge usage", err)
		}
		total += int(n)
		if s.d != MySQL || n < usagePurgeBatch {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, s.fail(ctx, "purge usage", err)
		}
	}
}
