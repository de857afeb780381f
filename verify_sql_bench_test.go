package apikey_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/sqlstore"
)

// BenchmarkVerifySQL measures Verify over sqlstore: CacheMiss reads the
// database on every verification (one primary-key query), CacheHit serves
// from the Manager's cache. PostgreSQL runs when APIKEY_TEST_POSTGRES_DSN
// is set.
func BenchmarkVerifySQL(b *testing.B) {
	b.Run("SQLite", func(b *testing.B) {
		dsn := "file:" + filepath.Join(b.TempDir(), "keys.db") + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)"
		benchVerifySQL(b, "sqlite", dsn, sqlstore.SQLite)
	})
	b.Run("PostgreSQL", func(b *testing.B) {
		dsn := os.Getenv("APIKEY_TEST_POSTGRES_DSN")
		if dsn == "" {
			b.Skip("APIKEY_TEST_POSTGRES_DSN not set")
		}
		benchVerifySQL(b, "pgx", dsn, sqlstore.Postgres)
	})
}

func benchVerifySQL(b *testing.B, driver, dsn string, d sqlstore.Dialect) {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	for _, c := range []struct {
		name  string
		cache apikey.CacheOptions
	}{
		{"CacheMiss", apikey.CacheOptions{TTL: -1}},
		{"CacheHit", apikey.CacheOptions{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			store := sqlBenchStore(b, db, d)
			m, err := apikey.New(store, apikey.Options{
				Peppers: []apikey.Pepper{{Version: "1", Secret: []byte("0123456789abcdef0123456789abcdef")}},
				Cache:   c.cache,
			})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = m.Close(context.Background()) })
			token, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "bench", Scopes: []string{"read"}})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Verify(ctx, token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// sqlBenchStore returns a migrated store on a fresh table, dropped after
// the benchmark.
func sqlBenchStore(b *testing.B, db *sql.DB, d sqlstore.Dialect) *sqlstore.Store {
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	table := "bench_keys_" + hex.EncodeToString(suffix)
	store, err := sqlstore.New(db, d, sqlstore.Options{Table: table})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := store.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = db.ExecContext(context.Background(), `DROP TABLE IF EXISTS "`+table+`"`) })
	return store
}
