package memstore_test

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memstore"
)

// The records are encoded field by field: a field added to apikey.Key
// must be added to the encoding (table.go) and to this list, or it would
// be lost.
func TestEveryKeyFieldIsStored(t *testing.T) {
	t.Parallel()
	var fields []string
	for f := range reflect.TypeFor[apikey.Key]().Fields() {
		fields = append(fields, f.Name)
	}
	assert.ElementsMatch(t, []string{
		"ID", "Prefix", "Hint", "Hash", "HashVersion", "Name", "Owner", "Scopes", "Plan", "Metadata",
		"CreatedAt", "ExpiresAt", "LastUsedAt", "RevokedAt", "RotatedFrom", "RotatedTo", "RotatedAt",
		"Lineage", "Disabled", "Paused", "Limits", "AllowedIPs", "Revision",
	}, fields, "apikey.Key changed: update memstore's encoding and this list")
}

func fullKey(id string) *apikey.Key {
	at := time.Date(2026, 11, 27, 12, 0, 0, 123456000, time.UTC)
	return &apikey.Key{
		ID: id, Prefix: "sk_test", Hint: "sk_test_...abcd", Hash: []byte(strings.Repeat("h", 80)), HashVersion: "hmac-sha256:1",
		Name: "Production ✓", Owner: "alice", Scopes: []string{"a", "b", "c", "d", "e"}, Plan: "pro",
		Metadata:  map[string]string{"team": "core", "": "empty"},
		CreatedAt: at, ExpiresAt: at.Add(time.Hour), LastUsedAt: at.Add(time.Minute), RevokedAt: time.Time{},
		RotatedFrom: "from", RotatedTo: "to", RotatedAt: at.Add(2 * time.Minute), Lineage: "lineage",
		Disabled: true, Paused: true, Limits: []limits.Limit{limits.Rate("per-second", 10, time.Second, 20)},
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")},
	}
}

// Every field comes back as it was stored, nil and empty alike, for ids of
// the issued length and of any other.
func TestRecordsRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := memstore.New()
	for _, k := range []*apikey.Key{
		fullKey("AAAAAAAAAAAAAAAA"),
		fullKey("a-longer-id-than-usual"),
		{ID: "BBBBBBBBBBBBBBBB", Scopes: []string{}, Metadata: map[string]string{}, Hash: []byte{}, Limits: []limits.Limit{}, AllowedIPs: []netip.Prefix{}},
		{ID: "x"},
	} {
		require.NoError(t, s.Create(ctx, k))
		got, err := s.Get(ctx, k.ID)
		require.NoError(t, err)
		want := k.Clone()
		want.Limits = slices.Clone(k.Limits)
		want.Revision = got.Revision // the store's to set
		assert.Equal(t, want, got)
	}
}

// A key returned by Get never changes, whatever the store does next, and
// changing it changes nothing stored.
func TestReturnedKeysAreStable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := memstore.New()
	k := fullKey("CCCCCCCCCCCCCCCC")
	require.NoError(t, s.Create(ctx, k))
	got, err := s.Get(ctx, k.ID)
	require.NoError(t, err)
	before := got.Clone()
	before.Limits = slices.Clone(got.Limits)

	require.NoError(t, s.MarkUsed(ctx, map[string]time.Time{k.ID: time.Now()}))
	require.NoError(t, s.Revoke(ctx, k.ID, time.Now()))
	got2, err := s.Get(ctx, k.ID)
	require.NoError(t, err)
	got2.Name, got2.Owner = "renamed", "bob"
	require.NoError(t, s.Update(ctx, got2))
	require.NoError(t, s.Delete(ctx, k.ID))
	assert.Equal(t, before, got)

	got.Scopes[0], got.Hash[0] = "admin", 'X'
	require.NoError(t, s.Create(ctx, k))
	again, err := s.Get(ctx, k.ID)
	require.NoError(t, err)
	assert.Equal(t, "a", again.Scopes[0])
	assert.Equal(t, byte('h'), again.Hash[0])
}

// The owner index follows creations, owner changes and deletions.
func TestOwnerIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := memstore.New()
	ids := func(owner string) []string {
		ks, err := s.List(ctx, owner, apikey.ListOptions{})
		require.NoError(t, err)
		var out []string
		for _, k := range ks {
			out = append(out, k.ID)
		}
		return out
	}
	for _, id := range []string{"k3", "k1", "k2", "k4"} {
		require.NoError(t, s.Create(ctx, &apikey.Key{ID: id, Owner: "alice"}))
	}
	require.NoError(t, s.Create(ctx, &apikey.Key{ID: "k5", Owner: "bob"}))
	assert.Equal(t, []string{"k4", "k3", "k2", "k1"}, ids("alice"), "one CreatedAt: by ID descending")
	k, err := s.Get(ctx, "k1")
	require.NoError(t, err)
	k.Owner = "bob"
	require.NoError(t, s.Update(ctx, k))
	require.NoError(t, s.Delete(ctx, "k3"))
	assert.Equal(t, []string{"k4", "k2"}, ids("alice"))
	assert.Equal(t, []string{"k5", "k1"}, ids("bob"))
	revoked, err := s.RevokeOwner(ctx, "alice", time.Now())
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"k2", "k4"}, revoked)
	assert.Empty(t, ids("carol"))
	assert.Equal(t, 4, s.Len())
	assert.Len(t, s.All(), 4)
}

// Concurrent reads and writes of the same records (run with -race).
func TestConcurrentReadsAndWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := memstore.New()
	require.NoError(t, s.Create(ctx, fullKey("DDDDDDDDDDDDDDDD")))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 300 {
				switch (g + i) % 3 {
				case 0:
					k, err := s.Get(ctx, "DDDDDDDDDDDDDDDD")
					if assert.NoError(t, err) {
						_ = strings.Clone(k.Name + k.Owner + k.Scopes[0])
					}
				case 1:
					assert.NoError(t, s.MarkUsed(ctx, map[string]time.Time{"DDDDDDDDDDDDDDDD": time.Now()}))
				default:
					_, err := s.List(ctx, "alice", apikey.ListOptions{})
					assert.NoError(t, err)
				}
			}
		})
	}
	wg.Wait()
}
