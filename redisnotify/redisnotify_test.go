package redisnotify_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/testserver"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/notifytest"
	"github.com/gokeys/apikey/redisnotify"
)

// sharedOrPrivate returns the shared Redis of APIKEY_TEST_REDIS_ADDR, or else a
// private server's.
func sharedOrPrivate(t *testing.T) string {
	if addr := os.Getenv("APIKEY_TEST_REDIS_ADDR"); addr != "" {
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		if err := c.Ping(context.Background()).Err(); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("APIKEY_TEST_REDIS_ADDR is set but unreachable: %v", err)
			}
			t.Skipf("APIKEY_TEST_REDIS_ADDR is set but unreachable: %v", err)
		}
		return addr
	}
	return testserver.StartRedis(t).Addr
}

// channel returns a channel name no other test run uses.
func channel() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "apikey-test:" + hex.EncodeToString(b)
}

// fleet returns n notifiers on one fresh channel of the Redis at addr,
// each with a client of its own, as in separate processes.
func fleet(t *testing.T, addr string, n int) []*redisnotify.Notifier {
	ch := channel()
	ns := make([]*redisnotify.Notifier, n)
	for i := range ns {
		c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 500 * time.Millisecond,
			ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
		t.Cleanup(func() { c.Close() })
		var err error
		ns[i], err = redisnotify.New(c, redisnotify.Options{Channel: ch, HealthCheck: time.Second})
		require.NoError(t, err)
	}
	return ns
}

func asNotifiers(ns []*redisnotify.Notifier) []apikey.Notifier {
	out := make([]apikey.Notifier, len(ns))
	for i, n := range ns {
		out[i] = n
	}
	return out
}

func TestNewValidates(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for _, tt := range []struct {
		name   string
		client redis.UniversalClient
		opts   redisnotify.Options
	}{
		{"NilClient", nil, redisnotify.Options{}},
		{"NegativeBackoff", c, redisnotify.Options{MinBackoff: -1}},
		{"MinAboveMax", c, redisnotify.Options{MinBackoff: time.Second, MaxBackoff: time.Millisecond}},
		{"NegativeHealthCheck", c, redisnotify.Options{HealthCheck: -1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := redisnotify.New(tt.client, tt.opts)
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
		})
	}
	n, err := redisnotify.New(c, redisnotify.Options{})
	require.NoError(t, err)
	assert.Equal(t, redisnotify.DefaultChannel, n.Channel())
}

func TestConformance(t *testing.T) {
	addr := sharedOrPrivate(t)
	notifytest.Run(t, func(t *testing.T, n int) []apikey.Notifier { return asNotifiers(fleet(t, addr, n)) })
}

// Two Managers over one store, each with its own client: B refuses a key
// revoked on A within a second, 100 times out of 100.
func TestPropagation(t *testing.T) {
	ns := fleet(t, sharedOrPrivate(t), 2)
	r := notifytest.Propagation(t, ns[0], ns[1], notifytest.Trials, notifytest.Bound)
	t.Log("redis:", r)
}

// After a crash and restart of Redis: a revocation made while it was down
// is honoured as soon as B has subscribed again (the cache is dropped),
// and propagation is as fast as before.
func TestPropagationAfterRestart(t *testing.T) {
	srv := testserver.StartRedis(t)
	ns := fleet(t, srv.Addr, 2)
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
	t.Log("redis before the restart:", r)

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
	}, 5*time.Second, time.Millisecond, "B drops its cache once subscribed again")
	t.Logf("redis: B resubscribed and refused the key revoked during the outage %v after the restart began",
		time.Since(restarted).Round(time.Millisecond))
	require.Eventually(t, func() bool { return ns[0].Subscriptions() == 2 && ns[1].Subscriptions() == 2 },
		5*time.Second, 10*time.Millisecond)

	r = notifytest.Between(t, a, b, notifytest.Trials, notifytest.Bound)
	t.Log("redis after the restart:", r)
}

// Subscribe keeps trying while Redis is unreachable and returns when its
// context ends.
func TestSubscribeRetriesUntilDone(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	n, err := redisnotify.New(c, redisnotify.Options{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	calls := 0
	assert.ErrorIs(t, n.Subscribe(ctx, func(string) { calls++ }), context.DeadlineExceeded)
	assert.Zero(t, calls)
	assert.Error(t, n.Publish(context.Background(), "x"))
}
