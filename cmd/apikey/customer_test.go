package main

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redisnotify"
	"github.com/gokeys/apikey/sqlstore"
)

// plansFile writes the services' plans, free and pro, and returns its
// path.
func plansFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "plans.json")
	require.NoError(t, os.WriteFile(p, []byte(`{
		"free": [{"name": "daily", "kind": "quota", "count": 100, "window": "day"}],
		"pro":  [{"name": "daily", "kind": "quota", "count": 10000, "window": "day"}]
	}`), 0o644))
	return p
}

// customer set changes only the fields it is given; show, list, suspend
// and resume read and change the record the services read.
func TestCustomerCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	h.env["APIKEY_PLANS"] = plansFile(t)
	ctx := context.Background()

	c := h.json("customer", "show", "bob")
	assert.EqualValues(t, 0, c["revision"], "no record yet")
	assert.Nil(t, c["scopes"], "no ceiling")
	r := h.run("", "customer", "show", "bob")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "(default)")
	assert.Contains(t, r.stdout, "bob has no record: the defaults apply")

	c = h.json("customer", "set", "bob", "--plan", "pro", "--scopes", "read, write", "--max-keys", "3", "--credits", "100",
		"--grant", "burst=rate:10/1s:20", "--grant", "monthly=quota:9000/month", "--grant", "extra=credits:5/day", "--metadata", "crm=42")
	assert.Equal(t, "bob", c["id"])
	assert.Equal(t, "pro", c["plan"])
	assert.Equal(t, []any{"read", "write"}, c["scopes"])
	assert.EqualValues(t, 3, c["max_keys"])
	assert.EqualValues(t, 100, c["credits"])
	assert.Equal(t, map[string]any{"crm": "42"}, c["metadata"])
	assert.Equal(t, []any{
		map[string]any{"name": "burst", "kind": "rate", "count": 10.0, "period_seconds": 1.0, "burst": 20.0},
		map[string]any{"name": "monthly", "kind": "quota", "count": 9000.0, "window": "month"},
		map[string]any{"name": "extra", "kind": "credits", "count": 5.0, "window": "day"},
	}, c["limits"])
	assert.EqualValues(t, 1, c["revision"])

	m := h.manager()
	stored, err := m.Customer(ctx, "bob")
	require.NoError(t, err)
	assert.Equal(t, "pro", stored.Plan, "the services read what the CLI wrote")
	assert.Equal(t, []limits.Limit{limits.Rate("burst", 10, time.Second, 20), limits.Quota("monthly", 9000, limits.Month),
		limits.Credits("extra", 5, limits.Day)}, stored.Limits)

	c = h.json("customer", "set", "bob", "--max-keys", "1")
	assert.Equal(t, "pro", c["plan"], "fields not given keep their value")
	assert.Equal(t, []any{"read", "write"}, c["scopes"])
	assert.EqualValues(t, 1, c["max_keys"])
	assert.Len(t, c["limits"], 3)
	c = h.json("customer", "set", "bob", "--unrestricted", "--no-grants", "--no-metadata", "--credits", "0")
	assert.Nil(t, c["scopes"])
	assert.Equal(t, []any{}, c["limits"])
	assert.Equal(t, map[string]any{}, c["metadata"])
	assert.EqualValues(t, 0, c["credits"])
	c = h.json("customer", "set", "bob", "--scopes", "")
	assert.Equal(t, []any{}, c["scopes"], "an empty ceiling allows no scope")
	c = h.json("customer", "set", "bob", "--scopes", "read", "--plan", "")
	assert.Equal(t, "", c["plan"], "an empty plan: the default")

	// The key cap and the ceiling apply to the keys the CLI issues.
	r = h.run("", "issue", "--owner", "bob", "--scope", "read")
	require.Equal(t, exitOK, r.code, r.stderr)
	r = h.run("", "issue", "--owner", "bob", "--scope", "read")
	assert.Equal(t, exitRefused, r.code, "over the key cap")
	require.Equal(t, exitOK, h.run("", "customer", "set", "bob", "--max-keys", "0").code)
	assert.Equal(t, exitRefused, h.run("", "issue", "--owner", "bob", "--scope", "write").code, "beyond the ceiling")

	// Suspend and resume, several customers at once.
	token := h.json("issue", "--owner", "bob", "--scope", "read")["key"].(string)
	_, err = m.Verify(ctx, token)
	require.NoError(t, err)
	r = h.run("", "customer", "suspend", "bob", "alice", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, `"suspended": true`)
	_, err = h.manager().Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrSuspended)
	assert.Equal(t, true, h.json("customer", "show", "alice")["suspended"])
	require.Equal(t, exitOK, h.run("", "customer", "resume", "bob").code)
	_, err = h.manager().Verify(ctx, token)
	assert.NoError(t, err)

	// list pages by id.
	for _, id := range []string{"carol", "dave"} {
		require.Equal(t, exitOK, h.run("", "customer", "set", id, "--plan", "free").code)
	}
	list := h.json("customer", "list")
	var ids []any
	for _, c := range list["customers"].([]any) {
		ids = append(ids, c.(map[string]any)["id"])
	}
	assert.Equal(t, []any{"alice", "bob", "carol", "dave"}, ids)
	assert.Nil(t, list["next"])
	page := h.json("customer", "list", "--limit", "2")
	assert.Len(t, page["customers"], 2)
	assert.Equal(t, "bob", page["next"])
	page = h.json("customer", "list", "--limit", "2", "--after", "bob")
	assert.Len(t, page["customers"], 2)
	assert.Len(t, h.json("customer", "list", "--limit", "1", "--all")["customers"], 4)
	r = h.run("", "customer", "list", "--limit", "3")
	require.Equal(t, exitOK, r.code)
	assert.Contains(t, r.stdout, "more: --after carol")
}

// Every failure of a customer command is one line naming the action, with
// the documented exit code, and changes nothing.
func TestCustomerErrorsAreOneCleanLine(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	plans := plansFile(t)
	for _, c := range []struct {
		args []string
		code int
		line string
	}{
		{[]string{"customer"}, exitUsage, "apikey customer: customer needs an action: set, show, list, suspend or resume"},
		{[]string{"customer", "frob", "bob"}, exitUsage, `apikey customer frob: unknown customer action "frob": set, show, list, suspend or resume`},
		{[]string{"customer", "set", "bob"}, exitUsage, "apikey customer set: customer set: nothing to change; see apikey help"},
		{[]string{"customer", "set", "bob", "carol", "--max-keys", "1"}, exitUsage, "apikey customer set: customer set takes one customer id"},
		{[]string{"customer", "set", "bob", "--plan", "pro"}, exitUsage,
			"apikey customer set: customer set --plan needs --plans (APIKEY_PLANS), the services' plans, so that an unknown plan is refused"},
		{[]string{"customer", "set", "bob", "--plan", "gold", "--plans", plans}, exitUsage,
			`apikey customer set: unknown plan "gold": the plans of ` + plans + ` are free, pro`},
		{[]string{"customer", "set", "bob", "--max-keys", "-1"}, exitRefused, "apikey customer set: invalid max_keys: must be 0 to 100000"},
		{[]string{"customer", "set", "bob", "--credits", "-1"}, exitRefused, "apikey customer set: invalid credits: must be 0 or more"},
		{[]string{"customer", "set", "bob", "--scopes", "a b"}, exitRefused,
			"apikey customer set: invalid scopes: a scope has a character outside RFC 6749 scope-token"},
		{[]string{"customer", "set", "bob", "--scopes", "a", "--unrestricted"}, exitUsage,
			"apikey customer set: a value and its --no- flag (or --unrestricted and --scopes) together"},
		{[]string{"customer", "set", "bob", "--grant", "x"}, exitUsage,
			`apikey customer set: --grant "x": not NAME=KIND:COUNT...; e.g. burst=rate:10/1s:20, monthly=quota:9000/month, extra=credits:100`},
		{[]string{"customer", "set", "bob", "--grant", "x=quota:5"}, exitUsage,
			`apikey customer set: --grant "x=quota:5": a quota needs a window: minute, hour, day or month; e.g. burst=rate:10/1s:20, monthly=quota:9000/month, extra=credits:100`},
		{[]string{"customer", "set", "bob", "--grant", "x=rate:5/fast"}, exitUsage,
			`apikey customer set: --grant "x=rate:5/fast": a rate needs a period, e.g. 10/1s; e.g. burst=rate:10/1s:20, monthly=quota:9000/month, extra=credits:100`},
		{[]string{"customer", "set", "bob", "--grant", "x=quota:0/day"}, exitRefused,
			`apikey customer set: invalid limits: limit "x": count must be between 1 and 10^14-1`},
		{[]string{"customer", "set", "bob", "--after", "x", "--max-keys", "1"}, exitUsage, "apikey customer set: customer set takes no --after"},
		{[]string{"customer", "show"}, exitUsage, "apikey customer show: customer show needs at least one customer id"},
		{[]string{"customer", "show", "bob", "--plan", "pro"}, exitUsage, "apikey customer show: customer show takes no --plan"},
		{[]string{"customer", "suspend", "bob", "--credits", "3"}, exitUsage, "apikey customer suspend: customer suspend takes no --credits"},
		{[]string{"customer", "list", "--max-keys", "3"}, exitUsage, "apikey customer list: customer list takes no --max-keys"},
		{[]string{"customer", "list", "--limit", "0"}, exitUsage, "apikey customer list: --limit must be between 1 and 1000"},
		{[]string{"customer", "suspend", "bad\x01id"}, exitRefused, "apikey customer suspend: bad\x01id: invalid id: must be 1 to 255 bytes of text"},
	} {
		r := h.run("", c.args...)
		assert.Equal(t, c.code, r.code, "%q: %s", c.args, r.stderr)
		assert.Equal(t, c.line+"\n", r.stderr, "%q", c.args)
	}
	assert.EqualValues(t, 0, h.json("customer", "show", "bob")["revision"], "nothing was written")
}

// A change made through the CLI reaches running services at once: a
// suspension and a plan change empty their cached customer record.
func TestCustomerChangesTellServicesThroughRedis(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("APIKEY_TEST_REDIS_ADDR")
	if addr == "" {
		t.Skip("APIKEY_TEST_REDIS_ADDR is not set")
	}
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	channel := uniqueName("apikey-cli-test:")
	h.env["APIKEY_REDIS"], h.env["APIKEY_NOTIFY_CHANNEL"] = addr, channel
	client := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { client.Close() })
	n, err := redisnotify.New(client, redisnotify.Options{Channel: channel})
	require.NoError(t, err)
	db, err := sql.Open("sqlite", "file:"+h.db+"?_pragma=busy_timeout(5000)")
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	store, err := sqlstore.New(db, sqlstore.SQLite, sqlstore.Options{})
	require.NoError(t, err)
	svc := service(t, store, n)
	require.Eventually(t, func() bool { return n.Subscriptions() > 0 }, 5*time.Second, 10*time.Millisecond, "the service listens")

	ctx := context.Background()
	token := h.json("issue", "--owner", "bob")["key"].(string)
	_, err = svc.Verify(ctx, token) // caches the key and bob's record
	require.NoError(t, err)
	start := time.Now()
	r := h.run("", "customer", "suspend", "bob")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Empty(t, r.stderr, "every change was announced")
	assert.Eventually(t, func() bool {
		_, err := svc.Verify(ctx, token)
		return err != nil && strings.Contains(err.Error(), "suspended")
	}, time.Second, 2*time.Millisecond, "the service honours the suspension within 1 s")
	t.Logf("suspension honoured by the service %v after the CLI started", time.Since(start).Round(time.Millisecond))
	require.Equal(t, exitOK, h.run("", "customer", "resume", "bob").code)
	assert.Eventually(t, func() bool { _, err := svc.Verify(ctx, token); return err == nil }, time.Second, 2*time.Millisecond)
}
