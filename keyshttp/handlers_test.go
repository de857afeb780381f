package keyshttp_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/selfservice"
)

// An owner sends what only the operator may set, on create and on PATCH:
// each is a 403 naming the field, before the key is looked at (another
// owner's key, a revoked key and a suspended customer alike), and nothing
// is changed or recorded, not even the members he may set.
func TestOwnerMayNotSetWhatTheOperatorGrants(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, &selfservice.Options{Scopes: []string{"read"}}, keyshttp.Options{})
	ctx := context.Background()
	id, token := e.create("alice", `{"name":"ci","scopes":["read"]}`)
	// The operator's grants: credits and a limit of the key, credits of
	// the customer.
	_, err := e.m.Update(ctx, id, func(k *apikey.Key) error {
		k.Limits = []limits.Limit{limits.Credits("credits", 10, limits.Never)}
		return nil
	})
	require.NoError(t, err)
	e.customer("alice", func(c *apikey.Customer) { c.Credits = 100 })
	revoked, _ := e.create("alice", "")
	require.Equal(t, 204, e.do("alice", "DELETE", "/api-keys/"+revoked, "").status)
	bobs, _ := e.create("bob", "")
	before, beforeRevoked, beforeBob := e.key(id), e.key(revoked), e.key(bobs)
	events := e.events.count()

	for _, c := range []struct{ name, body, field string }{
		{"raise his credits", `{"credits":99999999999999}`, "credits"},
		{"remove the operator's credits", `{"credits":null}`, "credits"},
		{"choose a plan", `{"plan":"enterprise"}`, "plan"},
		{"clear his plan", `{"plan":null}`, "plan"},
		{"set limits", `{"limits":[{"name":"rps","kind":"rate","count":1000000}]}`, "limits"},
		{"set metadata", `{"metadata":{"tier":"gold"}}`, "metadata"},
		{"enable what the operator disabled", `{"disabled":false}`, "disabled"},
		{"unpause by PATCH", `{"paused":false}`, "paused"},
		{"unrevoke", `{"revoked_at":null}`, "revoked_at"},
		{"give the key away", `{"owner":"mallory"}`, "owner"},
		{"raise his ceiling", `{"scopes_ceiling":["admin"]}`, "scopes_ceiling"},
		{"lift the suspension", `{"suspended":false}`, "suspended"},
		{"raise the key cap", `{"max_keys":1000}`, "max_keys"},
		{"a member he may set beside one he may not", `{"name":"renamed","credits":5}`, "credits"},
		{"a wrong type does not hide the field", `{"plan":5}`, "plan"},
	} {
		for _, target := range []struct{ name, method, path string }{
			{"create", "POST", "/api-keys"},
			{"his key", "PATCH", "/api-keys/" + id},
			{"his revoked key", "PATCH", "/api-keys/" + revoked},
			{"another owner's key", "PATCH", "/api-keys/" + bobs},
		} {
			r := e.do("alice", target.method, target.path, c.body)
			assertProblem(t, r, 403, c.field, c.name+": "+target.name)
			assert.Contains(t, r.body["detail"], c.field, c.name)
		}
	}
	// Scopes beyond those granted.
	for _, body := range []string{`{"scopes":["admin"]}`, `{"scopes":["read","admin"]}`} {
		assertProblem(t, e.do("alice", "POST", "/api-keys", body), 403, "scopes", body)
		assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, body), 403, "scopes", body)
	}

	assert.Equal(t, before, e.key(id), "his key is unchanged")
	assert.Equal(t, beforeRevoked, e.key(revoked))
	assert.Equal(t, beforeBob, e.key(bobs))
	c, err := e.m.Customer(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, int64(100), c.Credits, "the customer's grant is unchanged")
	keys, err := e.m.List(ctx, "alice", apikey.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, keys, 2, "no refused creation made a key")
	assert.Equal(t, events, e.events.count(), "nothing was recorded")
	k, err := e.m.Verify(ctx, token)
	require.NoError(t, err)
	assert.Equal(t, []string{"read"}, k.Scopes)
}

// Scopes are those granted: the customer's ceiling when the operator set
// one, else the policy's Scopes, and none at all by default.
func TestScopesAreThoseGranted(t *testing.T) {
	t.Parallel()
	t.Run("nothing configured: no scope", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, false, nil, keyshttp.Options{})
		for _, scope := range []string{"admin", "read"} {
			assertProblem(t, e.do("alice", "POST", "/api-keys", `{"scopes":["`+scope+`"]}`), 403, "scopes", scope)
		}
		assert.Equal(t, 201, e.do("alice", "POST", "/api-keys", `{"scopes":[]}`).status)
	})
	t.Run("the customer's ceiling", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, false, &selfservice.Options{Scopes: []string{"read", "write"}}, keyshttp.Options{})
		e.customer("alice", func(c *apikey.Customer) { c.Scopes = []string{"read", "admin"} })
		id, _ := e.create("alice", `{"scopes":["read","admin"]}`)
		assertProblem(t, e.do("alice", "POST", "/api-keys", `{"scopes":["write"]}`), 403, "scopes", "outside the ceiling")
		assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, `{"scopes":["read","write"]}`), 403, "scopes")
		e.customer("alice", func(c *apikey.Customer) { c.Scopes = []string{} })
		assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, `{"scopes":["read"]}`), 403, "scopes", "an empty ceiling grants none")
		r := e.do("alice", "PATCH", "/api-keys/"+id, `{"scopes":[]}`)
		require.Equal(t, 200, r.status, r.raw)
		// Without a ceiling, the policy's scopes.
		id, _ = e.create("bob", `{"scopes":["write"]}`)
		assertProblem(t, e.do("bob", "PATCH", "/api-keys/"+id, `{"scopes":["admin"]}`), 403, "scopes")
	})
}

// With MaxKeys 10, the 11th key is a 409, under concurrency too; a
// revoked key frees its place and a rotation takes none.
func TestKeyCapIsA409(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil, keyshttp.Options{})
	e.customer("alice", func(c *apikey.Customer) { c.MaxKeys = 10 })
	var ids []string
	for range 10 {
		id, _ := e.create("alice", "")
		ids = append(ids, id)
	}
	r := e.do("alice", "POST", "/api-keys", "")
	assertProblem(t, r, 409, "", "the 11th key")
	require.Equal(t, 200, e.do("alice", "POST", "/api-keys/"+ids[0]+"/rotate", `{"grace_seconds":3600}`).status)
	assertProblem(t, e.do("alice", "POST", "/api-keys", ""), 409, "", "a rotation chain counts once")
	require.Equal(t, 204, e.do("alice", "DELETE", "/api-keys/"+ids[1], "").status)
	e.create("alice", "")
	assertProblem(t, e.do("alice", "POST", "/api-keys", ""), 409, "")
	keys, err := e.m.List(context.Background(), "alice", apikey.ListOptions{UsableAt: e.clock.Now()})
	require.NoError(t, err)
	assert.Len(t, keys, 11, "ten chains, one of them with a predecessor in grace")

	const callers = 20
	e.customer("carol", func(c *apikey.Customer) { c.MaxKeys = 3 })
	var created, refused atomic.Int32
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			switch e.do("carol", "POST", "/api-keys", "").status {
			case 201:
				created.Add(1)
			case 409:
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int32(3), created.Load())
	assert.Equal(t, int32(callers-3), refused.Load())
}

// An expired key is never revived, and no key outlives the policy's
// longest life: the expiry cannot be removed, nor moved past it.
func TestExpiredKeysStayExpired(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil, keyshttp.Options{})
	created := e.clock.Now()
	r := e.do("alice", "POST", "/api-keys", "")
	require.Equal(t, 201, r.status)
	assert.Equal(t, created.Add(366*24*time.Hour).Format(time.RFC3339), r.body["expires_at"], "a key always expires")
	live := r.body["id"].(string)
	id, token := e.create("alice", `{"ttl_seconds":60}`)
	e.clock.Add(2 * time.Minute)
	require.ErrorIs(t, e.verify(token), apikey.ErrExpired)
	before := e.key(id)
	events := e.events.count()
	for _, c := range []struct{ method, path, body string }{
		{"PATCH", "/api-keys/" + id, `{"expires_at":"2027-01-01T00:00:00Z"}`},
		{"PATCH", "/api-keys/" + id, `{"name":"still here"}`},
		{"POST", "/api-keys/" + id + "/pause", ""},
		{"POST", "/api-keys/" + id + "/resume", ""},
		{"POST", "/api-keys/" + id + "/rotate", `{"grace_seconds":3600}`},
	} {
		assertProblem(t, e.do("alice", c.method, c.path, c.body), 409, "", c.method+" "+c.path+" "+c.body)
	}
	assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, `{"expires_at":null}`), 400, "expires_at", "removing the expiry")
	assert.ErrorIs(t, e.verify(token), apikey.ErrExpired)
	assert.Equal(t, before, e.key(id))
	assert.Equal(t, events, e.events.count(), "nothing was recorded")

	// A live key: within the longest life from its creation, never past.
	limit := created.Add(366 * 24 * time.Hour)
	assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+live, `{"expires_at":null}`), 400, "expires_at")
	assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+live, `{"expires_at":"`+limit.Add(time.Second).Format(time.RFC3339)+`"}`), 400, "expires_at")
	r = e.do("alice", "PATCH", "/api-keys/"+live, `{"expires_at":"`+created.Add(30*24*time.Hour).Format(time.RFC3339)+`"}`)
	require.Equal(t, 200, r.status, r.raw)
	r = e.do("alice", "PATCH", "/api-keys/"+live, `{"expires_at":"`+limit.Format(time.RFC3339)+`"}`)
	require.Equal(t, 200, r.status, "extending within the longest life: %s", r.raw)
	assertProblem(t, e.do("alice", "POST", "/api-keys", `{"expires_in_days":367}`), 400, "expires_in_days")
}

// A key the operator disabled stays disabled: enable and resume are a 403
// naming disabled, and the owner's own pause is a state of its own.
func TestOperatorDisabledStaysDisabled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil, keyshttp.Options{})
	ctx := context.Background()
	id, token := e.create("alice", "")
	require.Equal(t, 200, e.do("alice", "POST", "/api-keys/"+id+"/pause", "").status)
	_, err := e.m.Disable(ctx, id)
	require.NoError(t, err)
	before := e.key(id)
	events := e.events.count()
	for _, action := range []string{"enable", "resume"} {
		r := e.do("alice", "POST", "/api-keys/"+id+"/"+action, "")
		assertProblem(t, r, 403, "disabled", action)
	}
	assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+id, `{"disabled":false}`), 403, "disabled")
	assert.Equal(t, before, e.key(id))
	assert.Equal(t, events, e.events.count(), "nothing was recorded")
	assert.ErrorIs(t, e.verify(token), apikey.ErrDisabled)

	// A rotation keeps it disabled.
	r := e.do("alice", "POST", "/api-keys/"+id+"/rotate", `{"grace_seconds":0}`)
	require.Equal(t, 200, r.status, r.raw)
	succ, succToken := r.body["id"].(string), r.body["key"].(string)
	assert.Equal(t, true, r.body["disabled"])
	assert.ErrorIs(t, e.verify(succToken), apikey.ErrDisabled)
	assertProblem(t, e.do("alice", "POST", "/api-keys/"+succ+"/enable", ""), 403, "disabled")

	// Once the operator enables it, the owner's pause is still his to lift.
	_, err = e.m.Enable(ctx, succ)
	require.NoError(t, err)
	r = e.do("alice", "GET", "/api-keys/"+succ, "")
	assert.Equal(t, true, r.body["paused"])
	r = e.do("alice", "POST", "/api-keys/"+succ+"/enable", "")
	require.Equal(t, 200, r.status, r.raw)
	assert.NoError(t, e.verify(succToken))
}

// A suspended customer may list and revoke his keys, nothing else.
func TestSuspendedCustomerMayOnlyListAndRevoke(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil, keyshttp.Options{})
	a, ta := e.create("alice", "")
	b, tb := e.create("alice", "")
	r := e.do("alice", "POST", "/api-keys/"+b+"/rotate", `{"grace_seconds":3600}`)
	require.Equal(t, 200, r.status)
	succ, tsucc := r.body["id"].(string), r.body["key"].(string)
	c, _ := e.create("alice", "")
	require.Equal(t, 200, e.do("alice", "POST", "/api-keys/"+c+"/pause", "").status)
	e.customer("alice", func(c *apikey.Customer) { c.Suspended = true })
	for _, tok := range []string{ta, tb, tsucc} {
		assert.ErrorIs(t, e.verify(tok), apikey.ErrSuspended)
	}
	before := map[string]*apikey.Key{a: e.key(a), c: e.key(c)}
	events := e.events.count()
	for _, req := range []struct{ method, path, body string }{
		{"POST", "/api-keys", ""},
		{"PATCH", "/api-keys/" + a, `{"name":"x"}`},
		{"PATCH", "/api-keys/" + a, ""},
		{"POST", "/api-keys/" + a + "/rotate", ""},
		{"POST", "/api-keys/" + a + "/pause", ""},
		{"POST", "/api-keys/" + a + "/disable", ""},
		{"POST", "/api-keys/" + c + "/resume", ""},
		{"POST", "/api-keys/" + c + "/enable", ""},
	} {
		r := e.do("alice", req.method, req.path, req.body)
		assertProblem(t, r, 403, "", req.method+" "+req.path)
		assert.Contains(t, r.body["detail"], "suspended")
		assert.Nil(t, r.body["field"])
	}
	assertProblem(t, e.do("alice", "PATCH", "/api-keys/"+a, `{"plan":"pro"}`), 403, "plan", "a forbidden field is named first")
	assert.Equal(t, before[a], e.key(a))
	assert.Equal(t, before[c], e.key(c))
	assert.Equal(t, events, e.events.count(), "nothing was recorded")

	r = e.do("alice", "GET", "/api-keys", "")
	require.Equal(t, 200, r.status)
	assert.Len(t, r.body["keys"], 4)
	require.Equal(t, 200, e.do("alice", "GET", "/api-keys/"+a, "").status)
	require.Equal(t, 204, e.do("alice", "DELETE", "/api-keys/"+a, "").status)
	require.Equal(t, 204, e.do("alice", "POST", "/api-keys/"+b+"/revoke-chain", "").status)
	e.customer("alice", func(c *apikey.Customer) { c.Suspended = false })
	for _, tok := range []string{ta, tb, tsucc} {
		assert.ErrorIs(t, e.verify(tok), apikey.ErrRevoked, "revoked while suspended")
	}
	assert.False(t, e.key(succ).RevokedAt.IsZero())
}

// However often an owner rotates, and however many rotations of one key
// race, at most one predecessor works beside the newest key.
func TestRotationsLeaveOnePredecessorWorking(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil, keyshttp.Options{})
	head, token := e.create("alice", "")
	tokens := []string{token}
	for range 15 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var won []map[string]any
		for range 4 {
			wg.Go(func() {
				r := e.do("alice", "POST", "/api-keys/"+head+"/rotate", `{"grace_seconds":86400}`)
				if r.status == 200 {
					mu.Lock()
					won = append(won, r.body)
					mu.Unlock()
				} else {
					assert.Equal(t, 409, r.status, r.raw)
				}
			})
		}
		wg.Wait()
		require.Len(t, won, 1, "exactly one rotation of a key wins")
		head = won[0]["id"].(string)
		tokens = append(tokens, won[0]["key"].(string))
		var working []int
		for i, tok := range tokens {
			if e.verify(tok) == nil {
				working = append(working, i)
			}
		}
		assert.Equal(t, []int{len(tokens) - 2, len(tokens) - 1}, working, "the newest key and its predecessor only")
		e.clock.Add(time.Minute)
	}
}

// revoke-chain revokes every key of a rotation chain, from any of them.
func TestRevokeChainRevokesTheWholeChain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil, keyshttp.Options{})
	first, t1 := e.create("alice", "")
	r := e.do("alice", "POST", "/api-keys/"+first+"/rotate", `{"grace_seconds":3600}`)
	require.Equal(t, 200, r.status)
	second, t2 := r.body["id"].(string), r.body["key"].(string)
	r = e.do("alice", "POST", "/api-keys/"+second+"/rotate", `{"grace_seconds":3600}`)
	require.Equal(t, 200, r.status)
	third, t3 := r.body["id"].(string), r.body["key"].(string)
	_, other := e.create("alice", "")
	require.ErrorIs(t, e.verify(t1), apikey.ErrExpired, "one predecessor in grace at most")
	for _, tok := range []string{t2, t3} {
		require.NoError(t, e.verify(tok))
	}
	assertProblem(t, e.do("bob", "POST", "/api-keys/"+second+"/revoke-chain", ""), 404, "")
	require.NoError(t, e.verify(t3), "another owner revokes nothing")
	assert.Equal(t, 204, e.do("alice", "POST", "/api-keys/"+second+"/revoke-chain", "").status)
	for _, tok := range []string{t1, t2, t3} {
		assert.ErrorIs(t, e.verify(tok), apikey.ErrRevoked)
	}
	for _, id := range []string{first, second, third} {
		assert.False(t, e.key(id).RevokedAt.IsZero(), id)
	}
	require.NoError(t, e.verify(other), "a key outside the chain keeps working")
	assert.Equal(t, 204, e.do("alice", "POST", "/api-keys/"+first+"/revoke-chain", "").status, "again: nothing left to revoke")
}

// Every change to a revoked key is a 409 and records nothing; revoking it
// again is a 204 that records nothing either.
func TestChangesToARevokedKeyAreConflicts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil, keyshttp.Options{})
	id, token := e.create("alice", "")
	require.Equal(t, 204, e.do("alice", "DELETE", "/api-keys/"+id, "").status)
	before := e.key(id)
	events := e.events.count()
	for _, req := range []struct{ method, path, body string }{
		{"POST", "/api-keys/" + id + "/rotate", ""},
		{"POST", "/api-keys/" + id + "/pause", ""},
		{"POST", "/api-keys/" + id + "/resume", ""},
		{"POST", "/api-keys/" + id + "/disable", ""},
		{"POST", "/api-keys/" + id + "/enable", ""},
		{"PATCH", "/api-keys/" + id, `{"name":"revived?"}`},
		{"PATCH", "/api-keys/" + id, `{"expires_at":"2027-01-01T00:00:00Z"}`},
		{"PATCH", "/api-keys/" + id, ""},
	} {
		r := e.do("alice", req.method, req.path, req.body)
		assertProblem(t, r, 409, "", req.method+" "+req.path+" "+req.body)
		assert.Contains(t, r.body["detail"], "revoked")
	}
	assert.Equal(t, 204, e.do("alice", "DELETE", "/api-keys/"+id, "").status)
	assert.Equal(t, before, e.key(id))
	assert.Equal(t, events, e.events.count(), "nothing was recorded")
	assert.ErrorIs(t, e.verify(token), apikey.ErrRevoked)
}

// A request that changes nothing writes nothing and records nothing.
func TestNoChangeRecordsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil, keyshttp.Options{})
	id, _ := e.create("alice", `{"name":"same"}`)
	require.Equal(t, 200, e.do("alice", "POST", "/api-keys/"+id+"/pause", "").status)
	before := e.key(id)
	events := e.events.count()
	for _, req := range []struct{ method, path, body string }{
		{"POST", "/api-keys/" + id + "/pause", ""},
		{"POST", "/api-keys/" + id + "/disable", ""},
		{"PATCH", "/api-keys/" + id, `{"name":"same"}`},
		{"PATCH", "/api-keys/" + id, `{}`},
		{"PATCH", "/api-keys/" + id, `{"expires_at":"` + before.ExpiresAt.Format(time.RFC3339Nano) + `"}`},
	} {
		r := e.do("alice", req.method, req.path, req.body)
		require.Equal(t, 200, r.status, req.path+" "+req.body+": "+r.raw)
	}
	assert.Equal(t, before, e.key(id))
	assert.Equal(t, events, e.events.count())
	require.Equal(t, 200, e.do("alice", "POST", "/api-keys/"+id+"/resume", "").status)
	require.Equal(t, 200, e.do("alice", "POST", "/api-keys/"+id+"/resume", "").status)
	assert.Equal(t, events+1, e.events.count(), "one resume, recorded once")
}

// The list is newest first and its cursor is stable: keys created while
// a client pages neither repeat nor hide the others; usable=true leaves
// out revoked and expired keys.
func TestListIsNewestFirstWithAStableCursor(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, nil, keyshttp.Options{})
	var want []string
	for i := range 9 {
		id, _ := e.create("alice", "")
		want = append(want, id)
		if i%3 != 0 { // some keys share a creation time
			e.clock.Add(time.Second)
		}
	}
	keys, err := e.m.List(context.Background(), "alice", apikey.ListOptions{})
	require.NoError(t, err)
	want = want[:0]
	for _, k := range keys {
		want = append(want, k.ID)
	}
	var got []string
	path := "/api-keys?limit=2"
	for {
		r := e.do("alice", "GET", path, "")
		require.Equal(t, 200, r.status, r.raw)
		for _, k := range r.body["keys"].([]any) {
			got = append(got, k.(map[string]any)["id"].(string))
		}
		e.create("alice", "") // newer than the cursor: never on a later page
		e.clock.Add(time.Second)
		if r.body["next"] == nil {
			break
		}
		path = "/api-keys?limit=2&after=" + r.body["next"].(string)
	}
	assert.Equal(t, want, got)
	for i := 1; i < len(keys); i++ {
		assert.False(t, keys[i].CreatedAt.After(keys[i-1].CreatedAt), "newest first")
	}

	revoked, expired := want[0], want[1]
	require.Equal(t, 204, e.do("alice", "DELETE", "/api-keys/"+revoked, "").status)
	_, err = e.m.Update(context.Background(), expired, func(k *apikey.Key) error {
		k.ExpiresAt = e.clock.Now().Add(time.Second)
		return nil
	})
	require.NoError(t, err)
	e.clock.Add(2 * time.Second)
	ids := func(query string) []string {
		r := e.do("alice", "GET", "/api-keys?limit=1000"+query, "")
		require.Equal(t, 200, r.status)
		var out []string
		for _, k := range r.body["keys"].([]any) {
			out = append(out, k.(map[string]any)["id"].(string))
		}
		return out
	}
	all, usable := ids(""), ids("&usable=true")
	assert.Equal(t, slices.DeleteFunc(slices.Clone(all), func(id string) bool { return id == revoked || id == expired }), usable)
	assert.Contains(t, all, revoked)
	assert.Contains(t, all, expired)
}
