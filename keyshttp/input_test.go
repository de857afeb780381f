package keyshttp_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyshttp"
)

// TestBadInputIsA400 sends what the stores cannot hold or the limits
// refuse: each is a 400 naming its field, never a 503 and never a change.
func TestBadInputIsA400(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, keyshttp.Options{})
	id, token := e.create("alice", `{"name":"keep"}`)
	for _, c := range []struct{ name, body, field string }{
		{"expiry in the year 10000 in UTC", `{"expires_at":"9999-12-31T23:00:00-05:00"}`, "expires_at"},
		{"NUL in a metadata key", `{"metadata":{"k\u0000":"v"}}`, "metadata"},
		{"NUL in a metadata value", `{"metadata":{"k":"\u0000"}}`, "metadata"},
		{"NUL in a plan", `{"plan":"pro\u0000"}`, "plan"},
		{"empty plan", `{"plan":""}`, "plan"},
		{"null metadata value", `{"metadata":{"k":null}}`, "metadata"},
		{"NUL in a scope", `{"scopes":["re\u0000ad"]}`, "scopes"},
		{"C1 control in a name", `{"name":"a\u0085b"}`, "name"},
		{"name too long", `{"name":"` + strings.Repeat("é", apikey.MaxNameLength/2+1) + `"}`, "name"},
		{"too many scopes", `{"scopes":[` + strings.Repeat(`"s",`, apikey.MaxScopes) + `"t"]}`, "scopes"},
		{"invalid UTF-8", "{\"name\":\"\xff\"}", "body"},
		{"two objects", `{"name":"a"}{"name":"b"}`, "body"},
		{"credits zero", `{"credits":0}`, "credits"},
	} {
		assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, c.body), 400, c.field, "PATCH: "+c.name)
		if c.field != "credits" {
			assertProblem(t, e.do("alice", "POST", "/api-keys", c.body), 400, c.field, "POST: "+c.name)
		}
	}
	r := e.do("alice", "GET", "/api-keys/"+id, "")
	require.Equal(t, 200, r.status)
	assert.Equal(t, "keep", r.body["name"])
	assert.Nil(t, r.body["expires_at"], "DefaultTTL 0 and no change")
	list := e.do("alice", "GET", "/api-keys", "")
	assert.Len(t, list.body["keys"], 1, "no refused creation made a key")
	require.NoError(t, e.verify(token))
}

// TestRevokedStaysRevokedUnderConcurrentChanges races PATCH, disable and
// enable over HTTP against DELETE; once DELETE answered 204 the key never
// verifies again, whatever was patched or enabled before or after.
func TestRevokedStaysRevokedUnderConcurrentChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, keyshttp.Options{})
	for range 50 {
		id, token := e.create("alice", `{"ttl_seconds":60}`)
		var wg sync.WaitGroup
		bodies := []struct{ method, path, body string }{
			{"PATCH", "/api-keys/" + id, `{"expires_at":null,"name":"revived?"}`},
			{"POST", "/api-keys/" + id + "/disable", ""},
			{"POST", "/api-keys/" + id + "/enable", ""},
			{"PATCH", "/api-keys/" + id, `{"plan":"pro","scopes":["read"]}`},
		}
		statuses := make([]int, len(bodies))
		for i, b := range bodies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				statuses[i] = e.do("alice", b.method, b.path, b.body).status
			}()
		}
		var revoked int
		wg.Add(1)
		go func() { defer wg.Done(); revoked = e.do("alice", "DELETE", "/api-keys/"+id, "").status }()
		wg.Wait()
		require.Equal(t, 204, revoked)
		for i, s := range statuses {
			assert.Contains(t, []int{200, 409}, s, bodies[i])
		}
		for _, b := range bodies {
			e.do("alice", b.method, b.path, b.body)
		}
		assert.ErrorIs(t, e.verify(token), apikey.ErrRevoked)
		r := e.do("alice", "GET", "/api-keys/"+id, "")
		assert.NotNil(t, r.body["revoked_at"], r.raw)
	}
}
