package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	_ "modernc.org/sqlite"
)

// The scheme this library replaces, ported to Go as faithfully as it goes:
// keys are "sk_" followed by 32 characters of [A-Za-z0-9-_] (24 random
// bytes, URL-safe base64: Python's secrets.token_urlsafe(24)), stored as
// bcrypt hashes in an api_keys table; verifying a key loads every active
// key, bcrypt-compares each one until one matches, then writes
// last_used_at. The store is SQLite on a temporary file, so the write on
// every request is a real one.
//
// passlib's bcrypt defaults to 12 rounds; this port uses cost 10
// (bcrypt.DefaultCost), which is 4x cheaper, so the scheme's figures here
// are, if anything, flattering to it.

// seedCost is the bcrypt cost of the seed scheme.
const seedCost = bcrypt.DefaultCost

// seedKeyCounts are the store sizes the seed scheme is measured at. The
// 1,000-key case needs APIKEY_BENCH_FULL=1 (see benchFull).
var seedKeyCounts = []int{10, 100, 1_000}

// benchFull reports whether the slow cases (seed scheme over 1,000 keys,
// 1,000,000-key stores) should run: APIKEY_BENCH_FULL=1.
func benchFull() bool { return os.Getenv("APIKEY_BENCH_FULL") == "1" }

const seedSchema = `CREATE TABLE api_keys (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	key_hash     VARCHAR(255) NOT NULL,
	name         VARCHAR(100) NOT NULL,
	owner_id     INTEGER NOT NULL,
	is_active    BOOLEAN NOT NULL DEFAULT 1,
	created_at   DATETIME NOT NULL,
	last_used_at DATETIME,
	expires_at   DATETIME
)`

// seedGenerateKey returns a key of the seed scheme.
func seedGenerateKey() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "sk_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// seedCorpus holds generated keys and their bcrypt hashes, shared by every
// sub-benchmark and every -count iteration of the process: hashing 1,000
// keys at cost 10 takes minutes of CPU.
var seedCorpus struct {
	mu     sync.Mutex
	keys   []string
	hashes []string
}

// seedKeys returns n keys and their bcrypt hashes, hashing only those not
// hashed yet, on every CPU.
func seedKeys(n int) ([]string, []string, error) {
	c := &seedCorpus
	c.mu.Lock()
	defer c.mu.Unlock()
	have := len(c.keys)
	if n <= have {
		return c.keys[:n], c.hashes[:n], nil
	}
	keys := make([]string, n-have)
	hashes := make([]string, n-have)
	errs := make([]error, n-have)
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				keys[i] = seedGenerateKey()
				h, err := bcrypt.GenerateFromPassword([]byte(keys[i]), seedCost)
				hashes[i], errs[i] = string(h), err
			}
		})
	}
	for i := range keys {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	c.keys = append(c.keys, keys...)
	c.hashes = append(c.hashes, hashes...)
	return c.keys[:n], c.hashes[:n], nil
}

// seedOpen creates the api_keys table in a new SQLite file under dir and
// inserts one row per hash, in order, with owner ids 1..len(hashes).
func seedOpen(dir string, hashes []string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "seed.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, seedSchema); err != nil {
		db.Close()
		return nil, err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		db.Close()
		return nil, err
	}
	now := time.Now().UTC()
	for i, h := range hashes {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO api_keys (key_hash, name, owner_id, is_active, created_at) VALUES (?, ?, ?, 1, ?)`,
			h, "key "+strconv.Itoa(i), i+1, now); err != nil {
			tx.Rollback()
			db.Close()
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// seedRow is one row of api_keys.
type seedRow struct {
	id         int64
	keyHash    string
	name       string
	ownerID    int64
	isActive   bool
	createdAt  time.Time
	lastUsedAt sql.NullTime
	expiresAt  sql.NullTime
}

var errSeedInvalid = errors.New("invalid API key")

// seedVerify is the seed scheme's verification: load all active keys,
// bcrypt-compare the presented key with each until one matches, check the
// expiry, then record the use with an UPDATE. It returns the matching row.
func seedVerify(ctx context.Context, db *sql.DB, key string) (*seedRow, error) {
	rows, err := seedActive(ctx, db)
	if err != nil {
		return nil, err
	}
	for i := range rows {
		r := &rows[i]
		if bcrypt.CompareHashAndPassword([]byte(r.keyHash), []byte(key)) != nil {
			continue
		}
		now := time.Now().UTC()
		if r.expiresAt.Valid && r.expiresAt.Time.Before(now) {
			return nil, errSeedInvalid
		}
		if _, err := db.ExecContext(ctx, `UPDATE api_keys SET last_used_at = ? WHERE id = ?`, now, r.id); err != nil {
			return nil, err
		}
		r.lastUsedAt = sql.NullTime{Time: now, Valid: true}
		return r, nil
	}
	return nil, errSeedInvalid
}

// seedActive runs the scheme's query for all active keys, in the order the
// database returns them (no ORDER BY, as in the original).
func seedActive(ctx context.Context, db *sql.DB) ([]seedRow, error) {
	rs, err := db.QueryContext(ctx, `SELECT id, key_hash, name, owner_id, is_active, created_at, last_used_at, expires_at FROM api_keys WHERE is_active = 1`)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var rows []seedRow
	for rs.Next() {
		var r seedRow
		if err := rs.Scan(&r.id, &r.keyHash, &r.name, &r.ownerID, &r.isActive, &r.createdAt, &r.lastUsedAt, &r.expiresAt); err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
	return rows, rs.Err()
}

// BenchmarkSeedScheme measures one verification of the seed scheme over
// 10, 100 and 1,000 stored keys, for the key that comes last in the scan:
// the worst case, N bcrypt comparisons plus the UPDATE. A garbage key costs
// the same N comparisons, without the UPDATE. The average valid key (found
// halfway) costs about N/2 comparisons; bcrypt-compares/op reports N.
//
// The 1,000-key case takes minutes per operation (1,000 sequential bcrypt
// comparisons) and runs only with APIKEY_BENCH_FULL=1; it needs -timeout 0.
func BenchmarkSeedScheme(b *testing.B) {
	for _, n := range seedKeyCounts {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			if n > 100 && !benchFull() {
				b.Skip("set APIKEY_BENCH_FULL=1 to run the seed scheme over more than 100 keys")
			}
			keys, hashes, err := seedKeys(n)
			if err != nil {
				b.Fatal(err)
			}
			db, err := seedOpen(b.TempDir(), hashes)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { db.Close() })
			ctx := context.Background()

			// The key under test must come last in the scan order.
			rows, err := seedActive(ctx, db)
			if err != nil {
				b.Fatal(err)
			}
			if len(rows) != n || rows[n-1].ownerID != int64(n) {
				b.Fatalf("scan order: %d rows, last is owner %d, want owner %d last", len(rows), rows[len(rows)-1].ownerID, n)
			}
			key := keys[n-1]

			b.ReportAllocs()
			for b.Loop() {
				r, err := seedVerify(ctx, db, key)
				if err != nil {
					b.Fatal(err)
				}
				if r.ownerID != int64(n) {
					b.Fatalf("matched owner %d, want %d", r.ownerID, n)
				}
			}
			b.ReportMetric(float64(n), "bcrypt-compares/op")
		})
	}
}

// BenchmarkBcryptCompare measures one bcrypt comparison at the seed
// scheme's cost, the unit its verification pays N times.
func BenchmarkBcryptCompare(b *testing.B) {
	keys, hashes, err := seedKeys(1)
	if err != nil {
		b.Fatal(err)
	}
	key, hash := []byte(keys[0]), []byte(hashes[0])
	b.ReportAllocs()
	for b.Loop() {
		if err := bcrypt.CompareHashAndPassword(hash, key); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(seedCost), "cost")
}
