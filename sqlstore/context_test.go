package sqlstore_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/sqlstore"
	"github.com/gokeys/apikey/storetest"
)

// TestDoneContextStopsEveryMethod covers the methods storetest does not:
// the optional capabilities and Migrate, with a cancelled and an expired
// context.
func TestDoneContextStopsEveryMethod(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		k := storetest.NewKey("alice")
		require.NoError(t, s.Create(context.Background(), k))

		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel2()
		for _, c := range []struct {
			name string
			ctx  context.Context
			want error
		}{{"Cancelled", cancelled, context.Canceled}, {"Expired", expired, context.DeadlineExceeded}} {
			t.Run(c.name, func(t *testing.T) {
				assert.ErrorIs(t, s.Revoke(c.ctx, k.ID, time.Now()), c.want, "Revoke")
				_, err := s.RevokeOwner(c.ctx, "alice", time.Now())
				assert.ErrorIs(t, err, c.want, "RevokeOwner")
				assert.ErrorIs(t, s.Rotate(c.ctx, k, time.Now(), storetest.NewKey("alice")), c.want, "Rotate")
				_, err = s.Purge(c.ctx, time.Now(), 10)
				assert.ErrorIs(t, err, c.want, "Purge")
				_, err = s.BackfillCustomers(c.ctx)
				assert.ErrorIs(t, err, c.want, "BackfillCustomers")
				assert.ErrorIs(t, s.Migrate(c.ctx), c.want, "Migrate")
				_, err = s.Get(c.ctx, k.ID)
				assert.ErrorIs(t, err, c.want, "Get")
				assert.ErrorIs(t, s.MarkUsed(c.ctx, map[string]time.Time{k.ID: time.Now(), "x": time.Now()}), c.want, "MarkUsed")
			})
		}
		got, err := s.Get(context.Background(), k.ID)
		require.NoError(t, err)
		assert.True(t, got.RevokedAt.IsZero(), "nothing was written")
		assert.True(t, got.LastUsedAt.IsZero(), "nothing was written")
		assert.Empty(t, got.RotatedTo, "nothing was written")
	})
}

// TestTimeoutStopsBlockedQuery holds a lock on the key in another
// transaction so that the store's statement waits, and checks that the
// statement's context deadline ends the wait with DeadlineExceeded.
func TestTimeoutStopsBlockedQuery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		table := randomTable("keys_")
		s := newStore(t, db, b.dialect, table)
		bg := context.Background()
		k := storetest.NewKey("alice")
		require.NoError(t, s.Create(bg, k))

		conn, err := db.Conn(bg)
		require.NoError(t, err)
		defer conn.Close()
		if b.dialect == sqlstore.SQLite { // one writer at a time: take the write lock
			_, err = conn.ExecContext(bg, "BEGIN IMMEDIATE")
			require.NoError(t, err)
			defer conn.ExecContext(bg, "ROLLBACK") //nolint:errcheck
		} else { // lock the row
			_, err = conn.ExecContext(bg, "BEGIN")
			require.NoError(t, err)
			defer conn.ExecContext(bg, "ROLLBACK") //nolint:errcheck
			_, err = conn.ExecContext(bg, "UPDATE "+quoteTable(b.dialect, table)+" SET name = 'locked'")
			require.NoError(t, err)
		}

		for name, op := range map[string]func(context.Context) error{
			"Update": func(ctx context.Context) error { k.Name = "changed"; return s.Update(ctx, k) },
			"Revoke": func(ctx context.Context) error { return s.Revoke(ctx, k.ID, time.Now()) },
			"MarkUsed": func(ctx context.Context) error {
				return s.MarkUsed(ctx, map[string]time.Time{k.ID: time.Now(), apikey.NewID(): time.Now()})
			},
		} {
			t.Run(name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
				defer cancel()
				start := time.Now()
				err := op(ctx)
				elapsed := time.Since(start)
				require.Error(t, err)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Less(t, elapsed, 3*time.Second, "the wait did not end with the context")
				t.Logf("stopped after %v: %v", elapsed.Round(time.Millisecond), err)
			})
		}
	})
}
