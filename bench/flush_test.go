package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/sqlstore"
)

// flushKeys is the number of distinct keys BenchmarkFlush writes.
const flushKeys = 100_000

// BenchmarkFlush writes the last-used times of flushKeys distinct keys to
// PostgreSQL (APIKEY_TEST_POSTGRES_DSN) and MySQL/MariaDB
// (APIKEY_TEST_MYSQL_DSN), whose table holds exactly those keys:
//
//	MarkUsed  one sqlstore.Store.MarkUsed call with all of them, every
//	          time later than the stored one (so every row is written)
//	Close     a Manager that verified every key once (recording one use
//	          each) flushes them all in Manager.Close, in batches of
//	          Options.LastUsedBatch's default; the benchmark fails unless every
//	          key's last_used_at was written within Close's 10 s context
//
// Target: an operation under 2 s on the 2-core development machine. The
// Manager's store serves Get from memory (so verifying 100,000 keys,
// untimed, costs no query) and sends MarkUsed to the database.
func BenchmarkFlush(b *testing.B) {
	mem := memstore.New()
	tokens, err := fillStore(context.Background(), mem, hmacHasher(b), flushKeys)
	if err != nil {
		b.Fatal(err)
	}
	f, err := apikey.NewFormat("", 0)
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, len(tokens))
	for i, token := range tokens {
		t, err := f.Parse(token)
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = t.ID
	}
	for _, db := range []struct {
		name, driver, env string
		dialect           sqlstore.Dialect
	}{
		{"postgres", "pgx", "APIKEY_TEST_POSTGRES_DSN", sqlstore.Postgres},
		{"mariadb", "mysql", "APIKEY_TEST_MYSQL_DSN", sqlstore.MySQL},
	} {
		b.Run(db.name, func(b *testing.B) {
			dsn := os.Getenv(db.env)
			if dsn == "" {
				b.Skipf("%s not set", db.env)
			}
			conn, err := sql.Open(db.driver, dsn)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			store, count := flushTable(b, conn, db.dialect, mem, ids)

			b.Run("MarkUsed", func(b *testing.B) {
				base := time.Now().UTC().Truncate(time.Second)
				round := 0
				for b.Loop() {
					b.StopTimer()
					round++
					uses := make(map[string]time.Time, len(ids))
					for i, id := range ids {
						uses[id] = base.Add(time.Duration(round)*time.Hour + time.Duration(i)*time.Microsecond)
					}
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					b.StartTimer()
					err := store.MarkUsed(ctx, uses)
					b.StopTimer()
					cancel()
					if err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(flushKeys)*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
			})

			b.Run("Close", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					m, err := apikey.New(splitStore{Store: mem, sql: store}, apikey.Options{
						Peppers: []apikey.Pepper{benchPepper}, CacheTTL: -1,
						LastUsedInterval: time.Hour, LastUsedQueue: flushKeys,
					})
					if err != nil {
						b.Fatal(err)
					}
					start := time.Now().UTC()
					for _, token := range tokens {
						if _, err := m.Verify(context.Background(), token); err != nil {
							b.Fatal(err)
						}
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					b.StartTimer()
					err = m.Close(ctx)
					b.StopTimer()
					cancel()
					if err != nil {
						b.Fatalf("Close: %v (%+v)", err, m.Stats())
					}
					if n := count(start); n != flushKeys {
						b.Fatalf("%d of %d keys have a last use after the run's start", n, flushKeys)
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(flushKeys)*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
			})
		})
	}
}

// splitStore serves everything from memory but MarkUsed, which goes to sql.
type splitStore struct {
	apikey.Store
	sql *sqlstore.Store
}

func (s splitStore) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	return s.sql.MarkUsed(ctx, uses)
}

// flushTable creates a table (dropped when b ends) holding a row for each
// of ids, copied from mem's record of ids[0] with only the id changed, and
// returns its store and a function counting the rows used since a time.
func flushTable(b *testing.B, db *sql.DB, d sqlstore.Dialect, mem apikey.Store, ids []string) (*sqlstore.Store, func(time.Time) int) {
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	table := "bench_flush_" + hex.EncodeToString(suffix)
	store, err := sqlstore.New(db, d, sqlstore.Options{Table: table})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.Cleanup(func() {
		for _, t := range []string{table, store.CustomerTable(), store.UsageTable(), store.OutboxTable()} {
			_, _ = db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+t)
		}
	})
	if err := store.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	first, err := mem.Get(ctx, ids[0])
	if err != nil {
		b.Fatal(err)
	}
	if err := store.Create(ctx, first); err != nil {
		b.Fatal(err)
	}
	// Copy the template row to every other id in SQL, whatever the columns.
	q, arg := "SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position", any(table)
	if d == sqlstore.MySQL {
		q = "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position"
	}
	rows, err := db.QueryContext(ctx, q, arg)
	if err != nil {
		b.Fatal(err)
	}
	var cols, exprs []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			b.Fatal(err)
		}
		cols = append(cols, c)
		if c == "id" {
			exprs = append(exprs, "v.id")
		} else {
			exprs = append(exprs, "src."+c)
		}
	}
	rows.Close()
	head := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") SELECT " + strings.Join(exprs, ", ") + " FROM " + table + " AS src, "
	rest := ids[1:]
	if d == sqlstore.Postgres {
		_, err = db.ExecContext(ctx, head+"unnest($1::text[]) AS v(id) WHERE src.id = $2", "{"+strings.Join(rest, ",")+"}", ids[0])
	} else {
		for len(rest) > 0 && err == nil {
			part := rest[:min(len(rest), 2000)]
			rest = rest[len(part):]
			sel := "SELECT CAST(? AS BINARY) AS id" + strings.Repeat(" UNION ALL SELECT ?", len(part)-1)
			args := make([]any, 0, len(part)+1)
			for _, id := range part {
				args = append(args, id)
			}
			_, err = db.ExecContext(ctx, head+"("+sel+") AS v WHERE src.id = ?", append(args, ids[0])...)
		}
	}
	if err != nil {
		b.Fatal(fmt.Errorf("copying %d rows: %w", len(ids)-1, err))
	}
	count := func(since time.Time) int {
		q, arg := "SELECT count(*) FROM "+table+" WHERE last_used_at >= $1", any(since)
		if d == sqlstore.MySQL {
			q, arg = "SELECT count(*) FROM "+table+" WHERE last_used_at >= ?", since.Truncate(time.Microsecond).Format("2006-01-02 15:04:05.000000")
		}
		var n int
		if err := db.QueryRowContext(context.Background(), q, arg).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	if n := count(time.Time{}.Add(time.Hour)); n != 0 {
		b.Fatalf("%d rows used before the run", n)
	}
	return store, count
}
