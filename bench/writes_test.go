package bench

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/sqlstore"
	"github.com/gokeys/apikey/storetest/fleetsim"
	"github.com/gokeys/apikey/usage"
)

// The fleet of BenchmarkLastUsedWrites: writesInstances Managers over one
// database, each using every one of writesKeys keys (1,000 unless
// APIKEY_BENCH_FULL=1) in every flush interval
// (Options.LastUsedInterval's default, 10 s).
const (
	writesInstances = 16
	writesKeys      = 10_000
	writesSteps     = 6 // flush intervals in a minute, an operation
)

// writesKeyCount is the number of keys of BenchmarkLastUsedWrites.
func writesKeyCount() int {
	if benchFull() {
		return writesKeys
	}
	return writesKeys / 10
}

// BenchmarkLastUsedWrites counts the last-used rows a fleet writes, on
// PostgreSQL (APIKEY_TEST_POSTGRES_DSN), MySQL/MariaDB
// (APIKEY_TEST_MYSQL_DSN) and SQLite: writesInstances Managers share
// one sqlstore.Store, and each verifies every one of the keys once per
// 10-second flush interval, at its own phase of the interval, then
// flushes (storetest/fleetsim, in virtual time). An operation is one
// virtual minute: six intervals of the sixteen instances.
//
//	granular     Options.LastUsedGranularity's default, one minute, and
//	             the default CacheTTL (5 s): each instance reads a key
//	             again each interval and skips the uses it finds fresh
//	granular-db  the same with a CacheTTL of an hour: the instances
//	             know nothing of each other's writes, and the database's
//	             conditional write alone keeps the rows down
//	every        a negative granularity: every flush writes every key
//	             whose time it moves forward, as before granularity
//
// It reports, per operation (per minute of the fleet): rows/op, the rows
// the database reported written (RowsAffected); sent/op, the uses the
// flushes gave it; calls/op, the MarkUsed calls; write-ms/op, the
// time the MarkUsed calls took. The Managers read keys from memory
// (memstore, kept in step with the database's last-used times), so that
// the benchmark times the writes, not the reads of the verifications.
func BenchmarkLastUsedWrites(b *testing.B) {
	for _, db := range []struct {
		name, driver, env string
		dialect           sqlstore.Dialect
	}{
		{"postgres", "pgx", "APIKEY_TEST_POSTGRES_DSN", sqlstore.Postgres},
		{"mariadb", "mysql", "APIKEY_TEST_MYSQL_DSN", sqlstore.MySQL},
		{"sqlite", "sqlite", "", sqlstore.SQLite},
	} {
		b.Run(db.name, func(b *testing.B) {
			dsn := "file:" + filepath.Join(b.TempDir(), "keys.db") + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
			if db.env != "" {
				if dsn = os.Getenv(db.env); dsn == "" {
					b.Skipf("%s not set", db.env)
				}
			}
			conn, err := sql.Open(db.driver, dsn)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			for _, mode := range []struct {
				name        string
				granularity time.Duration
				cacheTTL    time.Duration
			}{{"granular", 0, 0}, {"granular-db", 0, time.Hour}, {"every", -1, 0}} {
				b.Run(mode.name, func(b *testing.B) {
					store, tokens := writesFleetStore(b, conn, db.dialect)
					fleet, err := fleetsim.New(fleetsim.Config{
						Store: store, Tokens: tokens, Instances: writesInstances, Start: time.Now().Add(time.Hour),
						Options: apikey.Options{
							Peppers: []apikey.Pepper{benchPepper}, LastUsedGranularity: mode.granularity, CacheTTL: mode.cacheTTL,
						},
					})
					if err != nil {
						b.Fatal(err)
					}
					defer fleet.Close()
					// A first minute, untimed: every key is used for the
					// first time, and the instances' caches fill.
					before, err := fleet.Run(context.Background(), writesSteps)
					if err != nil {
						b.Fatal(err)
					}
					var after fleetsim.Result
					for b.Loop() {
						if after, err = fleet.Run(context.Background(), writesSteps); err != nil {
							b.Fatal(err)
						}
					}
					d := after.Sub(before)
					rows, sent, calls, writing := d.Written, d.Sent, d.Calls, d.Writing
					n := float64(b.N)
					b.ReportMetric(float64(rows)/n, "rows/op")
					b.ReportMetric(float64(sent)/n, "sent/op")
					b.ReportMetric(float64(calls)/n, "calls/op")
					b.ReportMetric(float64(writing.Milliseconds())/n, "write-ms/op")
				})
			}
		})
	}
}

// writesFleetStore returns a store of writesKeyCount keys, never used, on a
// table of its own in conn (dropped when b ends) whose reads are served
// from memory, and their tokens.
func writesFleetStore(b *testing.B, conn *sql.DB, d sqlstore.Dialect) (*memReadStore, []string) {
	mem := memstore.New()
	tokens, err := fillStore(context.Background(), mem, hmacHasher(b), writesKeyCount())
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
	var db *sqlstore.Store
	if d == sqlstore.SQLite {
		if db, err = sqlstore.New(conn, d, sqlstore.Options{}); err == nil {
			err = db.Migrate(context.Background())
		}
		for _, id := range ids {
			if err != nil {
				break
			}
			var k *apikey.Key
			if k, err = mem.Get(context.Background(), id); err == nil {
				err = db.Create(context.Background(), k)
			}
		}
		if err != nil {
			b.Fatal(err)
		}
	} else {
		db, _ = flushTable(b, conn, d, mem, ids)
	}
	return &memReadStore{Store: mem, mem: mem, sql: db}, tokens
}

// memReadStore serves reads from memory and writes last-used times to
// the database, and to memory so that reads see them.
type memReadStore struct {
	apikey.Store
	mem *memstore.Store
	sql *sqlstore.Store
}

var _ usage.LastUsedStore = (*memReadStore)(nil)

func (s *memReadStore) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	_, err := s.MarkUsedGranular(ctx, uses, 0)
	return err
}

// MarkUsedGranular returns the rows the database wrote. The instances of
// a fleetsim flush one at a time, so memory ends as the database does.
func (s *memReadStore) MarkUsedGranular(ctx context.Context, uses map[string]time.Time, granularity time.Duration) (int, error) {
	n, err := s.sql.MarkUsedGranular(ctx, uses, granularity)
	if err != nil {
		return n, err
	}
	_, err = s.mem.MarkUsedGranular(ctx, uses, granularity)
	return n, err
}

// queueKeys is the number of distinct keys BenchmarkQueueMemory queues:
// the default bound of both queues (Options.LastUsedQueue, UsageQueue).
const queueKeys = 100_000

// downStore is a store whose writes of uses and counts fail, as while
// its database is down; reads are served from memory.
type downStore struct{ *memstore.Store }

var errDown = errors.New("database is down")

func (downStore) MarkUsed(context.Context, map[string]time.Time) error { return errDown }
func (downStore) MarkUsedGranular(context.Context, map[string]time.Time, time.Duration) (int, error) {
	return 0, errDown
}
func (downStore) AddUsage(context.Context, []usage.Record) error { return errDown }

// BenchmarkQueueMemory measures what waits in memory while the database
// is down: a Manager whose store fails every write of last-used times
// and usage counts serves one request of each of queueKeys distinct keys,
// so that both queues reach their default bound. It reports the heap the
// queues hold per key (B/key), after a garbage collection:
//
//	last-used  Manager.Verify: one pending last-used time per key
//	both       Middleware.Handler: that and one usage counter per key
//	           (and hour)
//
// The cache is off, so that only the queues hold memory.
func BenchmarkQueueMemory(b *testing.B) {
	mem := memstore.New()
	tokens, err := fillStore(context.Background(), mem, hmacHasher(b), queueKeys)
	if err != nil {
		b.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, mode := range []string{"last-used", "both"} {
		b.Run(mode, func(b *testing.B) {
			var perKey float64
			for b.Loop() {
				m, err := apikey.New(downStore{mem}, apikey.Options{
					Peppers: []apikey.Pepper{benchPepper}, CacheTTL: -1,
					LastUsedInterval: time.Hour, UsageInterval: time.Hour,
					LastUsedQueue: queueKeys, UsageQueue: queueKeys,
				})
				if err != nil {
					b.Fatal(err)
				}
				mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
				if err != nil {
					b.Fatal(err)
				}
				h := mw.Handler(ok)
				before := heapAlloc()
				for _, token := range tokens {
					if mode == "last-used" {
						if _, err := m.Verify(context.Background(), token); err != nil {
							b.Fatal(err)
						}
						continue
					}
					req := httptest.NewRequest(http.MethodGet, "/", nil)
					req.Header.Set("Authorization", "Bearer "+token)
					h.ServeHTTP(httptest.NewRecorder(), req)
				}
				perKey = float64(heapAlloc()-before) / queueKeys
				st := m.Stats()
				if st.UsesRecorded != queueKeys || st.UsesDropped != 0 || (mode == "both") != (st.UsageRecorded == queueKeys) {
					b.Fatalf("not every key queued: %+v", st)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				_ = m.Close(ctx) // the store is down: what was pending is lost here
				cancel()
			}
			b.ReportMetric(perKey, "B/key")
		})
	}
}

// heapAlloc returns the bytes of live heap objects after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
