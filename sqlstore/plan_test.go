package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/usage"
)

// TestListReadsTheIndex asks each database for the plans of List's
// queries: each reads the (owner, created_at, id) index in its order,
// with no sort, however many keys the owner has. PostgreSQL is told to
// avoid sequential and bitmap scans (the table is small), so that a plan
// with the index but a sort would show.
func TestListReadsTheIndex(t *testing.T) {
	forEachPlanDB(t, func(t *testing.T, s *Store, conn *sql.Conn) {
		ctx := context.Background()
		for i := range 40 {
			k := &apikey.Key{ID: fmt.Sprintf("k%03d", i), Owner: fmt.Sprintf("owner-%d", i%4),
				CreatedAt: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)}
			require.NoError(t, s.Create(ctx, k))
		}
		if s.d == Postgres {
			for _, set := range []string{"SET enable_seqscan = off", "SET enable_bitmapscan = off"} {
				_, err := conn.ExecContext(ctx, set)
				require.NoError(t, err)
			}
		}
		at := s.d.timeArg(time.Date(2026, 1, 1, 0, 0, 20, 0, time.UTC))
		for name, q := range map[string]struct {
			query string
			args  []any
		}{
			"First":       {s.q.listFirst[0], []any{"owner-1", 100}},
			"FirstUsable": {s.q.listFirst[1], []any{"owner-1", at, 100}},
			"After":       {s.q.listAfter[0], []any{"owner-1", at, at, "k020", 100}},
			"AfterUsable": {s.q.listAfter[1], []any{"owner-1", at, at, "k020", at, 100}},
		} {
			plan := explain(t, conn, s.d, q.query, q.args...)
			t.Logf("%s: %s", name, plan)
			switch s.d {
			case SQLite:
				assert.Contains(t, plan, "USING INDEX "+s.table.listIndex(), name)
				assert.NotContains(t, plan, "TEMP B-TREE", name)
			case Postgres:
				assert.Contains(t, plan, "Index Scan Backward using "+s.table.listIndex(), name)
				assert.NotContains(t, plan, "Sort", name)
			case MySQL:
				assert.Contains(t, plan, "key=owner_created", name)
				assert.NotContains(t, plan, "filesort", name)
			}
		}
	})
}

// TestUsageReadsTheIndexes asks each database for the plans of Usage's
// queries: a key's records come from the primary key (key_id, start), a
// customer's from the index (customer, start, key_id), in the order
// asked, with no sort.
func TestUsageReadsTheIndexes(t *testing.T) {
	forEachPlanDB(t, func(t *testing.T, s *Store, conn *sql.Conn) {
		ctx := context.Background()
		var rs []usage.Record
		for i := range 40 {
			for h := range 3 {
				rs = append(rs, usage.Record{Customer: fmt.Sprintf("customer-%d", i%4), KeyID: fmt.Sprintf("k%03d", i),
					Start: time.Date(2026, 1, 1, h, 0, 0, 0, time.UTC), Allowed: 1})
			}
		}
		require.NoError(t, s.AddUsage(ctx, rs))
		if s.d == Postgres {
			for _, set := range []string{"SET enable_seqscan = off", "SET enable_bitmapscan = off"} {
				_, err := conn.ExecContext(ctx, set)
				require.NoError(t, err)
			}
		}
		from, to := s.d.timeArg(time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)), s.d.timeArg(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC))
		for name, q := range map[string]struct {
			query, index string
			args         []any
		}{
			"Key":             {s.q.usageByKey[1], "", []any{"k001", from, to}},
			"KeyFromAny":      {s.q.usageByKey[0], "", []any{"k001", to}},
			"Customer":        {s.q.usageByCustomer[1], s.usage.customerIndex(), []any{"customer-1", from, to}},
			"CustomerFromAny": {s.q.usageByCustomer[0], s.usage.customerIndex(), []any{"customer-1", to}},
		} {
			plan := explain(t, conn, s.d, q.query, q.args...)
			t.Logf("%s: %s", name, plan)
			switch s.d {
			case SQLite:
				if q.index == "" {
					assert.Contains(t, plan, "USING PRIMARY KEY", name)
				} else {
					assert.Contains(t, plan, "USING INDEX "+q.index, name)
				}
				assert.NotContains(t, plan, "TEMP B-TREE", name)
			case Postgres:
				if q.index == "" {
					assert.Contains(t, plan, "Index Scan using "+s.usage.name+"_pkey", name)
				} else {
					assert.Contains(t, plan, "Index Scan using "+q.index, name)
				}
				assert.NotContains(t, plan, "Sort", name)
			case MySQL:
				if q.index == "" {
					assert.Contains(t, plan, "key=PRIMARY", name)
				} else {
					assert.Contains(t, plan, "key=customer_start", name)
				}
				assert.NotContains(t, plan, "filesort", name)
			}
		}
	})
}

// forEachPlanDB runs fn for SQLite and the servers whose DSN is set, with
// a migrated Store on fresh tables over one connection.
func forEachPlanDB(t *testing.T, fn func(t *testing.T, s *Store, conn *sql.Conn)) {
	for _, tc := range []struct {
		d      Dialect
		driver string
		dsn    string
	}{
		{SQLite, "sqlite", "file:" + filepath.Join(t.TempDir(), "plan.db")},
		{Postgres, "pgx", os.Getenv("APIKEY_TEST_POSTGRES_DSN")},
		{MySQL, "mysql", os.Getenv("APIKEY_TEST_MYSQL_DSN")},
	} {
		t.Run(tc.d.String(), func(t *testing.T) {
			if tc.dsn == "" {
				t.Skip("no DSN")
			}
			ctx := context.Background()
			db, err := sql.Open(tc.driver, tc.dsn)
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			conn, err := db.Conn(ctx)
			require.NoError(t, err)
			t.Cleanup(func() { conn.Close() })
			b := make([]byte, 6)
			_, _ = rand.Read(b)
			s, err := New(conn, tc.d, Options{Table: "plan_" + hex.EncodeToString(b)})
			require.NoError(t, err)
			t.Cleanup(func() {
				for _, tb := range []tableName{s.table, s.customers, s.usage} {
					_, _ = db.ExecContext(ctx, "DROP TABLE IF EXISTS "+tb.quoted(tc.d))
				}
			})
			require.NoError(t, s.Migrate(ctx))
			fn(t, s, conn)
		})
	}
}

// explain returns the plan of query as one line.
func explain(t *testing.T, conn *sql.Conn, d Dialect, query string, args ...any) string {
	t.Helper()
	prefix := "EXPLAIN "
	if d == SQLite {
		prefix = "EXPLAIN QUERY PLAN "
	}
	rows, err := conn.QueryContext(context.Background(), prefix+query, args...)
	require.NoError(t, err)
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		for i, v := range vals {
			switch {
			case d == MySQL:
				out = append(out, cols[i]+"="+v.String)
			case d == Postgres || cols[i] == "detail":
				out = append(out, v.String)
			}
		}
	}
	require.NoError(t, rows.Err())
	return strings.Join(out, " | ")
}
