package apikey_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// hub is an in-process Notifier shared by several Managers. It delivers
// synchronously: when Publish returns, every subscriber has been told.
type hub struct {
	mu        sync.Mutex
	subs      map[*hubSub]struct{}
	published []string
	fail      atomic.Bool // Publish fails
}

type hubSub struct {
	mu      sync.Mutex // changed is never called concurrently with itself
	changed func(string)
	ready   bool // told "" on subscription; guarded by hub.mu
}

func (s *hubSub) tell(id string) {
	s.mu.Lock()
	s.changed(id)
	s.mu.Unlock()
}

func newHub() *hub { return &hub{subs: map[*hubSub]struct{}{}} }

func (h *hub) Publish(ctx context.Context, id string) error {
	if h.fail.Load() {
		return errors.New("hub: broker unreachable")
	}
	h.mu.Lock()
	h.published = append(h.published, id)
	subs := make([]*hubSub, 0, len(h.subs))
	for s := range h.subs {
		subs = append(subs, s)
	}
	h.mu.Unlock()
	for _, s := range subs {
		s.tell(id)
	}
	return nil
}

func (h *hub) Subscribe(ctx context.Context, changed func(string)) error {
	s := &hubSub{changed: changed}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	s.tell("") // subscribed
	h.mu.Lock()
	s.ready = true
	h.mu.Unlock()
	<-ctx.Done()
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
	return ctx.Err()
}

// resubscribe makes every subscriber act as after a reconnection.
func (h *hub) resubscribe() {
	h.mu.Lock()
	subs := make([]*hubSub, 0, len(h.subs))
	for s := range h.subs {
		subs = append(subs, s)
	}
	h.mu.Unlock()
	for _, s := range subs {
		s.tell("")
	}
}

// subscribers counts the subscribers that have been told "" on
// subscription. Once it counts a Manager, that Manager's cache is no
// longer reset by its own subscription.
func (h *hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for s := range h.subs {
		if s.ready {
			n++
		}
	}
	return n
}

func (h *hub) ids() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.published)
}

// fleetOf returns n Managers over one store and one hub, each with a cache
// TTL of an hour, so that only a notification can explain a refusal.
func fleetOf(t *testing.T, n int, store apikey.Store, h *hub) []*apikey.Manager {
	t.Helper()
	ms := make([]*apikey.Manager, n)
	for i := range ms {
		ms[i] = newManager(t, store, apikey.Options{Notifier: h, CacheTTL: time.Hour})
	}
	require.Eventually(t, func() bool { return h.subscribers() == n }, 10*time.Second, time.Millisecond)
	return ms
}

// Every change made through one Manager is honoured by another at once,
// each operation publishing the ids it changed.
func TestNotifierPropagatesEveryChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	refused := func(want error) func(*testing.T, *apikey.Key, error) {
		return func(t *testing.T, _ *apikey.Key, err error) { assert.ErrorIs(t, err, want) }
	}
	tests := []struct {
		name   string
		before func(a *apikey.Manager, k *apikey.Key) error // optional, made known to b first
		change func(a *apikey.Manager, k *apikey.Key) error
		check  func(t *testing.T, k *apikey.Key, err error) // b's verification after the change
	}{
		{"Revoke", nil, func(a *apikey.Manager, k *apikey.Key) error { return a.Revoke(ctx, k.ID) }, refused(apikey.ErrRevoked)},
		{"RevokeOwner", nil, func(a *apikey.Manager, k *apikey.Key) error {
			_, err := a.RevokeOwner(ctx, k.Owner)
			return err
		}, refused(apikey.ErrRevoked)},
		{"Delete", nil, func(a *apikey.Manager, k *apikey.Key) error { return a.Delete(ctx, k.ID) }, refused(apikey.ErrInvalid)},
		{"Rotate", nil, func(a *apikey.Manager, k *apikey.Key) error {
			_, err := a.Rotate(ctx, k.ID, 0)
			return err
		}, refused(apikey.ErrExpired)},
		{"Disable", nil, func(a *apikey.Manager, k *apikey.Key) error {
			_, err := a.Disable(ctx, k.ID)
			return err
		}, refused(apikey.ErrDisabled)},
		{"Enable", func(a *apikey.Manager, k *apikey.Key) error {
			_, err := a.Disable(ctx, k.ID)
			return err
		}, func(a *apikey.Manager, k *apikey.Key) error {
			_, err := a.Enable(ctx, k.ID)
			return err
		}, func(t *testing.T, _ *apikey.Key, err error) { assert.NoError(t, err, "b accepts the enabled key") }},
		{"Update", nil, func(a *apikey.Manager, k *apikey.Key) error {
			_, err := a.Update(ctx, k.ID, func(k *apikey.Key) error {
				k.Name, k.Scopes = "renamed", []string{"read"}
				return nil
			})
			return err
		}, func(t *testing.T, k *apikey.Key, err error) {
			require.NoError(t, err)
			assert.Equal(t, "renamed", k.Name, "b sees the new record")
			assert.Equal(t, []string{"read"}, k.Scopes)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub()
			ms := fleetOf(t, 2, memstore.New(), h)
			a, b := ms[0], ms[1]
			token, k := issue(t, a, apikey.IssueParams{Owner: "owner-" + tt.name, Scopes: []string{"read", "write"}})
			if tt.before != nil {
				require.NoError(t, tt.before(a, k))
				_, err := b.Verify(ctx, token)
				require.Error(t, err, "b knows of the first change")
			} else {
				_, err := b.Verify(ctx, token)
				require.NoError(t, err, "b caches the key")
			}
			published := len(h.ids())

			require.NoError(t, tt.change(a, k))
			assert.Contains(t, h.ids()[published:], k.ID, "the change is published")
			got, err := b.Verify(ctx, token)
			tt.check(t, got, err)
		})
	}
}

// The id is published only after the store write: a Manager that hears
// of a change and reads the store again must find the new record.
func TestNotifierPublishesAfterTheWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHub()
	store := newSpy()
	ms := fleetOf(t, 2, store, h)
	a, b := ms[0], ms[1]
	token, k := issue(t, a, apikey.IssueParams{})
	_, err := b.Verify(ctx, token)
	require.NoError(t, err)

	// When B hears of the change, it reads the store at once: the record
	// it finds must already be revoked.
	var seen atomic.Pointer[apikey.Key]
	probe := &hubSub{changed: func(id string) {
		if id == k.ID {
			if got, err := store.Store.Get(ctx, id); err == nil {
				seen.Store(got)
			}
		}
	}}
	h.mu.Lock()
	h.subs[probe] = struct{}{}
	h.mu.Unlock()
	require.NoError(t, a.Revoke(ctx, k.ID))
	require.NotNil(t, seen.Load(), "the revocation was published")
	assert.False(t, seen.Load().RevokedAt.IsZero(), "published before the store write")
	_, err = b.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrRevoked)
}

// A failed Publish does not fail the change; it is counted, and the other
// instance's cache TTL remains the bound.
func TestNotifierPublishFailureIsNotAnError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHub()
	store := memstore.New()
	ms := fleetOf(t, 2, store, h)
	a, b := ms[0], ms[1]
	token, k := issue(t, a, apikey.IssueParams{})
	_, err := b.Verify(ctx, token)
	require.NoError(t, err)

	h.fail.Store(true)
	require.NoError(t, a.Revoke(ctx, k.ID), "the revocation stands")
	stored, err := store.Get(ctx, k.ID)
	require.NoError(t, err)
	assert.False(t, stored.RevokedAt.IsZero())
	assert.EqualValues(t, 1, a.Stats().PublishErrors)
	_, err = a.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrRevoked, "the publishing instance honours it at once")
	_, err = b.Verify(ctx, token)
	assert.NoError(t, err, "the lost message leaves b on its cache TTL")
}

// On (re)subscription the whole cache is dropped: changes missed while
// disconnected are honoured at once.
func TestNotifierResubscriptionDropsCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHub()
	store := memstore.New()
	b := fleetOf(t, 1, store, h)[0]
	tokens := make([]string, 3)
	for i := range tokens {
		var k *apikey.Key
		tokens[i], k = issue(t, b, apikey.IssueParams{})
		_, err := b.Verify(ctx, tokens[i])
		require.NoError(t, err)
		require.NoError(t, store.Delete(ctx, k.ID), "a change b hears nothing of")
	}
	_, err := b.Verify(ctx, tokens[0])
	require.NoError(t, err, "served from the cache")
	before := b.Stats().CacheResets
	h.resubscribe()
	for _, token := range tokens {
		_, err = b.Verify(ctx, token)
		assert.ErrorIs(t, err, apikey.ErrInvalid)
	}
	assert.Equal(t, before+1, b.Stats().CacheResets)
}

// RevokeOwner of many keys reaches every cache, whether its ids are
// published one by one or as one "" (drop everything).
func TestNotifierLargeRevokeOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHub()
	ms := fleetOf(t, 2, memstore.New(), h)
	a, b := ms[0], ms[1]
	tokens := make([]string, 101)
	for i := range tokens {
		tokens[i], _ = issue(t, a, apikey.IssueParams{Owner: "big"})
		_, err := b.Verify(ctx, tokens[i])
		require.NoError(t, err)
	}
	ids, err := a.RevokeOwner(ctx, "big")
	require.NoError(t, err)
	require.Len(t, ids, 101)
	published := h.ids()
	if !slices.Contains(published, "") {
		for _, id := range ids {
			assert.Contains(t, published, id)
		}
	}
	for _, token := range tokens {
		_, err = b.Verify(ctx, token)
		assert.ErrorIs(t, err, apikey.ErrRevoked)
	}
}

// With a synchronous notifier, once Revoke has returned on one instance no
// verification starting later succeeds on another, while many goroutines
// verify there concurrently.
func TestNotifierRevokeIsImmediateAcrossInstances(t *testing.T) {
	t.Parallel()
	for round := range 10 {
		h := newHub()
		store := slowSpy(time.Duration(round%3) * 100 * time.Microsecond)
		ms := fleetOf(t, 2, store, h)
		a, b := ms[0], ms[1]
		tokens := make([]string, 4)
		ids := make([]string, 4)
		for i := range tokens {
			var k *apikey.Key
			tokens[i], k = issue(t, a, apikey.IssueParams{})
			ids[i] = k.ID
		}
		var revokedAt [4]atomic.Int64
		var violations atomic.Int64
		seq := newCounter()
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					n := (w + i) % 4
					start := seq.add()
					rev := revokedAt[n].Load()
					_, err := b.Verify(context.Background(), tokens[n])
					if err == nil && rev != 0 && rev < start {
						violations.Add(1)
					}
				}
			})
		}
		for i := range ids {
			seq.await(32)
			require.NoError(t, a.Revoke(context.Background(), ids[i]))
			revokedAt[i].Store(seq.add())
		}
		seq.await(128)
		close(stop)
		wg.Wait()
		require.Zero(t, violations.Load(), "a verification on b that started after a's Revoke returned succeeded")
	}
}

// Close ends the subscription.
func TestNotifierCloseUnsubscribes(t *testing.T) {
	t.Parallel()
	h := newHub()
	m, err := apikey.New(memstore.New(), apikey.Options{Notifier: h})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return h.subscribers() == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, m.Close(context.Background()))
	assert.Zero(t, h.subscribers())
}

// earlyNotifier's Subscribe returns at once the first times it is called.
type earlyNotifier struct {
	*hub
	calls atomic.Int32
}

func (n *earlyNotifier) Subscribe(ctx context.Context, changed func(string)) error {
	if n.calls.Add(1) <= 2 {
		if n.calls.Load() == 2 {
			panic("notifier bug")
		}
		return errors.New("connection refused")
	}
	return n.hub.Subscribe(ctx, changed)
}

// A Subscribe that returns early (or panics) is retried with backoff.
func TestNotifierSubscribeIsRetried(t *testing.T) {
	t.Parallel()
	n := &earlyNotifier{hub: newHub()}
	newManager(t, memstore.New(), apikey.Options{Notifier: n})
	require.Eventually(t, func() bool { return n.subscribers() == 1 }, 10*time.Second, time.Millisecond)
	assert.EqualValues(t, 3, n.calls.Load())
}
