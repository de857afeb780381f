package apikey_test

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

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

// countingStore counts the reads of a memstore, keeping its capabilities.
type countingStore struct {
	*memstore.Store
	gets atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, id string) (*apikey.Key, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, id)
}

// keptRecords is a Handler that keeps every record it is given, as an
// asynchronous or buffering handler does.
type keptRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *keptRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *keptRecords) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *keptRecords) WithGroup(string) slog.Handler            { return h }
func (h *keptRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r)
	h.mu.Unlock()
	return nil
}

// The verification events a Logger keeps hold no part of a request's
// token, whether the store was asked (a success, a revoked key) or not.
func TestVerifyEventsKeepNoPartOfAToken(t *testing.T) {
	ctx := context.Background()
	kept := &keptRecords{}
	m := newManager(t, memstore.New(), apikey.Options{Logger: slog.New(kept), CacheTTL: -1})
	token, _ := issue(t, m, apikey.IssueParams{})
	revoked, k := issue(t, m, apikey.IssueParams{})
	require.NoError(t, m.Revoke(ctx, k.ID))

	var collected atomic.Int32
	var wg sync.WaitGroup
	for _, tok := range []string{token, revoked, token, revoked} {
		wg.Go(func() {
			buf := strings.Clone(tok) // the request's own memory
			runtime.AddCleanup(unsafe.StringData(buf), func(c *atomic.Int32) { c.Add(1) }, &collected)
			m.Verify(ctx, buf)
		})
	}
	wg.Wait()
	for range 20 {
		runtime.GC()
		if collected.Load() == 4 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	assert.EqualValues(t, 4, collected.Load(), "a logged event still references a token")
	kept.mu.Lock()
	assert.NotEmpty(t, kept.recs)
	kept.mu.Unlock()
}

// A clock stepped back does not silence the log of failed verifications
// until it catches up: a flood after the step still logs a line.
func TestFailedVerificationLogsSurviveAClockSteppedBack(t *testing.T) {
	ctx := context.Background()
	kept := &keptRecords{}
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now, Logger: slog.New(kept)})
	unknown, _ := m.Format().New()
	warnings := func() int {
		kept.mu.Lock()
		defer kept.mu.Unlock()
		n := 0
		for _, r := range kept.recs {
			if r.Level == slog.LevelWarn {
				n++
			}
		}
		kept.recs = nil
		return n
	}
	_, err := m.Verify(ctx, unknown)
	require.ErrorIs(t, err, apikey.ErrInvalid)
	require.Equal(t, 1, warnings())

	c.Add(-time.Hour)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				_, _ = m.Verify(ctx, unknown)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 1, warnings(), "one line per second, by any reading of the clock")
}

func TestEvents(t *testing.T) {
	t.Parallel()
	log := &eventLog{}
	m := newManager(t, newSpy(), apikey.Options{Logger: slog.New(log)})
	ctx := context.Background()
	token, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
	_, err := m.Verify(ctx, token)
	require.NoError(t, err)
	_, err = m.Verify(ctx, "sk_garbage")
	require.Error(t, err)
	_, err = m.Rotate(ctx, k.ID, time.Minute)
	require.NoError(t, err)
	require.NoError(t, m.Revoke(ctx, k.ID))

	events := log.take()
	assert.Equal(t, []string{"issue", "verify", "verify", "rotate", "revoke"}, types(events, true))
	assert.Equal(t, k.ID, events[1].KeyID)
	assert.Equal(t, "alice", events[1].Owner)
	assert.Empty(t, events[1].Outcome, "a success has no outcome")
	assert.Equal(t, "malformed", events[2].Outcome, "named as Metrics.Verified names it")
	assert.Equal(t, "alice", events[3].Owner)
	assert.Equal(t, "alice", events[4].Owner)
}
