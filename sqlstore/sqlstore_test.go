package sqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/sqlstore"
	"github.com/gokeys/apikey/storetest"
)

// trialsEnv overrides the number of trials of each conformance race.
const trialsEnv = "APIKEY_TEST_TRIALS"

// trials returns the most trials of each conformance race on b, each
// race also bounded by storetest's time budget (storetest.DefaultBudget,
// after storetest.MinTrials trials): 1,000; 100 under the race detector;
// none on the second MySQL configuration (which checks time parsing, not
// locking). Set APIKEY_TEST_TRIALS to choose.
func trials(t *testing.T, b backend) int {
	if v := os.Getenv(trialsEnv); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, trialsEnv)
		return n
	}
	switch {
	case b.name == "MySQLParseTime":
		return -1
	case raceEnabled:
		return storetest.MinTrials
	}
	return storetest.DefaultTrials
}

func TestConformance(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		storetest.RunWith(t, func(t *testing.T) apikey.Store {
			return newStore(t, db, b.dialect, randomTable("keys_"))
		}, storetest.Options{Trials: trials(t, b)})
	})
}

func TestMigrateIsIdempotent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		long := randomTable("k")
		long += strings.Repeat("x", 63-len(long)) // the longest name: the index name must still fit
		for _, table := range []string{randomTable("keys_"), long} {
			t.Run(table[:5], func(t *testing.T) {
				s := newStore(t, db, b.dialect, table)
				ctx := context.Background()
				k := storetest.NewKey("alice")
				require.NoError(t, s.Create(ctx, k))
				require.NoError(t, s.Migrate(ctx), "second Migrate")
				require.NoError(t, s.Migrate(ctx), "third Migrate")
				got, err := s.Get(ctx, k.ID)
				require.NoError(t, err, "Migrate keeps the data")
				assert.Equal(t, k.Name, got.Name)
			})
		}
	})
}

func TestQualifiedTableName(t *testing.T) {
	schemas := map[sqlstore.Dialect]string{sqlstore.SQLite: "main", sqlstore.Postgres: "public", sqlstore.MySQL: ""}
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		schema := schemas[b.dialect]
		if schema == "" { // the current database
			require.NoError(t, db.QueryRowContext(context.Background(), "SELECT DATABASE()").Scan(&schema))
		}
		table := schema + "." + randomTable("keys_")
		s := newStore(t, db, b.dialect, table)
		assert.Equal(t, table, s.Table())
		ctx := context.Background()
		k := storetest.NewKey("alice")
		require.NoError(t, s.Create(ctx, k))
		list, err := s.List(ctx, "alice", apikey.ListOptions{})
		require.NoError(t, err)
		require.Len(t, list, 1)
		ids, err := s.RevokeOwner(ctx, "alice", time.Now())
		require.NoError(t, err)
		assert.Equal(t, []string{k.ID}, ids)
	})
}

func TestNewValidates(t *testing.T) {
	db, err := sql.Open("sqlite", ":memory:") // never used: New does no I/O
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	long := strings.Repeat("a", 63)
	tests := []struct {
		name, table string
		ok          bool
	}{
		{"Default", "", true},
		{"Plain", "api_keys", true},
		{"Underscore", "_keys", true},
		{"MixedCase", "ApiKeys2", true},
		{"Longest", long, true},
		{"Qualified", "auth.api_keys", true},
		{"TooLong", long + "a", false},
		{"LeadingDigit", "1keys", false},
		{"Hyphen", "api-keys", false},
		{"Space", "api keys", false},
		{"Statement", "keys; DROP TABLE users", false},
		{"Comment", "keys--", false},
		{"DoubleQuote", `keys" (id int); --`, false},
		{"Backtick", "keys`", false},
		{"Bracket", "[keys]", false},
		{"NonASCII", "clés", false},
		{"ThreeParts", "a.b.c", false},
		{"EmptySchema", ".keys", false},
		{"EmptyTable", "keys.", false},
		{"QualifiedInjection", "public.keys;drop", false},
		{"NUL", "keys\x00", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, d := range []sqlstore.Dialect{sqlstore.Postgres, sqlstore.MySQL, sqlstore.SQLite} {
				s, err := sqlstore.New(db, d, sqlstore.Options{Table: tc.table})
				_, schemaErr := d.Schema(tc.table)
				if tc.ok {
					require.NoError(t, err)
					assert.NoError(t, schemaErr)
					assert.NotEmpty(t, s.Schema())
					continue
				}
				assert.ErrorIs(t, err, apikey.ErrInvalidOptions, "%v", d)
				assert.Nil(t, s)
				assert.ErrorIs(t, schemaErr, apikey.ErrInvalidOptions, "%v", d)
			}
		})
	}
	t.Run("CustomerTable", func(t *testing.T) {
		for _, tc := range []struct{ table, customers, want string }{
			{"", "", "api_customers"},
			{"auth.api_keys", "", "auth.api_customers"},
			{"tokens", "", "tokens_customers"},
			{"keys", "", "customers"},
			{long, "", ""}, // cut, with a hash
			{"api_keys", "billing.accounts", "billing.accounts"},
		} {
			s, err := sqlstore.New(db, sqlstore.SQLite, sqlstore.Options{Table: tc.table, CustomerTable: tc.customers})
			require.NoError(t, err)
			if tc.table == long {
				assert.LessOrEqual(t, len(s.CustomerTable()), 63, s.CustomerTable())
				assert.True(t, strings.HasSuffix(s.CustomerTable(), "_customers"), s.CustomerTable())
				continue
			}
			assert.Equal(t, tc.want, s.CustomerTable())
		}
		for _, bad := range []string{"a-b", "x.y.z", "api_keys"} {
			_, err := sqlstore.New(db, sqlstore.SQLite, sqlstore.Options{CustomerTable: bad})
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions, bad)
		}
	})
	t.Run("UsageTable", func(t *testing.T) {
		for _, tc := range []struct{ table, usage, want string }{
			{"", "", "api_usage"},
			{"auth.api_keys", "", "auth.api_usage"},
			{"tokens", "", "tokens_usage"},
			{"keys", "", "usage"},
			{long, "", ""}, // cut, with a hash
			{"api_keys", "metering.hours", "metering.hours"},
		} {
			s, err := sqlstore.New(db, sqlstore.SQLite, sqlstore.Options{Table: tc.table, UsageTable: tc.usage})
			require.NoError(t, err)
			if tc.table == long {
				assert.LessOrEqual(t, len(s.UsageTable()), 63, s.UsageTable())
				assert.True(t, strings.HasSuffix(s.UsageTable(), "_usage"), s.UsageTable())
				continue
			}
			assert.Equal(t, tc.want, s.UsageTable())
		}
		for _, bad := range []sqlstore.Options{
			{UsageTable: "a-b"}, {UsageTable: "x.y.z"}, {UsageTable: "api_keys"}, {UsageTable: "api_customers"},
			{CustomerTable: "accounts", UsageTable: "accounts"},
		} {
			_, err := sqlstore.New(db, sqlstore.SQLite, bad)
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions, "%+v", bad)
		}
	})
	t.Run("NilDB", func(t *testing.T) {
		_, err := sqlstore.New(nil, sqlstore.SQLite, sqlstore.Options{})
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
	})
	t.Run("ZeroDialect", func(t *testing.T) {
		_, err := sqlstore.New(db, sqlstore.Dialect(0), sqlstore.Options{})
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
	})
}

func TestDocShowsSchema(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	require.NoError(t, err)
	doc := strings.Join(strings.Fields(strings.ReplaceAll(string(src), "//", " ")), " ")
	for _, d := range []sqlstore.Dialect{sqlstore.Postgres, sqlstore.MySQL, sqlstore.SQLite} {
		stmts, err := d.Schema("")
		require.NoError(t, err)
		for _, stmt := range stmts {
			assert.Contains(t, doc, strings.Join(strings.Fields(stmt), " ")+";", "%v schema missing from the package doc", d)
		}
	}
}

func TestDialectString(t *testing.T) {
	assert.Equal(t, "postgres", sqlstore.Postgres.String())
	assert.Equal(t, "mysql", sqlstore.MySQL.String())
	assert.Equal(t, "sqlite", sqlstore.SQLite.String())
	assert.Equal(t, "Dialect(0)", sqlstore.Dialect(0).String())
}

func isCtxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// TestIDsCompareAsBytes checks that ids differing only in case are
// distinct keys and that List orders them in byte order, on every
// database (MySQL's default collations ignore case).
func TestIDsCompareAsBytes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		ctx := context.Background()
		ids := []string{"abcdefghijklmnop", "ABCDEFGHIJKLMNOP", "Abcdefghijklmnop", "0bcdefghijklmnop", "zbcdefghijklmnop"}
		for _, id := range ids {
			k := storetest.NewKey("alice")
			k.ID, k.Name = id, "name of "+id
			require.NoError(t, s.Create(ctx, k), id)
		}
		got, err := s.Get(ctx, "ABCDEFGHIJKLMNOP")
		require.NoError(t, err)
		assert.Equal(t, "name of ABCDEFGHIJKLMNOP", got.Name)
		_, err = s.Get(ctx, "aBCDEFGHIJKLMNOP")
		assert.ErrorIs(t, err, apikey.ErrNotFound)
		_, err = s.Get(ctx, "abcdefghijklmnop ")
		assert.ErrorIs(t, err, apikey.ErrNotFound, "trailing spaces matter")

		// One CreatedAt: by id descending, in byte order.
		list, err := s.List(ctx, "alice", apikey.ListOptions{})
		require.NoError(t, err)
		var listed []string
		for _, k := range list {
			listed = append(listed, k.ID)
		}
		assert.Equal(t, []string{"zbcdefghijklmnop", "abcdefghijklmnop", "Abcdefghijklmnop", "ABCDEFGHIJKLMNOP", "0bcdefghijklmnop"}, listed)
		list, err = s.List(ctx, "alice", apikey.ListOptions{After: list[2].Cursor()})
		require.NoError(t, err)
		listed = nil
		for _, k := range list {
			listed = append(listed, k.ID)
		}
		assert.Equal(t, []string{"ABCDEFGHIJKLMNOP", "0bcdefghijklmnop"}, listed)
		none, err := s.List(ctx, "ALICE", apikey.ListOptions{})
		require.NoError(t, err)
		assert.Empty(t, none, "owners compare as bytes too")
	})
}

// TestCloseReleasesStatements checks that a Store keeps working after
// Close, preparing again.
func TestCloseReleasesStatements(t *testing.T) {
	db := openSQLite(t)
	s := newStore(t, db, sqlstore.SQLite, randomTable("keys_"))
	ctx := context.Background()
	k := storetest.NewKey("alice")
	require.NoError(t, s.Create(ctx, k))
	_, err := s.Get(ctx, k.ID)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close twice")
	_, err = s.Get(ctx, k.ID)
	require.NoError(t, err)
	require.NoError(t, s.Close())
}
