package sqlstore_test

import (
	"context"
	"database/sql"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/outbox"
	"github.com/gokeys/apikey/sqlstore"
	"github.com/gokeys/apikey/webhook"
)

// forEachBenchBackend runs fn for SQLite and the servers whose DSN is set.
func forEachBenchBackend(b *testing.B, fn func(b *testing.B, bk backend, db *sql.DB)) {
	for _, bk := range backends() {
		if bk.name == "MySQLParseTime" {
			continue
		}
		b.Run(bk.name, func(b *testing.B) { fn(b, bk, openForBench(b, bk)) })
	}
}

// openForBench opens bk's database for a benchmark, with the durability
// of a deployment (no synchronous_commit=off).
func openForBench(b *testing.B, bk backend) *sql.DB {
	driver, dsn := "sqlite", sqliteDSN(filepath.Join(b.TempDir(), "bench.db"))
	switch bk.dialect {
	case sqlstore.Postgres:
		driver, dsn = "pgx", os.Getenv(postgresEnv)
	case sqlstore.MySQL:
		driver, dsn = "mysql", os.Getenv(mysqlEnv)
	}
	if dsn == "" {
		b.Skip("no DSN")
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// benchStore returns a migrated store on fresh tables of db, dropped at
// the end.
func benchStore(b *testing.B, db *sql.DB, d sqlstore.Dialect) *sqlstore.Store {
	s, err := sqlstore.New(db, d, sqlstore.Options{Table: randomTable("bench_keys_")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		for _, t := range []string{s.Table(), s.CustomerTable(), s.UsageTable(), s.OutboxTable()} {
			_, _ = db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+quoteTable(d, t))
		}
	})
	if err := s.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s
}

// d0 is when the benchmark's events happened.
var d0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// BenchmarkRevokeWithEvents revokes keys through a Manager without an
// outbox (one UPDATE) and with one (the UPDATE and the INSERT of
// key.revoked in one transaction), in the same run.
func BenchmarkRevokeWithEvents(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, bk backend, db *sql.DB) {
		for _, withEvents := range []bool{false, true} {
			name := "Off"
			if withEvents {
				name = "On"
			}
			b.Run(name, func(b *testing.B) {
				s := benchStore(b, db, bk.dialect)
				opts := apikey.Options{Prefix: "sk_test", CacheTTL: -1, LastUsedInterval: -1, UsageInterval: -1}
				if withEvents {
					opts.Outbox = &outbox.Policy{ExpiringLead: -1}
				}
				m, err := apikey.New(s, opts)
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				ids := make([]string, b.N)
				for i := range ids {
					_, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "bench"})
					if err != nil {
						b.Fatal(err)
					}
					ids[i] = k.ID
				}
				b.ReportAllocs()
				b.ResetTimer()
				for _, id := range ids {
					if err := m.Revoke(ctx, id); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	})
}

// BenchmarkDeliver delivers b.N events from the outbox to a local
// receiver that answers 204, four attempts at once.
func BenchmarkDeliver(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, bk backend, db *sql.DB) {
		s := benchStore(b, db, bk.dialect)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
		b.Cleanup(srv.Close)
		d, err := webhook.New(s, webhook.Options{Endpoints: []webhook.Endpoint{{URL: srv.URL, Secrets: []string{secret}}}})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		evs := make([]outbox.Event, b.N)
		for i := range evs {
			evs[i] = outbox.Event{ID: "msg_" + apikey.NewID(), Endpoint: outbox.DefaultEndpoint, Type: outbox.KeyRevoked,
				Payload: []byte(`{"type":"key.revoked","timestamp":"2026-05-01T12:00:00Z","data":{"key":{"id":"4f8Gq2Lx9TbN0cRw"}}}`)}
			evs[i].CreatedAt = d0
		}
		if err := s.Append(ctx, evs); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		n, err := d.Poll(ctx)
		if err != nil || n != b.N {
			b.Fatalf("%d attempts of %d: %v", n, b.N, err)
		}
	})
}
