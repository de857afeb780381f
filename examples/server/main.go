// Command server is the article's API-key service built on apikey. It has
// a management API and a self-service page at /keys/ for the current
// user's keys (HTTP Basic), and routes protected by API keys. It has
// per-customer plans that only the operator sets, through the operator API
// under /admin/ (its own credentials, -admin). The free plan allows 100
// requests per UTC day. The pro plan allows 10,000 per UTC day and 100 per
// second.
//
//	go run ./examples/server                      # SQLite file apikeys.db, limits in memory
//	go run ./examples/server -admin ops:secret    # and the operator API at /admin/
//	go run ./examples/server -postgres "$DSN"     # or -mysql "$DSN"
//	go run ./examples/server -redis 127.0.0.1:6379  # limits and revocations shared by every instance
//	go run ./examples/server -redis-cluster 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002  # the same on a Redis Cluster
//	go run ./examples/server -metrics              # GET /metrics for Prometheus
//	go run ./examples/server -trusted-proxies 10.0.0.0/8  # behind a load balancer that sets X-Forwarded-For
//
// A key may be restricted to IP ranges: "allowed_ips": ["203.0.113.0/24"]
// on POST /api-keys and PATCH /api-keys/{id}, shown in the key view; the
// operator restricts a customer with PUT /admin/customers/{id}. A request
// from elsewhere gets 403 (see README.md).
//
// The customers demo (free) and bob (pro) are defined at the first start.
// Later starts leave every customer as the operator left it. A user
// without a customer record has the free plan.
//
// Several instances over one database honour a revocation, a plan change
// or a suspension made through any of them at once. They learn of it
// through Redis pub/sub with -redis (sharded pub/sub with
// -redis-cluster). Else they learn of it through PostgreSQL LISTEN/NOTIFY
// with -postgres (see apikey.Notifier). While Redis fails, a rate-limited
// request is refused with 503, so that no customer gets more than his
// plan. With -limit-fallback each instance decides alone meanwhile, and a
// fleet of N may admit up to N times a plan's count (docs/scale.md).
//
// Leaked keys are revoked within seconds. POST /github/secret-scanning
// receives GitHub's secret scanning alerts. They are signed by the keys
// published at -github-keys-url, GitHub's by default. Register the route
// and the sk_live_ format with GitHub's partner program. POST
// /credentials/revoke takes anyone's report, a JSON object whose
// "credentials" member lists the tokens, such as ["sk_live_..."]. It is
// answered 202 whatever matched. Both revoke on every instance and record
// the event "leak" in the log, with the URL where the key was found.
//
// With -webhook-url and -webhook-secret, every change of a key or customer
// is sent there as a signed webhook (key.created, key.revoked, key.leaked,
// customer.quota_exhausted, ...). Each event is written in the database
// with its change and delivered at least once by any instance. README.md
// shows a receiver that verifies the signatures.
//
//	go run ./examples/server -webhook-url https://example.com/hooks -webhook-secret "$(go run ./cmd/apikey webhook secret)"
//
// Set APIKEY_PEPPER (32 bytes or more) to key the stored digests with HMAC.
// Without it they are plain SHA-256 and the server warns.
//
// Every request of a verified key is counted, per key and hour. The counts
// are written to the database every 2 seconds (-usage-interval), where the
// library's default is 10 seconds. They are the requests allowed, limited
// (429) and refused (403, or 401 for a paused or revoked key), and the
// cost spent. A user reads his own usage at GET /usage and GET
// /api-keys/{id}/usage. These take ?from= and ?to= in RFC 3339 and
// ?step=hour|day|month. By default they answer by day over the last 30
// days. The operator exports usage with the CLI, as in this example.
//
//	go run ./examples/server &
//	KEY=$(curl -s -u demo:demo -X POST localhost:8080/api-keys -d '{"scopes":["read"]}' | jq -r .key)
//	for i in $(seq 105); do curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $KEY" localhost:8080/data; done | sort | uniq -c
//	curl -s -o /dev/null -w '%{http_code}\n' -X POST -H "Authorization: Bearer $KEY" localhost:8080/data  # 403: no write scope
//	sleep 2
//	curl -s -u demo:demo 'localhost:8080/usage?step=hour' | jq '.series[-1]'
//	# {"start": "...", "allowed": 100, "limited": 5, "refused": 1, "cost": 100}
//	go run ./cmd/apikey usage --sqlite apikeys.db --customer demo --format csv
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/leak"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/redislimit"
	"github.com/gokeys/apikey/sqlstore"
)

type flags struct {
	addr, db, postgres, mysql, redis, users, admin string
	redisCluster                                   []string // -redis-cluster
	metrics                                        bool
	limitFallback                                  bool // -limit-fallback
	cacheTTL, usageInterval                        time.Duration
	grpc                                           string // see GRPC.md
	trustedProxies, proxyHeader                    string // see README.md, IP restrictions
	githubKeysURL                                  string
	webhookURL, webhookSecret                      string // see webhooks.go
}

func main() {
	var f flags
	flag.StringVar(&f.addr, "addr", "127.0.0.1:8080", "listen address")
	flag.StringVar(&f.db, "db", "apikeys.db", "SQLite database file (unless -postgres or -mysql)")
	flag.StringVar(&f.postgres, "postgres", "", "PostgreSQL DSN, e.g. postgres://user@127.0.0.1:5432/db")
	flag.StringVar(&f.mysql, "mysql", "", "MySQL/MariaDB DSN, e.g. root@tcp(127.0.0.1:3306)/db")
	flag.StringVar(&f.redis, "redis", "", "Redis address for shared rate limits and revocations (in memory when empty)")
	flag.Func("redis-cluster", "Redis Cluster nodes (comma-separated host:port) for shared rate limits and revocations, in place of -redis", func(v string) error {
		for _, addr := range strings.Split(v, ",") {
			if addr = strings.TrimSpace(addr); addr != "" {
				f.redisCluster = append(f.redisCluster, addr)
			}
		}
		if len(f.redisCluster) == 0 {
			return errors.New("no address")
		}
		return nil
	})
	flag.BoolVar(&f.limitFallback, "limit-fallback", false, "while Redis fails, decide rate limits per instance instead of answering 503 (each instance may then admit a plan's whole count)")
	flag.BoolVar(&f.metrics, "metrics", false, "serve the library's metrics on GET /metrics (Prometheus text format)")
	flag.DurationVar(&f.cacheTTL, "cache-ttl", 0, "verification cache TTL (0: the library's default; negative: off)")
	flag.DurationVar(&f.usageInterval, "usage-interval", 2*time.Second, "how often the usage counted in memory is written to the database (negative: usage is not recorded)")
	flag.StringVar(&f.users, "users", "demo:demo,bob:bob", "management users, comma-separated name:password pairs")
	flag.StringVar(&f.admin, "admin", "", "the operator's name:password for the operator API under /admin/ (off when empty)")
	flag.StringVar(&f.grpc, "grpc", "", "also serve gRPC on this address, e.g. 127.0.0.1:9090 (see GRPC.md)")
	flag.StringVar(&f.trustedProxies, "trusted-proxies", "", "the proxies (CIDR,…) whose forwarding header names the client, for keys restricted to IP ranges (none: the client is the peer)")
	flag.StringVar(&f.proxyHeader, "proxy-header", ipallow.XForwardedFor, "the header the trusted proxies append the client to: X-Forwarded-For or Forwarded")
	flag.StringVar(&f.githubKeysURL, "github-keys-url", leak.DefaultKeysURL, "where the public keys that sign GitHub's secret scanning alerts (POST /github/secret-scanning) are read")
	flag.StringVar(&f.webhookURL, "webhook-url", "", "send the key and customer events to this URL, signed as Standard Webhooks (off when empty)")
	flag.StringVar(&f.webhookSecret, "webhook-secret", "", "the webhooks' signing secret, whsec_ and base64 (or the environment's APIKEY_WEBHOOK_SECRET)")
	flag.Parse()
	if f.webhookSecret == "" {
		f.webhookSecret = os.Getenv("APIKEY_WEBHOOK_SECRET")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, f, log); err != nil {
		log.Error("server stopped", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags, log *slog.Logger) error {
	users, err := parseUsers(f.users)
	if err != nil {
		return fmt.Errorf("-users: %w", err)
	}
	if f.redis != "" && len(f.redisCluster) > 0 {
		return errors.New("use -redis or -redis-cluster, not both")
	}
	var operator map[string]string
	if f.admin != "" {
		if operator, err = parseUsers(f.admin); err != nil || len(operator) != 1 {
			return errors.New("-admin must be one name:password")
		}
	}
	store, closeDB, err := openStore(ctx, f)
	if err != nil {
		return err
	}
	defer closeDB()

	fl, err := newFleet(ctx, f, log)
	if err != nil {
		return err
	}
	defer fl.close()
	opts := apikey.Options{Prefix: "sk_live", Plans: plans(), DefaultPlan: "free", Logger: log,
		Notifier: fl.notifier, Metrics: fl.metrics, CacheTTL: f.cacheTTL, UsageInterval: f.usageInterval,
		Outbox: outboxPolicy(f)}
	if p := os.Getenv("APIKEY_PEPPER"); p != "" {
		opts.Peppers = []apikey.Pepper{{Version: "1", Secret: []byte(p)}}
	} else {
		log.Warn("APIKEY_PEPPER is not set: key digests are plain SHA-256; set a 32+ byte pepper in production")
	}
	hooks, err := startWebhooks(store, f, log)
	if err != nil {
		return err
	}
	defer hooks.close()
	m, err := apikey.New(store, opts)
	if err != nil {
		return err
	}
	defer func() { // flush last-used times and usage
		flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.Close(flush); err != nil {
			log.Error("last-used flush failed", "error", err)
		}
	}()

	local, err := memlimit.New(memlimit.Options{})
	if err != nil {
		return err
	}
	proxies, err := parseProxies(f.trustedProxies, f.proxyHeader)
	if err != nil {
		return err
	}
	cfg := appConfig{manager: m, limiter: local, users: users, operator: operator, log: log, keysURL: f.githubKeysURL,
		proxies: proxies}
	if client := limiterClient(f); client != nil {
		defer client.Close()
		if cfg.limiter, err = redislimit.New(client, redislimit.Options{}); err != nil {
			return err
		}
		if f.limitFallback { // while Redis fails, each instance decides alone
			cfg.fallback = local
		}
	}
	a, err := newApp(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { // finish the leak reports accepted, before the Manager closes
		finish, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.leaks.close(finish); err != nil {
			log.Error("leak reports left unhandled", "error", err)
		}
	}()

	srv := &http.Server{Addr: f.addr, Handler: fl.routes(a.routes()), ReadHeaderTimeout: 10 * time.Second}
	stopRPC, err := a.serveRPC(srv, f.grpc, log)
	if err != nil {
		return err
	}
	defer stopRPC()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("listening", "addr", "http://"+f.addr, "users", strings.Join(mapKeys(users), ","), "operator_api", operator != nil)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// limiterClient returns a client of the Redis (-redis) or Redis Cluster
// (-redis-cluster) that holds the rate limits, or nil for none. It fails
// fast: the middleware bounds each call (50 ms) and opens its circuit
// breaker after repeated failures. The request is then refused (503), or
// decided by a per-instance limiter with -limit-fallback. On a
// cluster, a MOVED reply (a slot served by a new master after a failover)
// is followed at once, within the same 50 ms.
func limiterClient(f flags) redis.UniversalClient {
	switch {
	case f.redis != "":
		return redis.NewClient(&redis.Options{Addr: f.redis, ContextTimeoutEnabled: true,
			DialTimeout: 100 * time.Millisecond, DialerRetries: 1, ReadTimeout: 50 * time.Millisecond,
			WriteTimeout: 50 * time.Millisecond, PoolTimeout: 50 * time.Millisecond, MaxRetries: -1})
	case len(f.redisCluster) > 0:
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: f.redisCluster, ContextTimeoutEnabled: true,
			DialTimeout: 100 * time.Millisecond, DialerRetries: 1, ReadTimeout: 50 * time.Millisecond,
			WriteTimeout: 50 * time.Millisecond, PoolTimeout: 50 * time.Millisecond, MaxRetries: -1})
	}
	return nil
}

// parseProxies reads -trusted-proxies and -proxy-header; nil without
// trusted proxies.
func parseProxies(cidrs, header string) (*ipallow.Proxies, error) {
	if strings.TrimSpace(cidrs) == "" {
		return nil, nil
	}
	ranges, err := ipallow.Parse(strings.Split(strings.ReplaceAll(cidrs, " ", ""), ",")...)
	if err != nil {
		return nil, fmt.Errorf("-trusted-proxies: %w", err)
	}
	p, err := ipallow.NewProxies(header, ranges)
	if err != nil {
		return nil, fmt.Errorf("-proxy-header: %w", err)
	}
	return p, nil
}

// openStore opens the database the flags name and creates the tables of
// keys and customers.
func openStore(ctx context.Context, f flags) (apikey.Store, func(), error) {
	driver, dsn, dialect := "sqlite", "file:"+f.db+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)", sqlstore.SQLite
	switch {
	case f.postgres != "" && f.mysql != "":
		return nil, nil, errors.New("use -postgres or -mysql, not both")
	case f.postgres != "":
		driver, dsn, dialect = "pgx", f.postgres, sqlstore.Postgres
	case f.mysql != "":
		driver, dsn, dialect = "mysql", f.mysql, sqlstore.MySQL
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, nil, err
	}
	store, err := sqlstore.New(db, dialect, sqlstore.Options{})
	if err == nil {
		migrate, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = store.Migrate(migrate)
		cancel()
	}
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("%s: %w", dialect, err)
	}
	return store, func() { db.Close() }, nil
}

func parseUsers(s string) (map[string]string, error) {
	users := map[string]string{}
	for _, pair := range strings.Split(s, ",") {
		name, pw, ok := strings.Cut(strings.TrimSpace(pair), ":")
		if !ok || name == "" || pw == "" {
			return nil, fmt.Errorf("%q is not name:password", name)
		}
		users[name] = pw
	}
	return users, nil
}

func mapKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
