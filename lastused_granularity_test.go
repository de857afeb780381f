package apikey_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/storetest/fleetsim"
)

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
