package apikey_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memstore"
)

// TestTestKeyNeverVerifiesAsLive is the regression test of defect 1
// (cross-prefix forgery): a token issued under sk_test, recomposed with
// sk_live's checksum, is refused by a Manager accepting both prefixes and
// by a live-only Manager over the same store and pepper.
func TestTestKeyNeverVerifiesAsLive(t *testing.T) {
	t.Parallel()
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
	assertInputError(t, err, "prefix", "an unknown prefix")

	rot, err := both.Rotate(ctx, testKey.ID, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, "sk_test", rot.Key.Prefix, "a test key rotates into a test key")
	_, err = both.Verify(ctx, rot.Token)
	require.NoError(t, err)
}

func TestPrefixesValidate(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
	log := &eventLog{}
	m := newManager(t, memstore.New(), apikey.Options{Logger: slog.New(log)})
	ctx := context.Background()
	token, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
	unknown, _ := m.Format().New()

	d, err := m.Disable(ctx, k.ID)
	require.NoError(t, err)
	assert.True(t, d.Disabled)
	_, err = m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrDisabled, "distinguishable in Go")
	assert.NotErrorIs(t, err, apikey.ErrInvalid)
	events := log.take()
	last := events[len(events)-1]
	assert.Equal(t, "verify", last.Type)
	assert.Equal(t, apikey.ErrDisabled.Error(), last.Outcome, "events carry it")

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
	assert.ErrorIs(t, err, apikey.ErrRevoked, "nothing changes a revoked key")
	_, err = m.Disable(ctx, k.ID)
	assert.ErrorIs(t, err, apikey.ErrRevoked)
	_, err = m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrRevoked, "revocation stays permanent")

	events = append(events, log.take()...)
	assert.Equal(t, []string{"issue", "disable", "enable", "revoke"}, types(events, false), "a refused change is not recorded")

	_, err = m.Disable(ctx, apikey.NewID())
	assert.ErrorIs(t, err, apikey.ErrNotFound)
}

// TestUpdateNeverRevives is the regression test of defect 4: admin A
// loads a key, admin B revokes it, A saves a plan upgrade. Through the
// Store the stale write is refused; through Manager.Update the fresh
// record is read, and nothing changes a revoked key: ErrRevoked, change
// never runs, nothing is written and the key stays revoked.
func TestUpdateNeverRevives(t *testing.T) {
	t.Parallel()
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

	revoked, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	calls := 0
	got, err := m.Update(ctx, k.ID, func(k *apikey.Key) error {
		calls++
		k.Plan = "pro"
		return nil
	})
	assert.ErrorIs(t, err, apikey.ErrRevoked)
	assert.Nil(t, got)
	assert.Zero(t, calls, "change ran on a revoked key")
	stored, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	assert.Equal(t, revoked.Revision, stored.Revision, "nothing was written")
	assert.Equal(t, "free", stored.Plan)
	assert.False(t, stored.RevokedAt.IsZero())
	_, err = m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrRevoked)
}

func TestUpdate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now, Plans: limits.Plans{
		"free": {limits.Quota("daily", 100, limits.Day)}, "pro": {limits.Quota("daily", 10_000, limits.Day)},
	}})
	token, k := issue(t, m, apikey.IssueParams{Owner: "alice", Name: "ci", Plan: "free", Scopes: []string{"read"}})
	_, err := m.Verify(ctx, token) // cached
	require.NoError(t, err)

	expires := c.Now().Add(48 * time.Hour)
	got, err := m.Update(ctx, k.ID, func(k *apikey.Key) error {
		k.Name, k.Scopes = "deploy", []string{"read", "write"}
		k.Metadata = map[string]string{"team": "core"}
		k.ExpiresAt = expires
		k.Limits = []limits.Limit{limits.Rate("burst", 5, time.Second, 0)}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, "deploy", got.Name)
	assert.Equal(t, int64(2), got.Revision)
	v, err := m.Verify(ctx, token)
	require.NoError(t, err)
	assert.Equal(t, "deploy", v.Name, "Update drops the cache entry")
	assert.Equal(t, []string{"read", "write"}, v.Scopes)
	assert.True(t, expires.Equal(v.ExpiresAt))

	// A field Update does not change: refused whatever its value, a
	// misuse of the API rather than bad input.
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
		"Paused":    func(k *apikey.Key) { k.Paused = true },
		"Revision":  func(k *apikey.Key) { k.Revision = 99 },
	} {
		t.Run("Refuses"+name, func(t *testing.T) {
			_, err := m.Update(ctx, k.ID, func(k *apikey.Key) error { change(k); return nil })
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
			assert.NotErrorIs(t, err, apikey.ErrInvalidInput)
			stored, err := m.Get(ctx, k.ID)
			require.NoError(t, err)
			assert.Equal(t, int64(2), stored.Revision, "nothing was written")
		})
	}
	// A value Update refuses: an *InputError naming the field.
	for name, tc := range map[string]struct {
		field  string
		change func(*apikey.Key)
	}{
		"NUL":      {"name", func(k *apikey.Key) { k.Name = "a\x00b" }},
		"Plan":     {"plan", func(k *apikey.Key) { k.Plan = "enterprise" }},
		"Scope":    {"scopes", func(k *apikey.Key) { k.Scopes = []string{"a b"} }},
		"Metadata": {"metadata", func(k *apikey.Key) { k.Metadata = map[string]string{"k": "\x1b[31m"} }},
		"Limit":    {"limits", func(k *apikey.Key) { k.Limits = []limits.Limit{{Name: "x"}} }},
		"Expiry":   {"expires_at", func(k *apikey.Key) { k.ExpiresAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
	} {
		t.Run("Refuses"+name, func(t *testing.T) {
			_, err := m.Update(ctx, k.ID, func(k *apikey.Key) error { tc.change(k); return nil })
			assertInputError(t, err, tc.field)
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
	t.Parallel()
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

// TestCookieSourceRefusesDuplicates is the regression test of defect 8
// (cookie tossing): two cookies of the key's name give 400, never the
// first of them; HideCredentials strips the cookie.
func TestCookieSourceRefusesDuplicates(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	token, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
	other, _ := issue(t, m, apikey.IssueParams{Owner: "mallory"})
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{
		Sources: []apikey.KeySource{apikey.CookieSource("api_key"), apikey.HeaderSource("Authorization")}, HideCredentials: true,
	})
	require.NoError(t, err)
	var seen *http.Request
	h := mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r }))
	serve := func(header ...string) int {
		seen = nil
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, get("/", header...))
		return rec.Code
	}

	assert.Equal(t, 200, serve("Cookie", "theme=dark; api_key="+token+"; lang=en"))
	require.NotNil(t, seen)
	assert.Equal(t, k.ID, apikey.FromContext(seen.Context()).ID)
	assert.Equal(t, []string{"theme=dark; lang=en"}, seen.Header.Values("Cookie"), "HideCredentials strips the cookie, keeps the others")

	for name, header := range map[string][]string{
		"OneHeader":    {"Cookie", "api_key=" + other + "; api_key=" + token},
		"TwoHeaders":   {"Cookie", "api_key=" + token, "Cookie", "api_key=" + other},
		"SameValue":    {"Cookie", "api_key=" + token + "; api_key=" + token},
		"CookieBearer": {"Cookie", "api_key=" + token, "Authorization", "Bearer " + token},
		"Empty":        {"Cookie", "api_key="},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, 400, serve(header...))
			assert.Nil(t, seen, "a request with two credentials never passes")
		})
	}
	_, err = mw.Authenticate(get("/", "Cookie", "api_key="+token+"; api_key="+other))
	assert.ErrorIs(t, err, apikey.ErrBadRequest)
}

// TestDeprecationIsTheRotationTime is the regression test of defect 10:
// Deprecation carries when the key was rotated, the same on every
// response, and Deprecation and Sunset come with a 429 too.
func TestDeprecationIsTheRotationTime(t *testing.T) {
	t.Parallel()
	e := newLimitEnv(t, apikey.Options{}, apikey.MiddlewareOptions{})
	token, k := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"}) // 3 a day
	rotatedAt := e.c.Now()
	rot, err := e.m.Rotate(context.Background(), k.ID, 2*time.Hour)
	require.NoError(t, err)
	assert.True(t, rotatedAt.Equal(rot.Previous.RotatedAt))
	want := "@" + strconv.FormatInt(rotatedAt.Unix(), 10)
	sunset := rotatedAt.Add(2 * time.Hour).Format(http.TimeFormat)

	var ran bool
	h := e.handler(&ran)
	for i := range 4 {
		e.c.Add(7 * time.Minute)
		rec := hit(h, bearer(token))
		if i < 3 {
			assert.Equal(t, 200, rec.Code)
		} else {
			assert.Equal(t, 429, rec.Code, "the free plan's fourth request")
		}
		assert.Equal(t, want, rec.Header().Get("Deprecation"), "request %d", i)
		assert.Equal(t, sunset, rec.Header().Get("Sunset"), "request %d", i)
	}
	rec := hit(h, bearer(rot.Token))
	assert.Empty(t, rec.Header().Get("Deprecation"), "the successor is not deprecated")
}

// TestRotateFallbackNeverUndoesRevoke is the regression test of defect 2
// on a store without Rotator: a revocation landing between the rotation's
// read and its write wins; the successor is removed and no token is
// returned.
func TestRotateFallbackNeverUndoesRevoke(t *testing.T) {
	t.Parallel()
	spy := newSpy() // no Rotator, no Revoker
	m := newManager(t, spy, apikey.Options{})
	ctx := context.Background()
	token, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
	var once sync.Once
	spy.hook = func(method string) {
		if method == "Create" { // the successor: revoke the old key now
			once.Do(func() {
				got, err := spy.Store.Get(ctx, k.ID)
				require.NoError(t, err)
				got.RevokedAt = time.Now()
				require.NoError(t, spy.Store.Update(ctx, got))
			})
		}
	}
	rot, err := m.Rotate(ctx, k.ID, time.Hour)
	assert.ErrorIs(t, err, apikey.ErrRevoked)
	assert.Nil(t, rot, "no token for a rotation that lost")
	spy.hook = nil
	list, err := m.List(ctx, "alice", apikey.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, list, 1, "the successor was removed")
	_, err = m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrRevoked, "the revocation stands")
}

// failAfterRotate is a store whose reads fail once a rotation was written.
type failAfterRotate struct {
	*memstore.Store
	down atomic.Bool
}

func (s *failAfterRotate) Get(ctx context.Context, id string) (*apikey.Key, error) {
	if s.down.Load() {
		return nil, errors.New("connection reset")
	}
	return s.Store.Get(ctx, id)
}

func (s *failAfterRotate) Rotate(ctx context.Context, old *apikey.Key, until time.Time, succ *apikey.Key) error {
	err := s.Store.Rotate(ctx, old, until, succ)
	s.down.Store(true)
	return err
}

// TestRotationNeedsNoSecondRead is the regression test of defect 11: a
// rotation that happened returns its token, the successor and the old
// key's new expiry, even when the store cannot be read any more.
func TestRotationNeedsNoSecondRead(t *testing.T) {
	t.Parallel()
	store := &failAfterRotate{Store: memstore.New()}
	c := newClock()
	m := newManager(t, store, apikey.Options{Now: c.Now})
	_, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
	rot, err := m.Rotate(context.Background(), k.ID, time.Hour)
	require.NoError(t, err)
	assert.NotEmpty(t, rot.Token)
	assert.Equal(t, k.ID, rot.Key.RotatedFrom)
	assert.Equal(t, c.Now().Add(time.Hour), rot.Previous.ExpiresAt)
	assert.Equal(t, rot.Key.ID, rot.Previous.RotatedTo)
	assert.Equal(t, c.Now(), rot.Previous.RotatedAt)
	store.down.Store(false)
	stored, err := store.Get(context.Background(), k.ID)
	require.NoError(t, err)
	assert.True(t, stored.ExpiresAt.Equal(rot.Previous.ExpiresAt), "Previous is what was stored")
	assert.Equal(t, stored.Revision, rot.Previous.Revision)
}

// countingStore counts the reads of a memstore, keeping its capabilities.
type countingStore struct {
	*memstore.Store
	gets atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, id string) (*apikey.Key, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, id)
}

// TestEventsOncePerChangeWithoutReads is the regression test of defect 9:
// RevokeOwner on a store without Revoker reports one event per key,
// and listening to events adds no store read to Revoke and Delete.
func TestEventsOncePerChangeWithoutReads(t *testing.T) {
	t.Parallel()
	log := &eventLog{}
	opts := apikey.Options{Logger: slog.New(log)}
	revokes := func() map[string]int {
		n := map[string]int{}
		for _, e := range log.take() {
			if e.Type == "revoke" {
				n[e.KeyID]++
			}
		}
		return n
	}
	ctx := context.Background()

	t.Run("RevokeOwnerWithoutRevoker", func(t *testing.T) {
		m := newManager(t, newSpy(), opts)
		want := map[string]int{}
		for range 3 {
			_, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
			want[k.ID] = 1
		}
		revokes()
		ids, err := m.RevokeOwner(ctx, "alice")
		require.NoError(t, err)
		assert.Len(t, ids, 3)
		assert.Equal(t, want, revokes(), "one revoke event per key")
		ids, err = m.RevokeOwner(ctx, "alice")
		require.NoError(t, err)
		assert.Empty(t, ids)
		assert.Empty(t, revokes(), "nothing revoked, nothing reported")
	})
	t.Run("NoReadForEvents", func(t *testing.T) {
		store := &countingStore{Store: memstore.New()}
		m := newManager(t, store, opts)
		_, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
		_, k2 := issue(t, m, apikey.IssueParams{Owner: "alice"})
		store.gets.Store(0)
		require.NoError(t, m.Revoke(ctx, k.ID))
		require.NoError(t, m.Delete(ctx, k2.ID))
		assert.Zero(t, store.gets.Load(), "events cost no store read")
		assert.Equal(t, map[string]int{k.ID: 1}, revokes())
	})
}

// TestInputIsValidated is the regression test of defect 7: bad input is
// an *InputError naming its field (ErrInvalidInput, 400 over HTTP), never
// a store failure nor ErrInvalidOptions, and nothing is stored; values at
// the limits are accepted.
func TestInputIsValidated(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("x", n) }
	m := newManager(t, memstore.New(), apikey.Options{Plans: limits.Plans{"free": nil, long(apikey.MaxPlanLength): nil}})
	ctx := context.Background()
	scopes := func(n int) []string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("s%d", i)
		}
		return s
	}
	meta := func(n int) map[string]string {
		md := map[string]string{}
		for i := range n {
			md[fmt.Sprintf("k%d", i)] = "v"
		}
		return md
	}
	lims := func(n int) []limits.Limit {
		ls := make([]limits.Limit, n)
		for i := range ls {
			ls[i] = limits.Quota(fmt.Sprintf("q%d", i), 10, limits.Day)
		}
		return ls
	}
	for _, tc := range []struct {
		name  string
		field string
		p     apikey.IssueParams
	}{
		{"NULInName", "name", apikey.IssueParams{Name: "a\x00b"}},
		{"NULInOwner", "owner", apikey.IssueParams{Owner: "a\x00b"}},
		{"NULInPlan", "plan", apikey.IssueParams{Plan: "fr\x00ee"}},
		{"NULInScope", "scopes", apikey.IssueParams{Scopes: []string{"a\x00"}}},
		{"NULInMetadataKey", "metadata", apikey.IssueParams{Metadata: map[string]string{"k\x00": "v"}}},
		{"NULInMetadataValue", "metadata", apikey.IssueParams{Metadata: map[string]string{"k": "v\x00"}}},
		{"ControlInName", "name", apikey.IssueParams{Name: "bell\a"}},
		{"C1ControlInOwner", "owner", apikey.IssueParams{Owner: "a\u0085b"}},
		{"NewlineInMetadata", "metadata", apikey.IssueParams{Metadata: map[string]string{"k": "a\nb"}}},
		{"InvalidUTF8", "name", apikey.IssueParams{Name: "\xff\xfe"}},
		{"EmptyMetadataKey", "metadata", apikey.IssueParams{Metadata: map[string]string{"": "v"}}},
		{"LongName", "name", apikey.IssueParams{Name: long(apikey.MaxNameLength + 1)}},
		{"LongOwner", "owner", apikey.IssueParams{Owner: long(apikey.MaxOwnerLength + 1)}},
		{"LongPlan", "plan", apikey.IssueParams{Plan: long(apikey.MaxPlanLength + 1)}},
		{"LongScope", "scopes", apikey.IssueParams{Scopes: []string{long(apikey.MaxScopeLength + 1)}}},
		{"ManyScopes", "scopes", apikey.IssueParams{Scopes: scopes(apikey.MaxScopes + 1)}},
		{"LongMetadataKey", "metadata", apikey.IssueParams{Metadata: map[string]string{long(apikey.MaxMetadataKeyLength + 1): "v"}}},
		{"LongMetadataValue", "metadata", apikey.IssueParams{Metadata: map[string]string{"k": long(apikey.MaxMetadataValueLength + 1)}}},
		{"ManyMetadata", "metadata", apikey.IssueParams{Metadata: meta(apikey.MaxMetadataEntries + 1)}},
		{"ManyLimits", "limits", apikey.IssueParams{Limits: lims(apikey.MaxLimits + 1)}},
		{"InvalidLimit", "limits", apikey.IssueParams{Limits: []limits.Limit{{Name: "x", Kind: limits.KindQuota}}}},
		{"UnknownPlan", "plan", apikey.IssueParams{Plan: "enterprise"}},
		{"PastExpiry", "expires_at", apikey.IssueParams{ExpiresAt: time.Now().Add(-time.Hour)}},
		{"ExpiryAfter9999", "expires_at", apikey.IssueParams{ExpiresAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"NegativeTTL", "ttl", apikey.IssueParams{TTL: -time.Second}},
		{"UnknownPrefix", "prefix", apikey.IssueParams{Prefix: "sk_other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := m.Issue(ctx, tc.p)
			assertInputError(t, err, tc.field)
		})
	}
	// An InputError never holds the value it refuses.
	for _, p := range []apikey.IssueParams{
		{Name: "hunter2\x00"}, {Owner: "hunter2\n"}, {Metadata: map[string]string{"k": "hunter2\x1b"}}, {Scopes: []string{"hunter2 "}},
	} {
		_, _, err := m.Issue(ctx, p)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "hunter2")
	}
	list, err := m.List(ctx, "", apikey.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, list, "nothing was stored")

	_, k, err := m.Issue(ctx, apikey.IssueParams{
		Name: long(apikey.MaxNameLength-2) + "é", Owner: long(apikey.MaxOwnerLength), Plan: long(apikey.MaxPlanLength),
		Scopes: scopes(apikey.MaxScopes), Metadata: map[string]string{long(apikey.MaxMetadataKeyLength): long(apikey.MaxMetadataValueLength)},
		Limits: lims(apikey.MaxLimits),
	})
	require.NoError(t, err, "values at the limits")
	_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.Metadata = meta(apikey.MaxMetadataEntries); return nil })
	require.NoError(t, err)
}

func TestFormatWithPrefixes(t *testing.T) {
	t.Parallel()
	live, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	both, err := live.WithPrefixes("sk_test", "pk")
	require.NoError(t, err)
	assert.Equal(t, "sk_live", both.Prefix(), "New and Compose keep the first prefix")
	assert.Equal(t, []string{"sk_live", "sk_test", "pk"}, both.Prefixes())
	text := ""
	for _, p := range both.Prefixes() {
		f, err := apikey.NewFormat(p, 0)
		require.NoError(t, err)
		token, _ := f.New()
		parsed, err := both.Parse(token)
		require.NoError(t, err, p)
		assert.Equal(t, p, parsed.Prefix)
		_, err = live.Parse(token)
		if p != "sk_live" {
			assert.ErrorIs(t, err, apikey.ErrMalformed, "a single-prefix Format refuses the others")
		}
		text += " token " + token + ","
	}
	found := both.Scan(text)
	require.Len(t, found, 3, "Scan finds every accepted prefix")
	assert.Less(t, found[0][0], found[1][0])
	second, err := both.Parse(text[found[1][0]:found[1][1]])
	require.NoError(t, err)
	assert.NotContains(t, both.Redact(text), "sk_test_"+second.ID)
	_, err = live.WithPrefixes("sk_live")
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
}
