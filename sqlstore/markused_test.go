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
	"github.com/gokeys/apikey/storetest/fleetsim"
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

// Sixteen Managers over one database, each using every one of the same
// keys in every 10-second flush interval at its own phase, and caching
// the keys for an hour: in two minutes each key is written twice, as the
// database reports the rows written. The first instance read the keys
// before any use was stored, so it sends every key at every flush; the
// others read them after its first write and skip them for a minute, then
// send them at every flush too. From then on only the database's
// conditional write stops their writes.
func TestLastUsedGranularityAcrossInstances(t *testing.T) {
	const keys, instances, steps = 300, 16, 12
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		if b.name == "MySQLParseTime" {
			t.Skip("time parsing is not at stake")
		}
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		m := newManager(t, s)
		tokens, ids := make([]string, keys), make([]string, keys)
		for i := range tokens {
			token, k, err := m.Issue(context.Background(), apikey.IssueParams{Owner: "fleet"})
			require.NoError(t, err)
			tokens[i], ids[i] = token, k.ID
		}
		r, err := fleetsim.Run(context.Background(), fleetsim.Config{
			Store: s, Tokens: tokens, Instances: instances, Steps: steps, Start: time.Now().Add(time.Hour),
			Options: apikey.Options{Prefix: "sk_test", Peppers: testPeppers, CacheTTL: time.Hour},
		})
		require.NoError(t, err)
		t.Logf("%d keys, %d instances, %d intervals of 10 s: %d uses sent, %d rows written, in %d store calls; %v flushing",
			keys, instances, steps, r.Sent, r.Written, r.Calls, r.Flushing.Round(time.Millisecond))
		assert.EqualValues(t, keys*(steps+(instances-1)*(steps-6)), r.Sent, "uses sent to the database")
		assert.EqualValues(t, 2*keys, r.Written, "rows written: each key once a minute")
		for _, id := range ids {
			k, err := s.Get(context.Background(), id)
			require.NoError(t, err)
			lag := r.End.Sub(k.LastUsedAt)
			assert.LessOrEqual(t, lag, time.Minute+10*time.Second, "LastUsedAt lags the last use by at most the granularity and one interval")
		}
	})
}
