package pgnotify_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/testserver"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/notifytest"
	"github.com/gokeys/apikey/pgnotify"
)

// sharedOrPrivate returns the DSN of APIKEY_TEST_POSTGRES_DSN, or else of
// a private cluster.
func sharedOrPrivate(t *testing.T) string {
	if dsn := os.Getenv("APIKEY_TEST_POSTGRES_DSN"); dsn != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("APIKEY_TEST_POSTGRES_DSN is set but unreachable: %v", err)
			}
			t.Skipf("APIKEY_TEST_POSTGRES_DSN is set but unreachable: %v", err)
		}
		c.Close(ctx)
		return dsn
	}
	return testserver.StartPostgres(t).DSN
}

// channel returns a channel name no other test run uses.
func channel() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "apikey_test_" + hex.EncodeToString(b)
}

// poolFleet returns n notifiers on one fresh channel, each over a pool of
// its own, as in separate processes.
func poolFleet(t *testing.T, dsn string, n int) []*pgnotify.Notifier {
	ch := channel()
	ns := make([]*pgnotify.Notifier, n)
	for i := range ns {
		cfg, err := pgxpool.ParseConfig(dsn)
		require.NoError(t, err)
		cfg.ConnConfig.ConnectTimeout = time.Second
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		ns[i], err = pgnotify.New(pool, pgnotify.Options{Channel: ch, HealthCheck: time.Second})
		require.NoError(t, err)
	}
	return ns
}

// connFleet is poolFleet with NewConn.
func connFleet(t *testing.T, dsn string, n int) []*pgnotify.Notifier {
	ch := channel()
	ns := make([]*pgnotify.Notifier, n)
	for i := range ns {
		cfg, err := pgx.ParseConfig(dsn)
		require.NoError(t, err)
		cfg.ConnectTimeout = time.Second
		ns[i], err = pgnotify.NewConn(cfg, pgnotify.Options{Channel: ch, HealthCheck: time.Second})
		require.NoError(t, err)
		t.Cleanup(ns[i].Close)
	}
	return ns
}

func asNotifiers(ns []*pgnotify.Notifier) []apikey.Notifier {
	out := make([]apikey.Notifier, len(ns))
	for i, n := range ns {
		out[i] = n
	}
	return out
}

func TestNewValidates(t *testing.T) {
	cfg, err := pgx.ParseConfig("postgres://postgres@127.0.0.1:1/x")
	require.NoError(t, err)
	_, err = pgnotify.New(nil, pgnotify.Options{})
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
	_, err = pgnotify.NewConn(nil, pgnotify.Options{})
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
	for _, opts := range []pgnotify.Options{
		{Channel: string(make([]byte, 64))},
		{Channel: "a\x00b"},
		{MinBackoff: -1},
		{MinBackoff: time.Second, MaxBackoff: time.Millisecond},
		{HealthCheck: -1},
	} {
		_, err := pgnotify.NewConn(cfg, opts)
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions, "%+v", opts)
	}
	n, err := pgnotify.NewConn(cfg, pgnotify.Options{Channel: `Odd "name"; DROP`})
	require.NoError(t, err, "any channel name is quoted")
	assert.Equal(t, `Odd "name"; DROP`, n.Channel())
}

func TestConformance(t *testing.T) {
	dsn := sharedOrPrivate(t)
	t.Run("Pool", func(t *testing.T) {
		notifytest.Run(t, func(t *testing.T, n int) []apikey.Notifier { return asNotifiers(poolFleet(t, dsn, n)) })
	})
	t.Run("Conn", func(t *testing.T) {
		notifytest.Run(t, func(t *testing.T, n int) []apikey.Notifier { return asNotifiers(connFleet(t, dsn, n)) })
	})
}

// Two Managers over one store, each with its own pool: B refuses a key
// revoked on A within a second, 100 times out of 100.
func TestPropagation(t *testing.T) {
	ns := poolFleet(t, sharedOrPrivate(t), 2)
	r := notifytest.Propagation(t, ns[0], ns[1], notifytest.Trials, notifytest.Bound)
	t.Log("postgres:", r)
}

// After a crash and restart of PostgreSQL: a revocation made while it was
// down is honoured as soon as B listens again (the cache is dropped), and
// propagation is as fast as before; for both constructors.
func TestPropagationAfterRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fleet func(*testing.T, string, int) []*pgnotify.Notifier
	}{{"Pool", poolFleet}, {"Conn", connFleet}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testserver.StartPostgres(t)
			ns := tc.fleet(t, srv.DSN, 2)
			store := memstore.New()
			opts := func(n apikey.Notifier) apikey.Options {
				return apikey.Options{Notifier: n, CacheTTL: time.Hour, LastUsedInterval: -1}
			}
			a, err := apikey.New(store, opts(ns[0]))
			require.NoError(t, err)
			b, err := apikey.New(store, opts(ns[1]))
			require.NoError(t, err)
			t.Cleanup(func() {
				a.Close(context.Background())
				b.Close(context.Background())
			})
			ctx := context.Background()
			require.Eventually(t, func() bool { return ns[0].Subscriptions() == 1 && ns[1].Subscriptions() == 1 },
				5*time.Second, 10*time.Millisecond)
			r := notifytest.Between(t, a, b, 20, notifytest.Bound)
			t.Log("postgres before the restart:", r)

			token, k, err := a.Issue(ctx, apikey.IssueParams{})
			require.NoError(t, err)
			_, err = b.Verify(ctx, token)
			require.NoError(t, err)

			srv.Stop()
			require.NoError(t, a.Revoke(ctx, k.ID), "a revocation stands while the notifier is down")
			assert.EqualValues(t, 1, a.Stats().PublishErrors)
			_, err = b.Verify(ctx, token)
			assert.NoError(t, err, "while down, B relies on its cache TTL")

			restarted := time.Now()
			srv.Start()
			require.Eventually(t, func() bool {
				_, err := b.Verify(ctx, token)
				return err != nil
			}, 10*time.Second, time.Millisecond, "B drops its cache once listening again")
			t.Logf("postgres: B listened again and refused the key revoked during the outage %v after the restart began",
				time.Since(restarted).Round(time.Millisecond))
			require.Eventually(t, func() bool { return ns[0].Subscriptions() == 2 && ns[1].Subscriptions() == 2 },
				10*time.Second, 10*time.Millisecond)

			r = notifytest.Between(t, a, b, notifytest.Trials, notifytest.Bound)
			t.Log("postgres after the restart:", r)
		})
	}
}

// A quiet connection is pinged, not replaced: one subscription survives
// several health-check periods.
func TestQuietSubscriptionStays(t *testing.T) {
	ns := poolFleet(t, sharedOrPrivate(t), 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ns[0].Subscribe(ctx, func(string) {}) }()
	time.Sleep(2500 * time.Millisecond) // HealthCheck is 1 s
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
	assert.EqualValues(t, 1, ns[0].Subscriptions())
}
