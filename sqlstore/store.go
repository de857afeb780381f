package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/gokeys/apikey"
)

// DB is the part of *sql.DB a Store uses; *sql.DB and *sql.Conn satisfy
// it. The Store never closes it.
type DB interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// Options configures a Store. The zero value uses the table DefaultTable.
type Options struct {
	// Table is the name of the keys table: DefaultTable ("api_keys") when
	// empty. It must be an identifier (ASCII letters, digits and
	// underscores, not starting with a digit, at most 63 characters),
	// optionally qualified by a schema (PostgreSQL), a database (MySQL) or
	// an attached database (SQLite) of the same grammar: "auth.api_keys".
	// It is quoted in every statement, so reserved words are fine.
	Table string
}

// Store is an apikey.Store over a SQL database. It also implements
// apikey.Revoker and apikey.Rotator with single
// conditional statements or transactions. Build it with New; the zero
// value is not usable. A Store holds no state besides its configuration
// and is safe for concurrent use as far as its DB is (*sql.DB is).
type Store struct {
	db    DB
	d     Dialect
	table tableName
	q     queries
	stmts prepared
}

var (
	_ apikey.Store   = (*Store)(nil)
	_ apikey.Revoker = (*Store)(nil)
	_ apikey.Rotator = (*Store)(nil)
)

// New returns a Store of dialect d over db. It does no I/O: call Migrate
// (or run Schema's statements yourself) before use. A nil db, an unknown
// dialect or an invalid Options.Table give an error wrapping
// apikey.ErrInvalidOptions.
func New(db DB, d Dialect, opts Options) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: sqlstore: nil db", apikey.ErrInvalidOptions)
	}
	if !d.valid() {
		return nil, fmt.Errorf("%w: sqlstore: unknown dialect %v", apikey.ErrInvalidOptions, d)
	}
	t, err := parseTable(opts.Table)
	if err != nil {
		return nil, err
	}
	return &Store{db: db, d: d, table: t, q: buildQueries(d, t)}, nil
}

// Dialect returns the dialect of s.
func (s *Store) Dialect() Dialect { return s.d }

// Table returns the table name of s as configured, e.g. "api_keys".
func (s *Store) Table() string { return s.table.String() }

// Schema returns the statements Migrate runs; see Dialect.Schema.
func (s *Store) Schema() []string { return s.d.schema(s.table) }

// Migrate creates the keys table and its index unless they exist, and
// upgrades a table made by the previous release by adding the columns it
// lacks (see Dialect.Upgrade); existing keys keep verifying. It is
// idempotent and may run at every start. On PostgreSQL it runs in one
// transaction under an advisory lock, so that processes starting together
// do not race; on SQLite it runs in one transaction that takes the write
// lock first (BEGIN IMMEDIATE), for the same reason.
func (s *Store) Migrate(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.d == SQLite {
		switch db := s.db.(type) {
		case *sql.Conn:
			return s.migrateSQLite(ctx, db)
		case interface {
			Conn(context.Context) (*sql.Conn, error)
		}:
			conn, err := db.Conn(ctx)
			if err != nil {
				return s.fail(ctx, "migrate", err)
			}
			defer conn.Close()
			return s.migrateSQLite(ctx, conn)
		}
	}
	if s.d == MySQL { // DDL commits implicitly in MySQL
		for _, stmt := range s.Schema() {
			if _, err := s.db.ExecContext(ctx, stmt); err != nil {
				return s.fail(ctx, "migrate", err)
			}
		}
		for _, stmt := range s.d.upgrade(s.table) {
			if _, err := s.db.ExecContext(ctx, stmt); err != nil && (ctx.Err() != nil || !s.d.isDuplicateColumn(err)) {
				return s.fail(ctx, "migrate", err)
			}
		}
		return nil
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if s.d == Postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(s.table)); err != nil {
				return err
			}
		}
		for _, stmt := range s.Schema() {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		for _, stmt := range s.d.upgrade(s.table) {
			if _, err := tx.ExecContext(ctx, stmt); err != nil && (ctx.Err() != nil || !s.d.isDuplicateColumn(err)) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.fail(ctx, "migrate", err)
	}
	return nil
}

// migrateSQLite runs Migrate on SQLite in a transaction that begins with
// the write lock (waiting for it as busy_timeout says). A deferred
// transaction would read the schema first, and SQLite refuses at once, with
// SQLITE_BUSY, a transaction that read and then writes after another
// connection wrote: of Migrates that run together, all but one failed.
func (s *Store) migrateSQLite(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return s.fail(ctx, "migrate", err)
	}
	err := func() error {
		for _, stmt := range s.Schema() {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		for _, stmt := range s.d.upgrade(s.table) {
			if _, err := conn.ExecContext(ctx, stmt); err != nil && (ctx.Err() != nil || !s.d.isDuplicateColumn(err)) {
				return err
			}
		}
		_, err := conn.ExecContext(ctx, "COMMIT")
		return err
	}()
	if err != nil {
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
			// Never hand a connection inside a transaction back to the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		return s.fail(ctx, "migrate", err)
	}
	return nil
}

// fail wraps a database error for op. If ctx is done, the error also wraps
// ctx.Err(), whatever the driver made of the interruption (modernc.org/sqlite
// reports "interrupted", go-sql-driver/mysql may report a broken
// connection), so that errors.Is(err, context.Canceled) holds.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("sqlstore: %s: %w: %w", op, cerr, err)
	}
	return fmt.Errorf("sqlstore: %s: %w", op, err)
}

// inTx runs fn in a transaction, committed if fn returns nil and rolled
// back otherwise. A transaction the database aborted to break a deadlock
// or a serialization conflict (which InnoDB does when RevokeOwner and
// Rotate lock an owner's rows in opposite orders) runs again, a few times.
func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	const attempts = 5
	for attempt := 1; ; attempt++ {
		err := s.tx(ctx, fn)
		if err == nil || attempt == attempts || ctx.Err() != nil || !s.d.isRetryable(err) {
			return err
		}
	}
}

func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// exists reports whether a key with the given id is stored.
func (s *Store) exists(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id string) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx, s.q.exists, id).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}
