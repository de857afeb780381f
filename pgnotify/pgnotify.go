// Package pgnotify is an apikey.Notifier over PostgreSQL LISTEN/NOTIFY, for
// fleets that share a PostgreSQL database but no Redis. Every Manager
// announces the ids of the keys it changes with pg_notify and drops the
// cache entries of the ids it hears.
//
//	pool, err := pgxpool.New(ctx, "postgres://...")
//	if err != nil { ... }
//	n, err := pgnotify.New(pool, pgnotify.Options{})
//	if err != nil { ... }
//	m, err := apikey.New(store, apikey.Options{Notifier: n, ...})
//
// Each Subscribe holds one connection of the pool for as long as it runs,
// because LISTEN is per connection. Size the pool for it. Without a pool,
// NewConn dials connections of its own from a pgx.ConnConfig. NOTIFY
// reaches only the sessions listening when it commits. apikey.Notifier
// explains why that is enough. LISTEN needs a session of its own on the
// server. Behind a connection pooler in transaction mode (PgBouncer's
// default), point the Notifier at the server directly or at a session-mode
// pool.
package pgnotify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/backoff"
)

// Defaults of Options.
const (
	// DefaultChannel is the notification channel when Options.Channel is
	// empty.
	DefaultChannel = "apikey_changed"
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between two
	// attempts to listen when Options leaves them 0. The wait starts at
	// the minimum and doubles up to the maximum, with up to 20% of jitter.
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = time.Second
	// DefaultHealthCheck is how long the listening connection may stay
	// silent before it is pinged when Options.HealthCheck is 0.
	DefaultHealthCheck = 10 * time.Second
)

// maxChannel is PostgreSQL's identifier limit (NAMEDATALEN-1 bytes).
const maxChannel = 63

// Options configures a Notifier. The zero value uses the defaults above.
type Options struct {
	// Channel is the notification channel, DefaultChannel when empty. It
	// has at most 63 bytes, without NUL. It is case-sensitive (LISTEN
	// quotes it).
	// Every instance of one fleet must use the same channel.
	Channel string
	// MinBackoff and MaxBackoff bound the wait before listening again
	// after a failure. They are DefaultMinBackoff and DefaultMaxBackoff
	// when 0.
	MinBackoff, MaxBackoff time.Duration
	// HealthCheck is how long the listening connection may receive
	// nothing before a ping checks it, DefaultHealthCheck when 0.
	HealthCheck time.Duration
	// Logger, if set, logs lost connections. Nil logs nothing.
	Logger *slog.Logger
}

// Notifier publishes and receives key changes on one PostgreSQL
// notification channel. Build it with New or NewConn. It is safe for
// concurrent use.
type Notifier struct {
	db       backend
	channel  string
	listen   string // LISTEN statement
	min, max time.Duration
	health   time.Duration
	log      *slog.Logger

	subscriptions atomic.Uint64
}

var _ apikey.Notifier = (*Notifier)(nil)

// backend gives connections to listen on and runs pg_notify.
type backend interface {
	acquire(ctx context.Context) (*pgx.Conn, func(), error)
	exec(ctx context.Context, sql string, args ...any) error
	close()
}

// New returns a Notifier that publishes through pool and listens on a
// connection it acquires from pool for each Subscribe. The pool stays the
// caller's to close. A nil pool or bad Options give an error wrapping
// apikey.ErrInvalidOptions.
func New(pool *pgxpool.Pool, opts Options) (*Notifier, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: pgnotify: nil pool", apikey.ErrInvalidOptions)
	}
	return newNotifier(poolBackend{pool}, opts)
}

// NewConn returns a Notifier that dials its own connections from cfg. It
// dials one per Subscribe, and one for Publish, kept open and replaced
// when it breaks. It does no I/O until used. Close closes the publishing
// connection. A nil cfg or bad Options give an error wrapping
// apikey.ErrInvalidOptions.
func NewConn(cfg *pgx.ConnConfig, opts Options) (*Notifier, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: pgnotify: nil config", apikey.ErrInvalidOptions)
	}
	return newNotifier(&connBackend{cfg: cfg.Copy()}, opts)
}

func newNotifier(db backend, opts Options) (*Notifier, error) {
	n := &Notifier{db: db, channel: opts.Channel, min: opts.MinBackoff, max: opts.MaxBackoff,
		health: opts.HealthCheck, log: opts.Logger}
	if n.channel == "" {
		n.channel = DefaultChannel
	}
	if len(n.channel) > maxChannel || strings.IndexByte(n.channel, 0) >= 0 {
		return nil, fmt.Errorf("%w: pgnotify: channel longer than %d bytes or with NUL", apikey.ErrInvalidOptions, maxChannel)
	}
	if n.min == 0 {
		n.min = DefaultMinBackoff
	}
	if n.max == 0 {
		n.max = max(DefaultMaxBackoff, n.min)
	}
	if n.health == 0 {
		n.health = DefaultHealthCheck
	}
	if n.min < 0 || n.max < 0 || n.health < 0 || n.min > n.max {
		return nil, fmt.Errorf("%w: pgnotify: bad backoff or health check", apikey.ErrInvalidOptions)
	}
	n.listen = "LISTEN " + pgx.Identifier{n.channel}.Sanitize()
	return n, nil
}

// Channel returns the channel n publishes and listens on.
func (n *Notifier) Channel() string { return n.channel }

// Subscriptions returns how many times a Subscribe of n has (re)started
// listening.
func (n *Notifier) Subscriptions() uint64 { return n.subscriptions.Load() }

// Close closes the publishing connection of a Notifier built with NewConn.
// It does nothing for one built with New. Subscriptions end with their
// contexts.
func (n *Notifier) Close() { n.db.close() }

// Publish implements apikey.Notifier with SELECT pg_notify(channel, id),
// committed at once.
func (n *Notifier) Publish(ctx context.Context, id string) error {
	if err := n.db.exec(ctx, "SELECT pg_notify($1, $2)", n.channel, id); err != nil {
		return fmt.Errorf("pgnotify: publish: %w", err)
	}
	return nil
}

// Subscribe implements apikey.Notifier. It LISTENs on a connection of its
// own, calls changed("") once listening and changed(id) for every
// notification. When the connection fails, it listens again on a new one
// after a backoff and calls changed("") again. It goes on until ctx is
// done.
func (n *Notifier) Subscribe(ctx context.Context, changed func(id string)) error {
	return backoff.Retry(ctx, n.min, n.max, n.log, "pgnotify: listening connection lost; listening again",
		[]slog.Attr{slog.String("channel", n.channel)},
		func(ctx context.Context, reset func()) error { return n.session(ctx, changed, reset) })
}

// session listens on one connection until it fails (its error is
// returned) or ctx is done. Once listening it calls reset.
func (n *Notifier) session(ctx context.Context, changed func(string), reset func()) error {
	conn, release, err := n.db.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	if _, err := conn.Exec(ctx, n.listen); err != nil {
		return err
	}
	n.subscriptions.Add(1)
	reset()
	changed("")
	for {
		wctx, cancel := context.WithTimeout(ctx, n.health)
		note, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			// Silent for a while: a ping proves the connection alive.
			pctx, cancel := context.WithTimeout(ctx, n.health)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return err
			}
		case err != nil:
			return err
		case note.Channel == n.channel:
			changed(note.Payload)
		}
	}
}

// poolBackend serves a Notifier from a pgxpool.Pool.
type poolBackend struct{ pool *pgxpool.Pool }

func (p poolBackend) acquire(ctx context.Context) (*pgx.Conn, func(), error) {
	c, err := p.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	return c.Conn(), func() {
		// UNLISTEN before the connection serves anything else; a broken
		// connection is dropped by the pool.
		if !c.Conn().IsClosed() {
			uctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if _, err := c.Exec(uctx, "UNLISTEN *"); err != nil {
				_ = c.Conn().Close(uctx)
			}
			cancel()
		}
		c.Release()
	}, nil
}

func (p poolBackend) exec(ctx context.Context, sql string, args ...any) error {
	_, err := p.pool.Exec(ctx, sql, args...)
	return err
}

func (poolBackend) close() {}

// connBackend dials connections from a config.
type connBackend struct {
	cfg *pgx.ConnConfig

	mu  sync.Mutex // serializes Publish on pub
	pub *pgx.Conn
}

func (c *connBackend) acquire(ctx context.Context) (*pgx.Conn, func(), error) {
	conn, err := pgx.ConnectConfig(ctx, c.cfg)
	if err != nil {
		return nil, nil, err
	}
	return conn, func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(cctx)
		cancel()
	}, nil
}

func (c *connBackend) exec(ctx context.Context, sql string, args ...any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pub == nil || c.pub.IsClosed() {
		conn, err := pgx.ConnectConfig(ctx, c.cfg)
		if err != nil {
			return err
		}
		c.pub = conn
	}
	if _, err := c.pub.Exec(ctx, sql, args...); err != nil {
		// The next Publish starts on a new connection.
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = c.pub.Close(cctx)
		cancel()
		c.pub = nil
		return err
	}
	return nil
}

func (c *connBackend) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pub != nil {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = c.pub.Close(cctx)
		cancel()
		c.pub = nil
	}
}
