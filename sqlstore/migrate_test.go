package sqlstore_test

import (
	"context"
	"database/sql"
	"encoding/json"
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
)

// previousSchema is the DDL of the previous release (git show
// cef14d2:sqlstore/schema.go), before the revision, disabled, rotated_at,
// lineage and limits columns.
func previousSchema(d sqlstore.Dialect, table string) []string {
	q := quoteTable(d, table)
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
	rotated_to   TEXT COLLATE "C" NOT NULL
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
	rotated_to   VARBINARY(64) NOT NULL,
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
	rotated_to   TEXT NOT NULL
) WITHOUT ROWID`,
			"CREATE INDEX IF NOT EXISTS " + quoteTable(d, table+"_owner_idx") + " ON " + q + " (owner, id)",
		}
	}
	return nil
}

// previousInsert stores k in a table of the previous release, with its
// sixteen columns and the previous release's encodings.
func previousInsert(t *testing.T, db *sql.DB, d sqlstore.Dialect, table string, k *apikey.Key) {
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
	scopes, err := json.Marshal(k.Scopes)
	require.NoError(t, err)
	meta, err := json.Marshal(k.Metadata)
	require.NoError(t, err)
	ph := make([]string, 16)
	for i := range ph {
		ph[i] = "?"
		if d == sqlstore.Postgres {
			ph[i] = "$" + strconv.Itoa(i+1)
		}
	}
	_, err = db.ExecContext(context.Background(), "INSERT INTO "+quoteTable(d, table)+
		" (id, prefix, hint, hash, hash_version, name, owner, scopes, plan, metadata, created_at, expires_at,"+
		" last_used_at, revoked_at, rotated_from, rotated_to) VALUES ("+strings.Join(ph, ", ")+")",
		k.ID, k.Prefix, k.Hint, k.Hash, k.HashVersion, k.Name, k.Owner, string(scopes), k.Plan, string(meta),
		timeArg(k.CreatedAt), timeArg(k.ExpiresAt), timeArg(k.LastUsedAt), timeArg(k.RevokedAt), k.RotatedFrom, k.RotatedTo)
	require.NoError(t, err)
}

// TestMigrateUpgradesPreviousRelease creates the previous release's table,
// stores keys in it, runs Migrate (twice) and checks that those keys keep
// verifying, and that the new operations work on them.
func TestMigrateUpgradesPreviousRelease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		ctx := context.Background()
		table := randomTable("old_")
		dropTable(t, db, b.dialect, table)
		for _, stmt := range previousSchema(b.dialect, table) {
			_, err := db.ExecContext(ctx, stmt)
			require.NoError(t, err)
		}

		// Keys made as the previous release made them: issued, then copied
		// row by row into the old table.
		mem := memstore.New()
		old, err := apikey.New(mem, apikey.Options{Prefix: "sk_test", Peppers: testPeppers, LastUsedInterval: -1})
		require.NoError(t, err)
		live, liveKey, err := old.Issue(ctx, apikey.IssueParams{Owner: "alice", Name: "live", Scopes: []string{"read"},
			Plan: "pro", Metadata: map[string]string{"env": "prod"}})
		require.NoError(t, err)
		revoked, revokedKey, err := old.Issue(ctx, apikey.IssueParams{Owner: "alice", Name: "revoked"})
		require.NoError(t, err)
		require.NoError(t, old.Revoke(ctx, revokedKey.ID))
		rotated, rotatedKey, err := old.Issue(ctx, apikey.IssueParams{Owner: "alice", Name: "rotated"})
		require.NoError(t, err)
		rot, err := old.Rotate(ctx, rotatedKey.ID, time.Hour)
		require.NoError(t, err)
		for _, id := range []string{liveKey.ID, revokedKey.ID, rotatedKey.ID, rot.Key.ID} {
			k, err := mem.Get(ctx, id)
			require.NoError(t, err)
			k.RotatedAt, k.Lineage = time.Time{}, "" // the old table has no place for them
			previousInsert(t, db, b.dialect, table, k)
		}

		s, err := sqlstore.New(db, b.dialect, sqlstore.Options{Table: table})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx), "Migrate upgrades the previous release's table")
		require.NoError(t, s.Migrate(ctx), "and is idempotent")
		m, err := apikey.New(s, apikey.Options{Prefix: "sk_test", Peppers: testPeppers, LastUsedInterval: -1,
			CacheTTL: -1, CacheNegativeTTL: -1})
		require.NoError(t, err)
		t.Cleanup(func() { _ = m.Close(ctx) })

		k, err := m.Verify(ctx, live)
		require.NoError(t, err, "a key of the previous release verifies after Migrate")
		assert.Equal(t, "live", k.Name)
		assert.Equal(t, []string{"read"}, k.Scopes)
		assert.Equal(t, map[string]string{"env": "prod"}, k.Metadata)
		assert.Equal(t, int64(1), k.Revision)
		assert.False(t, k.Disabled)
		assert.Nil(t, k.Limits)
		_, err = m.Verify(ctx, revoked)
		assert.ErrorIs(t, err, apikey.ErrRevoked)
		g, err := m.Verify(ctx, rotated)
		require.NoError(t, err, "a rotated key in its grace period")
		assert.True(t, g.InGrace(time.Now()))
		_, err = m.Verify(ctx, rot.Token)
		require.NoError(t, err)

		u, err := m.Update(ctx, liveKey.ID, func(k *apikey.Key) error { k.Plan = "free"; return nil })
		require.NoError(t, err)
		assert.Equal(t, int64(2), u.Revision)
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
		_, err = m.Update(ctx, revokedKey.ID, func(k *apikey.Key) error { k.Name = "still revoked"; return nil })
		require.NoError(t, err)
		_, err = m.Verify(ctx, revoked)
		assert.ErrorIs(t, err, apikey.ErrRevoked)
	})
}

// TestBadInputIsNotAnOutage is defect 7 on every database: a NUL byte,
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
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions, name)
			assert.NotErrorIs(t, err, apikey.ErrUnavailable, name)
		}
		_, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice"})
		require.NoError(t, err)
		_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.Name = "a\x00b"; return nil })
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
	})
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
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
		assert.NotErrorIs(t, err, apikey.ErrUnavailable)
		_, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice"})
		require.NoError(t, err)
		for _, at := range []time.Time{late, time.Date(999, 1, 1, 0, 0, 0, 0, time.UTC)} {
			_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.ExpiresAt = at; return nil })
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions, at)
			assert.NotErrorIs(t, err, apikey.ErrUnavailable, at)
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
		for _, old := range []bool{false, true} {
			table := randomTable("mig_")
			dropTable(t, db, b.dialect, table)
			if old {
				for _, stmt := range previousSchema(b.dialect, table) {
					_, err := db.ExecContext(ctx, stmt)
					require.NoError(t, err)
				}
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
				assert.NoError(t, err, "process %d, previous table %v", i, old)
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
