package apikey_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
