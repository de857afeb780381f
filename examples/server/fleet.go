package main

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/otelmetrics"
	"github.com/gokeys/apikey/pgnotify"
	"github.com/gokeys/apikey/redisnotify"
)

// fleet is what running several instances takes. It holds a Notifier, so
// that a change made through one instance empties the caches of all the
// others at once. The Notifier uses Redis pub/sub with -redis, sharded
// pub/sub with -redis-cluster, else PostgreSQL LISTEN/NOTIFY with
// -postgres. There is none for SQLite or MySQL alone. With -metrics, it
// also serves the library's metrics in Prometheus form on GET /metrics.
type fleet struct {
	notifier apikey.Notifier
	metrics  apikey.Metrics
	handler  http.Handler // GET /metrics; nil without -metrics
	closers  []func()
}

func newFleet(ctx context.Context, f flags, log *slog.Logger) (*fleet, error) {
	fl := &fleet{}
	switch {
	case f.redis != "" || len(f.redisCluster) > 0:
		var client redis.UniversalClient
		if f.redis != "" {
			client = redis.NewClient(&redis.Options{Addr: f.redis, DialTimeout: time.Second,
				ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
		} else {
			client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: f.redisCluster, DialTimeout: time.Second,
				ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
		}
		fl.closers = append(fl.closers, func() { client.Close() })
		n, err := redisnotify.New(client, redisnotify.Options{Logger: log})
		if err != nil {
			fl.close()
			return nil, err
		}
		fl.notifier = n
	case f.postgres != "":
		cfg, err := pgxpool.ParseConfig(f.postgres)
		if err != nil {
			return nil, err
		}
		cfg.MaxConns = 4 // one listens, the others publish
		cfg.ConnConfig.ConnectTimeout = 2 * time.Second
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		fl.closers = append(fl.closers, pool.Close)
		n, err := pgnotify.New(pool, pgnotify.Options{Logger: log})
		if err != nil {
			fl.close()
			return nil, err
		}
		fl.notifier = n
	}
	if f.metrics {
		reg := prometheus.NewRegistry()
		exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			fl.close()
			return nil, err
		}
		provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
		fl.closers = append(fl.closers, func() { _ = provider.Shutdown(context.Background()) })
		if fl.metrics, err = otelmetrics.New(provider, otelmetrics.Options{}); err != nil {
			fl.close()
			return nil, err
		}
		fl.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	}
	return fl, nil
}

// routes adds GET /metrics in front of h when -metrics is on.
func (fl *fleet) routes(h http.Handler) http.Handler {
	if fl.handler == nil {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", fl.handler)
	mux.Handle("/", h)
	return mux
}

func (fl *fleet) close() {
	for i := len(fl.closers) - 1; i >= 0; i-- {
		fl.closers[i]()
	}
}
