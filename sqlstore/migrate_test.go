package sqlstore_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/sqlstore"
	"github.com/gokeys/apikey/storetest"
	"github.com/gokeys/apikey/usage"
)

// release names a release whose keys table Migrate upgrades.
type release int

const (
	// firstRelease is cef14d2: sixteen columns, no revision, disabled,
	// rotated_at, lineage or limits.
	firstRelease release = 1
	// previousRelease is b0107a9: twenty-one columns, no paused, an
	// (owner, id) index and no customers table.
	previousRelease release = 2
)

func (r release) String() string {
	return map[release]string{firstRelease: "First", previousRelease: "Previous"}[r]
}

// releaseSchema is the DDL of release r (git show cef14d2:sqlstore/schema.go,
// git show b0107a9:sqlstore/schema.go).
func releaseSchema(d sqlstore.Dialect, table string, r release) []string {
	q := quoteTable(d, table)
	more := map[sqlstore.Dialect]string{
		sqlstore.Postgres: `,
	revision     BIGINT NOT NULL DEFAULT 1,
	disabled     BOOLEAN NOT NULL DEFAULT FALSE,
	rotated_at   TIMESTAMPTZ NULL,
	lineage      TEXT COLLATE "C" NOT NULL DEFAULT '',
	limits       TEXT NULL`,
		sqlstore.MySQL: `,
	revision     BIGINT NOT NULL DEFAULT 1,
	disabled     BOOLEAN NOT NULL DEFAULT FALSE,
	rotated_at   DATETIME(6) NULL,
	lineage      VARBINARY(64) NOT NULL DEFAULT '',
	limits       TEXT NULL`,
		sqlstore.SQLite: `,
	revision     INTEGER NOT NULL DEFAULT 1,
	disabled     INTEGER NOT NULL DEFAULT 0,
	rotated_at   INTEGER NULL,
	lineage      TEXT NOT NULL DEFAULT '',
	limits       TEXT NULL`,
	}[d]
	if r == firstRelease {
		more = ""
	}
	switch d {
	case sqlstore.Postgres:
		return []string{
			"CREATE TABLE IF NOT EXISTS " + q + ` (
	id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	prefix       TEXT NOT NULL,
	hint         TEXT NOT NULL,
	hash         BYTEA NOT NULL CHECK (octet_length(hash) <= 64),
	hash_version TEXT NOT NULL,
	name         TEXT NOT NULL,
	owner        TEXT COLLATE "C" NOT NULL,
	scopes       TEXT NOT NULL,
	plan         TEXT NOT NULL,
	metadata     TEXT NOT NULL,
	created_at   TIMESTAMPTZ NULL,
	expires_at   TIMESTAMPTZ NULL,
	last_used_at TIMESTAMPTZ NULL,
	revoked_at   TIMESTAMPTZ NULL,
	rotated_from TEXT COLLATE "C" NOT NULL,
	rotated_to   TEXT COLLATE "C" NOT NULL` + more + `
)`,
			"CREATE INDEX IF NOT EXISTS " + quoteTable(d, table+"_owner_idx") + " ON " + q + " (owner, id)",
		}
	case sqlstore.MySQL:
		return []string{
			"CREATE TABLE IF NOT EXISTS " + q + ` (
	id           VARBINARY(64) NOT NULL,
	prefix       VARCHAR(64) NOT NULL,
	hint         VARCHAR(128) NOT NULL,
	hash         VARBINARY(64) NOT NULL,
	hash_version VARCHAR(64) NOT NULL,
	name         TEXT NOT NULL,
	owner        VARBINARY(255) NOT NULL,
	scopes       TEXT NOT NULL,
	plan         VARCHAR(255) NOT NULL,
	metadata     TEXT NOT NULL,
	created_at   DATETIME(6) NULL,
	expires_at   DATETIME(6) NULL,
	last_used_at DATETIME(6) NULL,
	revoked_at   DATETIME(6) NULL,
	rotated_from VARBINARY(64) NOT NULL,
	rotated_to   VARBINARY(64) NOT NULL` + more + `,
	PRIMARY KEY (id),
	KEY owner_id (owner, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
		}
	case sqlstore.SQLite:
		return []string{
			"CREATE TABLE IF NOT EXISTS " + q + ` (
	id           TEXT NOT NULL PRIMARY KEY,
	prefix       TEXT NOT NULL,
	hint         TEXT NOT NULL,
	hash         BLOB NOT NULL CHECK (length(hash) <= 64),
	hash_version TEXT NOT NULL,
	name         TEXT NOT NULL,
	owner        TEXT NOT NULL,
	scopes       TEXT NOT NULL,
	plan         TEXT NOT NULL,
	metadata     TEXT NOT NULL,
	created_at   INTEGER NULL,
	expires_at   INTEGER NULL,
	last_used_at INTEGER NULL,
	revoked_at   INTEGER NULL,
	rotated_from TEXT NOT NULL,
	rotated_to   TEXT NOT NULL` + more + `
) WITHOUT ROWID`,
			"CREATE INDEX IF NOT EXISTS " + quoteTable(d, table+"_owner_idx") + " ON " + q + " (owner, id)",
		}
	}
	return nil
}

// createRelease creates the keys table of release r, dropped when the
// test ends with the customers table Migrate adds.
func createRelease(t *testing.T, db *sql.DB, d sqlstore.Dialect, table string, r release) {
	t.Helper()
	dropTable(t, db, d, table)
	for _, stmt := range releaseSchema(d, table, r) {
		_, err := db.ExecContext(context.Background(), stmt)
		require.NoError(t, err)
	}
}

// releaseInsert stores keys in a table of release r, with its columns and
// the encodings of the time, in statements of up to 100 rows.
func releaseInsert(t *testing.T, db *sql.DB, d sqlstore.Dialect, table string, r release, keys ...*apikey.Key) {
	t.Helper()
	timeArg := func(at time.Time) any {
		if at.IsZero() {
			return nil
		}
		at = at.UTC().Truncate(time.Microsecond)
		switch d {
		case sqlstore.MySQL:
			return at.Format("2006-01-02 15:04:05.000000")
		case sqlstore.SQLite:
			return at.UnixMicro()
		}
		return at
	}
	cols := "id, prefix, hint, hash, hash_version, name, owner, scopes, plan, metadata, created_at, expires_at, " +
		"last_used_at, revoked_at, rotated_from, rotated_to"
	n := 16
	if r == previousRelease {
		cols += ", revision, disabled, rotated_at, lineage, limits"
		n = 21
	}
	for len(keys) > 0 {
		part := keys[:min(len(keys), 100)]
		keys = keys[len(part):]
		var rows []string
		var args []any
		for _, k := range part {
			scopes, err := json.Marshal(k.Scopes)
			require.NoError(t, err)
			meta, err := json.Marshal(k.Metadata)
			require.NoError(t, err)
			args = append(args, k.ID, k.Prefix, k.Hint, k.Hash, k.HashVersion, k.Name, k.Owner, string(scopes), k.Plan,
				string(meta), timeArg(k.CreatedAt), timeArg(k.ExpiresAt), timeArg(k.LastUsedAt), timeArg(k.RevokedAt),
				k.RotatedFrom, k.RotatedTo)
			if r == previousRelease {
				var limits any
				if k.Limits != nil {
					b, err := json.Marshal(k.Limits)
					require.NoError(t, err)
					limits = string(b)
				}
				args = append(args, k.Revision, k.Disabled, timeArg(k.RotatedAt), k.Lineage, limits)
			}
			ph := make([]string, n)
			for i := range ph {
				ph[i] = "?"
				if d == sqlstore.Postgres {
					ph[i] = "$" + strconv.Itoa(len(args)-n+i+1)
				}
			}
			rows = append(rows, "("+strings.Join(ph, ", ")+")")
		}
		_, err := db.ExecContext(context.Background(), "INSERT INTO "+quoteTable(d, table)+" ("+cols+") VALUES "+
			strings.Join(rows, ", "), args...)
		require.NoError(t, err)
	}
}

// logRecorder keeps the messages and attributes logged to it.
type logRecorder struct {
	mu      sync.Mutex
	records []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, b.String())
	return nil
}

func (l *logRecorder) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.records)
}

// TestMigrateUpgradesEarlierReleases creates the keys table of each
// earlier release, stores keys in it, runs Migrate (twice) and checks that
// those keys keep verifying through a Manager, that the new operations
// work on them, and that every owner got a customer record that takes
// nothing away: no scope ceiling, and the plan of its keys when they
// agree, none (the Manager's DefaultPlan) and a warning when they do not.
func TestMigrateUpgradesEarlierReleases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		for _, r := range []release{firstRelease, previousRelease} {
			t.Run(r.String(), func(t *testing.T) { testUpgrade(t, b, db, r) })
		}
	})
}

func testUpgrade(t *testing.T, b backend, db *sql.DB, r release) {
	ctx := context.Background()
	table := randomTable("old_")
	createRelease(t, db, b.dialect, table, r)

	// Keys made as the earlier release made them: issued, then copied
	// row by row into the old table.
	mem := memstore.New()
	old, err := apikey.New(mem, apikey.Options{Prefix: "sk_test", Peppers: testPeppers, LastUsedInterval: -1})
	require.NoError(t, err)
	// A key's plan, which the earlier releases kept on the key and the
	// Manager now takes from the customer, is written into the rows.
	plans := map[string]string{}
	issue := func(p apikey.IssueParams, plan string) (string, *apikey.Key) {
		t.Helper()
		token, k, err := old.Issue(ctx, p)
		require.NoError(t, err)
		plans[k.ID] = plan
		return token, k
	}
	live, liveKey := issue(apikey.IssueParams{Owner: "alice", Name: "live", Scopes: []string{"read", "admin"},
		Metadata: map[string]string{"env": "prod"}}, "pro")
	revoked, revokedKey := issue(apikey.IssueParams{Owner: "alice", Name: "revoked"}, "pro")
	require.NoError(t, old.Revoke(ctx, revokedKey.ID))
	rotated, rotatedKey := issue(apikey.IssueParams{Owner: "alice", Name: "rotated"}, "pro")
	rot, err := old.Rotate(ctx, rotatedKey.ID, time.Hour)
	require.NoError(t, err)
	plans[rot.Key.ID] = "pro"
	free, freeKey := issue(apikey.IssueParams{Owner: "bob", Scopes: []string{"read"}}, "free")
	_, proKey := issue(apikey.IssueParams{Owner: "bob"}, "pro")
	_, carolKey := issue(apikey.IssueParams{Owner: "carol"}, "")
	nobody, nobodyKey := issue(apikey.IssueParams{}, "pro")
	var rows []*apikey.Key
	for _, id := range []string{liveKey.ID, revokedKey.ID, rotatedKey.ID, rot.Key.ID, freeKey.ID, proKey.ID, carolKey.ID, nobodyKey.ID} {
		k, err := mem.Get(ctx, id)
		require.NoError(t, err)
		k.Plan = plans[id]
		if r == firstRelease {
			k.RotatedAt, k.Lineage = time.Time{}, "" // the old table has no place for them
		}
		rows = append(rows, k)
	}
	releaseInsert(t, db, b.dialect, table, r, rows...)

	logs := &logRecorder{}
	s, err := sqlstore.New(db, b.dialect, sqlstore.Options{Table: table, Logger: slog.New(logs)})
	require.NoError(t, err)
	require.NoError(t, s.Migrate(ctx), "Migrate upgrades the earlier release's table")
	require.NoError(t, s.Migrate(ctx), "and is idempotent")
	m, err := apikey.New(s, apikey.Options{Prefix: "sk_test", Peppers: testPeppers, LastUsedInterval: -1,
		CacheTTL: -1, CacheNegativeTTL: -1})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close(ctx) })

	// The index of newest-first listing replaces the (owner, id) one.
	owner := ownerIndexes(t, db, b.dialect, table)
	assert.Len(t, owner, 1, "owner indexes: %v", owner)
	assert.Contains(t, owner, map[sqlstore.Dialect]string{
		sqlstore.Postgres: table + "_owner_created_idx", sqlstore.MySQL: "owner_created", sqlstore.SQLite: table + "_owner_created_idx",
	}[b.dialect])

	// The customers, derived from the keys.
	cust := func(id string) *apikey.Customer {
		t.Helper()
		c, err := s.GetCustomer(ctx, id)
		require.NoError(t, err, "the customer record of %q", id)
		return c
	}
	alice := cust("alice")
	assert.Equal(t, "pro", alice.Plan, "the plan all of alice's keys have")
	assert.Nil(t, alice.Scopes, "no scope ceiling: no key loses a scope")
	assert.Zero(t, alice.MaxKeys)
	assert.False(t, alice.Suspended)
	assert.Equal(t, int64(1), alice.Revision)
	assert.False(t, alice.CreatedAt.IsZero())
	bob := cust("bob")
	assert.Empty(t, bob.Plan, "different plans: none, the DefaultPlan, never the widest")
	assert.Nil(t, bob.Scopes)
	assert.Empty(t, cust("carol").Plan)
	_, err = s.GetCustomer(ctx, "")
	assert.ErrorIs(t, err, apikey.ErrNotFound, "keys without owner get no record")
	all, err := s.ListCustomers(ctx, "", 0)
	require.NoError(t, err)
	assert.Len(t, all, 3)
	var warned []string
	for _, l := range logs.all() {
		if strings.Contains(l, "different plans") {
			warned = append(warned, l)
		}
	}
	require.Len(t, warned, 1, "one warning, for bob: %v", logs.all())
	assert.Contains(t, warned[0], "owner=bob")
	assert.Contains(t, warned[0], "free")

	// The usage table.
	assertUsageWorks(t, db, b.dialect, s)

	// The keys.
	k, err := m.Verify(ctx, live)
	require.NoError(t, err, "a key of the earlier release verifies after Migrate")
	assert.Equal(t, "live", k.Name)
	assert.Equal(t, []string{"read", "admin"}, k.Scopes, "and keeps every scope")
	assert.Equal(t, map[string]string{"env": "prod"}, k.Metadata)
	assert.Equal(t, int64(1), k.Revision)
	assert.False(t, k.Disabled)
	assert.False(t, k.Paused)
	assert.Nil(t, k.Limits)
	_, err = m.Verify(ctx, revoked)
	assert.ErrorIs(t, err, apikey.ErrRevoked)
	g, err := m.Verify(ctx, rotated)
	require.NoError(t, err, "a rotated key in its grace period")
	assert.True(t, g.InGrace(time.Now()))
	for name, token := range map[string]string{"successor": rot.Token, "bob's": free, "no owner's": nobody} {
		_, err = m.Verify(ctx, token)
		require.NoError(t, err, "the %s key", name)
	}
	list, err := m.List(ctx, "alice", apikey.ListOptions{UsableAt: time.Now()})
	require.NoError(t, err)
	assert.Equal(t, []string{rot.Key.ID, rotatedKey.ID, liveKey.ID}, idsOf(list), "newest first, the revoked key left out")

	u, err := m.Update(ctx, liveKey.ID, func(k *apikey.Key) error { k.Name = "renamed"; return nil })
	require.NoError(t, err)
	assert.Equal(t, int64(2), u.Revision)
	_, err = m.Pause(ctx, liveKey.ID)
	require.NoError(t, err)
	stored, err := s.Get(ctx, liveKey.ID)
	require.NoError(t, err)
	assert.True(t, stored.Paused, "the paused column holds Pause")
	_, err = m.Unpause(ctx, liveKey.ID)
	require.NoError(t, err)
	stored, err = s.Get(ctx, liveKey.ID)
	require.NoError(t, err)
	assert.False(t, stored.Paused)
	_, err = m.Disable(ctx, liveKey.ID)
	require.NoError(t, err)
	_, err = m.Verify(ctx, live)
	assert.ErrorIs(t, err, apikey.ErrDisabled)
	_, err = m.Enable(ctx, liveKey.ID)
	require.NoError(t, err)
	next, err := m.Rotate(ctx, liveKey.ID, time.Minute)
	require.NoError(t, err)
	assert.Equal(t, liveKey.ID, next.Key.Lineage)
	_, err = m.Verify(ctx, next.Token)
	require.NoError(t, err)
	_, err = m.Verify(ctx, revoked)
	assert.ErrorIs(t, err, apikey.ErrRevoked)

	// The upgrade is done once: an owner added since gets no record
	// from a later Migrate.
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "dave"})
	require.NoError(t, err)
	require.NoError(t, s.Migrate(ctx))
	_, err = s.GetCustomer(ctx, "dave")
	assert.ErrorIs(t, err, apikey.ErrNotFound, "Migrate backfills only when it upgrades")
	ambiguous, err := s.BackfillCustomers(ctx)
	require.NoError(t, err)
	assert.Empty(t, ambiguous, "bob has a record now")
	assert.Equal(t, int64(1), cust("dave").Revision, "BackfillCustomers adds the owners without record")
	assert.Equal(t, alice, cust("alice"), "and leaves existing records alone")
}

// ownerIndexes returns the names of the indexes of table whose name
// mentions the owner.
func ownerIndexes(t *testing.T, db *sql.DB, d sqlstore.Dialect, table string) []string {
	return indexesNamed(t, db, d, table, "owner")
}

// indexesNamed returns the names of the indexes of table whose name
// contains part.
func indexesNamed(t *testing.T, db *sql.DB, d sqlstore.Dialect, table, part string) []string {
	t.Helper()
	q := map[sqlstore.Dialect]string{
		sqlstore.Postgres: "SELECT indexname FROM pg_indexes WHERE tablename = $1",
		sqlstore.MySQL:    "SELECT DISTINCT index_name FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ?",
		sqlstore.SQLite:   "SELECT name FROM pragma_index_list(?)",
	}[d]
	rows, err := db.QueryContext(context.Background(), q, table)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		if strings.Contains(name, part) {
			out = append(out, name)
		}
	}
	require.NoError(t, rows.Err())
	return out
}

func idsOf(ks []*apikey.Key) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.ID
	}
	return out
}

// TestMigrateBackfillsInBatches upgrades a table of more owners than one
// round of the backfill takes, with a PlanMap for the owners whose keys
// disagree.
func TestMigrateBackfillsInBatches(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		ctx := context.Background()
		table := randomTable("old_")
		createRelease(t, db, b.dialect, table, previousRelease)
		const owners = 1234
		var keys []*apikey.Key
		for i := range owners {
			k := storetest.NewKey(fmt.Sprintf("owner-%04d", i))
			k.Revision = 1
			keys = append(keys, k)
			if i%100 == 0 { // a second key, of another plan
				k2 := storetest.NewKey(k.Owner)
				k2.Plan, k2.Revision = "enterprise", 1
				keys = append(keys, k2)
			}
		}
		releaseInsert(t, db, b.dialect, table, previousRelease, keys...)
		var mu sync.Mutex
		mapped := map[string][]string{}
		s, err := sqlstore.New(db, b.dialect, sqlstore.Options{Table: table, PlanMap: func(owner string, plans []string) string {
			mu.Lock()
			defer mu.Unlock()
			mapped[owner] = plans
			return "mapped"
		}})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx))

		got := map[string]string{}
		for after := ""; ; {
			page, err := s.ListCustomers(ctx, after, apikey.MaxPageSize)
			require.NoError(t, err)
			for _, c := range page {
				got[c.ID] = c.Plan
				assert.Nil(t, c.Scopes)
			}
			if len(page) < apikey.MaxPageSize {
				break
			}
			after = page[len(page)-1].ID
		}
		require.Len(t, got, owners)
		require.Len(t, mapped, (owners+99)/100)
		for owner, plans := range mapped {
			assert.Equal(t, []string{"enterprise", "pro"}, plans, owner)
			assert.Equal(t, "mapped", got[owner], owner)
		}
		assert.Equal(t, "pro", got["owner-0001"])
	})
}

// Bad input is no outage on any database: a NUL byte,
// which PostgreSQL cannot store, is refused by the Manager as invalid
// input before the store sees it, never reported as ErrUnavailable.
func TestBadInputIsNotAnOutage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		m := newManager(t, s)
		ctx := context.Background()
		for name, p := range map[string]apikey.IssueParams{
			"Name": {Name: "a\x00b"}, "Owner": {Owner: "a\x00"}, "Plan": {Plan: "\x00"},
			"Scope": {Scopes: []string{"read\x00"}}, "Metadata": {Metadata: map[string]string{"k": "\x00"}},
		} {
			_, _, err := m.Issue(ctx, p)
			assertBadInput(t, err, name)
		}
		_, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice"})
		require.NoError(t, err)
		_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.Name = "a\x00b"; return nil })
		assertBadInput(t, err, "Update")
	})
}

// assertBadInput checks that err refuses the caller's input
// (apikey.ErrInvalidInput, or apikey.ErrInvalidOptions for the checks
// that still report it) and is no outage.
func assertBadInput(t *testing.T, err error, what any) {
	t.Helper()
	assert.True(t, errors.Is(err, apikey.ErrInvalidInput) || errors.Is(err, apikey.ErrInvalidOptions),
		"%v: want invalid input, got %v", what, err)
	assert.NotErrorIs(t, err, apikey.ErrUnavailable, what)
}

// TestExpiryBeyondTheColumnsIsBadInput: an expiry that no dialect's column
// can hold (MariaDB's DATETIME ends with the year 9999, in UTC) is refused
// as invalid input by Issue and Update, never reported as ErrUnavailable;
// an offset that keeps the local year at 9999 does not slip through.
func TestExpiryBeyondTheColumnsIsBadInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		m := newManager(t, s)
		ctx := context.Background()
		late := time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("", -5*3600)) // 10000-01-01 in UTC
		_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice", ExpiresAt: late})
		assertBadInput(t, err, "Issue")
		_, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice"})
		require.NoError(t, err)
		for _, at := range []time.Time{late, time.Date(999, 1, 1, 0, 0, 0, 0, time.UTC)} {
			_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.ExpiresAt = at; return nil })
			assertBadInput(t, err, at)
		}
		last := time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
		_, k, err = m.Issue(ctx, apikey.IssueParams{Owner: "alice", ExpiresAt: last})
		require.NoError(t, err, "the last microsecond of 9999 fits every column")
		got, err := s.Get(ctx, k.ID)
		require.NoError(t, err)
		assert.True(t, got.ExpiresAt.Equal(last), got.ExpiresAt)
	})
}

// TestConcurrentMigrations: processes of a fleet that start together each
// run Migrate, on a new table and on the previous release's; every call
// succeeds.
func TestConcurrentMigrations(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		ctx := context.Background()
		for _, r := range []release{0, firstRelease, previousRelease} {
			table := randomTable("mig_")
			dropTable(t, db, b.dialect, table)
			if r != 0 {
				createRelease(t, db, b.dialect, table, r)
				keys := make([]*apikey.Key, 50)
				for i := range keys {
					keys[i] = storetest.NewKey(fmt.Sprintf("owner-%d", i%20))
				}
				releaseInsert(t, db, b.dialect, table, r, keys...)
			}
			const procs = 6
			errs := make([]error, procs)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range procs {
				wg.Go(func() {
					s, err := sqlstore.New(db, b.dialect, sqlstore.Options{Table: table})
					if err == nil {
						<-start
						err = s.Migrate(ctx)
					}
					errs[i] = err
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				assert.NoError(t, err, "process %d, table of release %d", i, r)
			}
			if r != 0 {
				s, err := sqlstore.New(db, b.dialect, sqlstore.Options{Table: table})
				require.NoError(t, err)
				cs, err := s.ListCustomers(ctx, "", 0)
				require.NoError(t, err)
				assert.Len(t, cs, 20, "one record per owner, release %d", r)
			}
		}
	})
}

// TestIDsAndOwnersNoStoreCanHold: an id or owner with a NUL byte or
// invalid UTF-8 (which PostgreSQL refuses in a query) names no key: the
// Manager answers ErrNotFound, or nothing for an owner, never
// ErrUnavailable. Such values come from forms and URLs.
func TestIDsAndOwnersNoStoreCanHold(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		m := newManager(t, s)
		ctx := context.Background()
		for _, id := range []string{"a\x00b", "\xff\xfe", "AAAAAAAAAAAAAAA\x00"} {
			_, err := m.Get(ctx, id)
			assert.ErrorIs(t, err, apikey.ErrNotFound, "Get %q", id)
			_, err = m.Update(ctx, id, func(k *apikey.Key) error { k.Name = "x"; return nil })
			assert.ErrorIs(t, err, apikey.ErrNotFound, "Update %q", id)
			_, err = m.Disable(ctx, id)
			assert.ErrorIs(t, err, apikey.ErrNotFound, "Disable %q", id)
			_, err = m.Enable(ctx, id)
			assert.ErrorIs(t, err, apikey.ErrNotFound, "Enable %q", id)
			_, err = m.Rotate(ctx, id, 0)
			assert.ErrorIs(t, err, apikey.ErrNotFound, "Rotate %q", id)
			assert.ErrorIs(t, m.Revoke(ctx, id), apikey.ErrNotFound, "Revoke %q", id)
			assert.ErrorIs(t, m.Delete(ctx, id), apikey.ErrNotFound, "Delete %q", id)
		}
		for _, owner := range []string{"a\x00b", "\xff\xfe"} {
			keys, err := m.List(ctx, owner, apikey.ListOptions{})
			assert.NoError(t, err, "List %q", owner)
			assert.Empty(t, keys)
			ids, err := m.RevokeOwner(ctx, owner)
			assert.NoError(t, err, "RevokeOwner %q", owner)
			assert.Empty(t, ids)
		}
	})
}

// assertUsageWorks checks that the usage table of s exists with its
// customer index, and that AddUsage adds and Usage reads.
func assertUsageWorks(t *testing.T, db *sql.DB, d sqlstore.Dialect, s *sqlstore.Store) {
	t.Helper()
	ctx := context.Background()
	assert.Equal(t, []string{map[sqlstore.Dialect]string{
		sqlstore.Postgres: s.UsageTable() + "_customer_idx", sqlstore.MySQL: "customer_start", sqlstore.SQLite: s.UsageTable() + "_customer_idx",
	}[d]}, indexesNamed(t, db, d, s.UsageTable(), "customer"), "the usage table's customer index")
	id := apikey.NewID()
	r := usage.Record{Customer: "alice", KeyID: id, Start: usageHour, Allowed: 2, Limited: 1, Cost: 5}
	require.NoError(t, s.AddUsage(ctx, []usage.Record{r}))
	require.NoError(t, s.AddUsage(ctx, []usage.Record{r}))
	got, err := s.Usage(ctx, usage.Query{KeyID: id, From: usageHour, To: usageHour.Add(time.Hour)})
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, int64(4), got[0].Allowed)
	assert.Equal(t, int64(10), got[0].Cost)
}

// TestMigrateAddsTheUsageTable upgrades a database of the release before
// usage recording (8c3c3e8: this release's keys and customers tables, no
// usage table), made here by migrating and then dropping the usage
// table, which takes its index along: Migrate (twice) creates the usage
// table and its index, and the keys and customers stay as they were.
func TestMigrateAddsTheUsageTable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		ctx := context.Background()
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		m := newManager(t, s)
		token, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice"})
		require.NoError(t, err)
		c := storetest.NewCustomer("bob")
		require.NoError(t, s.PutCustomer(ctx, c))
		_, err = db.ExecContext(ctx, "DROP TABLE "+quoteTable(b.dialect, s.UsageTable()))
		require.NoError(t, err)
		require.Empty(t, indexesNamed(t, db, b.dialect, s.UsageTable(), "customer"), "no usage table before the upgrade")

		require.NoError(t, s.Migrate(ctx), "Migrate adds the usage table")
		require.NoError(t, s.Migrate(ctx), "and is idempotent")
		assertUsageWorks(t, db, b.dialect, s)
		got, err := m.Verify(ctx, token)
		require.NoError(t, err, "the keys keep verifying")
		assert.Equal(t, k.ID, got.ID)
		stored, err := s.GetCustomer(ctx, "bob")
		require.NoError(t, err)
		assert.Equal(t, c.Revision, stored.Revision, "the customers are untouched")
		assert.Equal(t, c.Plan, stored.Plan)
	})
}

// TestMigrateAddsAllowedIPs upgrades a database of the release before IP
// restrictions (this release's tables without the allowed_ips columns),
// made here by migrating and then dropping both columns: Migrate (twice)
// adds them in place, the keys keep verifying from any address, the
// customers are untouched, and ranges then round-trip.
func TestMigrateAddsAllowedIPs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		ctx := context.Background()
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		token, k, err := newManager(t, s).Issue(ctx, apikey.IssueParams{Owner: "alice"})
		require.NoError(t, err)
		c := storetest.NewCustomer("bob")
		c.AllowedIPs = nil
		require.NoError(t, s.PutCustomer(ctx, c))
		for _, table := range []string{s.Table(), s.CustomerTable()} {
			_, err := db.ExecContext(ctx, "ALTER TABLE "+quoteTable(b.dialect, table)+" DROP COLUMN allowed_ips")
			require.NoError(t, err)
		}
		_, err = s.Get(ctx, k.ID)
		require.Error(t, err, "the store needs the column")

		require.NoError(t, s.Migrate(ctx), "Migrate adds the columns")
		require.NoError(t, s.Migrate(ctx), "and is idempotent")
		m := newManager(t, s)
		anywhere := netip.MustParseAddr("198.51.100.7")
		got, err := m.VerifyFrom(ctx, token, anywhere)
		require.NoError(t, err, "the keys keep verifying, unrestricted")
		assert.Equal(t, k.ID, got.ID)
		assert.Empty(t, got.AllowedIPs)
		stored, err := s.GetCustomer(ctx, "bob")
		require.NoError(t, err)
		assert.Equal(t, c.Revision, stored.Revision, "the customers are untouched")
		assert.Empty(t, stored.AllowedIPs)

		restricted := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
		_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.AllowedIPs = restricted; return nil })
		require.NoError(t, err)
		_, err = m.VerifyFrom(ctx, token, anywhere)
		assert.ErrorIs(t, err, apikey.ErrIPNotAllowed)
		_, err = m.SetCustomer(ctx, "bob", func(c *apikey.Customer) error { c.AllowedIPs = restricted; return nil })
		require.NoError(t, err)
		stored, err = s.GetCustomer(ctx, "bob")
		require.NoError(t, err)
		assert.Equal(t, restricted, stored.AllowedIPs)
	})
}
