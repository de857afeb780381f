package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/redislimit"
	"github.com/gokeys/apikey/sqlstore"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newSQLiteStore opens a fresh SQLite database in a temporary directory.
func newSQLiteStore(t *testing.T) apikey.Store {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "keys.db")+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	s, err := sqlstore.New(db, sqlstore.SQLite, sqlstore.Options{})
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))
	return s
}

// operator are the operator's credentials of the test servers.
const operator = "ops:secret"

// newServer serves the example's handler over store and limiter, with the
// operator API behind the operator's credentials.
func newServer(t *testing.T, store apikey.Store, limiter limits.Limiter, clock *testClock) *httptest.Server {
	return newServerWith(t, store, limiter, clock, map[string]string{"ops": "secret"})
}

// newServerWith is newServer with the given operator credentials (none:
// no operator API).
func newServerWith(t *testing.T, store apikey.Store, limiter limits.Limiter, clock *testClock, op map[string]string) *httptest.Server {
	m := newManager(t, store, clock)
	a, err := newApp(context.Background(), appConfig{manager: m, limiter: limiter, operator: op,
		users: map[string]string{"demo": "demo", "bob": "bob", "eve": "secret"}})
	require.NoError(t, err)
	srv := httptest.NewServer(a.routes())
	t.Cleanup(srv.Close)
	return srv
}

// newManager is the example's Manager over store.
func newManager(t *testing.T, store apikey.Store, clock *testClock) *apikey.Manager {
	m, err := apikey.New(store, apikey.Options{Prefix: "sk_live", Now: clock.Now, Plans: plans(), DefaultPlan: "free",
		Peppers: []apikey.Pepper{{Version: "1", Secret: []byte("a test pepper of at least 32 bytes")}}})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

type client struct {
	t   *testing.T
	srv *httptest.Server
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// do sends a request; auth is "user:password" for Basic, "key:<token>" for
// a Bearer key, "x:<token>" for X-API-Key, "" for none.
func (c client) do(method, path, auth, body string) response {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.srv.URL+path, rd)
	require.NoError(c.t, err)
	switch kind, v, _ := strings.Cut(auth, ":"); kind {
	case "":
	case "key":
		req.Header.Set("Authorization", "Bearer "+v)
	case "x":
		req.Header.Set("X-API-Key", v)
	default:
		req.SetBasicAuth(kind, v)
	}
	res, err := c.srv.Client().Do(req)
	require.NoError(c.t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(c.t, err)
	r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &r.body)
	}
	return r
}

func TestServerEndToEnd(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	limiter, err := memlimit.New(memlimit.Options{Now: clock.Now})
	require.NoError(t, err)
	c := client{t, newServer(t, newSQLiteStore(t), limiter, clock)}

	t.Run("healthz needs no key", func(t *testing.T) {
		assert.Equal(t, 200, c.do("GET", "/healthz", "", "").status)
	})

	t.Run("management needs Basic auth", func(t *testing.T) {
		for _, auth := range []string{"", "demo:wrong", "nobody:demo"} {
			r := c.do("POST", "/api-keys", auth, "{}")
			assert.Equal(t, 401, r.status, auth)
			assert.Contains(t, r.header.Get("WWW-Authenticate"), "Basic")
			assert.Equal(t, 401, c.do("GET", "/api-keys", auth, "").status)
		}
	})

	t.Run("bad create requests", func(t *testing.T) {
		for name, body := range map[string]string{
			"bad JSON":        "{",
			"past expires_at": `{"expires_at":"2020-01-01T00:00:00Z"}`, "bad scope": `{"scopes":["a b"]}`,
		} {
			r := c.do("POST", "/api-keys", "demo:demo", body)
			assert.Equal(t, 400, r.status, name)
			assert.Equal(t, "application/problem+json", r.header.Get("Content-Type"), name)
		}
	})

	t.Run("a user chooses no plan, credits, limits or unknown fields", func(t *testing.T) {
		for _, body := range []string{`{"plan":"pro"}`, `{"credits":1000}`, `{"limits":[]}`, `{"color":"red"}`} {
			r := c.do("POST", "/api-keys", "demo:demo", body)
			assert.Equal(t, 403, r.status, body)
			assert.Equal(t, "application/problem+json", r.header.Get("Content-Type"), body)
		}
	})

	// Create keys: demo's are free, bob's pro (their customers' plans).
	free := c.do("POST", "/api-keys", "demo:demo", "")
	require.Equal(t, 201, free.status, free.raw)
	assert.Equal(t, "no-store", free.header.Get("Cache-Control"))
	for _, field := range []string{"id", "key", "name", "hint", "scopes", "created_at", "expires_at", "note"} {
		assert.Contains(t, free.body, field)
	}
	assert.Equal(t, clock.Now().Add(90*24*time.Hour).Format(time.RFC3339), free.body["expires_at"])
	freeKey := free.body["key"].(string)
	assert.True(t, strings.HasPrefix(freeKey, "sk_live_"))

	pro := c.do("POST", "/api-keys", "bob:bob", `{"name":"ci","scopes":["read","write"],"expires_in_days":7,"expires_at":"2027-01-01T00:00:00Z"}`)
	require.Equal(t, 201, pro.status, pro.raw)
	assert.Equal(t, "2027-01-01T00:00:00Z", pro.body["expires_at"], "expires_at wins over expires_in_days")
	assert.Equal(t, []any{"read", "write"}, pro.body["scopes"])
	proKey, proID := pro.body["key"].(string), pro.body["id"].(string)

	short := c.do("POST", "/api-keys", "demo:demo", `{"expires_in_days":1}`)
	require.Equal(t, 201, short.status)
	assert.Equal(t, clock.Now().Add(24*time.Hour).Format(time.RFC3339), short.body["expires_at"])

	eve := c.do("POST", "/api-keys", "eve:secret", `{"name":"eve's"}`)
	require.Equal(t, 201, eve.status)
	eveID := eve.body["id"].(string)

	t.Run("list shows the caller's keys only, never a token", func(t *testing.T) {
		r := c.do("GET", "/api-keys", "demo:demo", "")
		require.Equal(t, 200, r.status)
		keys := r.body["keys"].([]any)
		assert.Len(t, keys, 2)
		for _, k := range keys {
			k := k.(map[string]any)
			assert.NotEqual(t, eveID, k["id"])
			assert.NotEqual(t, proID, k["id"])
			for _, field := range []string{"id", "name", "hint", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"} {
				assert.Contains(t, k, field)
			}
		}
		assert.NotContains(t, r.raw, freeKey)
		assert.NotContains(t, r.raw, proKey)
		assert.NotContains(t, r.raw, `"key"`)
		assert.NotContains(t, strings.ToLower(r.raw), "hash")
	})

	t.Run("protected accepts Bearer, X-API-Key and api_key", func(t *testing.T) {
		for _, r := range []response{
			c.do("GET", "/protected", "key:"+proKey, ""),
			c.do("GET", "/protected", "x:"+proKey, ""),
			c.do("GET", "/protected?api_key="+proKey, "", ""),
		} {
			require.Equal(t, 200, r.status, r.raw)
			assert.Equal(t, "Hello bob", r.body["message"])
			assert.Equal(t, proID, r.body["key_id"])
			assert.Equal(t, "ci", r.body["key_name"])
		}
		assert.Equal(t, 401, c.do("GET", "/protected", "", "").status)
		assert.Equal(t, 401, c.do("GET", "/protected", "key:sk_live_garbage", "").status)
	})

	t.Run("POST /data needs the write scope", func(t *testing.T) {
		r := c.do("POST", "/data", "key:"+freeKey, "")
		assert.Equal(t, 403, r.status)
		assert.Contains(t, r.header.Get("WWW-Authenticate"), `error="insufficient_scope"`)
		assert.Equal(t, 201, c.do("POST", "/data", "key:"+proKey, "").status)
	})

	t.Run("free plan: 100 requests per UTC day", func(t *testing.T) {
		// /protected is not counted, and demo's POST /data was refused by
		// its scope check, before Limit, so it spent nothing.
		used := 0
		for i := used; i < 100; i++ {
			r := c.do("GET", "/data", "key:"+freeKey, "")
			require.Equal(t, 200, r.status, "request %d", i+1)
		}
		r := c.do("GET", "/data", "key:"+freeKey, "")
		assert.Equal(t, 429, r.status)
		assert.Equal(t, "43200", r.header.Get("Retry-After"))
		assert.Equal(t, `"daily";q=100;w=86400`, r.header.Get("RateLimit-Policy"))
		assert.Equal(t, `"daily";r=0;t=43200`, r.header.Get("RateLimit"))
		assert.Equal(t, "application/problem+json", r.header.Get("Content-Type"))
		r = c.do("GET", "/data", "key:"+proKey, "")
		assert.Equal(t, 200, r.status, "another customer is not affected")
		assert.Equal(t, `"daily";q=10000;w=86400, "per-second";q=100;w=1`, r.header.Get("RateLimit-Policy"), "bob is pro")

		clock.Add(12 * time.Hour) // midnight UTC
		r = c.do("GET", "/data", "key:"+freeKey, "")
		assert.Equal(t, 200, r.status)
		assert.Equal(t, "99", r.header.Get("X-RateLimit-Remaining"))
	})

	t.Run("pro plan: 100 per second", func(t *testing.T) {
		denied := 0
		for range 110 {
			if c.do("GET", "/data", "key:"+proKey, "").status == 429 {
				denied++
			}
		}
		assert.Equal(t, 10, denied)
		clock.Add(time.Second)
		assert.Equal(t, 200, c.do("GET", "/data", "key:"+proKey, "").status)
	})

	t.Run("rotate with grace", func(t *testing.T) {
		assert.Equal(t, 404, c.do("POST", "/api-keys/"+eveID+"/rotate", "bob:bob", "").status, "another user's key")
		assert.Equal(t, 404, c.do("POST", "/api-keys/AAAAAAAAAAAAAAAA/rotate", "bob:bob", "").status)
		assert.Equal(t, 403, c.do("POST", "/api-keys/"+proID+"/rotate", "bob:bob", `{"grace":1}`).status, "an unknown field")

		r := c.do("POST", "/api-keys/"+proID+"/rotate", "bob:bob", `{"grace_seconds":60}`)
		require.Equal(t, 200, r.status, r.raw)
		assert.Equal(t, "rotated", r.body["status"])
		assert.Equal(t, proID, r.body["old_key_id"])
		assert.Equal(t, clock.Now().Add(time.Minute).Format(time.RFC3339), r.body["old_key_expires_at"])
		newKey := r.body["key"].(string)
		assert.NotEqual(t, proID, r.body["id"])

		old := c.do("GET", "/protected", "key:"+proKey, "")
		assert.Equal(t, 200, old.status, "the old key works during the grace period")
		assert.NotEmpty(t, old.header.Get("Sunset"))
		assert.NotEmpty(t, old.header.Get("Deprecation"))
		assert.Equal(t, 200, c.do("GET", "/protected", "key:"+newKey, "").status)
		clock.Add(time.Minute)
		assert.Equal(t, 401, c.do("GET", "/protected", "key:"+proKey, "").status, "and not after")
		assert.Equal(t, 200, c.do("GET", "/protected", "key:"+newKey, "").status)
		assert.Equal(t, 409, c.do("POST", "/api-keys/"+proID+"/rotate", "bob:bob", "").status, "rotated twice")

		g0 := c.do("POST", "/api-keys/"+r.body["id"].(string)+"/rotate", "bob:bob", "")
		require.Equal(t, 200, g0.status)
		assert.Equal(t, 401, c.do("GET", "/protected", "key:"+newKey, "").status, "grace 0 stops the old key at once")
	})

	t.Run("delete revokes", func(t *testing.T) {
		freeID := free.body["id"].(string)
		assert.Equal(t, 404, c.do("DELETE", "/api-keys/"+eveID, "demo:demo", "").status)
		assert.Equal(t, 404, c.do("DELETE", "/api-keys/nope", "demo:demo", "").status)
		assert.Equal(t, 204, c.do("DELETE", "/api-keys/"+freeID, "demo:demo", "").status)
		assert.Equal(t, 401, c.do("GET", "/protected", "key:"+freeKey, "").status)
		list := c.do("GET", "/api-keys", "demo:demo", "")
		for _, k := range list.body["keys"].([]any) {
			if k := k.(map[string]any); k["id"] == freeID {
				assert.NotNil(t, k["revoked_at"])
			}
		}
	})
}

// The free plan is 100 requests per UTC day for a user across all their
// keys, to GET and POST /data only; a refused request spends nothing; a
// rotation gives nothing new; /protected is never limited.
func TestFreePlanPerUser(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	limiter, err := memlimit.New(memlimit.Options{Now: clock.Now})
	require.NoError(t, err)
	c := client{t, newServer(t, newSQLiteStore(t), limiter, clock)}
	newKey := func(user, body string) (string, string) {
		r := c.do("POST", "/api-keys", user, body)
		require.Equal(t, 201, r.status, r.raw)
		return r.body["key"].(string), r.body["id"].(string)
	}
	k1, id1 := newKey("demo:demo", `{"scopes":["read"]}`)
	k2, _ := newKey("demo:demo", `{"scopes":["read","write"]}`)
	eve, _ := newKey("eve:secret", `{}`)

	for i := range 10 {
		r := c.do("GET", "/data", "key:"+k1, "")
		require.Equal(t, 200, r.status)
		require.Equal(t, fmt.Sprintf(`"daily";r=%d;t=43200`, 99-i), r.header.Get("RateLimit"))
	}
	for range 5 {
		r := c.do("POST", "/data", "key:"+k1, "")
		require.Equal(t, 403, r.status, "k1 lacks the write scope")
		assert.Empty(t, r.header.Get("RateLimit"))
		require.Equal(t, 401, c.do("GET", "/data", "key:"+corrupt(k1), "").status)
	}
	r := c.do("POST", "/data", "key:"+k2, "")
	require.Equal(t, 201, r.status)
	assert.Equal(t, `"daily";r=89;t=43200`, r.header.Get("RateLimit"), "a refused request spent")
	ok := 11
	for i := 0; ok < 120; i++ {
		k := []string{k1, k2}[i%2]
		if c.do("GET", "/data", "key:"+k, "").status != 200 {
			break
		}
		ok++
	}
	assert.Equal(t, 100, ok, "the user's two keys together")
	assert.Equal(t, 429, c.do("GET", "/data", "key:"+k1, "").status)
	assert.Equal(t, 429, c.do("POST", "/data", "key:"+k2, "").status)
	for range 3 {
		assert.Equal(t, 200, c.do("GET", "/protected", "key:"+k1, "").status, "/protected is not counted")
	}
	assert.Equal(t, 200, c.do("GET", "/data", "key:"+eve, "").status, "another user's budget")

	r = c.do("POST", "/api-keys/"+id1+"/rotate", "demo:demo", `{"grace_seconds":60}`)
	require.Equal(t, 200, r.status, r.raw)
	rotated := r.body["key"].(string)
	r = c.do("GET", "/data", "key:"+rotated, "")
	assert.Equal(t, 429, r.status, "a rotation gave new requests")
	assert.Equal(t, `"daily";r=0;t=43200`, r.header.Get("RateLimit"))
	assert.Equal(t, 429, c.do("GET", "/data", "key:"+k1, "").status, "the old key in grace")

	clock.Add(12 * time.Hour) // midnight UTC
	r = c.do("GET", "/data", "key:"+rotated, "")
	assert.Equal(t, 200, r.status)
	assert.Equal(t, `"daily";r=99;t=86400`, r.header.Get("RateLimit"))
}

// Credits the operator grants a customer are spent besides his plan, by
// all of his keys together, and are never refilled.
func TestCredits(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	limiter, err := memlimit.New(memlimit.Options{Now: clock.Now})
	require.NoError(t, err)
	c := client{t, newServer(t, newSQLiteStore(t), limiter, clock)}
	r := c.do("PUT", "/admin/customers/bob", operator, `{"credits":3}`)
	require.Equal(t, 200, r.status, r.raw)
	var keys []string
	for range 2 {
		r := c.do("POST", "/api-keys", "bob:bob", "")
		require.Equal(t, 201, r.status, r.raw)
		keys = append(keys, r.body["key"].(string))
	}
	for i, want := range []string{"2", "1", "0"} {
		r := c.do("GET", "/data", "key:"+keys[i%2], "")
		require.Equal(t, 200, r.status)
		assert.Equal(t, `"daily";q=10000;w=86400, "per-second";q=100;w=1, "credits";q=3`, r.header.Get("RateLimit-Policy"))
		assert.Contains(t, r.header.Get("RateLimit"), `"credits";r=`+want)
	}
	r = c.do("GET", "/data", "key:"+keys[1], "")
	assert.Equal(t, 429, r.status, "the customer's credits, whichever key spends them")
	assert.Empty(t, r.header.Get("Retry-After"), "credits are never refilled")
	assert.Equal(t, 200, c.do("GET", "/protected", "key:"+keys[0], "").status)
	r = c.do("GET", "/admin/customers/bob", operator, "")
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, 0.0, r.body["balance"].(map[string]any)["credits"])
}

// Two instances over the same database and Redis enforce one shared limit.
func TestTwoInstancesShareOneLimit(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	mr.SetTime(clock.Now())
	store := newSQLiteStore(t)
	var servers []client
	for range 2 {
		rc := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { rc.Close() })
		l, err := redislimit.New(rc, redislimit.Options{})
		require.NoError(t, err)
		servers = append(servers, client{t, newServer(t, store, l, clock)})
	}
	r := servers[0].do("POST", "/api-keys", "demo:demo", "")
	require.Equal(t, 201, r.status)
	key := r.body["key"].(string)
	ok := 0
	for i := range 120 {
		if servers[i%2].do("GET", "/data", "key:"+key, "").status == 200 {
			ok++
		}
	}
	assert.Equal(t, 100, ok)
}

// The management routes come from keyshttp: the OpenAPI document without
// credentials, PATCH, pause and resume, and the key view's state fields.
func TestManagementRoutes(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	limiter, err := memlimit.New(memlimit.Options{Now: clock.Now})
	require.NoError(t, err)
	c := client{t, newServer(t, newSQLiteStore(t), limiter, clock)}

	doc := c.do("GET", "/openapi.json", "", "")
	require.Equal(t, 200, doc.status, "no credentials needed")
	assert.Equal(t, "3.1.0", doc.body["openapi"])
	assert.Contains(t, doc.body["paths"], "/api-keys/{id}/rotate")

	created := c.do("POST", "/api-keys", "demo:demo", `{"name":"app","scopes":["read"]}`)
	require.Equal(t, 201, created.status, created.raw)
	id, token := created.body["id"].(string), created.body["key"].(string)
	for _, field := range []string{"disabled", "paused", "rotated_at", "limits"} {
		assert.Contains(t, created.body, field)
	}
	assert.Equal(t, false, created.body["disabled"])
	assert.Nil(t, created.body["rotated_at"])

	r := c.do("PATCH", "/api-keys/"+id, "demo:demo", `{"name":"renamed"}`)
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, "renamed", r.body["name"])
	// The plan, credits and limits are the customer's: a user sets none.
	for _, body := range []string{`{"plan":"pro"}`, `{"credits":10}`, `{"plan":"gold"}`} {
		r := c.do("PATCH", "/api-keys/"+id, "demo:demo", body)
		assert.Equal(t, 403, r.status, body)
		assert.NotEmpty(t, r.body["field"], body)
	}
	assert.Equal(t, `"daily";q=100;w=86400`, c.do("GET", "/data", "key:"+token, "").header.Get("RateLimit-Policy"), "demo is still free")
	assert.Equal(t, 400, c.do("PATCH", "/api-keys/"+id, "demo:demo", `{"name":"a\u0000b"}`).status)
	assert.Equal(t, 404, c.do("PATCH", "/api-keys/"+id, "eve:secret", `{"name":"x"}`).status)
	got := c.do("GET", "/protected", "key:"+token, "")
	require.Equal(t, 200, got.status)
	assert.Equal(t, "renamed", got.body["key_name"])

	assert.Equal(t, 404, c.do("POST", "/api-keys/"+id+"/pause", "eve:secret", "").status)
	r = c.do("POST", "/api-keys/"+id+"/pause", "demo:demo", "")
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, true, r.body["paused"])
	refused := c.do("GET", "/protected", "key:"+token, "")
	assert.Equal(t, 401, refused.status)
	assert.Equal(t, c.do("GET", "/protected", "key:sk_live_garbage", "").raw, refused.raw, "a paused key is refused like an invalid one")
	assert.Equal(t, 404, c.do("POST", "/api-keys/"+id+"/resume", "eve:secret", "").status)
	r = c.do("POST", "/api-keys/"+id+"/resume", "demo:demo", "")
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, false, r.body["paused"])
	assert.Equal(t, 200, c.do("GET", "/protected", "key:"+token, "").status)

	rot := c.do("POST", "/api-keys/"+id+"/rotate", "demo:demo", `{"grace_seconds":60}`)
	require.Equal(t, 200, rot.status)
	assert.NotNil(t, c.do("GET", "/api-keys/"+id, "demo:demo", "").body["rotated_at"])

	// A revoked key stays refused whatever is patched or resumed.
	require.Equal(t, 204, c.do("DELETE", "/api-keys/"+id, "demo:demo", "").status)
	c.do("PATCH", "/api-keys/"+id, "demo:demo", `{"expires_at":null,"name":"back?"}`)
	c.do("POST", "/api-keys/"+id+"/resume", "demo:demo", "")
	assert.Equal(t, 401, c.do("GET", "/protected", "key:"+token, "").status)
}

// TestKeysPage signs in to the keys page at /keys/ with HTTP Basic, creates
// a key with its form and uses the token it shows.
func TestKeysPage(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	limiter, err := memlimit.New(memlimit.Options{Now: clock.Now})
	require.NoError(t, err)
	srv := newServer(t, newSQLiteStore(t), limiter, clock)
	c := client{t, srv}

	for _, auth := range []string{"", "demo:wrong"} {
		r := c.do("GET", "/keys/", auth, "")
		assert.Equal(t, 401, r.status)
		assert.Contains(t, r.header.Get("WWW-Authenticate"), "Basic")
	}
	page := c.do("GET", "/keys/", "demo:demo", "")
	require.Equal(t, 200, page.status)
	assert.Contains(t, page.raw, "<h1>API keys</h1>")
	assert.Contains(t, page.header.Get("Content-Security-Policy"), "frame-ancestors 'none'")

	post := func(site, form string) *http.Response {
		req, err := http.NewRequest("POST", srv.URL+"/keys/create", strings.NewReader(form))
		require.NoError(t, err)
		req.SetBasicAuth("demo", "demo")
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", site)
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
	const form = "name=ci&scope=read&expires=7776000"
	assert.Equal(t, 403, post("cross-site", form).StatusCode)
	assert.Equal(t, 403, post("same-origin", form+"&plan=pro").StatusCode, "the page offers no plan")
	res := post("same-origin", form)
	require.Equal(t, 201, res.StatusCode)
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	token := regexp.MustCompile(`sk_live_[0-9A-Za-z]{20,}`).FindString(string(body))
	require.NotEmpty(t, token)
	assert.Equal(t, 200, c.do("GET", "/protected", "key:"+token, "").status)
	list := c.do("GET", "/api-keys", "demo:demo", "")
	require.Equal(t, 200, list.status)
	assert.Contains(t, list.raw, `"name":"ci"`, "the JSON API sees the key the page made")
	assert.NotContains(t, c.do("GET", "/keys/", "demo:demo", "").raw, token)
}

// corrupt changes the last character of token to another one.
func corrupt(token string) string {
	last := "x"
	if strings.HasSuffix(token, last) {
		last = "y"
	}
	return token[:len(token)-1] + last
}

// TestManagementRefusesCrossSiteRequests: the management API authenticates
// with HTTP Basic, which a browser sends on its own; a request that a
// browser sent from another site (a form, which can post text/plain with
// an empty body) changes nothing.
func TestManagementRefusesCrossSiteRequests(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	limiter, err := memlimit.New(memlimit.Options{Now: clock.Now})
	require.NoError(t, err)
	srv := newServer(t, newSQLiteStore(t), limiter, clock)
	c := client{t, srv}
	created := c.do("POST", "/api-keys", "demo:demo", `{"name":"app"}`)
	require.Equal(t, 201, created.status, created.raw)
	id, token := created.body["id"].(string), created.body["key"].(string)
	for _, path := range []string{"/api-keys/" + id + "/pause", "/api-keys/" + id + "/rotate", "/api-keys"} {
		req, err := http.NewRequest("POST", srv.URL+path, nil)
		require.NoError(t, err)
		req.SetBasicAuth("demo", "demo")
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		req.Header.Set("Origin", "https://evil.example")
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusForbidden, res.StatusCode, path)
	}
	assert.Equal(t, 200, c.do("GET", "/protected", "key:"+token, "").status, "neither paused nor rotated away")
	assert.Len(t, c.do("GET", "/api-keys", "demo:demo", "").body["keys"], 1, "nothing created")
}
