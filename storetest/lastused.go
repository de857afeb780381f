package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/usage"
)

// minute is the granularity of the last-used tests, the Manager's default.
const minute = time.Minute

// The race of granular flushes: lastUsedWriters instances flush the same
// lastUsedKeys keys at once, with times within a minute of each other.
const (
	lastUsedWriters = 16
	lastUsedKeys    = 20
)

// runLastUsedTests runs the usage.LastUsedStore contract when the store
// implements it: one subtest per sentence, then the race of the flushes
// of a fleet.
func runLastUsedTests(t *testing.T, newStore func(t *testing.T) apikey.Store, opts Options) {
	tests := []struct {
		name string
		fn   func(*testing.T, apikey.Store, usage.LastUsedStore)
	}{
		{"LastUsedStoreWritesOnlyBeyondTheGranularity", testGranularWrites},
		{"LastUsedStoreWithGranularityZeroIsMarkUsed", testGranularZero},
		{"LastUsedStoreCountsRowsWrittenInLargeBatches", testGranularLarge},
		{"LastUsedStoreHonoursCancelledContext", testGranularCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			tc.fn(t, s, lastUsedStore(t, s))
		})
	}
	if opts.Trials > 0 {
		t.Run("RaceConcurrentGranularFlushesWriteEachKeyOnce", func(t *testing.T) {
			s := newStore(t)
			ls := lastUsedStore(t, s)
			ids := make([]string, lastUsedKeys)
			for i := range ids {
				k := NewKey("fleet")
				mustCreate(t, s, k)
				ids[i] = k.ID
			}
			runTrials(t, opts, func(n int) string { return raceGranular(t, s, ls, ids, n) })
		})
	}
}

func lastUsedStore(t *testing.T, s apikey.Store) usage.LastUsedStore {
	t.Helper()
	require.NotNil(t, s, "newStore returned nil")
	ls, ok := s.(usage.LastUsedStore)
	if !ok {
		t.Skip("store does not implement usage.LastUsedStore")
	}
	return ls
}

// markGranular calls MarkUsedGranular and returns the keys it wrote.
func markGranular(t *testing.T, ls usage.LastUsedStore, uses map[string]time.Time, g time.Duration) int {
	t.Helper()
	n, err := ls.MarkUsedGranular(ctx(t), uses, g)
	require.NoError(t, err)
	return n
}

func testGranularWrites(t *testing.T, s apikey.Store, ls usage.LastUsedStore) {
	k := NewKey("alice")
	mustCreate(t, s, k)
	t1 := apikey.UTCMicro(base.Add(time.Hour))
	lastUsed := func() time.Time { return mustGet(t, s, k.ID).LastUsedAt }

	assert.Equal(t, 1, markGranular(t, ls, map[string]time.Time{k.ID: t1, apikey.NewID(): t1}, minute),
		"a key never used is written; an unknown id is ignored")
	assert.True(t, t1.Equal(lastUsed()), "LastUsedAt %v, want %v", lastUsed(), t1)
	for _, at := range []time.Time{t1.Add(30 * time.Second), t1.Add(minute), t1.Add(-time.Hour)} {
		assert.Equal(t, 0, markGranular(t, ls, map[string]time.Time{k.ID: at}, minute), "use at %v", at)
		assert.True(t, t1.Equal(lastUsed()), "a use within the granularity, or earlier, wrote %v", lastUsed())
	}
	t2 := t1.Add(minute + time.Microsecond)
	assert.Equal(t, 1, markGranular(t, ls, map[string]time.Time{k.ID: t2}, minute))
	assert.True(t, t2.Equal(lastUsed()), "a use beyond the granularity is written: %v", lastUsed())
	got := mustGet(t, s, k.ID)
	assert.Equal(t, int64(1), got.Revision, "MarkUsedGranular leaves Revision alone")
	assert.Equal(t, 0, markGranular(t, ls, nil, minute), "an empty batch writes nothing")
}

func testGranularZero(t *testing.T, s apikey.Store, ls usage.LastUsedStore) {
	k := NewKey("alice")
	mustCreate(t, s, k)
	t1 := apikey.UTCMicro(base.Add(time.Hour))
	assert.Equal(t, 1, markGranular(t, ls, map[string]time.Time{k.ID: t1}, 0))
	assert.Equal(t, 0, markGranular(t, ls, map[string]time.Time{k.ID: t1}, 0), "the same time again")
	t2 := t1.Add(time.Microsecond)
	assert.Equal(t, 1, markGranular(t, ls, map[string]time.Time{k.ID: t2}, 0), "any later time")
	assert.True(t, t2.Equal(mustGet(t, s, k.ID).LastUsedAt))
}

// testGranularLarge sends a batch larger than a store is likely to write
// in one statement, half of whose keys are within the granularity of
// their stored use: the count is exactly the other half.
func testGranularLarge(t *testing.T, s apikey.Store, ls usage.LastUsedStore) {
	const n = 2100
	t1 := apikey.UTCMicro(base.Add(time.Hour))
	first := make(map[string]time.Time, n)
	ids := make([]string, n)
	for i := range ids {
		k := NewKey("bulk")
		mustCreate(t, s, k)
		ids[i] = k.ID
		first[k.ID] = t1
	}
	assert.Equal(t, n, markGranular(t, ls, first, minute))
	next := make(map[string]time.Time, n)
	for i, id := range ids {
		next[id] = t1.Add(30 * time.Second) // within the granularity
		if i%2 == 0 {
			next[id] = t1.Add(2 * minute)
		}
	}
	assert.Equal(t, n/2, markGranular(t, ls, next, minute))
	for i, id := range ids {
		want := t1
		if i%2 == 0 {
			want = next[id]
		}
		if got := mustGet(t, s, id).LastUsedAt; !want.Equal(got) {
			t.Fatalf("key %d: LastUsedAt %v, want %v", i, got, want)
		}
	}
}

func testGranularCancelled(t *testing.T, s apikey.Store, ls usage.LastUsedStore) {
	k := NewKey("alice")
	mustCreate(t, s, k)
	c, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ls.MarkUsedGranular(c, map[string]time.Time{k.ID: base.Add(time.Hour)}, minute)
	assert.True(t, errors.Is(err, context.Canceled), "want context.Canceled, got %v", err)
	assert.True(t, mustGet(t, s, k.ID).LastUsedAt.IsZero(), "a cancelled call writes nothing")
}

// raceGranular is one trial: lastUsedWriters instances flush the uses of
// the same keys at once, each at its own time within a minute of the
// others and more than a minute after the previous trial's. Each key must
// be written by exactly one of them, the counts must say so, and its
// LastUsedAt must be the time of the one that wrote it.
func raceGranular(t *testing.T, s apikey.Store, ls usage.LastUsedStore, ids []string, n int) string {
	start := apikey.UTCMicro(base).Add(time.Duration(n+1) * 2 * minute)
	written := make([]int, lastUsedWriters)
	errs := make([]error, lastUsedWriters)
	fns := make([]func(), lastUsedWriters)
	at := func(w int) time.Time { return start.Add(time.Duration(w) * time.Second) }
	for w := range fns {
		fns[w] = func() {
			uses := make(map[string]time.Time, len(ids))
			for _, id := range ids {
				uses[id] = at(w)
			}
			written[w], errs[w] = ls.MarkUsedGranular(context.Background(), uses, minute)
		}
	}
	together(fns...)
	total := 0
	for w, err := range errs {
		if err != nil {
			return fmt.Sprintf("writer %d: MarkUsedGranular: %v", w, err)
		}
		total += written[w]
	}
	if total != len(ids) {
		return fmt.Sprintf("%d rows written by %v, want %d: each key once", total, written, len(ids))
	}
	var wg sync.WaitGroup
	bad := make([]string, len(ids))
	for i, id := range ids {
		wg.Go(func() {
			k, err := s.Get(context.Background(), id)
			switch {
			case err != nil:
				bad[i] = fmt.Sprintf("Get: %v", err)
			case k.LastUsedAt.Before(at(0)) || k.LastUsedAt.After(at(lastUsedWriters-1)):
				bad[i] = fmt.Sprintf("key %s: LastUsedAt %v is none of this trial's uses", id, k.LastUsedAt)
			}
		})
	}
	wg.Wait()
	for _, b := range bad {
		if b != "" {
			return b
		}
	}
	return ""
}
