package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

// runManagerTests runs the guarantees a Manager gives over the store that
// need no concurrency, once with the store's capabilities and once
// through the plain Store interface.
func runManagerTests(t *testing.T, newStore func(t *testing.T) apikey.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, m *apikey.Manager)
	}{
		{"ManagerRotationsKeepOnePredecessorInGrace", testChainGrace},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, md := range bothModes {
				t.Run(md.name, func(t *testing.T) {
					m, err := apikey.New(md.wrap(newStore(t)), raceOptions)
					require.NoError(t, err)
					t.Cleanup(func() { _ = m.Close(context.Background()) })
					tc.fn(t, m)
				})
			}
		})
	}
}

// testChainGrace rotates A to B, B to C and C to D, each with an hour of
// grace. Only C, the last predecessor, still works. A and B are expired.
func testChainGrace(t *testing.T, m *apikey.Manager) {
	c := ctx(t)
	tokenA, a, err := m.Issue(c, apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}})
	require.NoError(t, err)
	tokens, keys := []string{tokenA}, []*apikey.Key{a}
	for range 3 {
		rot, err := m.Rotate(c, keys[len(keys)-1].ID, time.Hour)
		require.NoError(t, err)
		tokens, keys = append(tokens, rot.Token), append(keys, rot.Key)
	}
	now := m.Now()
	for i, name := range []string{"A", "B"} {
		_, err := m.Verify(c, tokens[i])
		assert.ErrorIs(t, err, apikey.ErrExpired, "%s, two rotations back, still works", name)
		k, err := m.Get(c, keys[i].ID)
		require.NoError(t, err)
		assert.True(t, k.Expired(now), "%s expires at %v", name, k.ExpiresAt)
	}
	k, err := m.Verify(c, tokens[2])
	require.NoError(t, err, "C, the last predecessor, is in grace")
	assert.True(t, k.InGrace(now))
	k, err = m.Verify(c, tokens[3])
	require.NoError(t, err, "D, the current key")
	assert.Empty(t, k.RotatedTo)
	usable, err := m.List(c, "alice", apikey.ListOptions{UsableAt: now})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{keys[3].ID, keys[2].ID}, ids(usable), "the current key and the one in grace")
	assert.Equal(t, newestFirst(usable), ids(usable), "newest first")
}
