package sqlstore_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
	_ "time/tzdata" // for a non-UTC loc on any machine

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/gokeys/apikey/sqlstore"
)

// Environment variables naming the servers to test against.
const (
	postgresEnv = "APIKEY_TEST_POSTGRES_DSN"
	mysqlEnv    = "APIKEY_TEST_MYSQL_DSN"
)

// backend is one database the tests run against.
type backend struct {
	name    string
	dialect sqlstore.Dialect
	open    func(t *testing.T) *sql.DB
}

// backends lists SQLite, which always runs, and the servers whose DSN is
// set. MySQL also runs with parseTime=true and a non-UTC loc, to show the
// store does not depend on either.
func backends() []backend {
	return []backend{
		{"SQLite", sqlstore.SQLite, openSQLite},
		{"PostgreSQL", sqlstore.Postgres, openServer("pgx", postgresEnv, noSyncCommit)},
		{"MySQL", sqlstore.MySQL, openServer("mysql", mysqlEnv, nil)},
		{"MySQLParseTime", sqlstore.MySQL, openServer("mysql", mysqlEnv, func(t *testing.T, dsn string) string {
			cfg, err := mysql.ParseDSN(dsn)
			require.NoError(t, err)
			loc, err := time.LoadLocation("Asia/Kolkata")
			require.NoError(t, err)
			cfg.ParseTime, cfg.Loc = true, loc
			return cfg.FormatDSN()
		})},
	}
}

// forEachBackend runs fn as a parallel subtest for each backend; fn uses
// tables of its own (randomTable).
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend, db *sql.DB)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, b, b.open(t))
		})
	}
}

// noSyncCommit adds synchronous_commit=off to a PostgreSQL DSN, a
// parameter of the session that pgx sends when it connects: like SQLite's
// synchronous(NORMAL) below, the tests need no durability across a crash,
// and waiting for a flush of the WAL at every commit makes the
// conformance races several times slower on a busy disk. Locking and
// isolation are unchanged.
func noSyncCommit(t *testing.T, dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" { // a key=value DSN
		return dsn + " synchronous_commit=off"
	}
	q := u.Query()
	q.Set("synchronous_commit", "off")
	u.RawQuery = q.Encode()
	return u.String()
}

// sqliteDSN is the DSN advised in the package documentation, plus
// synchronous(NORMAL): the tests need no durability across a power loss,
// and an fsync per commit would make the conformance races ten times
// slower.
func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
}

func openSQLite(t *testing.T) *sql.DB {
	db, err := sql.Open("sqlite", sqliteDSN(filepath.Join(t.TempDir(), "keys.db")))
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// openServer opens the server named by env. Without the variable the test
// is skipped; an unreachable server skips it too, except with CI=true,
// where it fails.
func openServer(driver, env string, adjust func(*testing.T, string) string) func(t *testing.T) *sql.DB {
	return func(t *testing.T) *sql.DB {
		dsn := os.Getenv(env)
		if dsn == "" {
			t.Skipf("%s not set", env)
		}
		if adjust != nil {
			dsn = adjust(t, dsn)
		}
		db, err := sql.Open(driver, dsn)
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		// Keep the connections of a race's goroutines between trials:
		// with database/sql's default of 2 idle ones, each trial would
		// open a dozen connections, and a PostgreSQL connection starts a
		// process.
		db.SetMaxIdleConns(24)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := db.PingContext(ctx); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is set but the server is unreachable: %v", env, err)
			}
			t.Skipf("%s is set but the server is unreachable: %v", env, err)
		}
		return db
	}
}

// randomTable returns a table name no other test run uses.
func randomTable(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// newStore creates a migrated store on a fresh table of db, dropped when
// the test ends.
func newStore(t *testing.T, db *sql.DB, d sqlstore.Dialect, table string) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.New(db, d, sqlstore.Options{Table: table})
	require.NoError(t, err)
	dropTable(t, db, d, table)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, s.Migrate(ctx))
	return s
}

// dropTable drops table, and the customers and usage tables of a Store
// of that keys table, when the test ends.
func dropTable(t *testing.T, db *sql.DB, d sqlstore.Dialect, table string) {
	tables := []string{table}
	if s, err := sqlstore.New(db, d, sqlstore.Options{Table: table}); err == nil {
		tables = append(tables, s.CustomerTable(), s.UsageTable(), s.OutboxTable())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, table := range tables {
			if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+quoteTable(d, table)); err != nil {
				t.Logf("drop %s: %v", table, err)
			}
		}
	})
}

// quoteTable quotes a test's (valid) table name for d.
func quoteTable(d sqlstore.Dialect, table string) string {
	q := `"`
	if d == sqlstore.MySQL {
		q = "`"
	}
	out := q
	for _, c := range table {
		if c == '.' {
			out += q + "." + q
			continue
		}
		out += string(c)
	}
	return out + q
}
