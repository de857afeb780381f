package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/pgnotify"
	"github.com/gokeys/apikey/redisnotify"
	"github.com/gokeys/apikey/sqlstore"
)

// uniqueName returns prefix followed by random hex, for channels and
// tables no other test run uses.
func uniqueName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// service is a running service: a Manager that caches verified keys for
// an hour and listens to a Notifier, over the CLI's database.
func service(t *testing.T, store apikey.Store, n apikey.Notifier) *apikey.Manager {
	t.Helper()
	m, err := apikey.New(store, apikey.Options{Prefix: "sk_live", Prefixes: []string{"sk_test"}, CacheTTL: time.Hour,
		Peppers: []apikey.Pepper{{Version: "1", Secret: []byte(testPepper)}}, Notifier: n})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

// checkTold issues keys through the CLI, has svc cache them, and changes
// them through the CLI: with the service's notifier (args) a revoke, a
// scan --revoke and a revoke-owner reach svc within a second; with
// another channel (other) svc keeps its cached answer, which shows that
// only the notification empties its cache.
func checkTold(t *testing.T, h *harness, svc *apikey.Manager, subscribed func() bool, args, other func(...string) []string) {
	t.Helper()
	require.Eventually(t, subscribed, 5*time.Second, 10*time.Millisecond, "the service listens")
	ctx := context.Background()
	issue := func(owner string) (token, id string) {
		k := h.json(args("issue", "--owner", owner)...)
		token, id = k["key"].(string), k["id"].(string)
		_, err := svc.Verify(ctx, token)
		require.NoError(t, err)
		return token, id
	}
	revokedWithin := func(token string, d time.Duration) bool {
		deadline := time.Now().Add(d)
		for {
			_, err := svc.Verify(ctx, token)
			if err != nil {
				require.ErrorIs(t, err, apikey.ErrRevoked)
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	token, id := issue("told")
	r := h.run("", args("revoke", id)...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Empty(t, r.stderr)
	assert.True(t, revokedWithin(token, time.Second), "revoke: the service still accepts the key after 1 s")

	token, id = issue("told")
	r = h.run("leak: "+token+"\n", args("scan", "--revoke")...)
	require.Equal(t, exitFound, r.code, r.stderr)
	assert.Contains(t, r.stdout, id)
	assert.True(t, revokedWithin(token, time.Second), "scan --revoke: the service still accepts the key after 1 s")

	token, _ = issue("told-owner")
	r = h.run("", args("revoke-owner", "told-owner")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.True(t, revokedWithin(token, time.Second), "revoke-owner: the service still accepts the key after 1 s")

	token, id = issue("untold")
	r = h.run("", other("revoke", id)...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.False(t, revokedWithin(token, 200*time.Millisecond), "not told, the service answers from its cache")
}

// A revocation made through the CLI with --redis reaches a running
// service subscribed to the same Redis channel within a second.
func TestRevokeTellsServicesThroughRedis(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("APIKEY_TEST_REDIS_ADDR")
	if addr == "" {
		t.Skip("APIKEY_TEST_REDIS_ADDR is not set")
	}
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	client := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { client.Close() })
	channel := uniqueName("apikey-cli-test:")
	n, err := redisnotify.New(client, redisnotify.Options{Channel: channel})
	require.NoError(t, err)
	db, err := sql.Open("sqlite", "file:"+h.db+"?_pragma=busy_timeout(5000)")
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	store, err := sqlstore.New(db, sqlstore.SQLite, sqlstore.Options{})
	require.NoError(t, err)
	svc := service(t, store, n)
	checkTold(t, h, svc, func() bool { return n.Subscriptions() > 0 },
		func(a ...string) []string { return append(a, "--redis", addr, "--notify-channel", channel) },
		func(a ...string) []string { return append(a, "--redis", addr, "--notify-channel", channel+"-other") })

	// The environment names the Redis too.
	h.env["APIKEY_REDIS"], h.env["APIKEY_NOTIFY_CHANNEL"] = addr, channel
	checkTold(t, h, svc, func() bool { return true },
		func(a ...string) []string { return a },
		func(a ...string) []string { return append(a, "--notify-channel", channel+"-other") })
}

// With a PostgreSQL database, the CLI tells running services through
// LISTEN/NOTIFY on it, as examples/server listens.
func TestRevokeTellsServicesThroughPostgres(t *testing.T) {
	t.Parallel()
	dsn := os.Getenv("APIKEY_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("APIKEY_TEST_POSTGRES_DSN is not set")
	}
	table := uniqueName("cli_notify_")
	db, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, tb := range []string{table, table + "_customers", table + "_usage", table + "_outbox"} {
			db.Exec("DROP TABLE IF EXISTS " + tb)
		}
		db.Close()
	})
	h := newHarness(t)
	h.env["APIKEY_SQLITE"] = ""
	channel := uniqueName("apikey_cli_test_")
	args := func(a ...string) []string {
		return append(a, "--postgres", dsn, "--table", table, "--notify-channel", channel)
	}
	r := h.run("", args("migrate")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	store, err := sqlstore.New(db, sqlstore.Postgres, sqlstore.Options{Table: table})
	require.NoError(t, err)
	pool, err := pgxpool.New(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	n, err := pgnotify.New(pool, pgnotify.Options{Channel: channel})
	require.NoError(t, err)
	svc := service(t, store, n)
	checkTold(t, h, svc, func() bool { return n.Subscriptions() > 0 }, args,
		func(a ...string) []string {
			return append(a, "--postgres", dsn, "--table", table, "--notify-channel", channel+"_other")
		})
}

// When the notifier cannot be reached, the change stands and the CLI says
// in one line that running services were not told.
func TestRevokeSaysWhenServicesWereNotTold(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	a := h.json("issue", "--owner", "x")["id"].(string)
	b := h.json("issue", "--owner", "x")["id"].(string)
	start := time.Now()
	r := h.run("", "revoke", a, b, "--redis", "127.0.0.1:1")
	assert.Less(t, time.Since(start), 10*time.Second, "one wait for the unreachable server, not one per key")
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
	assert.Contains(t, r.stderr, "apikey revoke: running services were not told of 2 change(s)")
	assert.Equal(t, "revoked", h.json("show", a)["status"])
}
