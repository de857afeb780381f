package keyshttp_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/selfservice"
)

// TestRoutes drives every route through every documented status and checks
// each answer against the OpenAPI document; at the end every documented
// status must have been seen.
func TestRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true, &selfservice.Options{Scopes: []string{"read", "write"}, DefaultLifetime: 90 * 24 * time.Hour}, keyshttp.Options{})
	e.customer("capped", func(c *apikey.Customer) { c.MaxKeys = 2 })
	e.customer("suspended", func(c *apikey.Customer) { c.Suspended = true })

	t.Run("POST /api-keys", func(t *testing.T) {
		r := e.do("alice", "POST", "/api-keys", "")
		require.Equal(t, 201, r.status, r.raw)
		assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
		token := r.body["key"].(string)
		assert.True(t, strings.HasPrefix(token, "sk_live_"))
		assert.Equal(t, e.clock.Now().Add(90*24*time.Hour).Format(time.RFC3339), r.body["expires_at"], "DefaultLifetime")
		assert.Equal(t, []any{}, r.body["scopes"])
		assert.Equal(t, false, r.body["disabled"])
		assert.Equal(t, false, r.body["paused"])
		assert.NotContains(t, strings.ToLower(r.raw), "hash")
		k, err := e.m.Verify(context.Background(), token)
		require.NoError(t, err)
		assert.Equal(t, "alice", k.Owner, "the Owner hook names the owner")

		r = e.do("alice", "POST", "/api-keys", `{"name":"ci","scopes":["read","write"],"ttl_seconds":3600}`)
		require.Equal(t, 201, r.status, r.raw)
		assert.Equal(t, "ci", r.body["name"])
		assert.Equal(t, []any{"read", "write"}, r.body["scopes"])
		assert.Equal(t, e.clock.Now().Add(time.Hour).Format(time.RFC3339), r.body["expires_at"])

		r = e.do("alice", "POST", "/api-keys", `{"expires_at":"2027-01-01T00:00:00Z","ttl_seconds":60,"expires_in_days":7}`)
		require.Equal(t, 201, r.status, r.raw)
		assert.Equal(t, "2027-01-01T00:00:00Z", r.body["expires_at"], "expires_at wins")
		r = e.do("alice", "POST", "/api-keys", `{"expires_in_days":1}`)
		require.Equal(t, 201, r.status, r.raw)
		assert.Equal(t, e.clock.Now().Add(24*time.Hour).Format(time.RFC3339), r.body["expires_at"])

		for _, c := range []struct{ name, body, field string }{
			{"bad JSON", `{`, "body"},
			{"not an object", `[]`, "body"},
			{"null", `null`, "body"},
			{"trailing data", `{} {}`, "body"},
			{"oversized body", `{"name":"` + strings.Repeat("x", 64<<10) + `"}`, "body"},
			{"name with NUL", `{"name":"a\u0000b"}`, "name"},
			{"name too long", `{"name":"` + strings.Repeat("x", 257) + `"}`, "name"},
			{"name not a string", `{"name":5}`, "name"},
			{"scope with a space", `{"scopes":["a b"]}`, "scopes"},
			{"empty scope", `{"scopes":[""]}`, "scopes"},
			{"scopes not an array", `{"scopes":"read"}`, "scopes"},
			{"scope twice", `{"scopes":["read","read"]}`, "scopes"},
			{"past expires_at", `{"expires_at":"2020-01-01T00:00:00Z"}`, "expires_at"},
			{"bad expires_at", `{"expires_at":"tomorrow"}`, "expires_at"},
			{"expires_at beyond the longest life", `{"expires_at":"2028-01-01T00:00:00Z"}`, "expires_at"},
			{"negative ttl_seconds", `{"ttl_seconds":-1}`, "ttl_seconds"},
			{"ttl_seconds beyond the longest life", `{"ttl_seconds":31708801}`, "ttl_seconds"},
			{"zero expires_in_days", `{"expires_in_days":0}`, "expires_in_days"},
			{"expires_in_days beyond the longest life", `{"expires_in_days":367}`, "expires_in_days"},
		} {
			assertProblem(t, e.do("alice", "POST", "/api-keys", c.body), 400, c.field, c.name)
		}
		for _, c := range []struct{ name, body, field string }{
			{"a plan", `{"plan":"enterprise"}`, "plan"},
			{"credits", `{"credits":1000}`, "credits"},
			{"a scope not granted", `{"scopes":["read","admin"]}`, "scopes"},
			{"an unknown member", `{"color":"red"}`, "color"},
		} {
			assertProblem(t, e.do("alice", "POST", "/api-keys", c.body), 403, c.field, c.name)
		}
		assertProblem(t, e.do("suspended", "POST", "/api-keys", ""), 403, "", "a suspended customer")
		for _, user := range []string{"", "bad"} {
			assertProblem(t, e.do(user, "POST", "/api-keys", "{}"), 401, "", "owner %q", user)
		}
		e.create("capped", "")
		e.create("capped", "")
		r = e.do("capped", "POST", "/api-keys", "")
		assertProblem(t, r, 409, "", "MaxKeys")
		assert.Contains(t, r.body["detail"], "most usable keys")

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
			e.clock.Add(time.Second)
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
		require.Len(t, ids, 5)
		for i, id := range ids {
			assert.Equal(t, e.key(id).CreatedAt, e.clock.Now().Add(-time.Duration(i+1)*time.Second), "newest first")
		}

		r := e.do("lister", "GET", "/api-keys", "")
		require.Equal(t, 200, r.status)
		assert.Len(t, r.body["keys"], 5)
		assert.Nil(t, r.body["next"])
		assert.Equal(t, []any{}, e.do("nobody-yet", "GET", "/api-keys", "").body["keys"])

		for _, q := range []string{"limit=0", "limit=abc", "limit=1001", "after=a%20b", "after=AAAA", "usable=maybe"} {
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
		id, token := e.create("alice", `{"name":"rot","scopes":["read"]}`)
		assertProblem(t, e.do("bob", "POST", "/api-keys/"+id+"/rotate", ""), 404, "", "another owner")
		assertProblem(t, e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace":1}`), 403, "grace", "unknown member")
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
	})

	t.Run("PATCH /api-keys/{id}", func(t *testing.T) {
		id, token := e.create("alice", `{"name":"old","scopes":["read"]}`)
		r := e.do("alice", "PATCH", "/api-keys/"+id, `{"name":"new","scopes":["read","write"],"expires_at":"2027-06-01T00:00:00Z"}`)
		require.Equal(t, 200, r.status, r.raw)
		assert.Equal(t, "new", r.body["name"])
		assert.Equal(t, []any{"read", "write"}, r.body["scopes"])
		assert.Equal(t, "2027-06-01T00:00:00Z", r.body["expires_at"])
		k, err := e.m.Verify(context.Background(), token)
		require.NoError(t, err)
		assert.True(t, k.HasScope("write"), "the change applies to the next verification")
		r = e.do("alice", "PATCH", "/api-keys/"+id, `{"scopes":null}`)
		require.Equal(t, 200, r.status, r.raw)
		assert.Equal(t, []any{}, r.body["scopes"])
		assert.Equal(t, "new", r.body["name"], "absent members do not change")
		r = e.do("alice", "PATCH", "/api-keys/"+id, "")
		require.Equal(t, 200, r.status, r.raw)

		for _, c := range []struct{ name, body, field string }{
			{"NUL in name", `{"name":"\u0000"}`, "name"},
			{"bad scope", `{"scopes":["a\"b"]}`, "scopes"},
			{"past expiry", `{"expires_at":"2001-01-01T00:00:00Z"}`, "expires_at"},
			{"no expiry", `{"expires_at":null}`, "expires_at"},
			{"beyond the longest life", `{"expires_at":"2027-11-29T00:00:00Z"}`, "expires_at"},
			{"bad JSON", `{"name":`, "body"},
		} {
			assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, c.body), 400, c.field, c.name)
		}
		for _, c := range []struct{ name, body, field string }{
			{"the owner", `{"owner":"bob"}`, "owner"},
			{"a plan", `{"plan":"pro"}`, "plan"},
			{"credits", `{"credits":5}`, "credits"},
			{"a scope not granted", `{"scopes":["admin"]}`, "scopes"},
		} {
			assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, c.body), 403, c.field, c.name)
		}
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

		// A rotated key's expiry is its grace period: shorter, never longer.
		rot := e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":600}`)
		require.Equal(t, 200, rot.status)
		assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, `{"expires_at":"2027-01-01T00:00:00Z"}`), 409, "")
		shorter := e.clock.Now().Add(time.Minute).Format(time.RFC3339)
		assert.Equal(t, 200, e.do("alice", "PATCH", "/api-keys/"+id, `{"expires_at":"`+shorter+`"}`).status)
	})

	for _, action := range []string{"pause", "resume", "disable", "enable"} {
		t.Run("POST /api-keys/{id}/"+action, func(t *testing.T) {
			id, token := e.create("alice", "")
			path := "/api-keys/" + id + "/" + action
			assertProblem(t, e.do("bob", "POST", path, ""), 404, "", "another owner")
			assertProblem(t, e.do("bad", "POST", path, ""), 401, "")
			assertProblem(t, e.do("alice", "POST", path, `{"x":1}`), 403, "x")
			assertProblem(t, e.do("alice", "POST", path, `{`), 400, "body")
			e.store.down.Store(true)
			assertProblem(t, e.do("alice", "POST", path, ""), 503, "")
			e.store.down.Store(false)
			pause := action == "pause" || action == "disable"
			if !pause {
				_, err := e.m.Pause(context.Background(), id)
				require.NoError(t, err)
			}
			e.store.conflict.Store(true)
			assertProblem(t, e.do("alice", "POST", path, ""), 409, "", "lost races")
			e.store.conflict.Store(false)
			r := e.do("alice", "POST", path, "")
			require.Equal(t, 200, r.status, r.raw)
			assert.Equal(t, pause, r.body["paused"])
			assert.Equal(t, false, r.body["disabled"], "the operator's state is not the owner's")
			if pause {
				assert.ErrorIs(t, e.verify(token), apikey.ErrPaused)
			} else {
				assert.NoError(t, e.verify(token))
			}
			_, err := e.m.Disable(context.Background(), id)
			require.NoError(t, err)
			if pause {
				assert.Equal(t, 200, e.do("alice", "POST", path, "").status, "pausing a disabled key lifts nothing")
			} else {
				assertProblem(t, e.do("alice", "POST", path, ""), 403, "disabled", "the operator's Disabled")
			}
			require.NoError(t, e.m.Revoke(context.Background(), id))
			if pause {
				assertProblem(t, e.do("alice", "POST", path, ""), 409, "", "revoked")
			}
		})
	}

	t.Run("POST /api-keys/{id}/revoke-chain", func(t *testing.T) {
		id, token := e.create("alice", "")
		path := "/api-keys/" + id + "/revoke-chain"
		assertProblem(t, e.do("bob", "POST", path, ""), 404, "", "another owner")
		assertProblem(t, e.do("bad", "POST", path, ""), 401, "")
		assertProblem(t, e.do("alice", "POST", path, `{"all":true}`), 403, "all")
		assertProblem(t, e.do("alice", "POST", path, `[`), 400, "body")
		e.store.down.Store(true)
		assertProblem(t, e.do("alice", "POST", path, ""), 503, "")
		e.store.down.Store(false)
		require.NoError(t, e.verify(token))
		r := e.do("alice", "POST", path, "")
		assert.Equal(t, 204, r.status, r.raw)
		assert.ErrorIs(t, e.verify(token), apikey.ErrRevoked)
	})

	t.Run("GET /openapi.json needs no owner", func(t *testing.T) {
		r := e.do("bad", "GET", "/openapi.json", "")
		require.Equal(t, 200, r.status)
		assert.Equal(t, "3.1.0", r.body["openapi"])
		assert.JSONEq(t, string(e.h.OpenAPI("")), r.raw)
	})

	t.Run("a browser's request from another origin is refused", func(t *testing.T) {
		id, token := e.create("alice", "")
		for _, r := range []struct{ method, path, body string }{
			{"POST", "/api-keys", ""},
			{"PATCH", "/api-keys/" + id, `{"name":"forged"}`},
			{"DELETE", "/api-keys/" + id, ""},
			{"POST", "/api-keys/" + id + "/rotate", ""},
			{"POST", "/api-keys/" + id + "/pause", ""},
			{"POST", "/api-keys/" + id + "/resume", ""},
			{"POST", "/api-keys/" + id + "/disable", ""},
			{"POST", "/api-keys/" + id + "/enable", ""},
			{"POST", "/api-keys/" + id + "/revoke-chain", ""},
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
		assert.Equal(t, int64(1), e.key(id).Revision, "nothing was changed")
		require.NoError(t, e.verify(token))
		keys, err := e.m.List(context.Background(), "alice", apikey.ListOptions{Size: apikey.MaxPageSize})
		require.NoError(t, err)
		n := len(keys)
		// A same-origin browser request and a client that is not a browser
		// pass.
		req, err := http.NewRequest("POST", e.srv.URL+"/api-keys/"+id+"/pause", nil)
		require.NoError(t, err)
		req.Header.Set("X-User", "alice")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		res, err := e.srv.Client().Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusOK, res.StatusCode)
		assert.Equal(t, 200, e.do("alice", "POST", "/api-keys/"+id+"/resume", "").status)
		keys, err = e.m.List(context.Background(), "alice", apikey.ListOptions{Size: apikey.MaxPageSize})
		require.NoError(t, err)
		assert.Len(t, keys, n, "no forged creation")
		assert.Equal(t, 200, e.do("alice", "GET", "/api-keys/"+id, "").status)
	})

	usageRoutes(t, e)

	t.Run("every documented status was answered", func(t *testing.T) {
		for _, op := range e.spec.operations() {
			assert.True(t, e.spec.seen[op], "%s documented but never answered", op)
		}
	})
}

func TestUnknownRoutesAndMethods(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil, keyshttp.Options{})
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
		{"DELETE", "/api-keys/" + id + "/revoke-chain", 405, "POST"},
		{"POST", "/openapi.json", 405, "GET, HEAD"},
		{"POST", "/usage", 405, "GET, HEAD"},
		{"DELETE", "/api-keys/" + id + "/usage", 405, "GET, HEAD"},
		{"GET", "/usage/x", 404, ""},
		{"GET", "/usagex", 404, ""},
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
	other, err := apikey.New(memstore.New(), apikey.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { other.Close(context.Background()) })
	otherPolicy, err := selfservice.New(other, selfservice.Options{})
	require.NoError(t, err)
	owner := func(*http.Request) (string, error) { return "a", nil }
	for name, c := range map[string]struct {
		m    *apikey.Manager
		opts keyshttp.Options
	}{
		"nil manager":               {nil, keyshttp.Options{Owner: owner}},
		"no owner":                  {m, keyshttp.Options{}},
		"negative body":             {m, keyshttp.Options{Owner: owner, MaxBodyBytes: -1}},
		"challenge injection":       {m, keyshttp.Options{Owner: owner, Challenge: "Basic\r\nX: y"}},
		"policy of another":         {m, keyshttp.Options{Owner: owner, Policy: otherPolicy}},
		"unknown security type":     {m, keyshttp.Options{Owner: owner, Document: keyshttp.Document{Security: keyshttp.SecurityScheme{Type: "magic"}}}},
		"apiKey without a name":     {m, keyshttp.Options{Owner: owner, Document: keyshttp.Document{Security: keyshttp.SecurityScheme{Type: "apiKey", In: "header"}}}},
		"license with id and URL":   {m, keyshttp.Options{Owner: owner, Document: keyshttp.Document{License: keyshttp.License{Name: "MIT", Identifier: "MIT", URL: "https://x"}}}},
		"http without a scheme":     {m, keyshttp.Options{Owner: owner, Document: keyshttp.Document{Security: keyshttp.SecurityScheme{Type: "http"}}}},
		"openIdConnect without URL": {m, keyshttp.Options{Owner: owner, Document: keyshttp.Document{Security: keyshttp.SecurityScheme{Type: "openIdConnect"}}}},
	} {
		_, err := keyshttp.New(c.m, c.opts)
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions, name)
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	t.Run("MaxBodyBytes", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, false, nil, keyshttp.Options{MaxBodyBytes: 32})
		assertProblem(t, e.do("alice", "POST", "/api-keys", `{"name":"`+strings.Repeat("x", 32)+`"}`), 400, "body")
		assert.Equal(t, 201, e.do("alice", "POST", "/api-keys", `{"name":"short"}`).status)
	})
	t.Run("the Manager's input limits", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, false, nil, keyshttp.Options{})
		long := strings.Repeat("é", apikey.MaxNameLength/2+1)
		assertProblem(t, e.do("alice", "POST", "/api-keys", `{"name":"`+long+`"}`), 400, "name")
		assertProblem(t, e.do(strings.Repeat("o", apikey.MaxOwnerLength+1), "POST", "/api-keys", ""), 400, "owner", "an owner too long for the store")
	})
	t.Run("Challenge", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, false, nil, keyshttp.Options{Challenge: `Basic realm="keys"`})
		r := e.do("bad", "GET", "/api-keys", "")
		assert.Equal(t, 401, r.status)
		assert.Equal(t, `Basic realm="keys"`, r.header.Get("WWW-Authenticate"))
	})
	t.Run("RetryAfter", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, false, nil, keyshttp.Options{RetryAfter: 30 * time.Second})
		e.store.down.Store(true)
		assert.Equal(t, "30", e.do("alice", "GET", "/api-keys", "").header.Get("Retry-After"))
	})
	t.Run("the policy's MaxGrace", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, false, &selfservice.Options{MaxGrace: time.Hour}, keyshttp.Options{})
		id, _ := e.create("alice", "")
		assertProblem(t, e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":3601}`), 400, "grace_seconds")
		assert.Equal(t, 200, e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":3600}`).status)
	})
	t.Run("mounted under a prefix", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, false, nil, keyshttp.Options{})
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
		page := e.do("alice", "GET", ref.RequestURI(), "")
		require.Equal(t, 200, page.status)
		assert.Len(t, page.body["keys"], 1)
	})
}

// Concurrent revocations and rotations through the handler never leave a
// revoked key working.
func TestRevokeIsFinalUnderConcurrentRotation(t *testing.T) {
	t.Parallel()
	// The store hides memstore's Revoker and Rotator: the Manager's own
	// read-modify-write paths race here.
	e := newEnv(t, false, nil, keyshttp.Options{})
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
