package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

// testRotatorConditional checks that a rotation based on a stale read of
// the old key writes nothing, so that it never undoes a change made since.
func testRotatorConditional(t *testing.T, s apikey.Store) {
	r, ok := s.(apikey.Rotator)
	if !ok {
		t.Skip("store does not implement apikey.Rotator")
	}
	old := NewKey("alice")
	mustCreate(t, s, old)
	read := mustGet(t, s, old.ID)
	changed := mustGet(t, s, old.ID)
	changed.Disabled = true
	require.NoError(t, s.Update(ctx(t), changed))

	succ := NewKey("alice")
	succ.RotatedFrom = old.ID
	err := r.Rotate(ctx(t), read, base.Add(time.Hour), succ)
	require.ErrorIs(t, err, apikey.ErrConflict, "a rotation at a stale revision")
	_, err = s.Get(ctx(t), succ.ID)
	assert.ErrorIs(t, err, apikey.ErrNotFound, "a stale rotation stored its successor")
	got := mustGet(t, s, old.ID)
	assertSame(t, changed, got)
	assert.Equal(t, int64(2), got.Revision, "a stale rotation wrote the old key")

	require.NoError(t, r.Rotate(ctx(t), got, base.Add(time.Hour), succ), "at the current revision")
	assert.Equal(t, int64(3), mustGet(t, s, old.ID).Revision)
}

// testRotatorEndsGrace checks that rotating B, itself the successor of A,
// ends A's grace at B's successor's creation, in the same write. A
// predecessor that is revoked, expired earlier or gone is left alone.
func testRotatorEndsGrace(t *testing.T, s apikey.Store) {
	r, ok := s.(apikey.Rotator)
	if !ok {
		t.Skip("store does not implement apikey.Rotator")
	}
	at := func(m int) time.Time { return apikey.UTCMicro(base.Add(time.Duration(m) * time.Minute)) }
	rotate := func(old *apikey.Key, m int) *apikey.Key {
		t.Helper()
		succ := NewKey("alice")
		succ.CreatedAt, succ.RotatedFrom = at(m), old.ID
		require.NoError(t, r.Rotate(ctx(t), mustGet(t, s, old.ID), at(m+60), succ))
		return mustGet(t, s, succ.ID)
	}

	a := NewKey("alice")
	mustCreate(t, s, a)
	b := rotate(a, 1) // A in grace until minute 61
	gotA := mustGet(t, s, a.ID)
	assert.True(t, at(61).Equal(gotA.ExpiresAt), "A's grace: %v", gotA.ExpiresAt)
	c := rotate(b, 2)
	gotA = mustGet(t, s, a.ID)
	assert.True(t, c.CreatedAt.Equal(gotA.ExpiresAt), "A's grace ends when B is rotated: %v", gotA.ExpiresAt)
	assert.Equal(t, int64(3), gotA.Revision, "ending A's grace increments its Revision")
	gotB := mustGet(t, s, b.ID)
	assert.True(t, at(62).Equal(gotB.ExpiresAt), "B is in grace: %v", gotB.ExpiresAt)
	assert.Equal(t, c.ID, gotB.RotatedTo)

	d := rotate(c, 3)
	gotA2, gotB := mustGet(t, s, a.ID), mustGet(t, s, b.ID)
	assert.Equal(t, gotA, gotA2, "A, whose grace ended earlier, is left alone")
	assert.True(t, d.CreatedAt.Equal(gotB.ExpiresAt), "B's grace ends when C is rotated: %v", gotB.ExpiresAt)
	assert.True(t, at(63).Equal(mustGet(t, s, c.ID).ExpiresAt), "C is in grace")

	t.Run("RevokedPredecessor", func(t *testing.T) {
		d := mustGet(t, s, d.ID)
		require.NoError(t, s.Update(ctx(t), withRevoked(mustGet(t, s, c.ID), at(4))))
		cBefore := mustGet(t, s, c.ID)
		rotate(d, 5)
		assert.Equal(t, cBefore, mustGet(t, s, c.ID), "a revoked predecessor is not written")
	})
	t.Run("PredecessorThatExpiresFirst", func(t *testing.T) {
		p := NewKey("alice")
		p.ExpiresAt = at(10)
		mustCreate(t, s, p)
		q := rotate(p, 9)
		before := mustGet(t, s, p.ID)
		assert.True(t, at(10).Equal(before.ExpiresAt), "the rotation kept the earlier expiry")
		rotate(q, 20)
		assert.Equal(t, before, mustGet(t, s, p.ID), "a predecessor expired before the rotation is not written")
	})
	t.Run("PredecessorGone", func(t *testing.T) {
		p := NewKey("alice")
		mustCreate(t, s, p)
		q := rotate(p, 30)
		require.NoError(t, s.Delete(ctx(t), p.ID))
		rotate(q, 31)
		_, err := s.Get(ctx(t), p.ID)
		assert.ErrorIs(t, err, apikey.ErrNotFound, "a deleted predecessor stays deleted")
	})
}

func withRevoked(k *apikey.Key, at time.Time) *apikey.Key {
	k.RevokedAt = at
	return k
}
