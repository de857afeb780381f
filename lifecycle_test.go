package apikey_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

// records is a slog.Handler that keeps the message of every record, at
// every level.
type records struct {
	mu  sync.Mutex
	msg []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *records) WithGroup(string) slog.Handler            { return r }

func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.msg = append(r.msg, rec.Message)
	r.mu.Unlock()
	return nil
}

func (r *records) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msg
	r.msg = nil
	return m
}

// Options.MaxKeyLifetime bounds every key: Issue refuses a longer life
// (an *InputError on "expires_at") and gives it to a key without expiry,
// Update cannot move an expiry past it, New refuses a longer DefaultTTL,
// and the successor of a key without expiry gets it.
func TestMaxKeyLifetime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	const life = 30 * 24 * time.Hour
	store := memstore.New()
	m := newManager(t, store, apikey.Options{Now: c.Now, MaxKeyLifetime: life})

	_, _, err := m.Issue(ctx, apikey.IssueParams{TTL: life + time.Second})
	assertInputError(t, err, "expires_at")
	_, _, err = m.Issue(ctx, apikey.IssueParams{ExpiresAt: c.Now().Add(life + time.Microsecond)})
	assertInputError(t, err, "expires_at")
	_, k := issue(t, m, apikey.IssueParams{TTL: life})
	assert.True(t, c.Now().Add(life).Equal(k.ExpiresAt))
	_, d := issue(t, m, apikey.IssueParams{})
	assert.True(t, c.Now().Add(life).Equal(d.ExpiresAt), "a key without expiry gets the lifetime")

	_, err = apikey.New(memstore.New(), apikey.Options{MaxKeyLifetime: life, DefaultTTL: life + time.Second})
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
	_, err = apikey.New(memstore.New(), apikey.Options{MaxKeyLifetime: -time.Second})
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
	withTTL := newManager(t, store, apikey.Options{Now: c.Now, MaxKeyLifetime: life, DefaultTTL: life})
	_, dk := issue(t, withTTL, apikey.IssueParams{})
	assert.True(t, c.Now().Add(life).Equal(dk.ExpiresAt))

	c.Add(time.Hour)
	for name, at := range map[string]time.Time{"later": k.CreatedAt.Add(life + time.Microsecond), "never": {}} {
		_, err := m.Update(ctx, k.ID, func(k *apikey.Key) error { k.ExpiresAt = at; return nil })
		assertInputError(t, err, "expires_at", name)
	}
	_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.ExpiresAt = c.Now().Add(time.Hour); return nil })
	require.NoError(t, err, "sooner")
	_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.ExpiresAt = k.CreatedAt.Add(life); return nil })
	require.NoError(t, err, "later, within the lifetime")

	// A key issued without expiry before the bound was set: its
	// successor gets the lifetime.
	unbounded := newManager(t, store, apikey.Options{Now: c.Now})
	_, old := issue(t, unbounded, apikey.IssueParams{})
	require.True(t, old.ExpiresAt.IsZero())
	_, succ := rotate(t, m, old.ID, time.Hour)
	assert.True(t, c.Now().Add(life).Equal(succ.ExpiresAt), "the successor outlives MaxKeyLifetime")
}

// An expired key stays expired: Update cannot revive it, with or without
// MaxKeyLifetime (which it would otherwise get around), and it is not
// rotated.
func TestExpiredKeyIsNeverRevived(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, opts := range map[string]apikey.Options{"Unbounded": {}, "MaxKeyLifetime": {MaxKeyLifetime: 30 * 24 * time.Hour}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := newClock()
			opts.Now = c.Now
			m := newManager(t, memstore.New(), opts)
			token, k := issue(t, m, apikey.IssueParams{TTL: time.Hour})
			c.Add(2 * time.Hour)
			for name, at := range map[string]time.Time{"later": c.Now().Add(24 * time.Hour), "never": {}} {
				_, err := m.Update(ctx, k.ID, func(k *apikey.Key) error { k.ExpiresAt = at; return nil })
				assert.ErrorIs(t, err, apikey.ErrExpired, name)
			}
			_, err := m.Verify(ctx, token)
			assert.ErrorIs(t, err, apikey.ErrExpired)
			_, err = m.Rotate(ctx, k.ID, time.Hour)
			assert.ErrorIs(t, err, apikey.ErrExpired)
			_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.Name = "archived"; return nil })
			assert.NoError(t, err, "an expired key can still be renamed")
		})
	}
}

// Pause is the owner's and Disable the operator's: each is lifted only by
// its own counterpart (Unpause never lifts Disable, Enable never lifts
// Pause), verification refuses both, and the middleware answers both like
// an invalid key.
func TestPauseAndDisable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := &eventLog{}
	m := newManager(t, newCustomerStore(), apikey.Options{Logger: slog.New(log)})
	token, k := issue(t, m, apikey.IssueParams{Owner: "ann"})
	verify := func() error { _, err := m.Verify(ctx, token); return err }
	require.NoError(t, verify()) // cached

	p, err := m.Pause(ctx, k.ID)
	require.NoError(t, err)
	assert.True(t, p.Paused)
	stored, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	assert.True(t, stored.Paused, "Paused is stored")
	err = verify()
	assert.ErrorIs(t, err, apikey.ErrPaused, "at once")
	assert.NotErrorIs(t, err, apikey.ErrDisabled)

	unknown, _ := m.Format().New()
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	answer := func(token string) *httptest.ResponseRecorder {
		var ran bool
		rec := httptest.NewRecorder()
		mw.Handler(okHandler(&ran)).ServeHTTP(rec, bearer(token))
		assert.False(t, ran)
		return rec
	}
	paused, invalid := answer(token), answer(unknown)
	assert.Equal(t, http.StatusUnauthorized, paused.Code)
	assert.Equal(t, invalid.Header(), paused.Header(), "byte-identical to an invalid key")
	assert.Equal(t, invalid.Body.String(), paused.Body.String())

	_, err = m.Unpause(ctx, k.ID)
	require.NoError(t, err)
	require.NoError(t, verify())

	_, err = m.Disable(ctx, k.ID)
	require.NoError(t, err)
	_, err = m.Unpause(ctx, k.ID)
	require.NoError(t, err)
	assert.ErrorIs(t, verify(), apikey.ErrDisabled, "Unpause lifted Disable")
	_, err = m.Pause(ctx, k.ID)
	require.NoError(t, err)
	_, err = m.Enable(ctx, k.ID)
	require.NoError(t, err)
	assert.ErrorIs(t, verify(), apikey.ErrPaused, "Enable lifted Pause")

	// A paused key's successor is paused too, until unpaused.
	rot, err := m.Rotate(ctx, k.ID, time.Hour)
	require.NoError(t, err)
	assert.True(t, rot.Key.Paused)
	_, err = m.Verify(ctx, rot.Token)
	assert.ErrorIs(t, err, apikey.ErrPaused)
	_, err = m.Unpause(ctx, rot.Key.ID)
	require.NoError(t, err)
	_, err = m.Verify(ctx, rot.Token)
	require.NoError(t, err)

	assert.Equal(t, []string{"issue", "pause", "resume", "disable", "resume", "pause", "enable", "rotate", "resume"}, types(log.take(), false))
	_, err = m.Pause(ctx, apikey.NewID())
	assert.ErrorIs(t, err, apikey.ErrNotFound)
}

// Nothing changes a revoked key: Update, Disable, Enable, Pause, Unpause
// and Rotate give ErrRevoked, write nothing and record nothing in the
// audit log; the change function never runs.
func TestRevokedKeyNeverChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := &records{}
	m := newManager(t, newCustomerStore(), apikey.Options{Logger: slog.New(log)})
	token, k := issue(t, m, apikey.IssueParams{Owner: "ann", Name: "ci"})
	require.NoError(t, m.Revoke(ctx, k.ID))
	before, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	log.take()

	ran := false
	for name, op := range map[string]func() (*apikey.Key, error){
		"Update": func() (*apikey.Key, error) {
			return m.Update(ctx, k.ID, func(k *apikey.Key) error { ran = true; k.Name = "x"; return nil })
		},
		"Disable": func() (*apikey.Key, error) { return m.Disable(ctx, k.ID) },
		"Enable":  func() (*apikey.Key, error) { return m.Enable(ctx, k.ID) },
		"Pause":   func() (*apikey.Key, error) { return m.Pause(ctx, k.ID) },
		"Unpause": func() (*apikey.Key, error) { return m.Unpause(ctx, k.ID) },
		"Rotate": func() (*apikey.Key, error) {
			r, err := m.Rotate(ctx, k.ID, time.Hour)
			if r != nil {
				return r.Key, err
			}
			return nil, err
		},
	} {
		got, err := op()
		assert.ErrorIs(t, err, apikey.ErrRevoked, name)
		assert.Nil(t, got, name)
	}
	assert.False(t, ran, "Update's change ran on a revoked key")
	assert.Empty(t, log.take(), "a refused change was recorded")
	after, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	assert.Equal(t, before, after, "a revoked key changed")
	_, err = m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrRevoked)

	// Racing a revocation, a change either lands before it or is
	// refused: the key always ends revoked.
	for range 100 {
		_, k := issue(t, m, apikey.IssueParams{Owner: "ann"})
		var wg sync.WaitGroup
		start := make(chan struct{})
		var uerr, perr error
		wg.Go(func() { <-start; assert.NoError(t, m.Revoke(ctx, k.ID)) })
		wg.Go(func() {
			<-start
			_, uerr = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.Name = "x"; return nil })
		})
		wg.Go(func() { <-start; _, perr = m.Pause(ctx, k.ID) })
		close(start)
		wg.Wait()
		for _, err := range []error{uerr, perr} {
			if err != nil {
				require.ErrorIs(t, err, apikey.ErrRevoked)
			}
		}
		got, err := m.Get(ctx, k.ID)
		require.NoError(t, err)
		require.False(t, got.RevokedAt.IsZero(), "a change undid a revocation")
	}
}

// RevokeChain revokes every key of a rotation chain, whichever key it is
// given, and nothing else; revoking one key of a chain revokes only it.
func TestRevokeChain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, store := range rotationStores() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := newClock()
			m := newManager(t, store(), apikey.Options{Now: c.Now})
			a, ka := issue(t, m, apikey.IssueParams{Owner: "ann"})
			b, kb := rotate(t, m, ka.ID, time.Hour)
			cc, kc := rotate(t, m, kb.ID, time.Hour)
			other, _ := issue(t, m, apikey.IssueParams{Owner: "ann"})
			for _, token := range []string{b, cc, other} {
				_, err := m.Verify(ctx, token) // cached
				require.NoError(t, err)
			}
			ids, err := m.RevokeChain(ctx, kb.ID)
			require.NoError(t, err)
			assert.Equal(t, []string{ka.ID, kb.ID, kc.ID}, ids)
			for i, token := range []string{a, b, cc} {
				_, err := m.Verify(ctx, token)
				assert.ErrorIs(t, err, apikey.ErrRevoked, "key %c", 'A'+i)
			}
			_, err = m.Verify(ctx, other)
			assert.NoError(t, err, "another chain of the owner")
			ids, err = m.RevokeChain(ctx, kc.ID)
			require.NoError(t, err)
			assert.Empty(t, ids, "nothing left to revoke")
			_, err = m.RevokeChain(ctx, apikey.NewID())
			assert.ErrorIs(t, err, apikey.ErrNotFound)

			d, kd := issue(t, m, apikey.IssueParams{})
			e, _ := rotate(t, m, kd.ID, time.Hour)
			require.NoError(t, m.Revoke(ctx, kd.ID))
			_, err = m.Verify(ctx, d)
			assert.ErrorIs(t, err, apikey.ErrRevoked)
			_, err = m.Verify(ctx, e)
			assert.NoError(t, err, "Revoke of one key of a chain revokes only it")
		})
	}
}

// A rotation racing RevokeChain never leaves a working key: whichever
// wins, every key of the chain, and every token Rotate returned, is
// refused afterwards.
func TestRevokeChainRacingRotate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, store := range rotationStores() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := newManager(t, store(), apikey.Options{})
			rotated := 0
			for trial := range 200 {
				owner := fmt.Sprintf("o%d", trial)
				a, ka := issue(t, m, apikey.IssueParams{Owner: owner})
				b, kb := rotate(t, m, ka.ID, time.Hour)
				tokens := []string{a, b}
				from := []string{ka.ID, kb.ID}[trial%2]
				var wg sync.WaitGroup
				start := make(chan struct{})
				var rot *apikey.Rotation
				var rerr, cerr error
				wg.Go(func() { <-start; yield(trial / 8); _, cerr = m.RevokeChain(ctx, from) })
				wg.Go(func() {
					<-start
					yield(trial)
					rot, rerr = m.Rotate(ctx, kb.ID, time.Hour)
				})
				close(start)
				wg.Wait()
				require.NoError(t, cerr)
				if rerr == nil {
					rotated++
					tokens = append(tokens, rot.Token)
				} else {
					require.ErrorIs(t, rerr, apikey.ErrRevoked)
				}
				for _, token := range tokens {
					_, err := m.Verify(ctx, token)
					require.ErrorIs(t, err, apikey.ErrRevoked, "trial %d: a key of the chain still works", trial)
				}
				keys, err := m.List(ctx, owner, apikey.ListOptions{})
				require.NoError(t, err)
				for _, k := range keys {
					require.False(t, k.RevokedAt.IsZero(), "trial %d: key %s survived", trial, k.ID)
				}
			}
			t.Logf("%d of 200 rotations landed before the revocation", rotated)
		})
	}
}

// purgeStore is a custStore with a Purger.
type purgeStore struct {
	*custStore
	calls atomic.Int64
}

func (s *purgeStore) Purge(ctx context.Context, before time.Time, limit int) ([]string, error) {
	s.calls.Add(1)
	var ids []string
	for _, k := range s.All() {
		dead := !k.RevokedAt.IsZero() && k.RevokedAt.Before(before) || !k.ExpiresAt.IsZero() && k.ExpiresAt.Before(before)
		if dead && len(ids) < limit {
			if err := s.Delete(ctx, k.ID); err != nil {
				return ids, err
			}
			ids = append(ids, k.ID)
		}
	}
	return ids, nil
}

// Purge deletes the keys dead for longer than the retention, in batches,
// drops them from the cache, and needs a Purger.
func TestPurge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	cs, ok := newCustomerStore().(*custStore)
	if !ok {
		t.Skip("memstore keeps customers itself: give it a Purger test of its own")
	}
	store := &purgeStore{custStore: cs}
	m := newManager(t, store, apikey.Options{Now: c.Now, CacheTTL: time.Hour})
	revoked, kr := issue(t, m, apikey.IssueParams{Owner: "ann"})
	_, err := m.Verify(ctx, revoked)
	require.NoError(t, err)
	require.NoError(t, m.Revoke(ctx, kr.ID))
	issue(t, m, apikey.IssueParams{Owner: "ann", TTL: 30 * time.Minute})
	live, _ := issue(t, m, apikey.IssueParams{Owner: "ann"})
	for range 600 {
		_, k := issue(t, m, apikey.IssueParams{})
		require.NoError(t, m.Revoke(ctx, k.ID))
	}
	c.Add(2 * time.Hour)
	_, err = m.Purge(ctx, -time.Second)
	assertInputError(t, err, "retention")
	n, err := m.Purge(ctx, 3*time.Hour)
	require.NoError(t, err)
	assert.Zero(t, n, "nothing dead for 3 hours")
	store.calls.Store(0)
	n, err = m.Purge(ctx, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, 602, n)
	assert.EqualValues(t, 2, store.calls.Load(), "batches of 500")
	_, err = m.Verify(ctx, revoked)
	assert.ErrorIs(t, err, apikey.ErrInvalid, "a purged key is unknown")
	_, err = m.Verify(ctx, live)
	assert.NoError(t, err)

	plain := newManager(t, memstore.New(), apikey.Options{})
	_, err = plain.Purge(ctx, time.Hour)
	assert.True(t, errors.Is(err, errors.ErrUnsupported))
}

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
	assert.Equal(t, "disabled", last.Outcome, "events carry it")

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

// A stale write never revives a revoked key. Admin A
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
