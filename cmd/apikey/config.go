package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/pgnotify"
	"github.com/gokeys/apikey/redisnotify"
	"github.com/gokeys/apikey/sqlstore"
)

// config holds the flags every subcommand shares.
type config struct {
	sqlite, postgres, mysql, table string
	redis, channel                 string
	plansFile                      string
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
	fs.StringVar(&cfg.redis, "redis", c.getenv("APIKEY_REDIS"), "Redis `address` whose pub/sub tells running services of every change (env APIKEY_REDIS)")
	fs.StringVar(&cfg.channel, "notify-channel", c.getenv("APIKEY_NOTIFY_CHANNEL"), "the services' notification `channel` (env APIKEY_NOTIFY_CHANNEL; default that of redisnotify or pgnotify)")
	fs.StringVar(&cfg.plansFile, "plans", c.getenv("APIKEY_PLANS"), "JSON `file` of the services' plans; issue and update refuse other plans (env APIKEY_PLANS)")
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

// backend is what a command that reads or changes keys works with. It
// holds the database, a Manager over it, and the notifier that tells
// running services of every change.
type backend struct {
	store   *sqlstore.Store
	m       *apikey.Manager
	plans   limits.Plans // nil without --plans
	tell    *announcer   // nil without a notifier
	closers []func()
}

// connect opens the configured database, the notifier and a Manager over
// them. The caller closes the backend.
func (c *cli) connect(cfg *config) (*backend, error) {
	plans, err := cfg.loadPlans()
	if err != nil {
		return nil, err
	}
	store, db, err := cfg.openStore()
	if err != nil {
		return nil, err
	}
	b := &backend{store: store, plans: plans, closers: []func(){func() { db.Close() }}}
	n, closeNotifier, err := cfg.notifier()
	if err != nil {
		b.close(context.Background())
		return nil, err
	}
	if n != nil {
		b.tell = &announcer{n: n}
		b.closers = append(b.closers, closeNotifier)
	}
	if b.m, err = c.manager(cfg, b); err != nil {
		b.close(context.Background())
		return nil, err
	}
	return b, nil
}

// close closes the Manager (every change was announced before the method
// that made it returned), then the notifier's connections and the
// database.
func (b *backend) close(ctx context.Context) {
	if b.m != nil {
		b.m.Close(ctx)
	}
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
}

// warnUnannounced says, in one line, that running services were not told
// of some changes, if so.
func (c *cli) warnUnannounced(name string, b *backend) {
	if failed, err := b.tell.failures(); failed > 0 {
		fmt.Fprintf(c.stderr, "apikey %s: running services were not told of %d change(s) (%s); they honour them when their cache entries expire\n",
			name, failed, message(err))
	}
}

// manager returns a Manager over the backend's store for the configured
// prefixes and plans, the pepper of the environment, and the backend's
// notifier. It keeps no cache and records neither uses nor usage: the
// command runs once.
func (c *cli) manager(cfg *config, b *backend) (*apikey.Manager, error) {
	prefixes := cfg.prefixList()
	opts := apikey.Options{
		Prefix: prefixes[0], Prefixes: prefixes[1:], SecretBits: cfg.secretBits, Plans: b.plans,
		LastUsedInterval: -1, UsageInterval: -1, CacheTTL: -1, CacheNegativeTTL: -1,
	}
	if b.tell != nil {
		opts.Notifier = b.tell
	}
	if p := c.getenv("APIKEY_PEPPER"); p != "" {
		version := c.getenv("APIKEY_PEPPER_VERSION")
		if version == "" {
			version = "1"
		}
		opts.Peppers = []apikey.Pepper{{Version: version, Secret: []byte(p)}}
	}
	return apikey.New(b.store, opts)
}

// notifier returns the Notifier running services listen on, picked as
// examples/server picks it: Redis pub/sub with --redis, else PostgreSQL
// LISTEN/NOTIFY on the database when it is PostgreSQL; none for SQLite or
// MySQL alone. The function returned closes its connections. Nothing is
// dialled until the first change is published.
func (cfg *config) notifier() (apikey.Notifier, func(), error) {
	switch {
	case cfg.redis != "":
		client := redis.NewClient(&redis.Options{Addr: cfg.redis, DialTimeout: 2 * time.Second, DialerRetries: 1,
			ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1})
		n, err := redisnotify.New(client, redisnotify.Options{Channel: cfg.channel})
		if err != nil {
			client.Close()
			return nil, nil, err
		}
		return n, func() { client.Close() }, nil
	case cfg.postgres != "":
		cc, err := pgx.ParseConfig(cfg.postgres)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: postgres: %w", apikey.ErrUnavailable, err)
		}
		cc.ConnectTimeout = 2 * time.Second
		n, err := pgnotify.NewConn(cc, pgnotify.Options{Channel: cfg.channel})
		if err != nil {
			return nil, nil, err
		}
		return n, n.Close, nil
	case cfg.channel != "":
		return nil, nil, usageError("--notify-channel needs --redis or a PostgreSQL database")
	}
	return nil, nil, nil
}

// announcer passes changes on to a Notifier and counts those it failed to
// send. After a failure it sends no more (each would wait for the same
// unreachable server) and fails at once.
type announcer struct {
	n apikey.Notifier

	mu     sync.Mutex
	err    error // the first failure
	failed int
}

// Publish implements apikey.Notifier.
func (a *announcer) Publish(ctx context.Context, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	err := a.err
	if err == nil {
		err = a.n.Publish(ctx, id)
		a.err = err
	}
	if err != nil {
		a.failed++
	}
	return err
}

// Subscribe implements apikey.Notifier. The CLI keeps no cache, so its
// Manager never subscribes.
func (a *announcer) Subscribe(ctx context.Context, changed func(id string)) error {
	return a.n.Subscribe(ctx, changed)
}

// failures returns how many changes were not announced, and why.
func (a *announcer) failures() (int, error) {
	if a == nil {
		return 0, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failed, a.err
}

// loadPlans reads the plans of --plans: a JSON object from plan names to
// their limits, as limits.Plans encodes them, with periods also accepted
// as duration strings:
//
//	{"free": [{"name": "daily", "kind": "quota", "count": 100, "window": "day"}],
//	 "pro":  [{"name": "daily", "kind": "quota", "count": 10000, "window": "day"},
//	          {"name": "per-second", "kind": "rate", "count": 100, "period": "1s"}]}
//
// It returns nil without --plans.
func (cfg *config) loadPlans() (limits.Plans, error) {
	if cfg.plansFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(cfg.plansFile)
	if err != nil {
		return nil, fmt.Errorf("--plans: %w", err)
	}
	bad := func(err error) error { return usageError(fmt.Sprintf("--plans %s: %s", cfg.plansFile, message(err))) }
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var file map[string][]planLimit
	if err := dec.Decode(&file); err != nil {
		return nil, bad(err)
	}
	if dec.More() {
		return nil, bad(errors.New("more than one JSON value"))
	}
	if len(file) == 0 {
		return nil, bad(errors.New("no plans"))
	}
	plans := make(limits.Plans, len(file))
	for name, ls := range file {
		plans[name] = make([]limits.Limit, 0, len(ls))
		for _, l := range ls {
			plans[name] = append(plans[name], limits.Limit{Name: l.Name, Kind: l.Kind, Count: l.Count,
				Period: time.Duration(l.Period), Burst: l.Burst, Window: l.Window})
		}
	}
	if err := plans.Validate(); err != nil {
		return nil, bad(err)
	}
	return plans, nil
}

// planLimit is one limit of the plans file.
type planLimit struct {
	Name   string        `json:"name"`
	Kind   limits.Kind   `json:"kind"`
	Count  int64         `json:"count"`
	Period duration      `json:"period"`
	Burst  int64         `json:"burst"`
	Window limits.Window `json:"window"`
}

// duration is a period in nanoseconds, as limits.Limit encodes it, or a
// string time.ParseDuration reads ("1s", "1m").
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return json.Unmarshal(b, (*int64)(d))
	}
	v, err := time.ParseDuration(s)
	*d = duration(v)
	return err
}

// checkPlan refuses a plan that --plans does not have.
func (b *backend) checkPlan(cfg *config, plan string) error {
	if b.plans == nil || plan == "" {
		return nil
	}
	if _, ok := b.plans[plan]; !ok {
		return usageError(fmt.Sprintf("unknown plan %q: the plans of %s are %s",
			plan, cfg.plansFile, strings.Join(slices.Sorted(maps.Keys(b.plans)), ", ")))
	}
	return nil
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
		errors.Is(err, apikey.ErrExpired), errors.Is(err, apikey.ErrDisabled), errors.Is(err, apikey.ErrConflict),
		errors.Is(err, apikey.ErrInvalidInput), errors.Is(err, apikey.ErrTooManyKeys), errors.Is(err, apikey.ErrSuspended), errors.Is(err, apikey.ErrPaused):
		return exitRefused
	}
	return exitFailure
}

// message is err in one line for people: without the "apikey: " that each
// layer of the library adds, and without the name of the library's method
// before an outcome ("get: key not found" is "key not found").
func message(err error) string {
	parts := strings.Split(strings.ReplaceAll(err.Error(), "\n", " "), ": ")
	kept := parts[:0]
	for _, p := range parts {
		if p != "apikey" {
			kept = append(kept, p)
		}
	}
	if len(kept) == 2 && isOutcome(err) {
		kept = kept[1:]
	}
	return strings.Join(kept, ": ")
}

// isOutcome reports whether err is a verdict on a key rather than a failure.
func isOutcome(err error) bool {
	for _, s := range []error{apikey.ErrNotFound, apikey.ErrRevoked, apikey.ErrRotated, apikey.ErrExpired,
		apikey.ErrDisabled, apikey.ErrPaused, apikey.ErrSuspended, apikey.ErrTooManyKeys, apikey.ErrConflict, apikey.ErrInvalid, apikey.ErrMalformed} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
