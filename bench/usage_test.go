package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/sqlstore"
	"github.com/gokeys/apikey/usage"
)

// The usage flush: usageActiveKeys distinct keys are active in one flush
// interval (apikey.Options.UsageInterval, 10 s by default), served by
// usageWriters instances sharing one database, each flushing its records
// with AddUsage in batches of usageBatch.
const (
	usageActiveKeys = 100_000
	usageWriters    = 4
	usageBatch      = 1_000 // apikey.Options.LastUsedBatch's default
	usageCustomers  = 1_000
)

// BenchmarkUsageFlush measures one flush interval of usage recording on
// PostgreSQL (APIKEY_TEST_POSTGRES_DSN) and MySQL/MariaDB
// (APIKEY_TEST_MYSQL_DSN): usageWriters writers, each with its own
// connection pool and sqlstore.Store over one usage table, send their
// records concurrently, each in batches of usageBatch sequential
// AddUsage calls. An operation is the whole interval: it ends when the
// last writer's last batch is written. After each operation, untimed,
// the table's count of rows and sums of every count in the hour must
// equal what was sent, exactly. Each sub-benchmark writes to tables of
// its own.
//
//	split   the 100,000 keys are split across the writers (25,000 each), as
//	        when a load balancer keeps a key on one instance
//	shared  every writer sees all 100,000 keys (400,000 records per
//	        interval, four on each row), as with round-robin balancing
//	first   the first interval of an hour: the rows are inserted
//	next    a later interval of the hour: the rows exist and are added to
//
// APIKEY_BENCH_USAGE_HISTORY=24 writes 24 hours of history first (2.4
// million rows), so that the table outgrows a small buffer pool: the
// working set of an interval is the page of each key's latest hour in
// the primary key (key_id, start).
//
// Target: an interval under 2 s on the 2-core development machine.
// rows/op is the records written in an interval; table-B/row the size of
// the table and its indexes per row, after split/first.
//
// The writers call usage.Store directly. A Manager in front of the store
// (apikey.Options.UsageInterval) adds what happens before this point: it
// counts each request in memory per (key, hour), so that an interval
// sends at most one record per key and hour per instance whatever the
// traffic; it bounds the keys waiting for a flush (UsageQueue, 100,000 by
// default); and it flushes in batches of LastUsedBatch, each under
// LastUsedTimeout (5 s), as the writers here do. With the Manager's
// recorder in place, the writers can become usageWriters Managers
// verifying the keys' tokens.
func BenchmarkUsageFlush(b *testing.B) {
	ids := make([]string, usageActiveKeys)
	for i := range ids {
		ids[i] = apikey.NewID()
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
			for _, shared := range []bool{false, true} {
				name := "split"
				if shared {
					name = "shared"
				}
				for _, next := range []bool{false, true} {
					phase := "first"
					if next {
						phase = "next"
					}
					b.Run(name+"/"+phase, func(b *testing.B) {
						u := newUsageTable(b, db.driver, dsn, db.dialect)
						u.fillHistory(b, ids)
						calls := usageCalls(ids, shared)
						sent := 0
						for _, batches := range calls {
							for _, batch := range batches {
								sent += len(batch)
							}
						}
						for b.Loop() {
							b.StopTimer()
							start := u.nextHour()
							want := usageSums{}
							if next { // the interval before, in the same hour
								u.flush(b, calls, start, &want)
							}
							b.StartTimer()
							u.flush(b, calls, start, &want)
							b.StopTimer()
							if got := u.sums(b, start); got != want {
								b.Fatalf("stored %+v, sent %+v", got, want)
							}
							b.StartTimer()
						}
						b.ReportMetric(float64(sent), "rows/op")
						if !next && !shared {
							b.ReportMetric(u.bytesPerRow(b), "table-B/row")
						}
					})
				}
			}
		})
	}
}

// usageCalls returns each writer's records for one interval, in batches
// of usageBatch: a split of ids across the writers, or all of ids for
// each. Counts differ by key and writer. Start is set by flush.
func usageCalls(ids []string, shared bool) [][][]usage.Record {
	calls := make([][][]usage.Record, usageWriters)
	for w := range calls {
		var rs []usage.Record
		for i, id := range ids {
			if !shared && i%usageWriters != w {
				continue
			}
			allowed := int64(1 + (i+w)%13)
			rs = append(rs, usage.Record{
				Customer: fmt.Sprintf("customer-%04d", i%usageCustomers), KeyID: id,
				Allowed: allowed, Limited: int64(i % 3), Refused: int64((i + w) % 2), Cost: 10 * allowed,
			})
		}
		calls[w] = slices.Collect(slices.Chunk(rs, usageBatch))
	}
	return calls
}

// usageSums are the row count and the sums of a table's hour.
type usageSums struct {
	rows                            int64
	allowed, limited, refused, cost int64
}

// usageTable is a usage table shared by usageWriters stores, each over
// its own pool.
type usageTable struct {
	d      sqlstore.Dialect
	db     *sql.DB // for the checks
	stores []*sqlstore.Store
	table  string
	hour   time.Time
}

// newUsageTable creates the tables of a fresh store (dropped when b
// ends) and the writers' stores.
func newUsageTable(b *testing.B, driver, dsn string, d sqlstore.Dialect) *usageTable {
	open := func() *sql.DB {
		db, err := sql.Open(driver, dsn)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		return db
	}
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	keys := "bench_usage_" + hex.EncodeToString(suffix)
	u := &usageTable{d: d, db: open(), hour: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)}
	for range usageWriters {
		s, err := sqlstore.New(open(), d, sqlstore.Options{Table: keys})
		if err != nil {
			b.Fatal(err)
		}
		u.stores = append(u.stores, s)
	}
	s := u.stores[0]
	u.table = s.UsageTable()
	b.Cleanup(func() {
		for _, t := range []string{s.Table(), s.CustomerTable(), s.UsageTable(), s.OutboxTable()} {
			_, _ = u.db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+t)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	return u
}

// historyEnv names the hours of history written (untimed, split across
// the writers) before the first operation: none by default.
const historyEnv = "APIKEY_BENCH_USAGE_HISTORY"

// fillHistory writes the hours of history historyEnv asks for, one
// interval per hour, so that the table holds what it holds after that
// many hours of traffic (each key's rows past its latest hour).
func (u *usageTable) fillHistory(b *testing.B, ids []string) {
	v := os.Getenv(historyEnv)
	if v == "" {
		return
	}
	hours, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("%s: %v", historyEnv, err)
	}
	calls := usageCalls(ids, false)
	for range hours {
		u.flush(b, calls, u.nextHour(), &usageSums{})
	}
}

// nextHour returns an hour no operation used yet.
func (u *usageTable) nextHour() time.Time {
	u.hour = u.hour.Add(time.Hour)
	return u.hour
}

// flush runs one interval: each writer sends its batches, with Start set
// to start, one AddUsage call after the other, under 5 s each (the
// Manager's LastUsedTimeout), all writers at once. It adds what it sent
// to sent.
func (u *usageTable) flush(b *testing.B, calls [][][]usage.Record, start time.Time, sent *usageSums) {
	for _, batches := range calls {
		for _, batch := range batches {
			for i := range batch {
				batch[i].Start = start
				sent.allowed += batch[i].Allowed
				sent.limited += batch[i].Limited
				sent.refused += batch[i].Refused
				sent.cost += batch[i].Cost
			}
		}
	}
	errs := make([]error, usageWriters)
	var wg sync.WaitGroup
	for w, batches := range calls {
		wg.Go(func() {
			for _, batch := range batches {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := u.stores[w].AddUsage(ctx, batch)
				cancel()
				if err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			b.Fatalf("writer %d: %v", w, err)
		}
	}
	if sent.rows == 0 {
		sent.rows = int64(usageActiveKeys)
	}
}

// sums reads the row count and sums of the hour start.
func (u *usageTable) sums(b *testing.B, start time.Time) usageSums {
	q, arg := "SELECT count(*), sum(allowed), sum(limited), sum(refused), sum(cost) FROM "+u.table+" WHERE start = $1", any(start)
	if u.d == sqlstore.MySQL {
		q, arg = "SELECT count(*), sum(allowed), sum(limited), sum(refused), sum(cost) FROM "+u.table+" WHERE start = ?",
			start.Format("2006-01-02 15:04:05.000000")
	}
	var s usageSums
	if err := u.db.QueryRowContext(context.Background(), q, arg).Scan(&s.rows, &s.allowed, &s.limited, &s.refused, &s.cost); err != nil {
		b.Fatal(err)
	}
	return s
}

// bytesPerRow returns the size of the table and its indexes per row:
// on PostgreSQL exact (pg_total_relation_size, after VACUUM), on MariaDB
// InnoDB's estimate (information_schema, after ANALYZE TABLE).
func (u *usageTable) bytesPerRow(b *testing.B) float64 {
	var size, rows float64
	ctx := context.Background()
	prep, q := "VACUUM ANALYZE "+u.table, "SELECT pg_total_relation_size('"+u.table+"')"
	if u.d == sqlstore.MySQL {
		prep = "ANALYZE TABLE " + u.table
		q = "SELECT data_length + index_length FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '" + u.table + "'"
	}
	if _, err := u.db.ExecContext(ctx, prep); err != nil {
		b.Fatal(err)
	}
	if err := u.db.QueryRowContext(ctx, q).Scan(&size); err != nil {
		b.Fatal(err)
	}
	if err := u.db.QueryRowContext(ctx, "SELECT count(*) FROM "+u.table).Scan(&rows); err != nil {
		b.Fatal(err)
	}
	return size / rows
}
