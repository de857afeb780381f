package apikey_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

// markSpy counts MarkUsed calls on a spy store.
type markSpy struct {
	*spyStore
	mu      sync.Mutex
	batches []map[string]time.Time
	failing atomic.Bool
	stall   chan struct{}
}

func (s *markSpy) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	if s.stall != nil {
		select {
		case <-s.stall:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.failing.Load() {
		return errors.New("database is down")
	}
	err := s.spyStore.MarkUsed(ctx, uses)
	s.mu.Lock()
	s.batches = append(s.batches, uses)
	s.mu.Unlock()
	return err
}

func (s *markSpy) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.batches)
}

func TestLastUsedIsBatched(t *testing.T) {
	c := newClock()
	store := &markSpy{spyStore: newSpy()}
	m := newManager(t, store, apikey.Options{Now: c.Now, LastUsedInterval: time.Hour})
	a, ka := issue(t, m, apikey.IssueParams{})
	b, kb := issue(t, m, apikey.IssueParams{})
	writes := store.calls.Load()
	for range 1000 {
		c.Add(time.Millisecond)
		_, err := m.Verify(context.Background(), a)
		require.NoError(t, err)
		_, err = m.Verify(context.Background(), b)
		require.NoError(t, err)
	}
	assert.Equal(t, 0, store.count(), "no store write on the request path")
	assert.LessOrEqual(t, store.calls.Load()-writes, int64(2), "at most one Get per key (then cached)")

	require.NoError(t, m.Close(context.Background()))
	require.Equal(t, 1, store.count(), "Close flushes everything in one batch")
	assert.Len(t, store.batches[0], 2)
	for _, id := range []string{ka.ID, kb.ID} {
		k, err := m.Get(context.Background(), id)
		require.NoError(t, err)
		assert.True(t, c.Now().Equal(k.LastUsedAt), "last use recorded: %v", k.LastUsedAt)
	}
	st := m.Stats()
	assert.EqualValues(t, 2000, st.UsesRecorded)
	assert.EqualValues(t, 1, st.Flushes)
}

func TestLastUsedFlushesOnInterval(t *testing.T) {
	store := &markSpy{spyStore: newSpy()}
	m := newManager(t, store, apikey.Options{LastUsedInterval: 20 * time.Millisecond})
	token, k := issue(t, m, apikey.IssueParams{})
	for range 100 {
		_, err := m.Verify(context.Background(), token)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return store.count() >= 1 }, 5*time.Second, 5*time.Millisecond)
	got, err := m.Get(context.Background(), k.ID)
	require.NoError(t, err)
	assert.False(t, got.LastUsedAt.IsZero())
}

func TestFailingFlushNeverFailsRequests(t *testing.T) {
	store := &markSpy{spyStore: newSpy()}
	store.failing.Store(true)
	m := newManager(t, store, apikey.Options{LastUsedInterval: 5 * time.Millisecond})
	token, k := issue(t, m, apikey.IssueParams{})
	for range 50 {
		_, err := m.Verify(context.Background(), token)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return m.Stats().FlushErrors > 0 }, 5*time.Second, 5*time.Millisecond)
	_, err := m.Verify(context.Background(), token)
	require.NoError(t, err, "requests keep working while flushes fail")

	store.failing.Store(false) // the uses were kept and are written once the store is back
	require.NoError(t, m.Close(context.Background()))
	got, err := m.Get(context.Background(), k.ID)
	require.NoError(t, err)
	assert.False(t, got.LastUsedAt.IsZero())
}

func TestStalledFlushNeverSlowsRequests(t *testing.T) {
	store := &markSpy{spyStore: newSpy(), stall: make(chan struct{})}
	m := newManager(t, store, apikey.Options{LastUsedInterval: time.Millisecond})
	token, _ := issue(t, m, apikey.IssueParams{})
	_, err := m.Verify(context.Background(), token)
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond) // a flush is now stuck in MarkUsed
	done := make(chan struct{})
	go func() {
		for range 100 {
			_, err := m.Verify(context.Background(), token)
			assert.NoError(t, err)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("verifications blocked behind a stalled flush")
	}
	close(store.stall)
}

func TestLastUsedQueueIsBounded(t *testing.T) {
	store := &markSpy{spyStore: newSpy()}
	m := newManager(t, store, apikey.Options{LastUsedInterval: time.Hour, LastUsedQueue: 2})
	for range 5 {
		token, _ := issue(t, m, apikey.IssueParams{})
		_, err := m.Verify(context.Background(), token)
		require.NoError(t, err)
	}
	assert.EqualValues(t, 3, m.Stats().UsesDropped)
	require.NoError(t, m.Close(context.Background()))
	assert.Len(t, store.batches[0], 2)
}

func TestEvents(t *testing.T) {
	var mu sync.Mutex
	var events []apikey.Event
	m := newManager(t, newSpy(), apikey.Options{OnEvent: func(_ context.Context, e apikey.Event) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}})
	ctx := context.Background()
	token, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
	_, err := m.Verify(ctx, token)
	require.NoError(t, err)
	_, err = m.Verify(ctx, "sk_garbage")
	require.Error(t, err)
	_, _, err = m.Rotate(ctx, k.ID, time.Minute)
	require.NoError(t, err)
	require.NoError(t, m.Revoke(ctx, k.ID))

	var types []apikey.EventType
	for _, e := range events {
		types = append(types, e.Type)
	}
	assert.Equal(t, []apikey.EventType{"issue", "verify", "verify", "rotate", "revoke"}, types)
	assert.Equal(t, k.ID, events[1].KeyID)
	assert.Equal(t, "alice", events[1].Owner)
	assert.NoError(t, events[1].Err)
	assert.ErrorIs(t, events[2].Err, apikey.ErrMalformed)
	assert.Equal(t, "alice", events[3].Owner)
	assert.Equal(t, "alice", events[4].Owner)

	t.Run("a panicking hook changes nothing", func(t *testing.T) {
		m := newManager(t, newSpy(), apikey.Options{OnEvent: func(context.Context, apikey.Event) { panic("hook") }})
		token, _ := issue(t, m, apikey.IssueParams{})
		_, err := m.Verify(ctx, token)
		assert.NoError(t, err)
		_, err = m.Verify(ctx, token[:len(token)-1])
		assert.ErrorIs(t, err, apikey.ErrMalformed)
	})
}
