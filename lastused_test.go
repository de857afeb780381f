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
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/storetest/fleetsim"
)

// markSpy counts MarkUsed calls on a spy store.
type markSpy struct {
	*spyStore
	mu      sync.Mutex
	batches []map[string]time.Time
	failing atomic.Bool
	stall   chan struct{}
	stalled chan struct{} // closed when a MarkUsed call waits on stall
	once    sync.Once
}

func (s *markSpy) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	if s.stall != nil {
		s.once.Do(func() { close(s.stalled) })
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
	store := &markSpy{spyStore: newSpy(), stall: make(chan struct{}), stalled: make(chan struct{})}
	m := newManager(t, store, apikey.Options{LastUsedInterval: time.Millisecond})
	token, _ := issue(t, m, apikey.IssueParams{})
	_, err := m.Verify(context.Background(), token)
	require.NoError(t, err)
	<-store.stalled // a flush is now stuck in MarkUsed
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
	t.Parallel()
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

// batchStore records the MarkUsed batches and fails or stalls the calls it
// is told to.
type batchStore struct {
	apikey.Store
	mu      sync.Mutex
	batches []int
	calls   int
	fail    func(call int) bool // fail this call (1-based)
	stall   func(call int) bool // block this call until its context ends
}

func (s *batchStore) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	s.mu.Lock()
	s.calls++
	call := s.calls
	s.mu.Unlock()
	if s.stall != nil && s.stall(call) {
		<-ctx.Done()
		return ctx.Err()
	}
	if s.fail != nil && s.fail(call) {
		return errors.New("database is down")
	}
	s.mu.Lock()
	s.batches = append(s.batches, len(uses))
	s.mu.Unlock()
	return s.Store.MarkUsed(ctx, uses)
}

// issueAndUse issues n keys and verifies each once.
func issueAndUse(t *testing.T, m *apikey.Manager, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		token, k := issue(t, m, apikey.IssueParams{})
		ids[i] = k.ID
		_, err := m.Verify(context.Background(), token)
		require.NoError(t, err)
	}
	return ids
}

func assertAllUsed(t *testing.T, m *apikey.Manager, ids []string) {
	t.Helper()
	for _, id := range ids {
		k, err := m.Get(context.Background(), id)
		require.NoError(t, err)
		require.False(t, k.LastUsedAt.IsZero(), "key %s has no last use", id)
	}
}

// A flush writes in batches of bounded size; a failed batch does not hold
// up the others and is written by the next flush.
func TestLastUsedWritesInBatches(t *testing.T) {
	t.Parallel()
	store := &batchStore{Store: memstore.New(), fail: func(call int) bool { return call == 2 }}
	m := newManager(t, store, apikey.Options{LastUsedInterval: time.Hour, LastUsedBatch: 100, CacheTTL: -1})
	ids := issueAndUse(t, m, 250)
	require.NoError(t, m.Close(context.Background()))
	store.mu.Lock()
	defer store.mu.Unlock()
	assert.Equal(t, 4, store.calls, "three batches, the failed one once more")
	for _, n := range store.batches {
		assert.LessOrEqual(t, n, 100)
	}
	st := m.Stats()
	assert.EqualValues(t, 3, st.Flushes)
	assert.EqualValues(t, 1, st.FlushErrors)
	assertAllUsed(t, m, ids)
}

// Each batch has its own timeout, independent of the interval: a stalled
// batch gives up after LastUsedTimeout, the others are written, and Close
// retries it within its context.
func TestLastUsedBatchTimeout(t *testing.T) {
	store := &batchStore{Store: memstore.New(), stall: func(call int) bool { return call == 1 }}
	rec := &recMetrics{}
	m := newManager(t, store, apikey.Options{
		LastUsedInterval: time.Hour, LastUsedBatch: 10, LastUsedTimeout: 20 * time.Millisecond,
		Metrics: rec, CacheTTL: -1,
	})
	ids := issueAndUse(t, m, 25)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, m.Close(ctx))
	assert.Less(t, time.Since(start), 5*time.Second)
	assertAllUsed(t, m, ids)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.flushErr, 4)
	assert.ErrorIs(t, rec.flushErr[0], apikey.ErrUnavailable)
	assert.Equal(t, 25, rec.flushed[1]+rec.flushed[2]+rec.flushed[3])
	assert.Equal(t, 0, rec.queued[len(rec.queued)-1])
}

// A store that never answers cannot make a flush livelock or the queue
// grow past its bound, and Close gives up when its context ends.
func TestLastUsedStalledStoreStaysBounded(t *testing.T) {
	t.Parallel()
	store := &batchStore{Store: memstore.New(), stall: func(int) bool { return true }}
	rec := &recMetrics{}
	const bound = 50
	m := newManager(t, store, apikey.Options{
		LastUsedInterval: 5 * time.Millisecond, LastUsedQueue: bound, LastUsedBatch: 7,
		LastUsedTimeout: 2 * time.Millisecond, Metrics: rec, CacheTTL: -1,
	})
	tokens := make([]string, 120)
	for i := range tokens {
		tokens[i], _ = issue(t, m, apikey.IssueParams{})
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 600 {
				_, err := m.Verify(context.Background(), tokens[(g*31+i)%len(tokens)])
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	require.Eventually(t, func() bool { return m.Stats().FlushErrors > 3 }, 5*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, m.Close(ctx), apikey.ErrUnavailable)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, q := range rec.queued {
		assert.LessOrEqual(t, q, bound)
	}
	st := m.Stats()
	assert.Positive(t, st.UsesDropped)
	assert.EqualValues(t, 2400, st.UsesRecorded+st.UsesDropped)
}

func TestLastUsedOptionsValidated(t *testing.T) {
	t.Parallel()
	for _, o := range []apikey.Options{{LastUsedQueue: -1}, {LastUsedBatch: -1}, {LastUsedTimeout: -time.Second}} {
		_, err := apikey.New(memstore.New(), o)
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
	}
}

// issueMany issues n keys through a Manager over store and returns their
// tokens and ids.
func issueMany(t *testing.T, store apikey.Store, n int) ([]string, []string) {
	t.Helper()
	m := newManager(t, store, apikey.Options{LastUsedInterval: -1})
	tokens, ids := make([]string, n), make([]string, n)
	for i := range n {
		token, k := issue(t, m, apikey.IssueParams{Owner: "fleet"})
		tokens[i], ids[i] = token, k.ID
	}
	return tokens, ids
}

// Sixteen instances that each use every key in every 10-second flush
// interval write each key once a minute with the default granularity,
// and once per instance and interval with none: 16 x 6 times as often.
func TestLastUsedGranularityBoundsAFleetsWrites(t *testing.T) {
	t.Parallel()
	const keys, instances, steps = 100, 16, 12 // two minutes
	for _, tc := range []struct {
		name        string
		granularity time.Duration
		want        uint64
	}{
		{"default", 0, keys * 2},
		{"none", -1, keys * instances * steps},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := memstore.New()
			tokens, ids := issueMany(t, store, keys)
			r, err := fleetsim.Run(context.Background(), fleetsim.Config{
				Store: store, Tokens: tokens, Instances: instances, Steps: steps,
				Options: apikey.Options{Peppers: testPepper, LastUsedGranularity: tc.granularity},
				Start:   time.Now().Add(time.Hour),
			})
			require.NoError(t, err)
			assert.Equal(t, keys*instances*steps, r.Verified)
			assert.Equal(t, tc.want, r.Written, "rows written: %+v", r)
			for _, id := range ids {
				k, err := store.Get(context.Background(), id)
				require.NoError(t, err)
				lag := r.End.Sub(k.LastUsedAt)
				assert.LessOrEqual(t, lag, time.Minute+10*time.Second, "LastUsedAt lags the last use by at most the granularity and one interval")
			}
		})
	}
}

// A Manager does not hand the recorder a use of a key whose stored last
// use, as it read it, is within the granularity: with a store that
// writes every time it is given, the key is still written once a minute.
func TestLastUsedSkipsUsesKnownFresh(t *testing.T) {
	t.Parallel()
	c := newClock()
	store := &markSpy{spyStore: newSpy()} // a plain Store: every use given is written
	m := newManager(t, store, apikey.Options{Now: c.Now, LastUsedInterval: time.Millisecond, CacheTTL: time.Second})
	token, k := issue(t, m, apikey.IssueParams{})
	verifyAndFlush := func() {
		t.Helper()
		before := store.count()
		_, err := m.Verify(context.Background(), token)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return store.count() > before }, 5*time.Second, time.Millisecond, "the use is flushed")
	}
	verifyAndFlush()
	first := c.Now()
	for range 29 { // two seconds apart: each verification reads the key again
		c.Add(2 * time.Second)
		_, err := m.Verify(context.Background(), token)
		require.NoError(t, err)
	}
	assert.EqualValues(t, 1, m.Stats().UsesRecorded, "uses within a minute of the stored one are not recorded")
	got, err := store.Get(context.Background(), k.ID)
	require.NoError(t, err)
	assert.True(t, first.Equal(got.LastUsedAt), "LastUsedAt %v, want %v", got.LastUsedAt, first)

	c.Add(2 * time.Second) // 60 s after the stored use
	verifyAndFlush()
	assert.EqualValues(t, 2, m.Stats().UsesRecorded)
	assert.EqualValues(t, 2, m.Stats().UsesWritten, "with a plain Store every key flushed counts as written")
	got, err = store.Get(context.Background(), k.ID)
	require.NoError(t, err)
	assert.True(t, c.Now().Equal(got.LastUsedAt), "LastUsedAt %v, want %v", got.LastUsedAt, c.Now())
}

// With a negative granularity every flush writes the latest use it
// holds; with a granularity, the store does not write a use within it of
// the stored one, even from a Manager that read the key before that use
// was stored, and writes one beyond it.
func TestLastUsedGranularityOption(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		granularity time.Duration
		after       time.Duration // the second use, after the first
		moves       bool
	}{
		{"none", -1, time.Second, true},
		{"default within", 0, 59 * time.Second, false},
		{"default beyond", 0, 61 * time.Second, true},
		{"ten seconds within", 10 * time.Second, 9 * time.Second, false},
		{"ten seconds beyond", 10 * time.Second, 11 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newClock()
			store := memstore.New()
			tokens, ids := issueMany(t, store, 1)
			opts := apikey.Options{Now: c.Now, LastUsedGranularity: tc.granularity, LastUsedInterval: time.Hour, CacheTTL: time.Hour}
			first, second := newManager(t, store, opts), newManager(t, store, opts)
			for _, m := range []*apikey.Manager{first, second} { // both cache the key, never used
				_, err := m.Verify(context.Background(), tokens[0])
				require.NoError(t, err)
			}
			require.NoError(t, first.Close(context.Background()))
			used := c.Now()
			c.Add(tc.after)
			_, err := second.Verify(context.Background(), tokens[0])
			require.NoError(t, err)
			require.NoError(t, second.Close(context.Background()))
			k, err := store.Get(context.Background(), ids[0])
			require.NoError(t, err)
			want := used
			if tc.moves {
				want = c.Now()
			}
			assert.True(t, want.Equal(k.LastUsedAt), "LastUsedAt %v, want %v", k.LastUsedAt, want)
			assert.EqualValues(t, map[bool]int{true: 1, false: 0}[tc.moves], second.Stats().UsesWritten)
		})
	}
}
