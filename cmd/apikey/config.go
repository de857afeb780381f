package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/sqlstore"
)

// config holds the flags every subcommand shares.
type config struct {
	sqlite, postgres, mysql, table string
	prefixes                       string
	secretBits                     int
	json                           bool
}

// register adds the shared flags to fs, with defaults from the environment.
func (c *cli) register(fs *flag.FlagSet) *config {
	cfg := &config{}
	bits, _ := strconv.Atoi(c.getenv("APIKEY_SECRET_BITS"))
	fs.StringVar(&cfg.sqlite, "sqlite", c.getenv("APIKEY_SQLITE"), "SQLite database `file` (env APIKEY_SQLITE)")
	fs.StringVar(&cfg.postgres, "postgres", c.getenv("APIKEY_POSTGRES_DSN"), "PostgreSQL `DSN` (env APIKEY_POSTGRES_DSN)")
	fs.StringVar(&cfg.mysql, "mysql", c.getenv("APIKEY_MYSQL_DSN"), "MySQL/MariaDB `DSN` (env APIKEY_MYSQL_DSN)")
	fs.StringVar(&cfg.table, "table", c.getenv("APIKEY_TABLE"), "keys table (env APIKEY_TABLE; default api_keys)")
	fs.StringVar(&cfg.prefixes, "prefix", c.getenv("APIKEY_PREFIX"), "token `prefixes`, comma-separated; the first issues (env APIKEY_PREFIX; default sk)")
	fs.IntVar(&cfg.secretBits, "secret-bits", bits, "secret entropy in bits (env APIKEY_SECRET_BITS; default 256)")
	fs.BoolVar(&cfg.json, "json", false, "print JSON instead of a table")
	return cfg
}

// hasDB reports whether a database is configured.
func (cfg *config) hasDB() bool { return cfg.sqlite != "" || cfg.postgres != "" || cfg.mysql != "" }

// prefixList returns the configured prefixes, apikey's default "sk" when none.
func (cfg *config) prefixList() []string {
	var out []string
	for _, p := range strings.Split(cfg.prefixes, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		out = []string{"sk"} // apikey's default prefix
	}
	return out
}

// formats returns the token format of each prefix.
func (cfg *config) formats() ([]apikey.Format, error) {
	var fs []apikey.Format
	for _, p := range cfg.prefixList() {
		f, err := apikey.NewFormat(p, cfg.secretBits)
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// openStore opens and returns the configured database's store.
func (cfg *config) openStore() (*sqlstore.Store, io.Closer, error) {
	n := 0
	for _, v := range []string{cfg.sqlite, cfg.postgres, cfg.mysql} {
		if v != "" {
			n++
		}
	}
	if n == 0 {
		return nil, nil, usageError("no database: set --sqlite, --postgres or --mysql (or APIKEY_SQLITE, APIKEY_POSTGRES_DSN, APIKEY_MYSQL_DSN)")
	}
	if n > 1 {
		return nil, nil, usageError("more than one database: set only one of --sqlite, --postgres and --mysql")
	}
	driver, dsn, dialect := "sqlite", "file:"+cfg.sqlite+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)", sqlstore.SQLite
	switch {
	case cfg.postgres != "":
		driver, dsn, dialect = "pgx", cfg.postgres, sqlstore.Postgres
	case cfg.mysql != "":
		driver, dsn, dialect = "mysql", cfg.mysql, sqlstore.MySQL
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", apikey.ErrUnavailable, dialect, err)
	}
	s, err := sqlstore.New(db, dialect, sqlstore.Options{Table: cfg.table})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return s, db, nil
}

// manager returns a Manager over store for the configured prefixes and
// the pepper of the environment. It keeps no cache and records no uses:
// the command runs once.
func (c *cli) manager(cfg *config, store apikey.Store) (*apikey.Manager, error) {
	prefixes := cfg.prefixList()
	opts := apikey.Options{
		Prefix: prefixes[0], Prefixes: prefixes[1:], SecretBits: cfg.secretBits,
		LastUsedInterval: -1, CacheTTL: -1, CacheNegativeTTL: -1,
	}
	if p := c.getenv("APIKEY_PEPPER"); p != "" {
		version := c.getenv("APIKEY_PEPPER_VERSION")
		if version == "" {
			version = "1"
		}
		opts.Peppers = []apikey.Pepper{{Version: version, Secret: []byte(p)}}
	}
	return apikey.New(store, opts)
}

// usageError is a mistake on the command line.
type usageError string

func (e usageError) Error() string { return string(e) }

// exitCode maps an error to the documented exit code and a message that
// never carries a token.
func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, apikey.ErrNotFound):
		return exitNotFound
	case errors.Is(err, apikey.ErrUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return exitFailure
	case errors.Is(err, apikey.ErrInvalidOptions), errors.Is(err, apikey.ErrRevoked), errors.Is(err, apikey.ErrRotated),
		errors.Is(err, apikey.ErrExpired), errors.Is(err, apikey.ErrDisabled), errors.Is(err, apikey.ErrConflict):
		return exitRefused
	}
	return exitFailure
}
