package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

func testPurger(t *testing.T, s apikey.Store) {
	p, ok := s.(apikey.Purger)
	if !ok {
		t.Skip("store does not implement apikey.Purger")
	}
	before := apikey.UTCMicro(base.Add(24 * time.Hour))
	dead, kept := map[string]bool{}, map[string]bool{}
	mk := func(owner string, revoked, expires time.Time) {
		k := NewKey(owner)
		k.RevokedAt, k.ExpiresAt = revoked, expires
		mustCreate(t, s, k)
		if (!revoked.IsZero() && revoked.Before(before)) || (!expires.IsZero() && expires.Before(before)) {
			dead[k.ID] = true
		} else {
			kept[k.ID] = true
		}
	}
	for i := range 3 {
		mk("alice", before.Add(-time.Duration(i+1)*time.Hour), time.Time{}) // revoked long ago
	}
	mk("bob", time.Time{}, before.Add(-time.Second))              // expired
	mk("bob", time.Time{}, before.Add(-time.Microsecond))         // expired just before
	mk("carol", before.Add(-time.Hour), before.Add(-time.Minute)) // both
	mk("carol", before.Add(time.Hour), before.Add(-time.Hour))    // expired, revoked later
	mk("alice", before, time.Time{})                              // revoked at before: kept
	mk("alice", time.Time{}, before)                              // expires at before: kept
	mk("alice", before.Add(time.Hour), time.Time{})               // revoked since
	mk("bob", time.Time{}, before.Add(time.Hour))                 // expires later
	mk("bob", time.Time{}, time.Time{})                           // never expires
	require.Len(t, dead, 7)

	purged := map[string]bool{}
	for calls := 0; ; calls++ {
		require.Less(t, calls, 10, "Purge does not end")
		got, err := p.Purge(ctx(t), before, 2)
		require.NoError(t, err)
		require.LessOrEqual(t, len(got), 2, "Purge deleted more than its limit")
		for _, id := range got {
			assert.False(t, purged[id], "%s purged twice", id)
			purged[id] = true
		}
		if len(got) < 2 {
			break
		}
	}
	assert.Equal(t, dead, purged, "Purge deletes the keys revoked or expired before before, and only those")
	for id := range dead {
		_, err := s.Get(ctx(t), id)
		assert.ErrorIs(t, err, apikey.ErrNotFound, "a purged key is gone")
	}
	for id := range kept {
		mustGet(t, s, id)
	}
	got, err := p.Purge(ctx(t), before, 100)
	require.NoError(t, err)
	assert.Empty(t, got, "nothing left to purge")
}
