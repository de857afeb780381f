package sqlstore

import "strings"

// columns lists the columns of the keys table in the order the queries
// read and write them.
const columns = "id, prefix, hint, hash, hash_version, name, owner, scopes, plan, metadata, " +
	"created_at, expires_at, last_used_at, revoked_at, rotated_from, rotated_to, " +
	"revision, disabled, rotated_at, lineage, limits, paused, allowed_ips"

// numColumns is the number of entries in columns.
const numColumns = 23

// customerColumns lists the columns of the customers table in the order
// the queries read and write them.
const customerColumns = "id, plan, scopes, max_keys, limits, credits, suspended, metadata, created_at, updated_at, allowed_ips, revision"

// numCustomerColumns is the number of entries in customerColumns.
const numCustomerColumns = 12

// Schema returns the statements that create the keys table named table,
// its index, the customers table and the usage table with its index. The
// table is DefaultTable when empty (see Options.Table for the grammar).
// The other tables are named as Options.CustomerTable and
// Options.UsageTable say by default. Each statement is idempotent (IF NOT
// EXISTS). Store.Migrate runs them. Use Schema to feed your own migration
// tool instead. An invalid table name gives an error wrapping
// apikey.ErrInvalidOptions.
//
// The layout is the same in every dialect.
//
//   - id, the primary key, and owner, rotated_from and rotated_to compare
//     bytes (COLLATE "C", VARBINARY, SQLite's default BINARY collation),
//     so that ids, which are case-sensitive base62, sort in byte order and
//     "abc" never matches "ABC". So do the customers' ids.
//   - hash is a variable-length binary of at most 64 bytes: HMAC-SHA-256
//     and SHA-256 digests are 32 bytes, bcrypt's are 60.
//   - scopes and metadata hold JSON text (null, an array of strings, an
//     object of strings); null and empty differ.
//   - Times are UTC with microsecond precision, NULL when not set:
//     TIMESTAMPTZ, DATETIME(6) holding UTC, or INTEGER Unix microseconds
//     on SQLite (which round-trip exactly and sort in time order).
//   - An index on (owner, created_at, id) serves List's newest-first
//     keyset paging and RevokeOwner. On PostgreSQL its created_at sorts
//     NULLs first, so that read backwards it gives List's order, keys
//     without a creation time last; MySQL and SQLite sort NULLs first
//     anyway.
//   - revision counts the writes to a row (apikey.Key.Revision); every
//     UPDATE but last_used_at's is conditional on it or on revoked_at.
//   - limits holds the key's own limits as JSON text, NULL when none;
//     allowed_ips its IP ranges as a JSON array of CIDR strings, NULL
//     when none (and a customer's the same way).
//   - The customers table holds one apikey.Customer per row, its scopes,
//     metadata and limits as JSON text like a key's.
//   - The usage table holds one usage.Record per key and hour: its
//     primary key (key_id, start) serves a key's series and the upserts of
//     Store.AddUsage, an index on (customer, start, key_id) a customer's.
//     The counts are 64-bit integers; on SQLite a CHECK keeps a sum that
//     overflows from turning into a float.
//
// A table made by an earlier release is upgraded by Upgrade's statements,
// which Migrate runs too.
func (d Dialect) Schema(table string) ([]string, error) {
	t, err := parseTable(table)
	if err != nil {
		return nil, err
	}
	return d.schema(t, t.customers(), t.usage()), nil
}

func (d Dialect) schema(t, ct, ut tableName) []string {
	return append(d.keysSchema(t, ct), d.usageSchema(ut)...)
}

func (d Dialect) keysSchema(t, ct tableName) []string {
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
	limits       TEXT NULL,
	paused       BOOLEAN NOT NULL DEFAULT FALSE,
	allowed_ips  TEXT NULL
)`,
			d.createListIndex(t),
			"CREATE TABLE IF NOT EXISTS " + ct.quoted(d) + ` (
	id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	plan       TEXT NOT NULL,
	scopes     TEXT NOT NULL,
	max_keys   INTEGER NOT NULL,
	limits     TEXT NULL,
	credits    BIGINT NOT NULL,
	suspended  BOOLEAN NOT NULL,
	metadata   TEXT NOT NULL,
	created_at TIMESTAMPTZ NULL,
	updated_at TIMESTAMPTZ NULL,
	allowed_ips TEXT NULL,
	revision   BIGINT NOT NULL
)`,
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
	paused       BOOLEAN NOT NULL DEFAULT FALSE,
	allowed_ips  TEXT NULL,
	PRIMARY KEY (id),
	KEY owner_created (owner, created_at, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
			"CREATE TABLE IF NOT EXISTS " + ct.quoted(d) + ` (
	id         VARBINARY(255) NOT NULL,
	plan       VARCHAR(255) NOT NULL,
	scopes     TEXT NOT NULL,
	max_keys   INT NOT NULL,
	limits     TEXT NULL,
	credits    BIGINT NOT NULL,
	suspended  BOOLEAN NOT NULL,
	metadata   TEXT NOT NULL,
	created_at DATETIME(6) NULL,
	updated_at DATETIME(6) NULL,
	allowed_ips TEXT NULL,
	revision   BIGINT NOT NULL,
	PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
		}
	case SQLite:
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
	limits       TEXT NULL,
	paused       INTEGER NOT NULL DEFAULT 0,
	allowed_ips  TEXT NULL
) WITHOUT ROWID`,
			d.createListIndex(t),
			"CREATE TABLE IF NOT EXISTS " + ct.quoted(d) + ` (
	id         TEXT NOT NULL PRIMARY KEY,
	plan       TEXT NOT NULL,
	scopes     TEXT NOT NULL,
	max_keys   INTEGER NOT NULL,
	limits     TEXT NULL,
	credits    INTEGER NOT NULL,
	suspended  INTEGER NOT NULL,
	metadata   TEXT NOT NULL,
	created_at INTEGER NULL,
	updated_at INTEGER NULL,
	allowed_ips TEXT NULL,
	revision   INTEGER NOT NULL
) WITHOUT ROWID`,
		}
	}
	return nil
}

// usageSchema returns the statements that create the usage table ut and
// its index (customer, start, key_id), idempotent.
func (d Dialect) usageSchema(ut tableName) []string {
	q := ut.quoted(d)
	switch d {
	case Postgres:
		return []string{
			"CREATE TABLE IF NOT EXISTS " + q + ` (
	key_id   TEXT COLLATE "C" NOT NULL,
	start    TIMESTAMPTZ NOT NULL,
	customer TEXT COLLATE "C" NOT NULL,
	allowed  BIGINT NOT NULL,
	limited  BIGINT NOT NULL,
	refused  BIGINT NOT NULL,
	cost     BIGINT NOT NULL,
	PRIMARY KEY (key_id, start)
)`,
			"CREATE INDEX IF NOT EXISTS " + d.quote(ut.customerIndex()) + " ON " + q + " (customer, start, key_id)",
		}
	case MySQL:
		return []string{
			"CREATE TABLE IF NOT EXISTS " + q + ` (
	key_id   VARBINARY(64) NOT NULL,
	start    DATETIME(6) NOT NULL,
	customer VARBINARY(255) NOT NULL,
	allowed  BIGINT NOT NULL,
	limited  BIGINT NOT NULL,
	refused  BIGINT NOT NULL,
	cost     BIGINT NOT NULL,
	PRIMARY KEY (key_id, start),
	KEY customer_start (customer, start, key_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
		}
	case SQLite:
		return []string{
			"CREATE TABLE IF NOT EXISTS " + q + ` (
	key_id   TEXT NOT NULL,
	start    INTEGER NOT NULL,
	customer TEXT NOT NULL,
	allowed  INTEGER NOT NULL CHECK (typeof(allowed) = 'integer'),
	limited  INTEGER NOT NULL CHECK (typeof(limited) = 'integer'),
	refused  INTEGER NOT NULL CHECK (typeof(refused) = 'integer'),
	cost     INTEGER NOT NULL CHECK (typeof(cost) = 'integer'),
	PRIMARY KEY (key_id, start)
) WITHOUT ROWID`,
			"CREATE INDEX IF NOT EXISTS " + d.sqliteIndex(ut, ut.customerIndex()) + " ON " + d.quote(ut.name) + " (customer, start, key_id)",
		}
	}
	return nil
}

// createListIndex returns the statement that creates the owner index
// (owner, created_at, id) of t, idempotent.
func (d Dialect) createListIndex(t tableName) string {
	switch d {
	case Postgres:
		return "CREATE INDEX IF NOT EXISTS " + d.quote(t.listIndex()) + " ON " + t.quoted(d) + " (owner, created_at NULLS FIRST, id)"
	case MySQL: // ER_DUP_KEYNAME if it exists, which Migrate ignores
		return "ALTER TABLE " + t.quoted(d) + " ADD INDEX owner_created (owner, created_at, id)"
	}
	return "CREATE INDEX IF NOT EXISTS " + d.sqliteIndex(t, t.listIndex()) + " ON " + d.quote(t.name) + " (owner, created_at, id)"
}

// sqliteIndex returns the quoted name of index of t: SQLite names the
// index's schema, not the table's.
func (d Dialect) sqliteIndex(t tableName, index string) string {
	if t.schema != "" {
		return d.quote(t.schema) + "." + d.quote(index)
	}
	return d.quote(index)
}

// Upgrade returns the statements that bring a keys table named table,
// made by an earlier release, to this release's layout. The customers and
// usage tables themselves are created by Schema's statements. Upgrade
// returns these statements, in this order.
//
//   - the columns added since the first release, one ALTER TABLE ...
//     ADD COLUMN each: revision, disabled, rotated_at, lineage and limits
//     (existing keys get revision 1, not disabled, no rotation time, no
//     lineage and no limits);
//   - the owner index (owner, created_at, id), and the removal of the
//     earlier owner index (owner, id), which it replaces;
//   - the paused column (existing keys are not paused);
//   - last, the allowed_ips columns of the customers table and of the
//     keys table (existing keys and customers are not restricted).
//
// On PostgreSQL they are idempotent (IF NOT EXISTS, IF EXISTS). On MySQL
// and SQLite, a column or index that exists already makes its statement
// fail, and so does an index that is gone already. These failures
// (duplicate column, MySQL errors 1061 and 1091) are ignored by
// Store.Migrate. Existing keys keep verifying. Migrate also creates a
// customer record for each owner of existing keys (see
// Store.BackfillCustomers). It does so before it adds the paused column:
// run BackfillCustomers yourself at that point if you run these
// statements with your own tool. The keys table's allowed_ips column,
// added last, marks an upgraded table.
func (d Dialect) Upgrade(table string) ([]string, error) {
	t, err := parseTable(table)
	if err != nil {
		return nil, err
	}
	return d.upgrade(t, t.customers()), nil
}

// upgradeIPs is how many statements at the end of upgrade add the
// allowed_ips columns.
const upgradeIPs = 2

func (d Dialect) upgrade(t, ct tableName) []string {
	cols := map[Dialect][]string{
		Postgres: {"revision BIGINT NOT NULL DEFAULT 1", "disabled BOOLEAN NOT NULL DEFAULT FALSE",
			"rotated_at TIMESTAMPTZ NULL", `lineage TEXT COLLATE "C" NOT NULL DEFAULT ''`, "limits TEXT NULL"},
		MySQL: {"revision BIGINT NOT NULL DEFAULT 1", "disabled BOOLEAN NOT NULL DEFAULT FALSE",
			"rotated_at DATETIME(6) NULL", "lineage VARBINARY(64) NOT NULL DEFAULT ''", "limits TEXT NULL"},
		SQLite: {"revision INTEGER NOT NULL DEFAULT 1", "disabled INTEGER NOT NULL DEFAULT 0",
			"rotated_at INTEGER NULL", "lineage TEXT NOT NULL DEFAULT ''", "limits TEXT NULL"},
	}[d]
	paused := map[Dialect]string{
		Postgres: "paused BOOLEAN NOT NULL DEFAULT FALSE",
		MySQL:    "paused BOOLEAN NOT NULL DEFAULT FALSE",
		SQLite:   "paused INTEGER NOT NULL DEFAULT 0",
	}[d]
	add := "ADD COLUMN "
	if d == Postgres {
		add = "ADD COLUMN IF NOT EXISTS "
	}
	var out []string
	for _, c := range cols {
		out = append(out, "ALTER TABLE "+t.quoted(d)+" "+add+c)
	}
	out = append(out, d.createListIndex(t))
	switch d {
	case Postgres:
		index := d.quote(t.index())
		if t.schema != "" {
			index = d.quote(t.schema) + "." + index
		}
		out = append(out, "DROP INDEX IF EXISTS "+index)
	case MySQL: // ER_CANT_DROP_FIELD_OR_KEY if it is gone, which Migrate ignores
		out = append(out, "ALTER TABLE "+t.quoted(d)+" DROP INDEX owner_id")
	case SQLite:
		out = append(out, "DROP INDEX IF EXISTS "+d.sqliteIndex(t, t.index()))
	}
	out = append(out, "ALTER TABLE "+t.quoted(d)+" "+add+paused)
	return append(out,
		"ALTER TABLE "+ct.quoted(d)+" "+add+"allowed_ips TEXT NULL",
		"ALTER TABLE "+t.quoted(d)+" "+add+"allowed_ips TEXT NULL")
}

// isDone reports whether err says that the change a Schema or Upgrade
// statement makes is in place already: a column to add exists
// (MySQL/MariaDB error 1060, SQLite "duplicate column name", PostgreSQL
// SQLSTATE 42701), an index to add exists (MySQL 1061) or an index to
// drop does not (MySQL 1091).
func (d Dialect) isDone(err error) bool {
	msg := err.Error()
	switch d {
	case MySQL:
		return strings.Contains(msg, "Error 1060") || strings.Contains(msg, "Error 1061") || strings.Contains(msg, "Error 1091")
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
