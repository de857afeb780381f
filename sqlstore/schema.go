package sqlstore

import "strings"

// columns lists the columns of the keys table in the order the queries
// read and write them.
const columns = "id, prefix, hint, hash, hash_version, name, owner, scopes, plan, metadata, " +
	"created_at, expires_at, last_used_at, revoked_at, rotated_from, rotated_to, " +
	"revision, disabled, rotated_at, lineage, limits"

// numColumns is the number of entries in columns.
const numColumns = 21

// Schema returns the statements that create the keys table named table
// (DefaultTable when empty; see Options.Table for the grammar) and its
// index, each idempotent (IF NOT EXISTS). Store.Migrate runs them; use
// Schema to feed your own migration tool instead. An invalid table name
// gives an error wrapping apikey.ErrInvalidOptions.
//
// The layout, in every dialect:
//
//   - id, the primary key, and owner, rotated_from and rotated_to compare
//     bytes (COLLATE "C", VARBINARY, SQLite's default BINARY collation),
//     so that ids, which are case-sensitive base62, sort in byte order and
//     "abc" never matches "ABC".
//   - hash is a variable-length binary of at most 64 bytes: HMAC-SHA-256
//     and SHA-256 digests are 32 bytes, bcrypt's are 60.
//   - scopes and metadata hold JSON text (null, an array of strings, an
//     object of strings).
//   - Times are UTC with microsecond precision, NULL when not set:
//     TIMESTAMPTZ, DATETIME(6) holding UTC, or INTEGER Unix microseconds
//     on SQLite (which round-trip exactly and sort in time order).
//   - An index on (owner, id) serves List's keyset paging and RevokeOwner.
//   - revision counts the writes to a row (apikey.Key.Revision); every
//     UPDATE but last_used_at's is conditional on it or on revoked_at.
//   - limits holds the key's own limits as JSON text, NULL when none.
//
// A table made by the previous release (without revision, disabled,
// rotated_at, lineage and limits) is upgraded by Upgrade's statements,
// which Migrate runs too.
func (d Dialect) Schema(table string) ([]string, error) {
	t, err := parseTable(table)
	if err != nil {
		return nil, err
	}
	return d.schema(t), nil
}

func (d Dialect) schema(t tableName) []string {
	q := t.quoted(d)
	switch d {
	case Postgres:
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
	rotated_to   TEXT COLLATE "C" NOT NULL,
	revision     BIGINT NOT NULL DEFAULT 1,
	disabled     BOOLEAN NOT NULL DEFAULT FALSE,
	rotated_at   TIMESTAMPTZ NULL,
	lineage      TEXT COLLATE "C" NOT NULL DEFAULT '',
	limits       TEXT NULL
)`,
			"CREATE INDEX IF NOT EXISTS " + d.quote(t.index()) + " ON " + q + " (owner, id)",
		}
	case MySQL:
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
	revision     BIGINT NOT NULL DEFAULT 1,
	disabled     BOOLEAN NOT NULL DEFAULT FALSE,
	rotated_at   DATETIME(6) NULL,
	lineage      VARBINARY(64) NOT NULL DEFAULT '',
	limits       TEXT NULL,
	PRIMARY KEY (id),
	KEY owner_id (owner, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
		}
	case SQLite:
		index := d.quote(t.index())
		if t.schema != "" { // SQLite names the index's schema, not the table's
			index = d.quote(t.schema) + "." + index
		}
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
	rotated_to   TEXT NOT NULL,
	revision     INTEGER NOT NULL DEFAULT 1,
	disabled     INTEGER NOT NULL DEFAULT 0,
	rotated_at   INTEGER NULL,
	lineage      TEXT NOT NULL DEFAULT '',
	limits       TEXT NULL
) WITHOUT ROWID`,
			"CREATE INDEX IF NOT EXISTS " + index + " ON " + d.quote(t.name) + " (owner, id)",
		}
	}
	return nil
}

// Upgrade returns the statements that add the columns of this release to
// a keys table named table that the previous release created (revision,
// disabled, rotated_at, lineage, limits), one ALTER TABLE ... ADD COLUMN
// each. On PostgreSQL they are idempotent (ADD COLUMN IF NOT EXISTS); on
// MySQL and SQLite a column that exists already makes its statement fail
// with a duplicate-column error, which Store.Migrate ignores. Existing
// keys get revision 1, not disabled, no rotation time, no lineage and no
// limits, and keep verifying.
func (d Dialect) Upgrade(table string) ([]string, error) {
	t, err := parseTable(table)
	if err != nil {
		return nil, err
	}
	return d.upgrade(t), nil
}

func (d Dialect) upgrade(t tableName) []string {
	cols := map[Dialect][]string{
		Postgres: {"revision BIGINT NOT NULL DEFAULT 1", "disabled BOOLEAN NOT NULL DEFAULT FALSE",
			"rotated_at TIMESTAMPTZ NULL", `lineage TEXT COLLATE "C" NOT NULL DEFAULT ''`, "limits TEXT NULL"},
		MySQL: {"revision BIGINT NOT NULL DEFAULT 1", "disabled BOOLEAN NOT NULL DEFAULT FALSE",
			"rotated_at DATETIME(6) NULL", "lineage VARBINARY(64) NOT NULL DEFAULT ''", "limits TEXT NULL"},
		SQLite: {"revision INTEGER NOT NULL DEFAULT 1", "disabled INTEGER NOT NULL DEFAULT 0",
			"rotated_at INTEGER NULL", "lineage TEXT NOT NULL DEFAULT ''", "limits TEXT NULL"},
	}[d]
	add := "ADD COLUMN "
	if d == Postgres {
		add = "ADD COLUMN IF NOT EXISTS "
	}
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = "ALTER TABLE " + t.quoted(d) + " " + add + c
	}
	return out
}

// isDuplicateColumn reports whether err says that a column to add exists
// already: MySQL/MariaDB error 1060, SQLite "duplicate column name",
// PostgreSQL SQLSTATE 42701.
func (d Dialect) isDuplicateColumn(err error) bool {
	msg := err.Error()
	switch d {
	case MySQL:
		return strings.Contains(msg, "Error 1060")
	case SQLite:
		return strings.Contains(msg, "duplicate column name")
	}
	return strings.Contains(msg, "42701")
}

// placeholders returns n comma-separated "?" placeholders.
func placeholders(n int) string {
	b := make([]byte, 0, 3*n)
	for i := range n {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '?')
	}
	return string(b)
}

// lockKey is the PostgreSQL advisory lock Migrate holds, derived from the
// table name so that migrations of different tables do not wait for each
// other.
func lockKey(t tableName) int64 {
	var h uint64 = 14695981039346656037
	for _, c := range []byte("github.com/gokeys/apikey/sqlstore:" + t.String()) {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return int64(h)
}
