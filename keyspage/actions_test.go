package keyspage_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyspage"
)

// A form post carrying a field the page does not offer (what only the
// operator sets) is refused with 403 naming the field, whatever else it
// carries, and changes nothing.
func TestFieldsThePageDoesNotOfferAre403(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Original", TTL: time.Hour})
	before := f.get(t, k.ID)
	for _, field := range []struct{ name, value string }{
		{"plan", "enterprise"}, {"credits", "99999999999999"}, {"limits", "rps=1000000"}, {"metadata", "tier=gold"},
		{"disabled", "false"}, {"owner", "mallory"}, {"scopes_ceiling", "admin"}, {"expires_at", ""},
	} {
		for action, form := range map[string]url.Values{
			"create": createForm("New"), "rename": {"id": {k.ID}, "name": {"Changed"}},
			"rotate": {"id": {k.ID}, "grace": {"0"}}, "pause": {"id": {k.ID}}, "resume": {"id": {k.ID}},
			"revoke": {"id": {k.ID}, "confirm": {"yes"}}, "revoke-chain": {"id": {k.ID}, "confirm": {"yes"}},
		} {
			form.Set(field.name, field.value)
			res := f.do(t, http.MethodPost, "/keys/"+action, "alice", form, nil)
			assert.Equal(t, http.StatusForbidden, res.status, "%s with %s", action, field.name)
			assert.Contains(t, res.body, "You may not set "+field.name+":", action)
		}
	}
	assert.Equal(t, before, f.get(t, k.ID), "nothing changed")
	assert.Len(t, f.keys(t, "alice"), 1, "no key was created")
}

// With MaxKeys 10, /keys/create makes 10 keys and refuses the 11th with
// 409, under concurrent posts too.
func TestKeyCapIsA409(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	f.customer(t, "alice", func(c *apikey.Customer) { c.MaxKeys = 10 })
	for i := range 10 {
		res := f.do(t, http.MethodPost, "/keys/create", "alice", createForm("key"), nil)
		require.Equal(t, http.StatusCreated, res.status, "key %d: %s", i+1, res.body)
	}
	res := f.do(t, http.MethodPost, "/keys/create", "alice", createForm("one too many"), nil)
	assert.Equal(t, http.StatusConflict, res.status)
	assert.Contains(t, res.body, "You have the most keys allowed")
	assert.NotContains(t, res.body, `id="token"`)
	assert.Len(t, f.keys(t, "alice"), 10)

	f.customer(t, "carol", func(c *apikey.Customer) { c.MaxKeys = 3 })
	var created, refused atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			switch f.do(t, http.MethodPost, "/keys/create", "carol", createForm("race"), nil).status {
			case http.StatusCreated:
				created.Add(1)
			case http.StatusConflict:
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int32(3), created.Load())
	assert.Equal(t, int32(17), refused.Load())
}

// The create form offers the scopes granted to the user, and a scope
// outside them is refused with 403.
func TestScopesAreThoseGranted(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	f.customer(t, "alice", func(c *apikey.Customer) { c.Scopes = []string{"read", "admin"} })
	page := f.do(t, http.MethodGet, "/keys/", "alice", nil, nil)
	assert.Contains(t, page.body, `value="admin"`)
	assert.NotContains(t, page.body, `value="write"`, "the customer's ceiling, not the policy's scopes")
	assert.Contains(t, f.do(t, http.MethodGet, "/keys/", "bob", nil, nil).body, `value="write"`, "without a ceiling, the policy's")

	form := createForm("x")
	form["scope"] = []string{"write"}
	res := f.do(t, http.MethodPost, "/keys/create", "alice", form, nil)
	assert.Equal(t, http.StatusForbidden, res.status)
	assert.Contains(t, res.body, "You may not set scopes: a scope outside those granted to the account.")
	form["scope"] = []string{"admin"}
	assert.Equal(t, http.StatusCreated, f.do(t, http.MethodPost, "/keys/create", "alice", form, nil).status)
	assert.Equal(t, http.StatusForbidden, f.do(t, http.MethodPost, "/keys/create", "bob", form, nil).status)
}

// A suspended customer sees his keys and may revoke them, one or a chain
// at a time; every other form is refused with 403 and changes nothing.
func TestSuspendedCustomerMayOnlyListAndRevoke(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	ctx := context.Background()
	_, a := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "A"})
	_, b := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "B"})
	_, err := f.m.Pause(ctx, b.ID)
	require.NoError(t, err)
	_, c := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "C"})
	rot, err := f.m.Rotate(ctx, c.ID, time.Hour)
	require.NoError(t, err)
	f.customer(t, "alice", func(c *apikey.Customer) { c.Suspended = true })
	before := map[string]*apikey.Key{a.ID: f.get(t, a.ID), b.ID: f.get(t, b.ID)}

	page := f.do(t, http.MethodGet, "/keys/", "alice", nil, nil)
	require.Equal(t, http.StatusOK, page.status)
	assert.Contains(t, page.body, "Your account is suspended")
	assert.NotContains(t, page.body, `action="create"`)
	for _, action := range []string{"rename", "rotate", "pause", "resume"} {
		assert.NotContains(t, page.body, `action="`+action+`"`)
	}
	assert.Contains(t, page.body, `action="revoke"`)
	assert.Contains(t, page.body, `action="revoke-chain"`)

	for action, form := range map[string]url.Values{
		"create": createForm("New"), "rename": {"id": {a.ID}, "name": {"Changed"}},
		"rotate": {"id": {a.ID}, "grace": {"0"}}, "pause": {"id": {a.ID}}, "resume": {"id": {b.ID}},
	} {
		res := f.do(t, http.MethodPost, "/keys/"+action, "alice", form, nil)
		assert.Equal(t, http.StatusForbidden, res.status, action)
		assert.Contains(t, res.body, "Your account is suspended: you may revoke your keys, nothing else.", action)
	}
	assert.Equal(t, before[a.ID], f.get(t, a.ID))
	assert.Equal(t, before[b.ID], f.get(t, b.ID))
	assert.Len(t, f.keys(t, "alice"), 4)

	res := f.do(t, http.MethodPost, "/keys/revoke", "alice", url.Values{"id": {a.ID}, "confirm": {"yes"}}, nil)
	assert.Equal(t, http.StatusSeeOther, res.status, res.body)
	res = f.do(t, http.MethodPost, "/keys/revoke-chain", "alice", url.Values{"id": {rot.Key.ID}, "confirm": {"yes"}}, nil)
	assert.Equal(t, http.StatusSeeOther, res.status, res.body)
	for _, id := range []string{a.ID, c.ID, rot.Key.ID} {
		assert.False(t, f.get(t, id).RevokedAt.IsZero(), id)
	}
}

// An expired key cannot be renamed, rotated, paused or resumed: it stays
// expired.
func TestExpiredKeysStayExpired(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{Graces: []time.Duration{time.Hour}})
	token, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Short", TTL: time.Minute})
	f.clock.Add(2 * time.Minute)
	before := f.get(t, k.ID)
	for action, form := range map[string]url.Values{
		"rename": {"id": {k.ID}, "name": {"Changed"}}, "rotate": {"id": {k.ID}, "grace": {"3600"}},
		"pause": {"id": {k.ID}}, "resume": {"id": {k.ID}},
	} {
		res := f.do(t, http.MethodPost, "/keys/"+action, "alice", form, nil)
		assert.Equal(t, http.StatusConflict, res.status, action)
	}
	assert.Equal(t, before, f.get(t, k.ID))
	_, err := f.m.Verify(context.Background(), token)
	assert.ErrorIs(t, err, apikey.ErrExpired)
	assert.NotContains(t, f.do(t, http.MethodGet, "/keys/", "alice", nil, nil).body, k.ID, "hidden by default")
}

// However often the page rotates a key, only the newest key and one
// predecessor work.
func TestRotationsLeaveOnePredecessorWorking(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{Graces: []time.Duration{time.Hour}})
	token, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Chain"})
	tokens, id := []string{token}, k.ID
	for range 8 {
		res := f.do(t, http.MethodPost, "/keys/rotate", "alice", url.Values{"id": {id}, "grace": {"3600"}}, nil)
		require.Equal(t, http.StatusOK, res.status, res.body)
		got := tokenRE.FindStringSubmatch(res.body)
		require.NotNil(t, got)
		tokens = append(tokens, got[1])
		succ, err := f.m.Verify(context.Background(), got[1])
		require.NoError(t, err)
		id = succ.ID
		var working []int
		for i, tok := range tokens {
			if _, err := f.m.Verify(context.Background(), tok); err == nil {
				working = append(working, i)
			}
		}
		assert.Equal(t, []int{len(tokens) - 2, len(tokens) - 1}, working)
		f.clock.Add(time.Minute)
	}
}

// Revoke chain asks first, then revokes every key of the chain.
func TestRevokeChain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	ctx := context.Background()
	_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Leaked"})
	r1, err := f.m.Rotate(ctx, k.ID, time.Hour)
	require.NoError(t, err)
	r2, err := f.m.Rotate(ctx, r1.Key.ID, time.Hour)
	require.NoError(t, err)
	_, other := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Other"})

	res := f.do(t, http.MethodGet, "/keys/revoke-chain?id="+r1.Key.ID, "alice", nil, nil)
	require.Equal(t, http.StatusOK, res.status)
	assert.Contains(t, res.body, "Revoke “Leaked” and its whole rotation chain?")
	assert.Regexp(t, regexp.MustCompile(`<form method="post" action="revoke-chain"`), res.body)
	res = f.do(t, http.MethodPost, "/keys/revoke-chain", "alice", url.Values{"id": {r1.Key.ID}}, nil)
	require.Equal(t, http.StatusOK, res.status, "without confirm=yes it asks")
	assert.True(t, f.get(t, r1.Key.ID).RevokedAt.IsZero())
	assert.Equal(t, http.StatusNotFound, f.do(t, http.MethodPost, "/keys/revoke-chain", "bob", url.Values{"id": {r1.Key.ID}, "confirm": {"yes"}}, nil).status)

	res = f.do(t, http.MethodPost, "/keys/revoke-chain", "alice", url.Values{"id": {r1.Key.ID}, "confirm": {"yes"}}, nil)
	require.Equal(t, http.StatusSeeOther, res.status)
	assert.Equal(t, "./?done=chain-revoked", res.header.Get("Location"))
	for _, id := range []string{k.ID, r1.Key.ID, r2.Key.ID} {
		assert.False(t, f.get(t, id).RevokedAt.IsZero(), id)
	}
	assert.True(t, f.get(t, other.ID).RevokedAt.IsZero())
	assert.True(t, strings.Contains(f.do(t, http.MethodGet, "/keys/?done=chain-revoked", "alice", nil, nil).body, "every key of its rotation chain"))
}
