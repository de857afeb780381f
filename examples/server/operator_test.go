package main

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
)

const (
	freePolicy = `"daily";q=100;w=86400`
	proPolicy  = `"daily";q=10000;w=86400, "per-second";q=100;w=1`
)

func newTestServer(t *testing.T) client {
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	limiter, err := memlimit.New(memlimit.Options{Now: clock.Now})
	require.NoError(t, err)
	return client{t, newServer(t, newSQLiteStore(t), limiter, clock)}
}

// newKey creates a key as user ("name:password") and returns its token.
func (c client) newKey(user, body string) string {
	c.t.Helper()
	r := c.do("POST", "/api-keys", user, body)
	require.Equal(c.t, http.StatusCreated, r.status, r.raw)
	return r.body["key"].(string)
}

// Without -admin there is no operator API: /admin/ is 404 whatever the
// credentials.
func TestOperatorAPIOnlyWithTheFlag(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	limiter, err := memlimit.New(memlimit.Options{Now: clock.Now})
	require.NoError(t, err)
	c := client{t, newServerWith(t, newSQLiteStore(t), limiter, clock, nil)}
	for _, auth := range []string{"", operator, "demo:demo"} {
		assert.Equal(t, 404, c.do("GET", "/admin/customers/demo", auth, "").status, auth)
		assert.Equal(t, 404, c.do("PUT", "/admin/customers/demo", auth, `{"plan":"pro"}`).status, auth)
		assert.Equal(t, 404, c.do("GET", "/admin/customers", auth, "").status, auth)
	}
}

// The operator API takes the operator's credentials only: none, a user's
// or a wrong password are 401, and change nothing.
func TestOperatorAPINeedsTheOperatorsCredentials(t *testing.T) {
	t.Parallel()
	c := newTestServer(t)
	for _, auth := range []string{"", "demo:demo", "bob:bob", "ops:wrong", "ops:secretx", "demo:secret"} {
		r := c.do("PUT", "/admin/customers/demo", auth, `{"plan":"pro"}`)
		assert.Equal(t, 401, r.status, auth)
		assert.Equal(t, `Basic realm="operators", charset="UTF-8"`, r.header.Get("WWW-Authenticate"), auth)
		assert.Equal(t, 401, c.do("GET", "/admin/customers/demo", auth, "").status, auth)
	}
	r := c.do("GET", "/admin/customers/demo", operator, "")
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, "free", r.body["plan"], "nothing was changed")
	assert.Equal(t, 200, c.do("GET", "/admin/openapi.json", operator, "").status)
}

// The example defines demo (free) and bob (pro) when they have no record;
// a restart keeps what the operator changed, and instances starting
// together over one database define each customer once.
func TestCustomersAreDefinedOnce(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	store := newSQLiteStore(t)
	var wg sync.WaitGroup
	for range 4 {
		m := newManager(t, store, clock)
		wg.Go(func() {
			_, err := newApp(context.Background(), appConfig{manager: m, limiter: allowAll{}})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	m := newManager(t, store, clock)
	for id, plan := range map[string]string{"demo": "free", "bob": "pro"} {
		c, err := m.Customer(context.Background(), id)
		require.NoError(t, err)
		assert.Equal(t, plan, c.Plan, id)
		assert.EqualValues(t, 1, c.Revision, "%s defined once", id)
	}

	limiter, err := memlimit.New(memlimit.Options{Now: clock.Now})
	require.NoError(t, err)
	first := client{t, newServer(t, store, limiter, clock)}
	r := first.do("PUT", "/admin/customers/demo", operator, `{"plan":"pro","max_keys":2}`)
	require.Equal(t, 200, r.status, r.raw)
	r = first.do("PUT", "/admin/customers/bob", operator, `{"suspended":true}`)
	require.Equal(t, 200, r.status, r.raw)

	restarted := client{t, newServer(t, store, limiter, clock)}
	r = restarted.do("GET", "/admin/customers/demo", operator, "")
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, "pro", r.body["plan"], "the operator's change survives a restart")
	assert.EqualValues(t, 2, r.body["max_keys"])
	r = restarted.do("GET", "/admin/customers/bob", operator, "")
	assert.Equal(t, true, r.body["suspended"])
	assert.Equal(t, "pro", r.body["plan"])
}

// The operator's changes apply to the customer's next request: a plan
// raised or lowered, a suspension and its end, a scope ceiling.
func TestOperatorChangesTakeEffectAtTheNextRequest(t *testing.T) {
	t.Parallel()
	c := newTestServer(t)
	demo := c.newKey("demo:demo", `{"scopes":["read","write"]}`)
	bob := c.newKey("bob:bob", "")
	assert.Equal(t, freePolicy, c.do("GET", "/data", "key:"+demo, "").header.Get("RateLimit-Policy"))
	assert.Equal(t, proPolicy, c.do("GET", "/data", "key:"+bob, "").header.Get("RateLimit-Policy"))

	t.Run("raise demo to pro", func(t *testing.T) {
		r := c.do("PUT", "/admin/customers/demo", operator, `{"plan":"pro"}`)
		require.Equal(t, 200, r.status, r.raw)
		assert.Equal(t, "pro", r.body["plan"])
		assert.Equal(t, proPolicy, c.do("GET", "/data", "key:"+demo, "").header.Get("RateLimit-Policy"))
		assert.Equal(t, proPolicy, c.do("GET", "/data", "key:"+c.newKey("demo:demo", ""), "").header.Get("RateLimit-Policy"),
			"and every key of his, old or new")
	})
	t.Run("lower bob to free", func(t *testing.T) {
		require.Equal(t, 200, c.do("PUT", "/admin/customers/bob", operator, `{"plan":"free"}`).status)
		assert.Equal(t, freePolicy, c.do("GET", "/data", "key:"+bob, "").header.Get("RateLimit-Policy"))
	})
	t.Run("suspend demo", func(t *testing.T) {
		require.Equal(t, 200, c.do("PUT", "/admin/customers/demo", operator, `{"suspended":true}`).status)
		assert.Equal(t, 401, c.do("GET", "/data", "key:"+demo, "").status)
		assert.Equal(t, 401, c.do("GET", "/protected", "key:"+demo, "").status)
		assert.Equal(t, 200, c.do("GET", "/data", "key:"+bob, "").status, "another customer is not affected")
		assert.Equal(t, 403, c.do("POST", "/api-keys", "demo:demo", "").status, "a suspended user creates no key")
		assert.Equal(t, 200, c.do("GET", "/api-keys", "demo:demo", "").status, "but may list his keys")
		require.Equal(t, 200, c.do("PUT", "/admin/customers/demo", operator, `{"suspended":false}`).status)
		assert.Equal(t, 200, c.do("GET", "/data", "key:"+demo, "").status)
	})
	t.Run("narrow demo's scopes", func(t *testing.T) {
		assert.Equal(t, 201, c.do("POST", "/data", "key:"+demo, "").status)
		require.Equal(t, 200, c.do("PUT", "/admin/customers/demo", operator, `{"scopes":["read"]}`).status)
		assert.Equal(t, 403, c.do("POST", "/data", "key:"+demo, "").status, "write is beyond his ceiling now")
		assert.Equal(t, 200, c.do("GET", "/data", "key:"+demo, "").status)
	})
}

// A user cannot give himself pro, through the JSON API or the keys page;
// his customer record and his limits stay free.
func TestUserCannotGiveHimselfPro(t *testing.T) {
	t.Parallel()
	c := newTestServer(t)
	demo := c.newKey("demo:demo", "")
	r := c.do("GET", "/api-keys", "demo:demo", "")
	id := r.body["keys"].([]any)[0].(map[string]any)["id"].(string)
	assert.Equal(t, 403, c.do("POST", "/api-keys", "demo:demo", `{"plan":"pro"}`).status)
	assert.Equal(t, 403, c.do("PATCH", "/api-keys/"+id, "demo:demo", `{"plan":"pro"}`).status)
	assert.Equal(t, 403, c.do("POST", "/api-keys", "eve:secret", `{"plan":"pro"}`).status, "a user without a record neither")
	req, err := http.NewRequest("POST", c.srv.URL+"/keys/create", strings.NewReader("name=x&scope=read&plan=pro&expires=7776000"))
	require.NoError(t, err)
	req.SetBasicAuth("demo", "demo")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	res, err := c.srv.Client().Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 403, res.StatusCode, "the keys page offers no plan")
	r = c.do("PUT", "/admin/customers/demo", "demo:demo", `{"plan":"pro"}`)
	assert.Equal(t, 401, r.status, "a user is not the operator")

	r = c.do("GET", "/admin/customers/demo", operator, "")
	assert.Equal(t, "free", r.body["plan"])
	assert.EqualValues(t, 1, r.body["revision"], "nothing wrote his record")
	assert.Equal(t, freePolicy, c.do("GET", "/data", "key:"+demo, "").header.Get("RateLimit-Policy"))
	r = c.do("GET", "/admin/customers/eve", operator, "")
	assert.EqualValues(t, 0, r.body["revision"], "eve has no record: the default plan, free")
	assert.Equal(t, freePolicy, c.do("GET", "/data", "key:"+c.newKey("eve:secret", ""), "").header.Get("RateLimit-Policy"))
}

// GET /admin/customers/{id} shows what the customer has left, read
// without spending; bad input is a 400 naming the field.
func TestOperatorReadsTheBalance(t *testing.T) {
	t.Parallel()
	c := newTestServer(t)
	demo := c.newKey("demo:demo", "")
	for range 3 {
		require.Equal(t, 200, c.do("GET", "/data", "key:"+demo, "").status)
	}
	for range 2 {
		r := c.do("GET", "/admin/customers/demo", operator, "")
		require.Equal(t, 200, r.status, r.raw)
		assert.Equal(t, map[string]any{"allowed": true, "limit": "daily", "remaining": 97.0, "reset_seconds": 43200.0, "credits": nil},
			r.body["balance"], "reading spends nothing")
	}
	r := c.do("PUT", "/admin/customers/demo", operator, `{"plan":"gold"}`)
	assert.Equal(t, 400, r.status)
	assert.Equal(t, "plan", r.body["field"])
	r = c.do("PUT", "/admin/customers/demo", operator, `{"max_keys":-1}`)
	assert.Equal(t, 400, r.status)
	assert.Equal(t, "max_keys", r.body["field"])
}

// allowAll is a Limiter that allows everything.
type allowAll struct{}

func (allowAll) Allow(context.Context, string, []limits.Limit, int64) (limits.Result, error) {
	return limits.Result{Allowed: true}, nil
}
