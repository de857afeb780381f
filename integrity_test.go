package apikey_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// TestTestKeyNeverVerifiesAsLive is the regression test of defect 1
// (cross-prefix forgery): a token issued under sk_test, recomposed with
// sk_live's checksum, is refused by a Manager accepting both prefixes and
// by a live-only Manager over the same store and pepper.
func TestTestKeyNeverVerifiesAsLive(t *testing.T) {
	store := memstore.New()
	both := newManager(t, store, apikey.Options{Prefix: "sk_live", Prefixes: []string{"sk_test"}})
	liveOnly := newManager(t, store, apikey.Options{Prefix: "sk_live"})
	ctx := context.Background()

	testToken, testKey, err := both.Issue(ctx, apikey.IssueParams{Owner: "alice", Prefix: "sk_test"})
	require.NoError(t, err)
	assert.Equal(t, "sk_test", testKey.Prefix)
	liveToken, liveKey, err := both.Issue(ctx, apikey.IssueParams{Owner: "alice"})
	require.NoError(t, err)
	assert.Equal(t, "sk_live", liveKey.Prefix, "Issue defaults to Options.Prefix")

	parsed, err := both.Format().Parse(testToken)
	require.NoError(t, err)
	assert.Equal(t, "sk_test", parsed.Prefix, "Parse reports the prefix")
	live, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	forged, err := live.Compose(parsed.ID, parsed.Secret)
	require.NoError(t, err)
	_, err = live.Parse(forged)
	require.NoError(t, err, "the forged token is well-formed")

	for name, m := range map[string]*apikey.Manager{"BothPrefixes": both, "LiveOnly": liveOnly} {
		t.Run(name, func(t *testing.T) {
			for range 2 { // the second time from the cache
				_, err := m.Verify(ctx, forged)
				assert.ErrorIs(t, err, apikey.ErrInvalid, "a test key verified as live")
			}
			k, err := m.Verify(ctx, liveToken)
			require.NoError(t, err)
			assert.Equal(t, "sk_live", k.Prefix, "handlers see the prefix to route test traffic")
		})
	}
	k, err := both.Verify(ctx, testToken)
	require.NoError(t, err, "the test key works under its own prefix")
	assert.Equal(t, "sk_test", k.Prefix)
	_, err = liveOnly.Verify(ctx, testToken)
	assert.ErrorIs(t, err, apikey.ErrMalformed, "a live-only Manager does not parse test tokens")

	_, _, err = both.Issue(ctx, apikey.IssueParams{Prefix: "sk_other"})
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions, "an unknown prefix")

	rot, err := both.Rotate(ctx, testKey.ID, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, "sk_test", rot.Key.Prefix, "a test key rotates into a test key")
	_, err = both.Verify(ctx, rot.Token)
	require.NoError(t, err)
}

func TestPrefixesValidate(t *testing.T) {
	for name, prefixes := range map[string][]string{
		"Duplicate":      {"sk_live"},
		"BadCharacter":   {"sk-test"},
		"TwiceInTheList": {"sk_test", "sk_test"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_live", Prefixes: prefixes})
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
		})
	}
}

func TestDisableEnable(t *testing.T) {
	var mu sync.Mutex
	var events []apikey.Event
	m := newManager(t, memstore.New(), apikey.Options{OnEvent: func(_ context.Context, e apikey.Event) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}})
	ctx := context.Background()
	token, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
	unknown, _ := m.Format().New()

	d, err := m.Disable(ctx, k.ID)
	require.NoError(t, err)
	assert.True(t, d.Disabled)
	_, err = m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrDisabled, "distinguishable in Go")
	assert.NotErrorIs(t, err, apikey.ErrInvalid)
	mu.Lock()
	last := events[len(events)-1]
	mu.Unlock()
	assert.Equal(t, apikey.EventVerify, last.Type)
	assert.ErrorIs(t, last.Err, apikey.ErrDisabled, "events carry it")

	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	answer := func(token string) *httptest.ResponseRecorder {
		var ran bool
		rec := httptest.NewRecorder()
		mw.Handler(okHandler(&ran)).ServeHTTP(rec, bearer(token))
		require.False(t, ran)
		return rec
	}
	disabled, invalid := answer(token), answer(unknown)
	assert.Equal(t, 401, disabled.Code)
	assert.Equal(t, invalid.Header(), disabled.Header(), "byte-identical to an invalid key")
	assert.Equal(t, invalid.Body.String(), disabled.Body.String(), "byte-identical to an invalid key")

	e, err := m.Enable(ctx, k.ID)
	require.NoError(t, err)
	assert.False(t, e.Disabled)
	_, err = m.Verify(ctx, token)
	require.NoError(t, err, "Enable restores the key")

	require.NoError(t, m.Revoke(ctx, k.ID))
	_, err = m.Enable(ctx, k.ID)
	require.NoError(t, err)
	_, err = m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrRevoked, "revocation stays permanent")

	var types []apikey.EventType
	mu.Lock()
	for _, e := range events {
		if e.Type != apikey.EventVerify {
			types = append(types, e.Type)
		}
	}
	mu.Unlock()
	assert.Equal(t, []apikey.EventType{"issue", "disable", "enable", "revoke", "enable"}, types)

	_, err = m.Disable(ctx, apikey.NewID())
	assert.ErrorIs(t, err, apikey.ErrNotFound)
}

// TestUpdateNeverRevives is the regression test of defect 4: admin A
// loads a key, admin B revokes it, A saves a plan upgrade. Through the
// Store the stale write is refused; through Manager.Update the change is
// made on the fresh record, and the key stays revoked.
func TestUpdateNeverRevives(t *testing.T) {
	store := memstore.New()
	m := newManager(t, store, apikey.Options{})
	ctx := context.Background()
	token, k := issue(t, m, apikey.IssueParams{Owner: "alice", Plan: "free"})

	loadedByA, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	require.NoError(t, m.Revoke(ctx, k.ID)) // admin B
	loadedByA.Plan = "pro"
	err = store.Update(ctx, loadedByA)
	assert.ErrorIs(t, err, apikey.ErrConflict, "a write based on a stale read is refused")
	_, err = m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrRevoked)

	calls := 0
	got, err := m.Update(ctx, k.ID, func(k *apikey.Key) error {
		calls++
		k.Plan = "pro"
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, 1, calls)
	assert.Equal(t, "pro", got.Plan)
	assert.False(t, got.RevokedAt.IsZero(), "a revoked key can be updated and stays revoked")
	_, err = m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrRevoked)
}

func TestUpdate(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now, Plans: apikey.Plans{
		"free": {apikey.Quota("daily", 100, apikey.Day)}, "pro": {apikey.Quota("daily", 10_000, apikey.Day)},
	}})
	token, k := issue(t, m, apikey.IssueParams{Owner: "alice", Name: "ci", Plan: "free", Scopes: []string{"read"}})
	_, err := m.Verify(ctx, token) // cached
	require.NoError(t, err)

	expires := c.Now().Add(48 * time.Hour)
	got, err := m.Update(ctx, k.ID, func(k *apikey.Key) error {
		k.Name, k.Plan, k.Scopes = "deploy", "pro", []string{"read", "write"}
		k.Metadata = map[string]string{"team": "core"}
		k.ExpiresAt = expires
		k.Limits = []apikey.Limit{apikey.Rate("burst", 5, time.Second, 0)}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, "deploy", got.Name)
	assert.Equal(t, int64(2), got.Revision)
	v, err := m.Verify(ctx, token)
	require.NoError(t, err)
	assert.Equal(t, "pro", v.Plan, "Update drops the cache entry")
	assert.Equal(t, []string{"read", "write"}, v.Scopes)
	assert.True(t, expires.Equal(v.ExpiresAt))

	for name, change := range map[string]func(*apikey.Key){
		"ID":        func(k *apikey.Key) { k.ID = apikey.NewID() },
		"Owner":     func(k *apikey.Key) { k.Owner = "mallory" },
		"Prefix":    func(k *apikey.Key) { k.Prefix = "sk_live" },
		"Hash":      func(k *apikey.Key) { k.Hash = []byte("x") },
		"RevokedAt": func(k *apikey.Key) { k.RevokedAt = time.Time{}.Add(time.Hour) },
		"CreatedAt": func(k *apikey.Key) { k.CreatedAt = k.CreatedAt.Add(time.Hour) },
		"RotatedTo": func(k *apikey.Key) { k.RotatedTo = apikey.NewID() },
		"Lineage":   func(k *apikey.Key) { k.Lineage = apikey.NewID() },
		"Disabled":  func(k *apikey.Key) { k.Disabled = true },
		"Revision":  func(k *apikey.Key) { k.Revision = 99 },
		"NUL":       func(k *apikey.Key) { k.Name = "a\x00b" },
		"Plan":      func(k *apikey.Key) { k.Plan = "enterprise" },
		"Scope":     func(k *apikey.Key) { k.Scopes = []string{"a b"} },
		"Metadata":  func(k *apikey.Key) { k.Metadata = map[string]string{"k": "\x1b[31m"} },
		"Limit":     func(k *apikey.Key) { k.Limits = []apikey.Limit{{Name: "x"}} },
	} {
		t.Run("Refuses"+name, func(t *testing.T) {
			_, err := m.Update(ctx, k.ID, func(k *apikey.Key) error { change(k); return nil })
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
			stored, err := m.Get(ctx, k.ID)
			require.NoError(t, err)
			assert.Equal(t, int64(2), stored.Revision, "nothing was written")
		})
	}
	t.Run("ChangeError", func(t *testing.T) {
		mine := errors.New("mine")
		_, err := m.Update(ctx, k.ID, func(*apikey.Key) error { return mine })
		assert.Same(t, mine, err)
	})
	t.Run("Unknown", func(t *testing.T) {
		_, err := m.Update(ctx, apikey.NewID(), func(*apikey.Key) error { return nil })
		assert.ErrorIs(t, err, apikey.ErrNotFound)
	})
}

// conflictingStore makes the first n conditional Updates lose a race: a
// concurrent writer changes the key just before them.
type conflictingStore struct {
	*memstore.Store
	mu    sync.Mutex
	races int
}

func (s *conflictingStore) Update(ctx context.Context, k *apikey.Key) error {
	s.mu.Lock()
	race := s.races > 0
	s.races--
	s.mu.Unlock()
	if race {
		other, err := s.Store.Get(ctx, k.ID)
		if err != nil {
			return err
		}
		other.Metadata = map[string]string{"other": "writer"}
		if err := s.Store.Update(ctx, other); err != nil {
			return err
		}
	}
	return s.Store.Update(ctx, k)
}

func TestUpdateRetriesOnConflict(t *testing.T) {
	store := &conflictingStore{Store: memstore.New()}
	m := newManager(t, store, apikey.Options{})
	ctx := context.Background()
	_, k := issue(t, m, apikey.IssueParams{Owner: "alice"})

	store.races = 3
	calls := 0
	got, err := m.Update(ctx, k.ID, func(k *apikey.Key) error { calls++; k.Name = "renamed"; return nil })
	require.NoError(t, err)
	assert.Equal(t, 4, calls, "change runs again on the fresh record")
	assert.Equal(t, "renamed", got.Name)
	assert.Equal(t, "writer", got.Metadata["other"], "the concurrent write is kept")

	store.races = 1000
	_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.Name = "never"; return nil })
	assert.ErrorIs(t, err, apikey.ErrConflict, "a bounded number of attempts")
}
