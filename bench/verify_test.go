package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/sqlstore"
)

// benchPepper keys the default HMAC-SHA-256 hasher in every benchmark.
var benchPepper = apikey.Pepper{Version: "1", Secret: []byte("bench-pepper-0123456789abcdef-0123456789")}

// verifyKeyCounts are the store sizes of BenchmarkOurVerify; memstore also
// runs at bigKeys.
var verifyKeyCounts = []int{10, 100, 1_000}

// bigKeys is the size of the large memstore (APIKEY_BENCH_FULL=1 only).
const bigKeys = 1_000_000

// hotKeys bounds the working set of the cache-hit cases: the keys verified
// in turn, all of them in the cache.
const hotKeys = 1_000

// bcryptKeys is the working set of the bcrypt cases, whose keys carry real
// bcrypt digests of their own material.
const bcryptKeys = 10

// bcryptCost is the cost of the bcrypt hasher, the seed scheme's cost.
const bcryptCost = 10

// keyRecord returns a new token of format f and the record the Manager
// would store for it (what Manager.Issue does, without the Manager): the
// digest is h.Hash(id + secret).
func keyRecord(f apikey.Format, h apikey.Hasher, i int, now time.Time) (string, *apikey.Key, error) {
	token, t := f.New()
	digest, version, err := h.Hash([]byte(t.ID + t.Secret))
	if err != nil {
		return "", nil, err
	}
	return token, &apikey.Key{
		ID: t.ID, Prefix: f.Prefix(), Hint: t.Hint(), Hash: digest, HashVersion: version,
		Owner: "user" + strconv.Itoa(i), Scopes: []string{"read", "write"}, Plan: "free",
		CreatedAt: now,
	}, nil
}

// fillStore creates n keys in store, hashed by h, and returns their tokens
// in creation order.
func fillStore(ctx context.Context, store apikey.Store, h apikey.Hasher, n int) ([]string, error) {
	f, err := apikey.NewFormat("", 0)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	tokens := make([]string, n)
	for i := range tokens {
		token, k, err := keyRecord(f, h, i, now)
		if err != nil {
			return nil, err
		}
		if err := store.Create(ctx, k); err != nil {
			return nil, err
		}
		tokens[i] = token
	}
	return tokens, nil
}

// spread returns at most max of tokens, evenly spaced through them.
func spread(tokens []string, max int) []string {
	if len(tokens) <= max {
		return tokens
	}
	out := make([]string, max)
	for i := range out {
		out[i] = tokens[i*len(tokens)/max]
	}
	return out
}

// hmacHasher returns the default hasher keyed by benchPepper.
func hmacHasher(b *testing.B) apikey.Hasher {
	h, err := apikey.NewHMACHasher(benchPepper)
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// bigMemstore returns a memstore of bigKeys keys and their tokens.
func bigMemstore(b *testing.B) (*memstore.Store, []string) {
	s := memstore.New()
	var (
		tokens []string
		err    error
	)
	withoutGC(func() { tokens, err = fillStore(context.Background(), s, hmacHasher(b), bigKeys) })
	if err != nil {
		b.Fatal(err)
	}
	return s, tokens
}

// withoutGC runs f with the garbage collector off, then collects: filling
// a store with 1,000,000 keys spends most of its time in the collector
// otherwise. It needs a couple of GB of free memory.
func withoutGC(f func()) {
	defer runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	f()
}

// bcryptSet holds the bcryptKeys records with real bcrypt digests, and one
// spare digest for the other keys of a bcrypt store, hashed once per
// process.
var bcryptSet = sync.OnceValues(func() (*bcryptFixture, error) {
	h, err := apikey.NewBcryptHasher(bcryptCost)
	if err != nil {
		return nil, err
	}
	f, err := apikey.NewFormat("", 0)
	if err != nil {
		return nil, err
	}
	fx := &bcryptFixture{hasher: h, tokens: make([]string, bcryptKeys+1), keys: make([]*apikey.Key, bcryptKeys+1)}
	now := time.Now().UTC().Truncate(time.Microsecond)
	errs := make([]error, bcryptKeys+1)
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i := range fx.tokens {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			fx.tokens[i], fx.keys[i], errs[i] = keyRecord(f, h, i, now)
		})
	}
	wg.Wait()
	return fx, errors.Join(errs...)
})

type bcryptFixture struct {
	hasher apikey.Hasher
	tokens []string      // bcryptKeys working-set tokens, then a spare
	keys   []*apikey.Key // their records
}

// bcryptStore returns a memstore of n keys with bcrypt digests, and the
// tokens of its working set: min(n, bcryptKeys) keys, evenly spread
// through the store, with real digests of their own material. The other
// keys are real records too, but share one bcrypt digest (of a key not in
// the store): they are never looked up, and hashing 1,000 keys at cost 10
// would take minutes.
func bcryptStore(b *testing.B, n int) (*memstore.Store, apikey.Hasher, []string) {
	fx, err := bcryptSet()
	if err != nil {
		b.Fatal(err)
	}
	f, err := apikey.NewFormat("", 0)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	s := memstore.New()
	hot := min(n, bcryptKeys)
	var ws []string
	now := time.Now().UTC().Truncate(time.Microsecond)
	spare := fx.keys[bcryptKeys]
	for i := range n {
		var k *apikey.Key
		if j := len(ws); j < hot && i == j*n/hot {
			k = fx.keys[j]
			ws = append(ws, fx.tokens[j])
		} else {
			_, t := f.New()
			k = &apikey.Key{
				ID: t.ID, Prefix: f.Prefix(), Hint: t.Hint(), Hash: spare.Hash, HashVersion: spare.HashVersion,
				Owner: "user" + strconv.Itoa(i), Scopes: []string{"read", "write"}, Plan: "free", CreatedAt: now,
			}
		}
		if err := s.Create(ctx, k); err != nil {
			b.Fatal(err)
		}
	}
	if len(ws) != hot {
		b.Fatalf("working set of %d keys, want %d", len(ws), hot)
	}
	return s, fx.hasher, ws
}

// sqlFixtures builds SQL stores lazily, one per dialect and key count, for
// the lifetime of one BenchmarkOurVerify run.
type sqlFixtures struct {
	b      *testing.B // the parent benchmark, which owns the cleanups
	sqlite *sql.DB
	pg     *sql.DB
	stores map[string]sqlFixture
}

type sqlFixture struct {
	store  *sqlstore.Store
	tokens []string
}

func (fx *sqlFixtures) db(d sqlstore.Dialect) (*sql.DB, error) {
	if d == sqlstore.SQLite {
		if fx.sqlite == nil {
			dsn := "file:" + filepath.Join(fx.b.TempDir(), "keys.db") + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)"
			db, err := sql.Open("sqlite", dsn)
			if err != nil {
				return nil, err
			}
			fx.b.Cleanup(func() { db.Close() })
			fx.sqlite = db
		}
		return fx.sqlite, nil
	}
	if fx.pg == nil {
		db, err := sql.Open("pgx", os.Getenv("APIKEY_TEST_POSTGRES_DSN"))
		if err != nil {
			return nil, err
		}
		fx.b.Cleanup(func() { db.Close() })
		fx.pg = db
	}
	return fx.pg, nil
}

// get returns a migrated store on a fresh, randomly named table holding n
// keys (dropped when the parent benchmark ends) and the keys' tokens.
func (fx *sqlFixtures) get(b *testing.B, d sqlstore.Dialect, n int) sqlFixture {
	name := fmt.Sprint(d, "/", n)
	if s, ok := fx.stores[name]; ok {
		return s
	}
	db, err := fx.db(d)
	if err != nil {
		b.Fatal(err)
	}
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	table := "bench_keys_" + hex.EncodeToString(suffix)
	store, err := sqlstore.New(db, d, sqlstore.Options{Table: table})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fx.b.Cleanup(func() {
		for _, t := range []string{table, store.CustomerTable(), store.UsageTable(), store.OutboxTable()} {
			_, _ = db.ExecContext(context.Background(), `DROP TABLE IF EXISTS "`+t+`"`)
		}
	})
	if err := store.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	tokens, err := fillStore(ctx, store, hmacHasher(b), n)
	if err != nil {
		b.Fatal(err)
	}
	s := sqlFixture{store, tokens}
	fx.stores[name] = s
	return s
}

// BenchmarkOurVerify measures Manager.Verify of a valid key with N keys in
// the store, in the default configuration (HMAC-SHA-256 with a pepper,
// 256-bit secrets, last-used tracking on) unless the name says otherwise:
//
//	memstore           memstore, cache hit
//	memstore-nocache   memstore, cache off: one map lookup and one HMAC
//	sqlite-hit         sqlstore on SQLite (WAL file), cache hit
//	sqlite-miss        sqlstore on SQLite, cache off: one query by primary key
//	postgres-hit/miss  the same on PostgreSQL (APIKEY_TEST_POSTGRES_DSN)
//	bcrypt-hit         NewBcryptHasher(10) over memstore, cache hit
//	bcrypt-miss        the same, cache off: one bcrypt comparison
//
// Each operation verifies the next key of a working set, in turn: every
// key of the store for the cache-off cases, at most 1,000 keys spread
// through the store (all cached) for the cache-hit cases, and 10 keys for
// the bcrypt cases. The cache-hit cases verify the whole working set once
// before timing and keep entries for an hour (instead of DefaultCacheTTL,
// 5s), so that every timed verification is a hit. memstore and memstore-nocache also run at 1,000,000 keys
// with APIKEY_BENCH_FULL=1.
func BenchmarkOurVerify(b *testing.B) {
	sqlfx := &sqlFixtures{b: b, stores: map[string]sqlFixture{}}
	cached, uncached := time.Hour, time.Duration(-1) // CacheTTL
	cases := []verifyCase{
		{name: "memstore", cache: cached},
		{name: "memstore-nocache", cache: uncached},
		{name: "sqlite-hit", cache: cached, dialect: sqlstore.SQLite},
		{name: "sqlite-miss", cache: uncached, dialect: sqlstore.SQLite},
		{name: "postgres-hit", cache: cached, dialect: sqlstore.Postgres},
		{name: "postgres-miss", cache: uncached, dialect: sqlstore.Postgres},
		{name: "bcrypt-hit", cache: cached, bcrypt: true},
		{name: "bcrypt-miss", cache: uncached, bcrypt: true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for _, n := range verifyKeyCounts {
				b.Run(strconv.Itoa(n), func(b *testing.B) {
					var (
						store  apikey.Store
						hasher apikey.Hasher
						tokens []string
					)
					switch {
					case c.bcrypt:
						store, hasher, tokens = bcryptStore(b, n)
					case c.dialect == sqlstore.Postgres && os.Getenv("APIKEY_TEST_POSTGRES_DSN") == "":
						b.Skip("APIKEY_TEST_POSTGRES_DSN not set")
					case c.dialect != 0:
						s := sqlfx.get(b, c.dialect, n)
						store, tokens = s.store, s.tokens
					default:
						s := memstore.New()
						var err error
						if tokens, err = fillStore(context.Background(), s, hmacHasher(b), n); err != nil {
							b.Fatal(err)
						}
						store = s
					}
					c.run(b, store, hasher, tokens)
				})
			}
		})
	}

	// The 1,000,000-key memstore runs last and is dropped at the end: its
	// gigabyte of live heap makes every garbage collection of the process
	// slower, which would weigh on the other cases.
	var (
		big    *memstore.Store
		tokens []string
	)
	for _, c := range cases[:2] {
		b.Run(c.name+"/"+strconv.Itoa(bigKeys), func(b *testing.B) {
			if !benchFull() {
				b.Skip("set APIKEY_BENCH_FULL=1 to run at 1,000,000 keys")
			}
			if big == nil {
				big, tokens = bigMemstore(b)
			}
			c.run(b, big, nil, tokens)
		})
	}
	big, tokens = nil, nil
	runtime.GC()
}

// verifyCase is one configuration of BenchmarkOurVerify.
type verifyCase struct {
	name    string
	cache   time.Duration    // Options.CacheTTL
	dialect sqlstore.Dialect // SQL stores only; 0 otherwise
	bcrypt  bool
}

// run measures c over store: hasher, or HMAC with benchPepper when nil;
// tokens are the store's keys (or its bcrypt working set).
func (c verifyCase) run(b *testing.B, store apikey.Store, hasher apikey.Hasher, tokens []string) {
	opts := apikey.Options{CacheTTL: c.cache}
	if hasher != nil {
		opts.Hasher = hasher
	} else {
		opts.Peppers = []apikey.Pepper{benchPepper}
	}
	hit := c.cache >= 0
	if hit {
		tokens = spread(tokens, hotKeys)
	}
	runVerify(b, store, opts, tokens, hit)
}

// runVerify verifies tokens in turn, one per operation, through a new
// Manager over store; warm verifies each token once before timing.
func runVerify(b *testing.B, store apikey.Store, opts apikey.Options, tokens []string, warm bool) {
	m, err := apikey.New(store, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close(context.Background()) })
	ctx := context.Background()
	if warm {
		for _, t := range tokens {
			if _, err := m.Verify(ctx, t); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := m.Verify(ctx, tokens[i]); err != nil {
			b.Fatal(err)
		}
		if i++; i == len(tokens) {
			i = 0
		}
	}
}
