package storetest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

// newestFirst sorts keys in List's order, by CreatedAt descending, then
// by ID descending.
func newestFirst(keys []*apikey.Key) []string {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, func(a, b *apikey.Key) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	return ids(keys)
}

// createAt creates a key of owner created at at and returns it.
func createAt(t *testing.T, s apikey.Store, owner string, at time.Time) *apikey.Key {
	t.Helper()
	k := NewKey(owner)
	k.CreatedAt = apikey.UTCMicro(at)
	mustCreate(t, s, k)
	return k
}

// listAll pages through owner's keys with opts (its Limit the page size)
// and returns their ids. It fails the test if a page is larger than asked
// or the paging does not end.
func listAll(t *testing.T, s apikey.Store, owner string, opts apikey.ListOptions) []string {
	t.Helper()
	var got []string
	for pages := 0; ; pages++ {
		require.Less(t, pages, 1000, "paging does not end")
		page, err := s.List(ctx(t), owner, opts)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), opts.PageSize(), "a page larger than the limit")
		for _, k := range page {
			require.Equal(t, owner, k.Owner, "a key of another owner")
		}
		got = append(got, ids(page)...)
		if len(page) < opts.PageSize() {
			return got
		}
		opts.After = page[len(page)-1].Cursor()
	}
}

func ids(ks []*apikey.Key) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.ID
	}
	return out
}

func testListOrder(t *testing.T, s apikey.Store) {
	var keys []*apikey.Key
	for _, d := range []time.Duration{0, time.Second, -time.Hour, time.Second, 24 * time.Hour, time.Microsecond, 0} {
		keys = append(keys, createAt(t, s, "alice", base.Add(d)))
	}
	createMany(t, s, "bob", 3)
	createAt(t, s, "bob", base.Add(48*time.Hour))
	got, err := s.List(ctx(t), "alice", apikey.ListOptions{})
	require.NoError(t, err)
	assert.Equal(t, newestFirst(keys), ids(got), "newest first: CreatedAt descending, then ID descending")
	for _, k := range got {
		assert.Equal(t, "alice", k.Owner)
	}
	if len(got) > 0 {
		assertSame(t, keys[4], got[0])
	}
}

func testListPaging(t *testing.T, s apikey.Store) {
	var keys []*apikey.Key
	for i := range 11 {
		keys = append(keys, createAt(t, s, "alice", base.Add(time.Duration(i%7)*time.Minute)))
	}
	want := newestFirst(keys)
	assert.Equal(t, want, listAll(t, s, "alice", apikey.ListOptions{Size: 4}))
	assert.Equal(t, want, listAll(t, s, "alice", apikey.ListOptions{Size: 1}))

	last := mustGet(t, s, want[len(want)-1])
	page, err := s.List(ctx(t), "alice", apikey.ListOptions{After: last.Cursor()})
	require.NoError(t, err)
	assert.Empty(t, page, "a page after the last key is empty")

	// A cursor is a position, not a key: it needs no stored key.
	mid := apikey.Cursor{CreatedAt: base.Add(3*time.Minute + time.Second)}
	var older []*apikey.Key
	for _, k := range keys {
		if mid.Precedes(k) {
			older = append(older, k)
		}
	}
	require.NotEmpty(t, older)
	assert.Equal(t, newestFirst(older), listAll(t, s, "alice", apikey.ListOptions{After: mid, Size: 2}))
}

func testListEqualTimes(t *testing.T, s apikey.Store) {
	want := createMany(t, s, "alice", 10) // one CreatedAt
	for _, limit := range []int{1, 3, 4, 10, 11} {
		assert.Equal(t, want, listAll(t, s, "alice", apikey.ListOptions{Size: limit}), "pages of %d", limit)
	}
	after := apikey.Cursor{CreatedAt: base, ID: want[4]}
	page, err := s.List(ctx(t), "alice", apikey.ListOptions{After: after})
	require.NoError(t, err)
	assert.Equal(t, want[5:], ids(page), "after a cursor of the same CreatedAt: the lower ids")
}

func testListZeroCreatedAt(t *testing.T, s apikey.Store) {
	var keys []*apikey.Key
	for i := range 6 {
		at := base.Add(time.Duration(i) * time.Minute)
		if i%2 == 0 {
			at = time.Time{} // not set: the oldest of all
		}
		k := NewKey("alice")
		k.CreatedAt = apikey.UTCMicro(at)
		mustCreate(t, s, k)
		keys = append(keys, k)
	}
	want := newestFirst(keys)
	for _, limit := range []int{1, 2, 5} {
		assert.Equal(t, want, listAll(t, s, "alice", apikey.ListOptions{Size: limit}), "pages of %d", limit)
	}
}

// testListStable checks that keys created while a client pages do not
// shift the pages. A key newer than the cursor never shows up on a later
// page. No key that was there is skipped, also when a listed key is
// deleted.
func testListStable(t *testing.T, s apikey.Store) {
	var keys []*apikey.Key
	for i := range 9 {
		keys = append(keys, createAt(t, s, "alice", base.Add(time.Duration(i/2)*time.Second)))
	}
	want := newestFirst(keys)
	var got []string
	opts := apikey.ListOptions{Size: 2}
	for pages := 0; ; pages++ {
		require.Less(t, pages, 20, "paging does not end")
		page, err := s.List(ctx(t), "alice", opts)
		require.NoError(t, err)
		got = append(got, ids(page)...)
		if len(page) < opts.PageSize() {
			break
		}
		opts.After = page[len(page)-1].Cursor()
		// Between pages: a newer key, a key of the cursor's time that
		// sorts before it, and the deletion of a key already listed.
		createAt(t, s, "alice", base.Add(time.Hour+time.Duration(pages)*time.Second))
		twin := NewKey("alice")
		twin.ID, twin.CreatedAt = opts.After.ID+"~", opts.After.CreatedAt
		mustCreate(t, s, twin)
		require.NoError(t, s.Delete(ctx(t), page[0].ID))
	}
	assert.Equal(t, want, got, "the keys that were there, each once, in order, and none added ahead of the cursor")
}

func testListUsable(t *testing.T, s apikey.Store) {
	at := base.Add(time.Hour) // with sub-microsecond digits
	micro := apikey.UTCMicro(at)
	var usable []*apikey.Key
	mk := func(d time.Duration, change func(k *apikey.Key)) {
		k := NewKey("alice")
		k.CreatedAt = apikey.UTCMicro(base.Add(d))
		change(k)
		mustCreate(t, s, k)
		if k.Usable(at) {
			usable = append(usable, k)
		}
	}
	mk(0, func(k *apikey.Key) { k.ExpiresAt = time.Time{} })
	mk(1*time.Second, func(k *apikey.Key) { k.ExpiresAt = micro.Add(time.Microsecond) })
	mk(2*time.Second, func(k *apikey.Key) { k.ExpiresAt = micro }) // expired at at
	mk(3*time.Second, func(k *apikey.Key) { k.ExpiresAt = micro.Add(-time.Minute) })
	mk(4*time.Second, func(k *apikey.Key) { k.RevokedAt = micro.Add(time.Hour) }) // revoked, whenever
	mk(5*time.Second, func(k *apikey.Key) { k.RevokedAt = base; k.ExpiresAt = time.Time{} })
	mk(6*time.Second, func(k *apikey.Key) { k.Disabled, k.Paused = true, true }) // usable, refused later
	mk(7*time.Second, func(k *apikey.Key) { k.RotatedTo = apikey.NewID() })      // in grace
	for i := range 12 {                                                          // newer than every usable key: a page must skip them all
		mk(time.Minute+time.Duration(i)*time.Second, func(k *apikey.Key) { k.RevokedAt = base })
	}
	require.Len(t, usable, 4)
	want := newestFirst(usable)
	for _, limit := range []int{1, 2, 3} {
		assert.Equal(t, want, listAll(t, s, "alice", apikey.ListOptions{Size: limit, UsableAt: at}), "pages of %d", limit)
	}
	all, err := s.List(ctx(t), "alice", apikey.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, all, 20, "without UsableAt every key is listed")
	first, err := s.List(ctx(t), "alice", apikey.ListOptions{Size: 1, UsableAt: at})
	require.NoError(t, err)
	require.Len(t, first, 1, "a page is never made of dead keys")
	assert.True(t, first[0].Usable(at))
}

func testListEmpty(t *testing.T, s apikey.Store) {
	createMany(t, s, "alice", 2)
	got, err := s.List(ctx(t), "nobody", apikey.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, got)
	got, err = s.List(ctx(t), "alice", apikey.ListOptions{UsableAt: base.Add(1000 * 24 * time.Hour)})
	require.NoError(t, err)
	assert.Empty(t, got, "every key expired")
}
