package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/usage"
)

// DB is the part of *sql.DB a Store uses. Both *sql.DB and *sql.Conn satisfy
// it. The Store never closes it.
type DB interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// Options configures a Store. The zero value uses the tables DefaultTable,
// "api_customers" and "api_usage".
type Options struct {
	// Table is the name of the keys table, DefaultTable ("api_keys") when
	// empty. It must be an identifier of ASCII letters, digits and
	// underscores, not starting with a digit, at most 63 characters. It may
	// be qualified by a schema (PostgreSQL), a database (MySQL) or an
	// attached database (SQLite) of the same grammar, as in "auth.api_keys".
	// It is quoted in every statement, so reserved words are fine.
	Table string

	// CustomerTable is the name of the customers table (see
	// apikey.CustomerStore), of the same grammar as Table. Empty means
	// Table's name with a final "keys" replaced by "customers", else with
	// "_customers" appended, in Table's schema. So "api_keys" gives
	// "api_customers", and "auth.tokens" gives "auth.tokens_customers".
	CustomerTable string

	// UsageTable is the name of the usage table (see usage.Store), of
	// the same grammar as Table. Empty means Table's name with a final
	// "keys" replaced by "usage", else with "_usage" appended, in Table's
	// schema. So "api_keys" gives "api_usage", and "auth.tokens" gives
	// "auth.tokens_usage".
	UsageTable string

	// PlanMap, if set, chooses the plan of the customer record that
	// Migrate (or BackfillCustomers) creates for an owner whose existing
	// keys have different plans. It gets the owner and the distinct
	// plans, sorted. Without it such a record gets no plan (the Manager's
	// DefaultPlan), never silently the widest, and the owner is logged.
	// An owner whose keys share one plan gets that plan.
	PlanMap func(owner string, plans []string) string

	// Logger, if set, receives the warnings of Migrate. They name the
	// owners whose keys have different plans when PlanMap is not set.
	Logger *slog.Logger
}

// Store is an apikey.Store over a SQL database. It also implements
// apikey.Revoker, apikey.Rotator, apikey.Purger, apikey.CustomerStore and
// usage.Store with single conditional statements or transactions. Build it
// with New. The zero value is not usable. A Store holds no state besides its
// configuration and is safe for concurrent use as far as its DB is (*sql.DB
// is).
type Store struct {
	db        DB
	d         Dialect
	table     tableName
	customers tableName
	usage     tableName
	planMap   func(owner string, plans []string) string
	log       *slog.Logger
	q         queries
	stmts     prepared
}

var (
	_ apikey.Store         = (*Store)(nil)
	_ apikey.Revoker       = (*Store)(nil)
	_ apikey.Rotator       = (*Store)(nil)
	_ apikey.Purger        = (*Store)(nil)
	_ apikey.CustomerStore = (*Store)(nil)
	_ usage.Store          = (*Store)(nil)
)

// New returns a Store of dialect d over db. It does no I/O. Call Migrate
// (or run Schema's statements yourself) before use. A nil db, an unknown
// dialect, or an invalid Options.Table, Options.CustomerTable or
// Options.UsageTable (or two of them naming one table), give an error
// wrapping apikey.ErrInvalidOptions.
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
	ct := t.customers()
	if opts.CustomerTable != "" {
		if ct, err = parseTable(opts.CustomerTable); err != nil {
			return nil, err
		}
	}
	ut := t.usage()
	if opts.UsageTable != "" {
		if ut, err = parseTable(opts.UsageTable); err != nil {
			return nil, err
		}
	}
	switch {
	case ct == t:
		return nil, fmt.Errorf("%w: sqlstore: the customers table is the keys table %s", apikey.ErrInvalidOptions, t)
	case ut == t || ut == ct:
		return nil, fmt.Errorf("%w: sqlstore: the usage table %s is the keys or the customers table", apikey.ErrInvalidOptions, ut)
	}
	return &Store{
		db: db, d: d, table: t, customers: ct, usage: ut, planMap: opts.PlanMap, log: opts.Logger,
		q: buildQueries(d, t, ct, ut),
	}, nil
}

// Dialect returns the dialect of s.
func (s *Store) Dialect() Dialect { return s.d }

// Table returns the table name of s as configured, e.g. "api_keys".
func (s *Store) Table() string { return s.table.String() }

// CustomerTable returns the name of the customers table of s, e.g.
// "api_customers".
func (s *Store) CustomerTable() string { return s.customers.String() }

// UsageTable returns the name of the usage table of s, e.g. "api_usage".
func (s *Store) UsageTable() string { return s.usage.String() }

// Schema returns the statements Migrate runs on a new database. See
// Dialect.Schema.
func (s *Store) Schema() []string { return s.d.schema(s.table, s.customers, s.usage) }

// Migrate creates the keys table, its index, the customers table, and the
// usage table and its index, unless they exist. It also upgrades a keys table
// made by an earlier release (see Dialect.Upgrade). It adds the columns the
// table lacks and the index. It creates a customer record for each owner of
// its keys (see BackfillCustomers) before it adds the paused column. It adds
// the allowed_ips columns last, which marks the upgrade done. Existing keys
// keep verifying. A database of a release before usage recording gets the
// usage table the same way. It is idempotent and may run at every start. On
// an upgraded table it runs the CREATE ... IF NOT EXISTS statements and one
// look at the catalog.
//
// On PostgreSQL it runs in one transaction under an advisory lock. So
// processes starting together do not race, and the upgrade happens
// entirely or not at all. Creating the index there locks the table
// against writes while it is built. On a large table, create it first
// with CREATE INDEX CONCURRENTLY and the same name (see Dialect.Upgrade),
// which Migrate then finds. On SQLite it runs in one transaction that
// takes the write lock first (BEGIN IMMEDIATE), for the same reason. On
// MySQL, where DDL commits at once, an upgrade cut short is resumed by the
// next Migrate.
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
		if err := s.migrate(ctx, s.db); err != nil {
			return s.fail(ctx, "migrate", err)
		}
		return nil
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if s.d == Postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(s.table)); err != nil {
				return err
			}
		}
		return s.migrate(ctx, tx)
	})
	if err != nil {
		return s.fail(ctx, "migrate", err)
	}
	return nil
}

// querier is what Migrate works through. It is the DB, a transaction or a
// connection.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// migrate runs Schema's statements and, on a keys table without the
// allowed_ips column, the upgrade: on a table without the paused column
// too, Upgrade's statements up to the one that adds paused, the backfill
// of customer records, then that one; then the statements that add
// allowed_ips, to the keys table last.
func (s *Store) migrate(ctx context.Context, q querier) error {
	for _, stmt := range s.Schema() {
		if _, err := q.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	done, err := s.hasColumn(ctx, q, "allowed_ips")
	if err != nil || done {
		return err
	}
	paused, err := s.hasColumn(ctx, q, "paused")
	if err != nil {
		return err
	}
	up := s.d.upgrade(s.table, s.customers)
	if paused {
		up = up[len(up)-upgradeIPs:]
	}
	for i, stmt := range up {
		if !paused && i == len(up)-upgradeIPs-1 {
			if _, err := s.backfill(ctx, q); err != nil {
				return err
			}
		}
		if _, err := q.ExecContext(ctx, stmt); err != nil && (ctx.Err() != nil || !s.d.isDone(err)) {
			return err
		}
	}
	return nil
}

// hasColumn reports whether the keys table has the column col.
func (s *Store) hasColumn(ctx context.Context, q querier, col string) (bool, error) {
	var (
		query string
		args  []any
	)
	switch s.d {
	case Postgres:
		query = "SELECT COUNT(*) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped"
		args = []any{s.table.quoted(s.d), col}
	case MySQL:
		var schema any
		if s.table.schema != "" {
			schema = s.table.schema
		}
		query = "SELECT COUNT(*) FROM information_schema.columns " +
			"WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? AND column_name = ?"
		args = []any{schema, s.table.name, col}
	default:
		query, args = "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?", []any{s.table.name, col}
		if s.table.schema != "" {
			query, args = "SELECT COUNT(*) FROM pragma_table_info(?, ?) WHERE name = ?", []any{s.table.name, s.table.schema, col}
		}
	}
	var n int
	if err := q.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
		return false, err
	}
	return n > 0, nil
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
	err := s.migrate(ctx, conn)
	if err == nil {
		_, err = conn.ExecContext(ctx, "COMMIT")
	}
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
