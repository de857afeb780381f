// Package sqlstore is an apikey.Store over database/sql for PostgreSQL,
// MySQL/MariaDB and SQLite. It imports no driver: bring your own.
//
// Pick it to keep keys durable in a database your service already runs,
// shared by all of its instances; memstore keeps them in one process only.
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
// The Store keeps only digests: no token or secret ever reaches the
// database. Verification costs one primary-key lookup (and none while the
// Manager's cache holds the key); last-used times are written in bulk, one
// statement per chunk of ids (see Store.MarkUsed): 100,000 keys take well
// under 2 s on PostgreSQL and MariaDB.
//
// # Schema
//
// Migrate creates the table and its index if they do not exist;
// Dialect.Schema returns the same statements for migration tools. With the
// default table name "api_keys":
//
// PostgreSQL:
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
//	    limits       TEXT NULL
//	);
//	CREATE INDEX IF NOT EXISTS "api_keys_owner_idx" ON "api_keys" (owner, id);
//
// MySQL and MariaDB (ids compare as bytes: base62 is case-sensitive):
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
//	    PRIMARY KEY (id),
//	    KEY owner_id (owner, id)
//	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
//
// SQLite (times are Unix microseconds in UTC):
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
//	    limits       TEXT NULL
//	) WITHOUT ROWID;
//	CREATE INDEX IF NOT EXISTS "api_keys_owner_idx" ON "api_keys" (owner, id);
//
// # Upgrading from the previous release
//
// The previous release's table lacks revision, disabled, rotated_at,
// lineage and limits. Migrate adds them (Dialect.Upgrade returns the
// ALTER TABLE ... ADD COLUMN statements for migration tools); existing
// keys get revision 1 and keep verifying.
//
// # Concurrency
//
// Update is a conditional UPDATE ... WHERE id = ? AND revision = ?, so a
// write based on a stale read changes nothing and reports
// apikey.ErrConflict; revoked_at is written only where it is NULL, by
// every statement, so no write revives a revoked key; Rotate updates the
// old row (only if neither revoked nor rotated) and inserts the successor
// in one transaction, so one of concurrent rotations wins.
//
// The hash column is variable binary of at most 64 bytes rather than
// fixed-size, because digests differ in size: 32 bytes for HMAC-SHA-256 and
// SHA-256, 60 for bcrypt. Zero times are stored as NULL. Scopes and
// metadata are JSON text. On MySQL, owner holds at most 255 bytes and
// times must lie between the years 1000 and 9999 (DATETIME's range).
//
// Verification reads one row by primary key. When the DB can prepare
// statements (*sql.DB can), that query is prepared on first use and kept:
// call Store.Close to release it if the Store is dropped before the DB.
//
// # Errors
//
// An unknown id gives apikey.ErrNotFound and a duplicate id
// apikey.ErrConflict; the duplicate is recognised from the driver's error
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
// PostgreSQL: any driver works; pgx's stdlib is tested.
//
// MySQL/MariaDB: github.com/go-sql-driver/mysql with any DSN, e.g.
// "user:pass@tcp(host:3306)/db"; parseTime and loc are not needed, since
// times are written as UTC text and read back as UTC whatever the driver
// returns. MySQL 8 and MariaDB 10.5 or later.
//
// SQLite: modernc.org/sqlite (pure Go) is tested; SQLite 3.35 or later is
// needed (RETURNING). For concurrent use set a busy timeout and WAL mode in
// the DSN, e.g.
// "file:keys.db?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)".
// SQLite has one writer at a time: if you still see "database is locked"
// (SQLITE_BUSY) under heavy concurrent writes, add "&_txlock=immediate" or
// call db.SetMaxOpenConns(1).
package sqlstore
