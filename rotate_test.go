package apikey_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

func TestRotateWithGrace(t *testing.T) {
	t.Parallel()
	for name, newStore := range rotationStores() {
		t.Run(name, func(t *testing.T) {
			c := newClock()
			m := newManager(t, newStore(), apikey.Options{Now: c.Now})
			ctx := context.Background()
			oldToken, old := issue(t, m, apikey.IssueParams{Name: "ci", Owner: "alice", Scopes: []string{"read"}, Plan: "pro",
				Metadata: map[string]string{"team": "core"}, TTL: 30 * 24 * time.Hour})
			_, err := m.Verify(ctx, oldToken) // cached
			require.NoError(t, err)

			rot, err := m.Rotate(ctx, old.ID, time.Hour)
			require.NoError(t, err)
			newToken, succ := rot.Token, rot.Key
			assert.Equal(t, old.ID, succ.Lineage, "the successor continues the lineage")
			assert.Equal(t, succ.ID, rot.Previous.RotatedTo)
			assert.Equal(t, c.Now(), rot.Previous.RotatedAt)
			assert.Equal(t, c.Now().Add(time.Hour), rot.Previous.ExpiresAt, "Previous carries the end of the grace period")
			assert.NotEqual(t, oldToken, newToken)
			assert.Equal(t, old.Name, succ.Name)
			assert.Equal(t, old.Owner, succ.Owner)
			assert.Equal(t, old.Scopes, succ.Scopes)
			assert.Equal(t, old.Plan, succ.Plan)
			assert.Equal(t, old.Metadata, succ.Metadata)
			assert.Equal(t, old.ID, succ.RotatedFrom)
			assert.Equal(t, old.ExpiresAt, succ.ExpiresAt, "the successor never outlives the original")

			gotOld, err := m.Get(ctx, old.ID)
			require.NoError(t, err)
			assert.Equal(t, succ.ID, gotOld.RotatedTo)
			assert.Equal(t, c.Now().Add(time.Hour), gotOld.ExpiresAt)
			assert.Equal(t, c.Now(), gotOld.RotatedAt)
			assert.Equal(t, gotOld.Revision, rot.Previous.Revision)

			c.Add(59 * time.Minute)
			k, err := m.Verify(ctx, oldToken)
			require.NoError(t, err, "the old key works during the grace period")
			assert.True(t, k.InGrace(c.Now()))
			_, err = m.Verify(ctx, newToken)
			require.NoError(t, err)

			c.Add(time.Minute)
			_, err = m.Verify(ctx, oldToken)
			assert.ErrorIs(t, err, apikey.ErrExpired, "the old key is refused after the grace period")
			_, err = m.Verify(ctx, newToken)
			require.NoError(t, err)

			_, err = m.Rotate(ctx, old.ID, time.Hour)
			assert.ErrorIs(t, err, apikey.ErrRotated)
		})
	}
}

func TestRotateGraceZero(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now})
	oldToken, old := issue(t, m, apikey.IssueParams{})
	_, err := m.Verify(context.Background(), oldToken)
	require.NoError(t, err)
	rot, err := m.Rotate(context.Background(), old.ID, 0)
	require.NoError(t, err)
	newToken := rot.Token
	_, err = m.Verify(context.Background(), oldToken)
	assert.ErrorIs(t, err, apikey.ErrExpired, "grace 0 stops the old key at once")
	_, err = m.Verify(context.Background(), newToken)
	assert.NoError(t, err)
}

func TestRotateGraceNeverExtendsExpiry(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now})
	oldToken, old := issue(t, m, apikey.IssueParams{TTL: time.Minute})
	rot, err := m.Rotate(context.Background(), old.ID, 24*time.Hour)
	require.NoError(t, err)
	assert.Equal(t, old.ExpiresAt, rot.Key.ExpiresAt)
	assert.Equal(t, old.ExpiresAt, rot.Previous.ExpiresAt)
	c.Add(time.Minute)
	_, err = m.Verify(context.Background(), oldToken)
	assert.ErrorIs(t, err, apikey.ErrExpired)
}

func TestRotateRefuses(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now})
	ctx := context.Background()
	_, revoked := issue(t, m, apikey.IssueParams{})
	require.NoError(t, m.Revoke(ctx, revoked.ID))
	_, expired := issue(t, m, apikey.IssueParams{TTL: time.Second})
	c.Add(time.Second)
	for _, tc := range []struct {
		id   string
		want error
	}{{revoked.ID, apikey.ErrRevoked}, {expired.ID, apikey.ErrExpired}, {"unknown", apikey.ErrNotFound}} {
		_, err := m.Rotate(ctx, tc.id, time.Hour)
		assert.ErrorIs(t, err, tc.want)
	}
	_, err := m.Rotate(ctx, revoked.ID, -time.Second)
	assertInputError(t, err, "grace")
}

func TestRotateFailingHalfWayChangesNothing(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	c := newClock()
	m := newManager(t, spy, apikey.Options{Now: c.Now})
	ctx := context.Background()
	oldToken, old := issue(t, m, apikey.IssueParams{Owner: "alice"})
	failUpdate := errors.New("update failed")
	spy.hook = func(method string) {
		if method == "Update" {
			spy.failWith(failUpdate)
		} else {
			spy.failWith(nil)
		}
	}
	_, err := m.Rotate(ctx, old.ID, time.Hour)
	require.Error(t, err)
	assert.ErrorIs(t, err, apikey.ErrUnavailable)
	spy.hook = nil
	spy.failWith(nil)

	got, err := m.Get(ctx, old.ID)
	require.NoError(t, err)
	assert.Empty(t, got.RotatedTo)
	assert.True(t, got.ExpiresAt.IsZero(), "the old key is as it was")
	list, err := m.List(ctx, "alice", apikey.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, list, 1, "the successor was removed again")
	_, err = m.Verify(ctx, oldToken)
	assert.NoError(t, err)
}

func TestGraceHeaders(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now})
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	oldToken, old := issue(t, m, apikey.IssueParams{})
	rot, err := m.Rotate(context.Background(), old.ID, 2*time.Hour)
	require.NoError(t, err)
	newToken := rot.Token
	var ran bool
	h := mw.Handler(okHandler(&ran))

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, bearer(oldToken))
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, "Fri, 27 Nov 2026 14:00:00 GMT", rec.Header().Get("Sunset"))
	assert.Regexp(t, `^@\d+$`, rec.Header().Get("Deprecation"))

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, bearer(newToken))
	assert.Equal(t, 200, rec.Code)
	assert.Empty(t, rec.Header().Get("Sunset"))
	assert.Empty(t, rec.Header().Get("Deprecation"))
}

// On a store without Rotator, a revocation landing between the rotation's
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

// A rotation that happened returns its token, the successor and the old
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

// The Rotator is conditional: a rotation never undoes a Disable that
// landed between its read and its write. Whichever wins, the stored old
// key stays disabled, and when the Disable came first (it wrote a key not
// rotated yet) the successor is disabled too.
func TestRotateNeverUndoesADisable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, store := range rotationStores() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := newManager(t, store(), apikey.Options{CacheTTL: -1})
			first := 0
			for trial := range 200 {
				old, k := issue(t, m, apikey.IssueParams{Owner: "ann"})
				var wg sync.WaitGroup
				start := make(chan struct{})
				var rot *apikey.Rotation
				var dis *apikey.Key
				var rerr, derr error
				wg.Go(func() { <-start; yield(trial / 8); rot, rerr = m.Rotate(ctx, k.ID, time.Hour) })
				wg.Go(func() {
					<-start
					yield(trial)
					dis, derr = m.Disable(ctx, k.ID)
				})
				close(start)
				wg.Wait()
				require.NoError(t, rerr)
				require.NoError(t, derr)
				stored, err := m.Get(ctx, k.ID)
				require.NoError(t, err)
				require.True(t, stored.Disabled, "trial %d: the rotation undid the Disable", trial)
				_, err = m.Verify(ctx, old)
				require.ErrorIs(t, err, apikey.ErrDisabled)
				if dis.RotatedTo == "" { // the Disable wrote the key before its rotation
					first++
					require.True(t, rot.Key.Disabled, "trial %d: a disabled key rotated into a working one", trial)
					_, err = m.Verify(ctx, rot.Token)
					require.ErrorIs(t, err, apikey.ErrDisabled)
				}
			}
			t.Logf("the Disable landed first in %d of 200 trials", first)
		})
	}
}

// hookedRotator is a memstore whose Rotate first runs a hook, once.
type hookedRotator struct {
	*memstore.Store
	before atomic.Pointer[func()]
}

func (s *hookedRotator) Rotate(ctx context.Context, old *apikey.Key, until time.Time, succ *apikey.Key) error {
	if f := s.before.Swap(nil); f != nil {
		(*f)()
	}
	return s.Store.Rotate(ctx, old, until, succ)
}

// The same, deterministically: a Disable lands between the rotation's
// read and its write (the store's Rotate, or the conditional Update of the
// old key without it). The rotation starts over from the disabled key.
func TestRotateAfterAnInterleavedDisable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var m *apikey.Manager
	var id string
	disable := func() {
		_, err := m.Disable(ctx, id)
		require.NoError(t, err)
	}
	check := func(t *testing.T, m *apikey.Manager, old string) {
		rot, err := m.Rotate(ctx, id, time.Hour)
		require.NoError(t, err)
		assert.True(t, rot.Key.Disabled, "the rotation undid the Disable on the successor")
		_, err = m.Verify(ctx, rot.Token)
		assert.ErrorIs(t, err, apikey.ErrDisabled)
		stored, err := m.Get(ctx, id)
		require.NoError(t, err)
		assert.True(t, stored.Disabled)
		_, err = m.Verify(ctx, old)
		assert.ErrorIs(t, err, apikey.ErrDisabled)
	}
	t.Run("Rotator", func(t *testing.T) {
		store := &hookedRotator{Store: memstore.New()}
		m = newManager(t, store, apikey.Options{CacheTTL: -1})
		old, k := issue(t, m, apikey.IssueParams{Owner: "ann"})
		id = k.ID
		store.before.Store(&disable)
		check(t, m, old)
	})
	t.Run("GetUpdate", func(t *testing.T) {
		store := newSpy()
		var once atomic.Bool
		store.hook = func(method string) {
			if method == "Update" && once.CompareAndSwap(false, true) {
				disable()
			}
		}
		m = newManager(t, store, apikey.Options{CacheTTL: -1})
		old, k := issue(t, m, apikey.IssueParams{Owner: "ann"})
		id = k.ID
		check(t, m, old)
		assert.True(t, once.Load())
	})
}
