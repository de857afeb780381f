package sqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/outbox"
	"github.com/gokeys/apikey/sqlstore"
	"github.com/gokeys/apikey/webhook"
)

// TestOutboxWriteIsAtomic makes the outbox part of writes fail (its table
// is gone): each write then fails whole, and the key is as it was.
func TestOutboxWriteIsAtomic(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		ctx := context.Background()
		m, err := apikey.New(s, apikey.Options{Prefix: "sk_test", Peppers: testPeppers, Outbox: &outbox.Policy{}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = m.Close(ctx) })
		_, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice", Name: "before"})
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, "DROP TABLE "+quoteTable(b.dialect, s.OutboxTable()))
		require.NoError(t, err)

		_, err = m.Disable(ctx, k.ID)
		assert.Error(t, err, "Disable without its event")
		assert.Error(t, m.Revoke(ctx, k.ID), "Revoke without its event")
		_, err = m.Rotate(ctx, k.ID, time.Hour)
		assert.Error(t, err, "Rotate without its event")
		_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "bob"})
		assert.Error(t, err, "Issue without its event")

		got, err := s.Get(ctx, k.ID)
		require.NoError(t, err)
		assert.False(t, got.Disabled, "not disabled")
		assert.True(t, got.RevokedAt.IsZero(), "not revoked")
		assert.Empty(t, got.RotatedTo, "not rotated")
		assert.Equal(t, int64(1), got.Revision, "unchanged")
		keys, err := s.List(ctx, "bob", apikey.ListOptions{})
		require.NoError(t, err)
		assert.Empty(t, keys, "no key issued")
	})
}

// TestOutboxSurvivesACrashedInstance runs two instances, each with its own
// connection pool, over one database. The first makes changes, starts
// delivering them and dies in the middle of an attempt (its pool is
// closed, so it records nothing); the second, started afterwards,
// delivers every event once the dead instance's lease has ended, and the
// receiver acknowledges each webhook id once.
func TestOutboxSurvivesACrashedInstance(t *testing.T) {
	for _, b := range backends() {
		if b.name == "MySQLParseTime" {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			first, second := twoPools(t, b)
			table := randomTable("keys_")
			ctx := context.Background()
			var mu sync.Mutex
			now := time.Now().UTC().Truncate(time.Second)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

			a := newStore(t, first, b.dialect, table)
			ma, err := apikey.New(a, apikey.Options{Prefix: "sk_test", Now: clock, Outbox: &outbox.Policy{ExpiringLead: -1}})
			require.NoError(t, err)
			for range 5 {
				_, k, err := ma.Issue(ctx, apikey.IssueParams{Owner: "alice"})
				require.NoError(t, err)
				require.NoError(t, ma.Revoke(ctx, k.ID))
			}

			var (
				acks     = map[string]int{}
				inFlight = make(chan struct{})
				once     sync.Once
			)
			v, err := webhook.NewVerifier([]string{secret}, webhook.VerifierOptions{Now: clock})
			require.NoError(t, err)
			rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if v.Verify(r.Header, body) != nil {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				hang := false
				once.Do(func() { hang = true; close(inFlight) })
				if hang { // the first attempt is under way when its instance dies
					<-r.Context().Done()
					return
				}
				mu.Lock()
				acks[r.Header.Get(webhook.HeaderID)]++
				mu.Unlock()
			}))
			t.Cleanup(rcv.Close)
			opts := webhook.Options{Endpoints: []webhook.Endpoint{{URL: rcv.URL, Secrets: []string{secret}, Concurrency: 1}},
				Now: clock, Lease: time.Minute}
			da, err := webhook.New(a, opts)
			require.NoError(t, err)
			run, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { _ = da.Run(run); close(done) }()
			<-inFlight
			require.NoError(t, first.Close()) // the first instance dies
			stop()
			<-done

			bs, err := sqlstore.New(second, b.dialect, sqlstore.Options{Table: table})
			require.NoError(t, err)
			evs, err := bs.Events(ctx, outbox.Query{Size: 100})
			require.NoError(t, err)
			require.Len(t, evs, 10, "5 key.created and 5 key.revoked, written with their changes")
			db, err := webhook.New(bs, opts)
			require.NoError(t, err)
			_, err = db.Poll(ctx)
			require.NoError(t, err)
			advance(time.Minute) // the dead instance's lease ends
			_, err = db.Poll(ctx)
			require.NoError(t, err)
			evs, err = bs.Events(ctx, outbox.Query{Size: 100})
			require.NoError(t, err)
			for _, e := range evs {
				assert.Equal(t, outbox.Delivered, e.State, "event %s", e.ID)
				assert.Equal(t, 1, acks[e.ID], "event %s acknowledged %d times", e.ID, acks[e.ID])
			}
			assert.Len(t, acks, 10)
		})
	}
}

// secret signs the deliveries of the tests.
const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// twoPools opens two connection pools over one database of b, as two
// processes would.
func twoPools(t *testing.T, b backend) (*sql.DB, *sql.DB) {
	if b.dialect != sqlstore.SQLite {
		return b.open(t), b.open(t)
	}
	path := filepath.Join(t.TempDir(), "keys.db")
	open := func() *sql.DB {
		db, err := sql.Open("sqlite", sqliteDSN(path))
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		return db
	}
	return open(), open()
}

// TestOutboxHoldsNoSecret issues and rotates keys with events, and
// searches the outbox table for the tokens and their secrets.
func TestOutboxHoldsNoSecret(t *testing.T) {
	db := openSQLite(t)
	table := randomTable("keys_")
	s := newStore(t, db, sqlstore.SQLite, table)
	ctx := context.Background()
	m, err := apikey.New(s, apikey.Options{Prefix: "sk_test", Peppers: testPeppers, Outbox: &outbox.Policy{}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close(ctx) })
	var needles []string
	for range 3 {
		token, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice", TTL: time.Hour})
		require.NoError(t, err)
		rot, err := m.Rotate(ctx, k.ID, time.Minute)
		require.NoError(t, err)
		for _, tok := range []string{token, rot.Token} {
			p, err := m.Format().Parse(tok)
			require.NoError(t, err)
			needles = append(needles, tok, p.Secret, p.Secret[:16])
		}
	}
	rows, err := db.QueryContext(ctx, "SELECT * FROM "+quoteTable(sqlstore.SQLite, s.OutboxTable()))
	require.NoError(t, err)
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	var b strings.Builder
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		for _, v := range vals {
			fmt.Fprintf(&b, "%v %s\n", v, v)
		}
	}
	require.NoError(t, rows.Err())
	dump := b.String()
	require.Contains(t, dump, "key.rotated", "the dump holds the events")
	for _, n := range needles {
		assert.NotContains(t, dump, n)
	}
}
