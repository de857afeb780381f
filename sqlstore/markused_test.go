package sqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/sqlstore"
)

// scriptedDB answers ExecContext with the errors of fail, in turn, then
// success, and records the statements.
type scriptedDB struct {
	sqlstore.DB
	mu    sync.Mutex
	fail  []error
	execs []string
}

func (d *scriptedDB) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.execs = append(d.execs, q)
	if len(d.fail) > 0 {
		err := d.fail[0]
		d.fail = d.fail[1:]
		return nil, err
	}
	return driverResult{}, nil
}

type driverResult struct{}

func (driverResult) LastInsertId() (int64, error) { return 0, nil }
func (driverResult) RowsAffected() (int64, error) { return 1, nil }

func uses(n int) map[string]time.Time {
	m := make(map[string]time.Time, n)
	for range n {
		m[apikey.NewID()] = time.Now()
	}
	return m
}

// A chunk the database aborted to break a deadlock runs again; any other
// error, or a third deadlock, fails MarkUsed.
func TestMarkUsedRetriesDeadlocks(t *testing.T) {
	t.Parallel()
	deadlock := map[sqlstore.Dialect]error{
		sqlstore.MySQL:    errors.New("Error 1213 (40001): Deadlock found when trying to get lock; try restarting transaction"),
		sqlstore.Postgres: errors.New("ERROR: deadlock detected (SQLSTATE 40P01)"),
	}
	for d, err := range deadlock {
		t.Run(d.String(), func(t *testing.T) {
			db := &scriptedDB{fail: []error{err, err}}
			s, e := sqlstore.New(db, d, sqlstore.Options{})
			require.NoError(t, e)
			require.NoError(t, s.MarkUsed(context.Background(), uses(10)))
			assert.Len(t, db.execs, 3, "two aborted attempts and a successful one")

			db = &scriptedDB{fail: []error{err, err, err}}
			s, _ = sqlstore.New(db, d, sqlstore.Options{})
			assert.Error(t, s.MarkUsed(context.Background(), uses(10)))
			assert.Len(t, db.execs, 3, "at most three attempts")

			db = &scriptedDB{fail: []error{errors.New("connection refused")}}
			s, _ = sqlstore.New(db, d, sqlstore.Options{})
			assert.Error(t, s.MarkUsed(context.Background(), uses(10)))
			assert.Len(t, db.execs, 1, "other errors are not retried")
		})
	}
}

// A large batch is written in several statements, each a bulk update.
func TestMarkUsedChunks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d        sqlstore.Dialect
		n, stmts int
		fragment string
	}{
		{sqlstore.Postgres, 25_000, 3, "unnest($1::text[], $2::timestamptz[])"},
		{sqlstore.MySQL, 2_500, 3, "UNION ALL SELECT ?, ?"},
		{sqlstore.SQLite, 2_500, 3, "FROM (VALUES (?, ?), (?, ?)"},
	} {
		t.Run(tc.d.String(), func(t *testing.T) {
			db := &scriptedDB{}
			s, err := sqlstore.New(db, tc.d, sqlstore.Options{})
			require.NoError(t, err)
			require.NoError(t, s.MarkUsed(context.Background(), uses(tc.n)))
			require.Len(t, db.execs, tc.stmts)
			for _, q := range db.execs {
				assert.True(t, strings.Contains(q, tc.fragment), "%.200s", q)
			}
		})
	}
}
