package apikey_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// TestUpdateNeverExtendsAGracePeriod: once a key is rotated, its expiry
// is the end of its grace period; an Update may end it sooner but never
// later, or the old token would keep working beside its successor.
func TestUpdateNeverExtendsAGracePeriod(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now})
	token, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
	rot, err := m.Rotate(ctx, k.ID, time.Hour)
	require.NoError(t, err)
	end := rot.Previous.ExpiresAt

	for name, at := range map[string]time.Time{"later": end.Add(365 * 24 * time.Hour), "never": {}} {
		_, err := m.Update(ctx, k.ID, func(k *apikey.Key) error { k.ExpiresAt = at; return nil })
		assertInputError(t, err, "expires_at", name)
	}
	got, err := m.Update(ctx, k.ID, func(k *apikey.Key) error { k.ExpiresAt = end.Add(-30 * time.Minute); k.Name = "old"; return nil })
	require.NoError(t, err, "a grace period may end sooner")
	assert.True(t, got.ExpiresAt.Equal(end.Add(-30*time.Minute)))
	c.Add(31 * time.Minute)
	_, err = m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrExpired)
}

// TestUpdateRacingRotateNeverExtendsAGracePeriod races an Update that
// moves a key's expiry a year later against a Rotate with a one-hour
// grace: whichever wins, the old key stops at the end of its grace.
func TestUpdateRacingRotateNeverExtendsAGracePeriod(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	// Without the store's Rotator, the Manager's own conditional writes race.
	m := newManager(t, struct{ apikey.Store }{memstore.New()}, apikey.Options{Now: c.Now, CacheTTL: -1})
	for range 200 {
		_, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
		var wg sync.WaitGroup
		var rerr, uerr error
		start := make(chan struct{})
		wg.Go(func() { <-start; _, rerr = m.Rotate(ctx, k.ID, time.Hour) })
		wg.Go(func() {
			<-start
			_, uerr = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.ExpiresAt = c.Now().Add(365 * 24 * time.Hour); return nil })
		})
		close(start)
		wg.Wait()
		require.NoError(t, rerr)
		var ie *apikey.InputError
		if uerr != nil && (!errors.As(uerr, &ie) || ie.Field != "expires_at") {
			t.Fatalf("update: %v", uerr)
		}
		old, err := m.Get(ctx, k.ID)
		require.NoError(t, err)
		require.NotEmpty(t, old.RotatedTo)
		assert.False(t, old.ExpiresAt.After(c.Now().Add(time.Hour)), "the old key's grace ends at %v", old.ExpiresAt)
	}
}

// nilStore answers Get with neither a key nor an error, breaking the
// Store contract.
type nilStore struct{ *memstore.Store }

func (nilStore) Get(context.Context, string) (*apikey.Key, error) { return nil, nil }

// TestNoKeyAndNoErrorFromTheStoreIsAFailure: no management call returns
// (nil, nil) or panics on a store that answers neither; each reports
// ErrUnavailable.
func TestNoKeyAndNoErrorFromTheStoreIsAFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := nilStore{memstore.New()}
	m := newManager(t, struct{ apikey.Store }{s}, apikey.Options{})
	_, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
	for name, call := range map[string]func() (*apikey.Key, error){
		"Get": func() (*apikey.Key, error) { return m.Get(ctx, k.ID) },
		"Update": func() (*apikey.Key, error) {
			return m.Update(ctx, k.ID, func(k *apikey.Key) error { k.Name = "x"; return nil })
		},
		"Disable": func() (*apikey.Key, error) { return m.Disable(ctx, k.ID) },
		"Enable":  func() (*apikey.Key, error) { return m.Enable(ctx, k.ID) },
		"Rotate": func() (*apikey.Key, error) {
			r, err := m.Rotate(ctx, k.ID, 0)
			if r != nil {
				return r.Key, err
			}
			return nil, err
		},
		"Revoke": func() (*apikey.Key, error) { return nil, m.Revoke(ctx, k.ID) },
	} {
		got, err := call()
		assert.Nil(t, got, name)
		assert.ErrorIs(t, err, apikey.ErrUnavailable, name)
	}
}

// TestRevocationIgnoresClockSkew: a revocation made by a Manager whose
// clock runs ahead (another instance of the fleet, or this one before its
// clock stepped back) refuses the key at once everywhere: RevokedAt in
// the reader's future is still a revocation.
func TestRevocationIgnoresClockSkew(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New()
	behind := newClock()
	ahead := &clock{t: behind.Now().Add(5 * time.Second)}
	reader := newManager(t, store, apikey.Options{Now: behind.Now, CacheTTL: -1})
	revoker := newManager(t, store, apikey.Options{Now: ahead.Now})
	token, k := issue(t, reader, apikey.IssueParams{Owner: "alice"})
	require.NoError(t, revoker.Revoke(ctx, k.ID))
	_, err := reader.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrRevoked, "revoked 5 s ahead of this clock")
	got, err := reader.Get(ctx, k.ID)
	require.NoError(t, err)
	assert.True(t, got.Revoked())
	_, err = reader.Rotate(ctx, k.ID, time.Hour)
	assert.ErrorIs(t, err, apikey.ErrRevoked)
}
