package keyshttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/memstore"
)

var pepper = []apikey.Pepper{{Version: "1", Secret: []byte("0123456789abcdef0123456789abcdef")}}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// flakyStore is a Store that fails every call while down is set, and
// loses every conditional update (as if another writer always won) while
// conflict is set. It hides memstore's optional capabilities, so the
// Manager's own read-modify-write paths are the ones tested.
type flakyStore struct {
	apikey.Store
	down, conflict atomic.Bool
}

var errDown = errors.New("connection refused")

func (s *flakyStore) Create(ctx context.Context, k *apikey.Key) error {
	if s.down.Load() {
		return errDown
	}
	return s.Store.Create(ctx, k)
}

func (s *flakyStore) Get(ctx context.Context, id string) (*apikey.Key, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.Store.Get(ctx, id)
}

func (s *flakyStore) Update(ctx context.Context, k *apikey.Key) error {
	if s.down.Load() {
		return errDown
	}
	if s.conflict.Load() {
		return fmt.Errorf("revision %d is stale: %w", k.Revision, apikey.ErrConflict)
	}
	return s.Store.Update(ctx, k)
}

func (s *flakyStore) List(ctx context.Context, owner string, o apikey.ListOptions) ([]*apikey.Key, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.Store.List(ctx, owner, o)
}

// env is a Handler over a memory store, served through the OpenAPI
// checker. The caller is named by the X-User header.
type env struct {
	t     *testing.T
	m     *apikey.Manager
	store *flakyStore
	clock *clock
	srv   *httptest.Server
}

func ownerFromHeader(r *http.Request) (string, error) {
	u := r.Header.Get("X-User")
	if u == "bad" {
		return "", errors.New("no session")
	}
	return u, nil
}

func newEnv(t *testing.T, s *spec, opts keyshttp.Options) *env {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	store := &flakyStore{Store: memstore.New()}
	m, err := apikey.New(store, apikey.Options{Prefix: "sk_live", Prefixes: []string{"sk_test"}, Peppers: pepper, Now: c.Now,
		CacheTTL: -1})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	if opts.Owner == nil {
		opts.Owner = ownerFromHeader
	}
	h, err := keyshttp.New(m, opts)
	require.NoError(t, err)
	var handler http.Handler = h
	if s != nil {
		handler = s.checked(t, h)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return &env{t: t, m: m, store: store, clock: c, srv: srv}
}

type response struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

func (e *env) do(user, method, path, body string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	require.NoError(e.t, err)
	if user != "" {
		req.Header.Set("X-User", user)
	}
	res, err := e.srv.Client().Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &r.body)
	}
	return r
}

// create makes a key for user and returns its id and token.
func (e *env) create(user, body string) (string, string) {
	e.t.Helper()
	r := e.do(user, "POST", "/api-keys", body)
	require.Equal(e.t, 201, r.status, r.raw)
	return r.body["id"].(string), r.body["key"].(string)
}

// verifies reports whether token is accepted, and why not.
func (e *env) verify(token string) error {
	_, err := e.m.Verify(context.Background(), token)
	return err
}

func readAllLimited(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r.Body = io.NopCloser(bytes.NewReader(b))
	return b, err
}

func assertProblem(t *testing.T, r response, status int, field string, msgAndArgs ...any) {
	t.Helper()
	assert.Equal(t, status, r.status, append(msgAndArgs, r.raw)...)
	assert.Equal(t, "application/problem+json", r.header.Get("Content-Type"), msgAndArgs...)
	if field != "" {
		assert.Equal(t, field, r.body["field"], append(msgAndArgs, r.raw)...)
	}
}

// TestRoutes drives every route through every documented status and checks
// each answer against the OpenAPI document; at the end every documented
// status must have been seen.
func TestRoutes(t *testing.T) {
	t.Parallel()
	s := loadSpec(t)
	e := newEnv(t, s, keyshttp.Options{
		Plans: []string{"free", "pro", "enterprise"}, DefaultPlan: "free", DefaultTTL: 90 * 24 * time.Hour,
		AllowScope: func(r *http.Request, owner, scope string) bool { return scope != "admin" },
		AllowPlan:  func(r *http.Request, owner, plan string) bool { return plan != "enterprise" },
		MaxKeys: func(r *http.Request, owner string) int {
			if owner == "capped" {
				return 2
			}
			return 0
		},
	})

	t.Run("POST /api-keys", func(t *testing.T) {
		r := e.do("alice", "POST", "/api-keys", "")
		require.Equal(t, 201, r.status, r.raw)
		assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
		token := r.body["key"].(string)
		assert.True(t, strings.HasPrefix(token, "sk_live_"))
		assert.Equal(t, "free", r.body["plan"], "DefaultPlan")
		assert.Equal(t, e.clock.Now().Add(90*24*time.Hour).Format(time.RFC3339), r.body["expires_at"], "DefaultTTL")
		assert.Equal(t, []any{}, r.body["scopes"])
		assert.Equal(t, false, r.body["disabled"])
		assert.NotContains(t, strings.ToLower(r.raw), "hash")
		k, err := e.m.Verify(context.Background(), token)
		require.NoError(t, err)
		assert.Equal(t, "alice", k.Owner, "the Owner hook names the owner")

		r = e.do("alice", "POST", "/api-keys", `{"name":"ci","scopes":["read","write"],"plan":"pro","metadata":{"team":"infra"},"ttl_seconds":3600,"credits":1000}`)
		require.Equal(t, 201, r.status, r.raw)
		assert.Equal(t, "ci", r.body["name"])
		assert.Equal(t, []any{"read", "write"}, r.body["scopes"])
		assert.Equal(t, "pro", r.body["plan"])
		assert.Equal(t, map[string]any{"team": "infra"}, r.body["metadata"])
		assert.Equal(t, e.clock.Now().Add(time.Hour).Format(time.RFC3339), r.body["expires_at"])
		assert.Equal(t, []any{map[string]any{"name": "credits", "kind": "credits", "count": 1000.0, "window": "never"}}, r.body["limits"])
		k, err = e.m.Get(context.Background(), r.body["id"].(string))
		require.NoError(t, err)
		assert.Equal(t, []apikey.Limit{apikey.Credits("credits", 1000, apikey.Never)}, k.Limits, "credits are a limit of the key")

		r = e.do("alice", "POST", "/api-keys", `{"expires_at":"2027-01-01T00:00:00Z","ttl_seconds":60,"expires_in_days":7}`)
		require.Equal(t, 201, r.status, r.raw)
		assert.Equal(t, "2027-01-01T00:00:00Z", r.body["expires_at"], "expires_at wins")
		r = e.do("alice", "POST", "/api-keys", `{"expires_in_days":1}`)
		require.Equal(t, 201, r.status, r.raw)
		assert.Equal(t, e.clock.Now().Add(24*time.Hour).Format(time.RFC3339), r.body["expires_at"])

		for _, c := range []struct{ name, body, field string }{
			{"bad JSON", `{`, "body"},
			{"not an object", `[]`, "body"},
			{"trailing data", `{} {}`, "body"},
			{"unknown field", `{"color":"red"}`, "color"},
			{"oversized body", `{"name":"` + strings.Repeat("x", 64<<10) + `"}`, "body"},
			{"name with NUL", `{"name":"a\u0000b"}`, "name"},
			{"name too long", `{"name":"` + strings.Repeat("x", 257) + `"}`, "name"},
			{"name not a string", `{"name":5}`, "name"},
			{"scope with a space", `{"scopes":["a b"]}`, "scopes"},
			{"empty scope", `{"scopes":[""]}`, "scopes"},
			{"scopes not an array", `{"scopes":"read"}`, "scopes"},
			{"scope twice", `{"scopes":["read","read"]}`, "scopes"},
			{"unknown plan", `{"plan":"gold"}`, "plan"},
			{"metadata not strings", `{"metadata":{"a":1}}`, "metadata"},
			{"metadata with NUL", `{"metadata":{"a":"\u0000"}}`, "metadata"},
			{"metadata empty key", `{"metadata":{"":"x"}}`, "metadata"},
			{"past expires_at", `{"expires_at":"2020-01-01T00:00:00Z"}`, "expires_at"},
			{"bad expires_at", `{"expires_at":"tomorrow"}`, "expires_at"},
			{"negative ttl_seconds", `{"ttl_seconds":-1}`, "ttl_seconds"},
			{"zero expires_in_days", `{"expires_in_days":0}`, "expires_in_days"},
			{"negative credits", `{"credits":-5}`, "credits"},
			{"zero credits", `{"credits":0}`, "credits"},
			{"fractional credits", `{"credits":1.5}`, "credits"},
		} {
			assertProblem(t, e.do("alice", "POST", "/api-keys", c.body), 400, c.field, c.name)
		}
		assertProblem(t, e.do("alice", "POST", "/api-keys", `{"scopes":["read","admin"]}`), 403, "scopes", "AllowScope")
		assertProblem(t, e.do("alice", "POST", "/api-keys", `{"plan":"enterprise"}`), 403, "plan", "AllowPlan")
		for _, user := range []string{"", "bad"} {
			assertProblem(t, e.do(user, "POST", "/api-keys", "{}"), 401, "", "owner %q", user)
		}
		e.create("capped", "")
		e.create("capped", "")
		r = e.do("capped", "POST", "/api-keys", "")
		assertProblem(t, r, 409, "", "MaxKeys")
		assert.Contains(t, r.body["detail"], "2 usable keys")

		e.store.down.Store(true)
		r = e.do("alice", "POST", "/api-keys", "")
		e.store.down.Store(false)
		assertProblem(t, r, 503, "")
		assert.Equal(t, "5", r.header.Get("Retry-After"))
		assert.NotContains(t, r.raw, errDown.Error(), "never the dependency's message")
	})

	t.Run("GET /api-keys", func(t *testing.T) {
		var tokens []string
		for range 5 {
			_, tok := e.create("lister", "")
			tokens = append(tokens, tok)
		}
		e.create("other", "")
		var ids []string
		next := ""
		for page := 0; ; page++ {
			path := "/api-keys?limit=2"
			if next != "" {
				path += "&after=" + next
			}
			r := e.do("lister", "GET", path, "")
			require.Equal(t, 200, r.status, r.raw)
			for _, tok := range tokens {
				assert.NotContains(t, r.raw, tok, "never a token")
			}
			assert.NotContains(t, strings.ToLower(r.raw), "hash")
			for _, k := range r.body["keys"].([]any) {
				ids = append(ids, k.(map[string]any)["id"].(string))
			}
			if r.body["next"] == nil {
				assert.Empty(t, r.header.Get("Link"))
				assert.Equal(t, 2, page, "5 keys in pages of 2: three pages")
				break
			}
			next = r.body["next"].(string)
			assert.Equal(t, `<?after=`+next+`&limit=2>; rel="next"`, r.header.Get("Link"))
		}
		assert.Len(t, ids, 5)
		assert.True(t, slices.IsSorted(ids))

		r := e.do("lister", "GET", "/api-keys", "")
		require.Equal(t, 200, r.status)
		assert.Len(t, r.body["keys"], 5)
		assert.Nil(t, r.body["next"])
		assert.Equal(t, []any{}, e.do("nobody-yet", "GET", "/api-keys", "").body["keys"])

		for _, q := range []string{"limit=0", "limit=abc", "limit=1001", "after=a%20b"} {
			field, _, _ := strings.Cut(q, "=")
			assertProblem(t, e.do("lister", "GET", "/api-keys?"+q, ""), 400, field, q)
		}
		assertProblem(t, e.do("bad", "GET", "/api-keys", ""), 401, "")
		e.store.down.Store(true)
		r = e.do("lister", "GET", "/api-keys", "")
		e.store.down.Store(false)
		assertProblem(t, r, 503, "")
	})

	aliceID, aliceToken := e.create("alice", `{"name":"mine","scopes":["read"]}`)
	bobID, _ := e.create("bob", "")

	t.Run("GET /api-keys/{id}", func(t *testing.T) {
		r := e.do("alice", "GET", "/api-keys/"+aliceID, "")
		require.Equal(t, 200, r.status, r.raw)
		assert.Equal(t, aliceID, r.body["id"])
		assert.Equal(t, "mine", r.body["name"])
		assert.NotContains(t, r.raw, aliceToken)
		assert.NotContains(t, r.body, "key")
		for _, path := range []string{"/api-keys/" + bobID, "/api-keys/AAAAAAAAAAAAAAAA", "/api-keys/a.b"} {
			assertProblem(t, e.do("alice", "GET", path, ""), 404, "", path)
		}
		assert.Equal(t, e.do("alice", "GET", "/api-keys/"+bobID, "").raw, e.do("alice", "GET", "/api-keys/AAAAAAAAAAAAAAAA", "").raw,
			"another owner's key is indistinguishable from an unknown one")
		assertProblem(t, e.do("bad", "GET", "/api-keys/"+aliceID, ""), 401, "")
		e.store.down.Store(true)
		r = e.do("alice", "GET", "/api-keys/"+aliceID, "")
		e.store.down.Store(false)
		assertProblem(t, r, 503, "")
	})

	t.Run("DELETE /api-keys/{id}", func(t *testing.T) {
		id, token := e.create("alice", "")
		assertProblem(t, e.do("bob", "DELETE", "/api-keys/"+id, ""), 404, "", "another owner")
		require.NoError(t, e.verify(token), "another owner's DELETE changes nothing")
		assertProblem(t, e.do("bad", "DELETE", "/api-keys/"+id, ""), 401, "")
		e.store.down.Store(true)
		assertProblem(t, e.do("alice", "DELETE", "/api-keys/"+id, ""), 503, "")
		e.store.down.Store(false)
		r := e.do("alice", "DELETE", "/api-keys/"+id, "")
		assert.Equal(t, 204, r.status, r.raw)
		assert.Empty(t, r.raw)
		assert.ErrorIs(t, e.verify(token), apikey.ErrRevoked)
		assert.Equal(t, 204, e.do("alice", "DELETE", "/api-keys/"+id, "").status, "revoking twice is fine")
		assert.NotNil(t, e.do("alice", "GET", "/api-keys/"+id, "").body["revoked_at"])
	})

	t.Run("POST /api-keys/{id}/rotate", func(t *testing.T) {
		id, token := e.create("alice", `{"name":"rot","scopes":["read"],"plan":"pro"}`)
		assertProblem(t, e.do("bob", "POST", "/api-keys/"+id+"/rotate", ""), 404, "", "another owner")
		assertProblem(t, e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace":1}`), 400, "grace", "unknown field")
		assertProblem(t, e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":-1}`), 400, "grace_seconds")
		assertProblem(t, e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":2592001}`), 400, "grace_seconds")
		assertProblem(t, e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":"60"}`), 400, "grace_seconds")
		assertProblem(t, e.do("bad", "POST", "/api-keys/"+id+"/rotate", ""), 401, "")
		e.store.down.Store(true)
		assertProblem(t, e.do("alice", "POST", "/api-keys/"+id+"/rotate", ""), 503, "")
		e.store.down.Store(false)
		require.NoError(t, e.verify(token))

		r := e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":60}`)
		require.Equal(t, 200, r.status, r.raw)
		assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
		newToken := r.body["key"].(string)
		assert.NotEqual(t, id, r.body["id"])
		assert.Equal(t, id, r.body["old_key_id"])
		assert.Equal(t, id, r.body["rotated_from"])
		assert.Equal(t, "rot", r.body["name"])
		assert.Equal(t, "pro", r.body["plan"])
		until := e.clock.Now().Add(time.Minute).Format(time.RFC3339)
		assert.Equal(t, until, r.body["old_key_expires_at"])
		prev := r.body["previous"].(map[string]any)
		assert.Equal(t, until, prev["expires_at"])
		assert.Equal(t, r.body["id"], prev["rotated_to"])
		assert.Equal(t, e.clock.Now().Format(time.RFC3339), prev["rotated_at"])
		got := e.do("alice", "GET", "/api-keys/"+id, "")
		assert.Equal(t, until, got.body["expires_at"], "the answer matches the store")
		assert.Equal(t, r.body["id"], got.body["rotated_to"])

		require.NoError(t, e.verify(token), "the old key works during the grace period")
		require.NoError(t, e.verify(newToken))
		e.clock.Add(time.Minute)
		assert.ErrorIs(t, e.verify(token), apikey.ErrExpired)
		assertProblem(t, e.do("alice", "POST", "/api-keys/"+id+"/rotate", ""), 409, "", "rotated twice")

		revoked, _ := e.create("alice", "")
		require.Equal(t, 204, e.do("alice", "DELETE", "/api-keys/"+revoked, "").status)
		assertProblem(t, e.do("alice", "POST", "/api-keys/"+revoked+"/rotate", ""), 409, "", "revoked")
	})

	t.Run("PATCH /api-keys/{id}", func(t *testing.T) {
		id, token := e.create("alice", `{"name":"old","scopes":["read"],"plan":"free"}`)
		r := e.do("alice", "PATCH", "/api-keys/"+id, `{"name":"new","scopes":["read","write"],"plan":"pro","metadata":{"env":"prod"},"expires_at":"2027-06-01T00:00:00Z","credits":500}`)
		require.Equal(t, 200, r.status, r.raw)
		assert.Equal(t, "new", r.body["name"])
		assert.Equal(t, []any{"read", "write"}, r.body["scopes"])
		assert.Equal(t, "pro", r.body["plan"])
		assert.Equal(t, map[string]any{"env": "prod"}, r.body["metadata"])
		assert.Equal(t, "2027-06-01T00:00:00Z", r.body["expires_at"])
		assert.Equal(t, []any{map[string]any{"name": "credits", "kind": "credits", "count": 500.0, "window": "never"}}, r.body["limits"])
		k, err := e.m.Verify(context.Background(), token)
		require.NoError(t, err)
		assert.Equal(t, "pro", k.Plan, "the change applies to the next verification")
		assert.True(t, k.HasScope("write"))

		r = e.do("alice", "PATCH", "/api-keys/"+id, `{"expires_at":null}`)
		require.Equal(t, 200, r.status, r.raw)
		assert.Nil(t, r.body["expires_at"], "null: never expires")
		r = e.do("alice", "PATCH", "/api-keys/"+id, `{"credits":null}`)
		require.Equal(t, 200, r.status, r.raw)
		assert.Equal(t, []any{}, r.body["limits"], "null removes the credits")
		assert.Equal(t, "new", r.body["name"], "absent members do not change")
		r = e.do("alice", "PATCH", "/api-keys/"+id, "")
		require.Equal(t, 200, r.status, r.raw)

		for _, c := range []struct{ name, body, field string }{
			{"unknown field", `{"owner":"bob"}`, "owner"},
			{"unknown plan", `{"plan":"gold"}`, "plan"},
			{"NUL in name", `{"name":"\u0000"}`, "name"},
			{"bad scope", `{"scopes":["a\"b"]}`, "scopes"},
			{"past expiry", `{"expires_at":"2001-01-01T00:00:00Z"}`, "expires_at"},
			{"bad JSON", `{"name":`, "body"},
		} {
			assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, c.body), 400, c.field, c.name)
		}
		assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, `{"scopes":["admin"]}`), 403, "scopes")
		assertProblem(t, e.do("bob", "PATCH", "/api-keys/"+id, `{"name":"x"}`), 404, "", "another owner")
		assertProblem(t, e.do("bad", "PATCH", "/api-keys/"+id, `{"name":"x"}`), 401, "")
		e.store.down.Store(true)
		assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, `{"name":"x"}`), 503, "")
		e.store.down.Store(false)
		e.store.conflict.Store(true)
		r = e.do("alice", "PATCH", "/api-keys/"+id, `{"name":"x"}`)
		e.store.conflict.Store(false)
		assertProblem(t, r, 409, "", "every attempt lost to a concurrent writer")
		assert.Contains(t, r.body["detail"], "retry")
		assert.Equal(t, "new", e.do("alice", "GET", "/api-keys/"+id, "").body["name"], "refused changes changed nothing")

		// A rotated key's expiry is its grace period.
		rot := e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":60}`)
		require.Equal(t, 200, rot.status)
		assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, `{"expires_at":"2030-01-01T00:00:00Z"}`), 409, "expires_at")

		// A revoked key stays refused whatever is patched.
		rid, rtoken := e.create("alice", "")
		require.Equal(t, 204, e.do("alice", "DELETE", "/api-keys/"+rid, "").status)
		r = e.do("alice", "PATCH", "/api-keys/"+rid, `{"name":"revived?","expires_at":null}`)
		assert.Contains(t, []int{200, 409}, r.status, r.raw)
		assert.ErrorIs(t, e.verify(rtoken), apikey.ErrRevoked)
	})

	t.Run("POST /api-keys/{id}/disable and enable", func(t *testing.T) {
		id, token := e.create("alice", "")
		for _, action := range []string{"disable", "enable"} {
			path := "/api-keys/" + id + "/" + action
			assertProblem(t, e.do("bob", "POST", path, ""), 404, "", action+": another owner")
			assertProblem(t, e.do("bad", "POST", path, ""), 401, "", action)
			assertProblem(t, e.do("alice", "POST", path, `{"x":1}`), 400, "x", action)
			e.store.down.Store(true)
			assertProblem(t, e.do("alice", "POST", path, ""), 503, "", action)
			e.store.down.Store(false)
			e.store.conflict.Store(true)
			assertProblem(t, e.do("alice", "POST", path, ""), 409, "", action+": lost races")
			e.store.conflict.Store(false)
		}
		require.NoError(t, e.verify(token))
		r := e.do("alice", "POST", "/api-keys/"+id+"/disable", "")
		require.Equal(t, 200, r.status, r.raw)
		assert.Equal(t, true, r.body["disabled"])
		assert.ErrorIs(t, e.verify(token), apikey.ErrDisabled)
		r = e.do("alice", "POST", "/api-keys/"+id+"/enable", "")
		require.Equal(t, 200, r.status, r.raw)
		assert.Equal(t, false, r.body["disabled"])
		require.NoError(t, e.verify(token))

		// Revocation is final: enable does not undo it.
		require.Equal(t, 204, e.do("alice", "DELETE", "/api-keys/"+id, "").status)
		for _, action := range []string{"disable", "enable"} {
			r := e.do("alice", "POST", "/api-keys/"+id+"/"+action, "")
			assert.Contains(t, []int{200, 409}, r.status, r.raw)
			assert.ErrorIs(t, e.verify(token), apikey.ErrRevoked, action)
		}
	})

	t.Run("GET /openapi.json needs no owner", func(t *testing.T) {
		r := e.do("bad", "GET", "/openapi.json", "")
		require.Equal(t, 200, r.status)
		assert.Equal(t, "3.1.0", r.body["openapi"])
		assert.JSONEq(t, string(keyshttp.OpenAPI()), r.raw)
	})

	t.Run("a browser's request from another origin is refused", func(t *testing.T) {
		id, token := e.create("alice", "")
		for _, r := range []struct{ method, path, body string }{
			{"POST", "/api-keys", ""},
			{"PATCH", "/api-keys/" + id, `{"name":"forged"}`},
			{"DELETE", "/api-keys/" + id, ""},
			{"POST", "/api-keys/" + id + "/rotate", ""},
			{"POST", "/api-keys/" + id + "/disable", ""},
			{"POST", "/api-keys/" + id + "/enable", ""},
		} {
			for _, hdr := range []map[string]string{
				{"Sec-Fetch-Site": "cross-site"},
				{"Sec-Fetch-Site": "same-site", "Origin": "https://other.example"},
				{"Origin": "https://evil.example"},
			} {
				req, err := http.NewRequest(r.method, e.srv.URL+r.path, strings.NewReader(r.body))
				require.NoError(t, err)
				req.Header.Set("X-User", "alice")
				req.Header.Set("Content-Type", "text/plain") // what a form can send
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				res, err := e.srv.Client().Do(req)
				require.NoError(t, err)
				res.Body.Close()
				assert.Equal(t, http.StatusForbidden, res.StatusCode, "%s %s %v", r.method, r.path, hdr)
				assert.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
			}
		}
		k, err := e.m.Get(context.Background(), id)
		require.NoError(t, err)
		assert.Equal(t, int64(1), k.Revision, "nothing was changed")
		require.NoError(t, e.verify(token))
		keys, err := e.m.List(context.Background(), "alice", apikey.ListOptions{Limit: apikey.MaxListLimit})
		require.NoError(t, err)
		n := len(keys)
		// A same-origin browser request and a client that is not a browser
		// pass.
		req, err := http.NewRequest("POST", e.srv.URL+"/api-keys/"+id+"/disable", nil)
		require.NoError(t, err)
		req.Header.Set("X-User", "alice")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		res, err := e.srv.Client().Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusOK, res.StatusCode)
		assert.Equal(t, 200, e.do("alice", "POST", "/api-keys/"+id+"/enable", "").status)
		keys, err = e.m.List(context.Background(), "alice", apikey.ListOptions{Limit: apikey.MaxListLimit})
		require.NoError(t, err)
		assert.Len(t, keys, n, "no forged creation")
		assert.Equal(t, 200, e.do("alice", "GET", "/api-keys/"+id, "").status)
	})

	t.Run("every documented status was answered", func(t *testing.T) {
		for _, op := range s.operations() {
			assert.True(t, s.seen[op], "%s documented but never answered", op)
		}
	})
}

func TestUnknownRoutesAndMethods(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, keyshttp.Options{})
	id, _ := e.create("alice", "")
	for _, c := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/nope", 404, ""},
		{"GET", "/api-keysX", 404, ""},
		{"GET", "/api-keys/" + id + "/nope", 404, ""},
		{"PUT", "/api-keys", 405, "GET, HEAD, POST"},
		{"POST", "/api-keys/" + id, 405, "GET, HEAD, PATCH, DELETE"},
		{"GET", "/api-keys/" + id + "/rotate", 405, "POST"},
		{"POST", "/openapi.json", 405, "GET, HEAD"},
	} {
		r := e.do("alice", c.method, c.path, "")
		assertProblem(t, r, c.status, "", c.method+" "+c.path)
		assert.Equal(t, c.allow, r.header.Get("Allow"), c.method+" "+c.path)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	m, err := apikey.New(memstore.New(), apikey.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	owner := func(*http.Request) (string, error) { return "a", nil }
	for name, c := range map[string]struct {
		m    *apikey.Manager
		opts keyshttp.Options
	}{
		"nil manager":          {nil, keyshttp.Options{Owner: owner}},
		"no owner":             {m, keyshttp.Options{}},
		"negative body":        {m, keyshttp.Options{Owner: owner, MaxBodyBytes: -1}},
		"default plan unknown": {m, keyshttp.Options{Owner: owner, Plans: []string{"a"}, DefaultPlan: "b"}},
		"bad plan name":        {m, keyshttp.Options{Owner: owner, Plans: []string{"a b"}}},
		"challenge injection":  {m, keyshttp.Options{Owner: owner, Challenge: "Basic\r\nX: y"}},
	} {
		_, err := keyshttp.New(c.m, c.opts)
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions, name)
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	t.Run("MaxBodyBytes", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil, keyshttp.Options{MaxBodyBytes: 32})
		assertProblem(t, e.do("alice", "POST", "/api-keys", `{"name":"`+strings.Repeat("x", 32)+`"}`), 400, "body")
		assert.Equal(t, 201, e.do("alice", "POST", "/api-keys", `{"name":"short"}`).status)
	})
	t.Run("the Manager's plans and input limits", func(t *testing.T) {
		t.Parallel()
		m, err := apikey.New(memstore.New(), apikey.Options{Plans: apikey.Plans{"free": {apikey.Quota("daily", 100, apikey.Day)}}})
		require.NoError(t, err)
		t.Cleanup(func() { m.Close(context.Background()) })
		h, err := keyshttp.New(m, keyshttp.Options{Owner: ownerFromHeader})
		require.NoError(t, err)
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		e := &env{t: t, m: m, srv: srv}
		assertProblem(t, e.do("alice", "POST", "/api-keys", `{"plan":"gold"}`), 400, "plan", "a plan the Manager does not know")
		assert.Equal(t, 201, e.do("alice", "POST", "/api-keys", `{"plan":"free"}`).status)
		long := strings.Repeat("é", apikey.MaxNameLength/2+1)
		assertProblem(t, e.do("alice", "POST", "/api-keys", `{"name":"`+long+`"}`), 400, "name")
		assertProblem(t, e.do(strings.Repeat("o", apikey.MaxOwnerLength+1), "POST", "/api-keys", ""), 400, "body", "an owner too long for the store")
	})
	t.Run("Challenge", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil, keyshttp.Options{Challenge: `Basic realm="keys"`})
		r := e.do("bad", "GET", "/api-keys", "")
		assert.Equal(t, 401, r.status)
		assert.Equal(t, `Basic realm="keys"`, r.header.Get("WWW-Authenticate"))
	})
	t.Run("RetryAfter", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil, keyshttp.Options{RetryAfter: 30 * time.Second})
		e.store.down.Store(true)
		assert.Equal(t, "30", e.do("alice", "GET", "/api-keys", "").header.Get("Retry-After"))
	})
	t.Run("MaxGrace", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil, keyshttp.Options{MaxGrace: time.Hour})
		id, _ := e.create("alice", "")
		assertProblem(t, e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":3601}`), 400, "grace_seconds")
		assert.Equal(t, 200, e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":3600}`).status)
	})
	t.Run("mounted under a prefix", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil, keyshttp.Options{})
		h := e.srv.Config.Handler
		e.srv.Config.Handler = http.StripPrefix("/v1", h)
		r := e.do("alice", "POST", "/v1/api-keys", "")
		require.Equal(t, 201, r.status, r.raw)
		for range 2 {
			require.Equal(t, 201, e.do("alice", "POST", "/v1/api-keys", "").status)
		}
		r = e.do("alice", "GET", "/v1/api-keys?limit=1", "")
		require.Equal(t, 200, r.status)
		link := r.header.Get("Link")
		require.NotEmpty(t, link)
		next, err := http.NewRequest("GET", e.srv.URL+"/v1/api-keys", nil)
		require.NoError(t, err)
		ref, err := next.URL.Parse(strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`))
		require.NoError(t, err)
		assert.Equal(t, "/v1/api-keys", ref.Path, "the Link resolves under the mount point")
	})
}

// MaxKeys holds under concurrent creations: exactly the limit succeed.
func TestMaxKeysUnderConcurrency(t *testing.T) {
	t.Parallel()
	const max, callers = 3, 20
	e := newEnv(t, nil, keyshttp.Options{MaxKeys: func(*http.Request, string) int { return max }})
	var created, refused atomic.Int32
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch e.do("alice", "POST", "/api-keys", "").status {
			case 201:
				created.Add(1)
			case 409:
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int32(max), created.Load())
	assert.Equal(t, int32(callers-max), refused.Load())
	// A revoked key frees its place.
	keys, err := e.m.List(context.Background(), "alice", apikey.ListOptions{})
	require.NoError(t, err)
	require.NoError(t, e.m.Revoke(context.Background(), keys[0].ID))
	assert.Equal(t, 201, e.do("alice", "POST", "/api-keys", "").status)
	assert.Equal(t, 409, e.do("alice", "POST", "/api-keys", "").status)
}

// Concurrent revocations and rotations through the handler never leave a
// revoked key working.
func TestRevokeIsFinalUnderConcurrentRotation(t *testing.T) {
	t.Parallel()
	// The store hides memstore's Revoker and Rotator: the Manager's own
	// read-modify-write paths race here.
	e := newEnv(t, nil, keyshttp.Options{})
	for range 100 {
		id, token := e.create("alice", "")
		var wg sync.WaitGroup
		var rotated string
		wg.Add(2)
		go func() {
			defer wg.Done()
			r := e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":600}`)
			if r.status == 200 {
				rotated = r.body["key"].(string)
			}
		}()
		var revoke int
		go func() {
			defer wg.Done()
			revoke = e.do("alice", "DELETE", "/api-keys/"+id, "").status
		}()
		wg.Wait()
		require.Equal(t, 204, revoke)
		assert.ErrorIs(t, e.verify(token), apikey.ErrRevoked)
		_ = rotated // the successor is a new key; revoking the old one does not revoke it
	}
}
