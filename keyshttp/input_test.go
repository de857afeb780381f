package keyshttp_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/selfservice"
)

// TestBadInputIsA400 sends what the stores cannot hold or the limits
// refuse: each is a 400 naming its field, never a 503 and never a change.
func TestBadInputIsA400(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, &selfservice.Options{Scopes: []string{"s", "t"}}, keyshttp.Options{})
	id, token := e.create("alice", `{"name":"keep"}`)
	before := e.key(id)
	for _, c := range []struct{ name, body, field string }{
		{"expiry in the year 10000 in UTC", `{"expires_at":"9999-12-31T23:00:00-05:00"}`, "expires_at"},
		{"NUL in a scope", `{"scopes":["re\u0000ad"]}`, "scopes"},
		{"C1 control in a name", `{"name":"a\u0085b"}`, "name"},
		{"name too long", `{"name":"` + strings.Repeat("é", apikey.MaxNameLength/2+1) + `"}`, "name"},
		{"too many scopes", `{"scopes":[` + strings.Repeat(`"s",`, apikey.MaxScopes) + `"t"]}`, "scopes"},
		{"invalid UTF-8", "{\"name\":\"\xff\"}", "body"},
		{"two objects", `{"name":"a"}{"name":"b"}`, "body"},
	} {
		assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, c.body), 400, c.field, "PATCH: "+c.name)
		assertProblem(t, e.do("alice", "POST", "/api-keys", c.body), 400, c.field, "POST: "+c.name)
	}
	r := e.do("alice", "GET", "/api-keys/"+id, "")
	require.Equal(t, 200, r.status)
	assert.Equal(t, "keep", r.body["name"])
	assert.Equal(t, before.Revision, e.key(id).Revision, "nothing was written")
	list := e.do("alice", "GET", "/api-keys", "")
	assert.Len(t, list.body["keys"], 1, "no refused creation made a key")
	require.NoError(t, e.verify(token))
}

// TestRevokedStaysRevokedUnderConcurrentChanges races PATCH, pause and
// resume over HTTP against DELETE; once DELETE answered 204 the key never
// verifies again, whatever was patched or resumed before or after, and
// every change after the revocation is a 409.
func TestRevokedStaysRevokedUnderConcurrentChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, &selfservice.Options{Scopes: []string{"read"}}, keyshttp.Options{})
	for range 50 {
		id, token := e.create("alice", `{"ttl_seconds":60}`)
		var wg sync.WaitGroup
		bodies := []struct{ method, path, body string }{
			{"PATCH", "/api-keys/" + id, `{"expires_at":"2027-01-01T00:00:00Z","name":"revived?"}`},
			{"POST", "/api-keys/" + id + "/pause", ""},
			{"POST", "/api-keys/" + id + "/resume", ""},
			{"PATCH", "/api-keys/" + id, `{"scopes":["read"]}`},
		}
		statuses := make([]int, len(bodies))
		for i, b := range bodies {
			wg.Go(func() { statuses[i] = e.do("alice", b.method, b.path, b.body).status })
		}
		var revoked int
		wg.Go(func() { revoked = e.do("alice", "DELETE", "/api-keys/"+id, "").status })
		wg.Wait()
		require.Equal(t, 204, revoked)
		for i, s := range statuses {
			assert.Contains(t, []int{200, 409}, s, bodies[i])
		}
		for _, b := range bodies {
			assert.Equal(t, 409, e.do("alice", b.method, b.path, b.body).status, b)
		}
		assert.ErrorIs(t, e.verify(token), apikey.ErrRevoked)
		r := e.do("alice", "GET", "/api-keys/"+id, "")
		assert.NotNil(t, r.body["revoked_at"], r.raw)
	}
}
