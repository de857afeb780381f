// Package sqlstore is an apikey.Store over database/sql for PostgreSQL,
// MySQL/MariaDB and SQLite. It imports no driver, so bring your own.
//
// Pick it to keep keys durable in a database your service already runs,
// shared by all of its instances. By contrast, memstore keeps them in one
// process only.
//
//	import _ "github.com/jackc/pgx/v5/stdlib"     // sql.Open("pgx", dsn), dialect Postgres
//	import _ "github.com/go-sql-driver/mysql"      // sql.Open("mysql", dsn), dialect MySQL
//	import _ "modernc.org/sqlite"                  // sql.Open("sqlite", dsn), dialect SQLite
//
//	db, err := sql.Open("pgx", "postgres://app@db/app")
//	if err != nil { ... }
//	store, err := sqlstore.New(db, sqlstore.Postgres, sqlstore.Options{})
//	if err != nil { ... }
//	if err := store.Migrate(ctx); err != nil { ... }
//	m, err := apikey.New(store, apikey.Options{Peppers: peppers})
//
// The Store keeps only digests, and no token or secret ever reaches the
// database. Verification costs one primary-key lookup, and none while the
// Manager's cache holds the key. Last-used times are written in bulk, one
// statement per chunk of ids (see Store.MarkUsed). 100,000 keys take well
// under 2 s on PostgreSQL and MariaDB. They are written at the Manager's
// granularity (Store.MarkUsedGranular). A row whose last_used_at is within
// it of a use is left alone, so sixteen instances using the same 10,000
// keys write 10,000 rows a minute, not 960,000.
//
// # Schema
//
// Migrate creates the keys table, its index, the customers table and the
// usage table if they do not exist. Dialect.Schema returns the same
// statements for migration tools. The statements below use the default
// table name "api_keys", whose customers table is "api_customers" and
// usage table "api_usage".
//
// The PostgreSQL statements are these.
//
//	CREATE TABLE IF NOT EXISTS "api_keys" (
//	    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
//	    prefix       TEXT NOT NULL,
//	    hint         TEXT NOT NULL,
//	    hash         BYTEA NOT NULL CHECK (octet_length(hash) <= 64),
//	    hash_version TEXT NOT NULL,
//	    name         TEXT NOT NULL,
//	    owner        TEXT COLLATE "C" NOT NULL,
//	    scopes       TEXT NOT NULL,
//	    plan         TEXT NOT NULL,
//	    metadata     TEXT NOT NULL,
//	    created_at   TIMESTAMPTZ NULL,
//	    expires_at   TIMESTAMPTZ NULL,
//	    last_used_at TIMESTAMPTZ NULL,
//	    revoked_at   TIMESTAMPTZ NULL,
//	    rotated_from TEXT COLLATE "C" NOT NULL,
//	    rotated_to   TEXT COLLATE "C" NOT NULL,
//	    revision     BIGINT NOT NULL DEFAULT 1,
//	    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
//	    rotated_at   TIMESTAMPTZ NULL,
//	    lineage      TEXT COLLATE "C" NOT NULL DEFAULT '',
//	    limits       TEXT NULL,
//	    paused       BOOLEAN NOT NULL DEFAULT FALSE,
//	    allowed_ips  TEXT NULL
//	);
//	CREATE INDEX IF NOT EXISTS "api_keys_owner_created_idx" ON "api_keys" (owner, created_at NULLS FIRST, id);
//	CREATE TABLE IF NOT EXISTS "api_customers" (
//	    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
//	    plan       TEXT NOT NULL,
//	    scopes     TEXT NOT NULL,
//	    max_keys   INTEGER NOT NULL,
//	    limits     TEXT NULL,
//	    credits    BIGINT NOT NULL,
//	    suspended  BOOLEAN NOT NULL,
//	    metadata   TEXT NOT NULL,
//	    created_at TIMESTAMPTZ NULL,
//	    updated_at TIMESTAMPTZ NULL,
//	    allowed_ips TEXT NULL,
//	    revision   BIGINT NOT NULL
//	);
//	CREATE TABLE IF NOT EXISTS "api_usage" (
//	    key_id   TEXT COLLATE "C" NOT NULL,
//	    start    TIMESTAMPTZ NOT NULL,
//	    customer TEXT COLLATE "C" NOT NULL,
//	    allowed  BIGINT NOT NULL,
//	    limited  BIGINT NOT NULL,
//	    refused  BIGINT NOT NULL,
//	    cost     BIGINT NOT NULL,
//	    PRIMARY KEY (key_id, start)
//	);
//	CREATE INDEX IF NOT EXISTS "api_usage_customer_idx" ON "api_usage" (customer, start, key_id);
//
// The MySQL and MariaDB statements follow. Their ids compare as bytes
// because base62 is case-sensitive.
//
//	CREATE TABLE IF NOT EXISTS `api_keys` (
//	    id           VARBINARY(64) NOT NULL,
//	    prefix       VARCHAR(64) NOT NULL,
//	    hint         VARCHAR(128) NOT NULL,
//	    hash         VARBINARY(64) NOT NULL,
//	    hash_version VARCHAR(64) NOT NULL,
//	    name         TEXT NOT NULL,
//	    owner        VARBINARY(255) NOT NULL,
//	    scopes       TEXT NOT NULL,
//	    plan         VARCHAR(255) NOT NULL,
//	    metadata     TEXT NOT NULL,
//	    created_at   DATETIME(6) NULL,
//	    expires_at   DATETIME(6) NULL,
//	    last_used_at DATETIME(6) NULL,
//	    revoked_at   DATETIME(6) NULL,
//	    rotated_from VARBINARY(64) NOT NULL,
//	    rotated_to   VARBINARY(64) NOT NULL,
//	    revision     BIGINT NOT NULL DEFAULT 1,
//	    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
//	    rotated_at   DATETIME(6) NULL,
//	    lineage      VARBINARY(64) NOT NULL DEFAULT '',
//	    limits       TEXT NULL,
//	    paused       BOOLEAN NOT NULL DEFAULT FALSE,
//	    allowed_ips  TEXT NULL,
//	    PRIMARY KEY (id),
//	    KEY owner_created (owner, created_at, id)
//	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
//	CREATE TABLE IF NOT EXISTS `api_customers` (
//	    id         VARBINARY(255) NOT NULL,
//	    plan       VARCHAR(255) NOT NULL,
//	    scopes     TEXT NOT NULL,
//	    max_keys   INT NOT NULL,
//	    limits     TEXT NULL,
//	    credits    BIGINT NOT NULL,
//	    suspended  BOOLEAN NOT NULL,
//	    metadata   TEXT NOT NULL,
//	    created_at DATETIME(6) NULL,
//	    updated_at DATETIME(6) NULL,
//	    allowed_ips TEXT NULL,
//	    revision   BIGINT NOT NULL,
//	    PRIMARY KEY (id)
//	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
//	CREATE TABLE IF NOT EXISTS `api_usage` (
//	    key_id   VARBINARY(64) NOT NULL,
//	    start    DATETIME(6) NOT NULL,
//	    customer VARBINARY(255) NOT NULL,
//	    allowed  BIGINT NOT NULL,
//	    limited  BIGINT NOT NULL,
//	    refused  BIGINT NOT NULL,
//	    cost     BIGINT NOT NULL,
//	    PRIMARY KEY (key_id, start),
//	    KEY customer_start (customer, start, key_id)
//	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
//
// The SQLite statements follow. Their times are Unix microseconds in UTC.
//
//	CREATE TABLE IF NOT EXISTS "api_keys" (
//	    id           TEXT NOT NULL PRIMARY KEY,
//	    prefix       TEXT NOT NULL,
//	    hint         TEXT NOT NULL,
//	    hash         BLOB NOT NULL CHECK (length(hash) <= 64),
//	    hash_version TEXT NOT NULL,
//	    name         TEXT NOT NULL,
//	    owner        TEXT NOT NULL,
//	    scopes       TEXT NOT NULL,
//	    plan         TEXT NOT NULL,
//	    metadata     TEXT NOT NULL,
//	    created_at   INTEGER NULL,
//	    expires_at   INTEGER NULL,
//	    last_used_at INTEGER NULL,
//	    revoked_at   INTEGER NULL,
//	    rotated_from TEXT NOT NULL,
//	    rotated_to   TEXT NOT NULL,
//	    revision     INTEGER NOT NULL DEFAULT 1,
//	    disabled     INTEGER NOT NULL DEFAULT 0,
//	    rotated_at   INTEGER NULL,
//	    lineage      TEXT NOT NULL DEFAULT '',
//	    limits       TEXT NULL,
//	    paused       INTEGER NOT NULL DEFAULT 0,
//	    allowed_ips  TEXT NULL
//	) WITHOUT ROWID;
//	CREATE INDEX IF NOT EXISTS "api_keys_owner_created_idx" ON "api_keys" (owner, created_at, id);
//	CREATE TABLE IF NOT EXISTS "api_customers" (
//	    id         TEXT NOT NULL PRIMARY KEY,
//	    plan       TEXT NOT NULL,
//	    scopes     TEXT NOT NULL,
//	    max_keys   INTEGER NOT NULL,
//	    limits     TEXT NULL,
//	    credits    INTEGER NOT NULL,
//	    suspended  INTEGER NOT NULL,
//	    metadata   TEXT NOT NULL,
//	    created_at INTEGER NULL,
//	    updated_at INTEGER NULL,
//	    allowed_ips TEXT NULL,
//	    revision   INTEGER NOT NULL
//	) WITHOUT ROWID;
//	CREATE TABLE IF NOT EXISTS "api_usage" (
//	    key_id   TEXT NOT NULL,
//	    start    INTEGER NOT NULL,
//	    customer TEXT NOT NULL,
//	    allowed  INTEGER NOT NULL CHECK (typeof(allowed) = 'integer'),
//	    limited  INTEGER NOT NULL CHECK (typeof(limited) = 'integer'),
//	    refused  INTEGER NOT NULL CHECK (typeof(refused) = 'integer'),
//	    cost     INTEGER NOT NULL CHECK (typeof(cost) = 'integer'),
//	    PRIMARY KEY (key_id, start)
//	) WITHOUT ROWID;
//	CREATE INDEX IF NOT EXISTS "api_usage_customer_idx" ON "api_usage" (customer, start, key_id);
//
// # Upgrading from an earlier release
//
// The first release's table lacks revision, disabled, rotated_at, lineage
// and limits. The previous release's table lacks the paused column, the
// index on (owner, created_at, id) that newest-first listing reads, and the
// customers table. Migrate adds them all and drops the (owner, id) index
// that the new one replaces. It also creates a customer record for each
// owner of the existing keys (see Store.BackfillCustomers). That record has
// no scope ceiling, so that no key loses a scope. It gets the plan of the
// owner's keys when they all have the same. For an owner whose keys
// disagree, it gets the plan Options.PlanMap chooses. Failing that, it gets
// none (the Manager's DefaultPlan) and a warning goes to Options.Logger.
// Existing keys get revision 1, not disabled and not paused, and keep
// verifying. Dialect.Upgrade returns the ALTER TABLE and index statements
// for migration tools. Call BackfillCustomers after them.
//
// The release before IP restrictions lacks the allowed_ips column of the
// keys and of the customers table. Migrate adds both in place (ALTER
// TABLE ... ADD COLUMN, NULL), without a backfill. Existing keys and
// customers are then not restricted, and keep verifying.
//
// On PostgreSQL the upgrade runs in one transaction. Building the index
// locks the keys table against writes meanwhile. On a large table, run
// CREATE INDEX CONCURRENTLY "api_keys_owner_created_idx" ON "api_keys"
// (owner, created_at NULLS FIRST, id) before the upgrade.
//
// # Concurrency
//
// Update is a conditional UPDATE ... WHERE id = ? AND revision = ?. So a
// write based on a stale read changes nothing and reports
// apikey.ErrConflict. Every statement writes revoked_at only where it is
// NULL, so no write revives a revoked key. Rotate works in one transaction.
// It updates the old row, only at the revision the Manager read and only if
// it is neither revoked nor rotated. It then ends the grace of its
// predecessor and inserts the successor. So one of concurrent rotations
// wins and none undoes a concurrent change. PutCustomer is conditional on
// the customer's revision in the same way.
//
// AddUsage adds to the stored counts in the database (allowed = allowed +
// excluded.allowed), never read-modify-write in Go. So the flushes of any
// number of instances sum exactly. Its rows are written in (key_id, start)
// order, so that concurrent flushes lock them in the same order. A call
// adds all of its records or none. The usage table holds one row per key
// and hour whatever the number of instances. A row takes about 270 bytes
// with its indexes. So 100,000 keys active all day add 2.4 million rows, or
// about 640 MB, a day. An interval writes a row of each key active in it.
// It also touches the primary-key page of each key's latest hour. Give
// MySQL's buffer pool room for those pages (see bench/README.md).
//
// List reads one range of the (owner, created_at, id) index backwards. A
// page after a cursor starts where the previous one ended, whatever was
// added or deleted meanwhile. A page of usable keys (UsableAt) is filtered
// in the WHERE clause. Purge has no index to serve it. Each call reads the
// table until it finds its batch of dead keys.
//
// The hash column is variable binary of at most 64 bytes rather than
// fixed-size, because digests differ in size. They take 32 bytes for
// HMAC-SHA-256 and SHA-256, and 60 for bcrypt. Zero times are stored as
// NULL. Scopes and metadata are JSON text. On MySQL, owner holds at most
// 255 bytes and times must lie between the years 1000 and 9999
// (DATETIME's range).
//
// Verification reads one row by primary key. When the DB can prepare
// statements (*sql.DB can), that query is prepared on first use and kept.
// Call Store.Close to release it if the Store is dropped before the DB.
//
// # Errors
//
// An unknown id gives apikey.ErrNotFound and a duplicate id
// apikey.ErrConflict. The duplicate is recognised from the driver's error
// without importing it (SQLSTATE 23505, MySQL error 1062, SQLite
// "UNIQUE constraint failed" / extended codes 1555 and 2067). Every other
// error is returned wrapped, and the Manager reports it as
// apikey.ErrUnavailable. When the context is cancelled or times out, the
// statement stops and the error satisfies errors.Is(err, context.Canceled)
// or errors.Is(err, context.DeadlineExceeded), whatever the driver made of
// the interruption.
//
// # Drivers
//
// PostgreSQL works with any driver, and pgx's stdlib is tested.
//
// MySQL/MariaDB works with github.com/go-sql-driver/mysql and any DSN, e.g.
// "user:pass@tcp(host:3306)/db". The parseTime and loc parameters are not
// needed, since times are written as UTC text and read back as UTC
// whatever the driver returns. It needs MySQL 8 or MariaDB 10.5 or later.
//
// SQLite works with modernc.org/sqlite (pure Go), which is tested. SQLite
// 3.35 or later is needed (RETURNING). For concurrent use set a busy
// timeout and WAL mode in the DSN, e.g.
// "file:keys.db?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)".
// SQLite has one writer at a time. If you still see "database is locked"
// (SQLITE_BUSY) under heavy concurrent writes, add "&_txlock=immediate" or
// call db.SetMaxOpenConns(1).
package sqlstore
