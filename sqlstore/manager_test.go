package sqlstore_test

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/sqlstore"
)

var testPeppers = []apikey.Pepper{{Version: "1", Secret: []byte("0123456789abcdef0123456789abcdef")}}

func newManager(t *testing.T, s apikey.Store) *apikey.Manager {
	t.Helper()
	m, err := apikey.New(s, apikey.Options{Prefix: "sk_test", Peppers: testPeppers})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

// TestNoSecretAtRest issues keys through a Manager and searches every
// column of every row, as text and as hex, for the tokens and secrets.
func TestNoSecretAtRest(t *testing.T) {
	db := openSQLite(t)
	table := randomTable("keys_")
	s := newStore(t, db, sqlstore.SQLite, table)
	m := newManager(t, s)
	ctx := context.Background()

	var needles []string
	for i := range 5 {
		token, _, err := m.Issue(ctx, apikey.IssueParams{
			Name: fmt.Sprintf("key %d", i), Owner: "alice", Scopes: []string{"read"},
			Metadata: map[string]string{"n": fmt.Sprint(i)},
		})
		require.NoError(t, err)
		parsed, err := m.Format().Parse(token)
		require.NoError(t, err)
		require.NotEmpty(t, parsed.Secret)
		_, err = m.Verify(ctx, token)
		require.NoError(t, err)
		needles = append(needles, token, parsed.Secret, parsed.ID+parsed.Secret,
			hex.EncodeToString([]byte(parsed.Secret)), parsed.Secret[:16], parsed.Secret[len(parsed.Secret)-16:])
	}
	require.NoError(t, m.Close(ctx)) // flush last-used times too

	dump := dumpTable(t, db, table)
	require.Contains(t, dump, "alice", "the dump holds the rows")
	for _, n := range needles {
		assert.NotContains(t, dump, n)
		assert.NotContains(t, strings.ToLower(dump), strings.ToLower(n))
	}
}

// dumpTable returns every column of every row of table as text, with
// binary values also in hex.
func dumpTable(t *testing.T, db *sql.DB, table string) string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), "SELECT * FROM "+quoteTable(sqlstore.SQLite, table))
	require.NoError(t, err)
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	var b strings.Builder
	n := 0
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		for i, v := range vals {
			fmt.Fprintf(&b, "%s=%v\n", cols[i], v)
			if raw, ok := v.([]byte); ok {
				fmt.Fprintf(&b, "%s=%s (%q)\n", cols[i], hex.EncodeToString(raw), raw)
			}
		}
		n++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, 5, n)
	return b.String()
}

// compose builds a well-formed token: the checksum is the CRC-32 (IEEE)
// of everything before it in six big-endian base62 digits.
func compose(prefix, id, secret string) string {
	const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	body := prefix + "_" + id + secret
	sum := make([]byte, apikey.ChecksumLength)
	for i, v := len(sum)-1, crc32.ChecksumIEEE([]byte(body)); i >= 0; i-- {
		sum[i], v = base62[v%62], v/62
	}
	return body + string(sum)
}

// TestManagerEndToEnd verifies through a Manager over each database, with
// the verification cache off so that every check reads the store.
func TestManagerEndToEnd(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		m, err := apikey.New(s, apikey.Options{Prefix: "sk_test", Peppers: testPeppers, CacheTTL: -1, CacheNegativeTTL: -1})
		require.NoError(t, err)
		t.Cleanup(func() { _ = m.Close(context.Background()) })
		ctx := context.Background()

		token, key, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice", Scopes: []string{"read", "write"}, TTL: time.Hour})
		require.NoError(t, err)
		got, err := m.Verify(ctx, token)
		require.NoError(t, err)
		assert.Equal(t, key.ID, got.ID)
		assert.Equal(t, []string{"read", "write"}, got.Scopes)

		parsed, err := m.Format().Parse(token)
		require.NoError(t, err)
		wrong := compose(parsed.Prefix, parsed.ID, strings.Repeat("A", len(parsed.Secret)))
		_, err = m.Format().Parse(wrong)
		require.NoError(t, err, "the wrong-secret token is well-formed")
		_, err = m.Verify(ctx, wrong)
		assert.ErrorIs(t, err, apikey.ErrInvalid, "a wrong secret")

		t.Run("Rotate", func(t *testing.T) {
			rot, err := m.Rotate(ctx, key.ID, time.Minute)
			require.NoError(t, err)
			next, succ := rot.Token, rot.Key
			assert.Equal(t, key.ID, succ.RotatedFrom)
			v, err := m.Verify(ctx, next)
			require.NoError(t, err)
			assert.Equal(t, succ.ID, v.ID)
			old, err := m.Verify(ctx, token)
			require.NoError(t, err, "the old key works during the grace period")
			assert.True(t, old.InGrace(time.Now()))
			_, err = m.Rotate(ctx, key.ID, time.Minute)
			assert.ErrorIs(t, err, apikey.ErrRotated)
		})

		require.NoError(t, m.Revoke(ctx, key.ID))
		_, err = m.Verify(ctx, token)
		assert.ErrorIs(t, err, apikey.ErrRevoked)
		require.NoError(t, m.Revoke(ctx, key.ID), "revoking twice")
		assert.ErrorIs(t, m.Revoke(ctx, apikey.NewID()), apikey.ErrNotFound)

		other, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "bob"})
		require.NoError(t, err)
		ids, err := m.RevokeOwner(ctx, "bob")
		require.NoError(t, err)
		assert.Len(t, ids, 1)
		_, err = m.Verify(ctx, other)
		assert.ErrorIs(t, err, apikey.ErrRevoked)

		_, err = m.Verify(ctx, "sk_test_"+strings.Repeat("x", 10))
		assert.ErrorIs(t, err, apikey.ErrMalformed)

		require.NoError(t, m.Close(ctx))
		stored, err := s.Get(ctx, key.ID)
		require.NoError(t, err)
		assert.False(t, stored.LastUsedAt.IsZero(), "Close flushed the last-used time")
	})
}

// TestUnavailable checks that a broken database is reported as
// ErrUnavailable, never as an invalid key.
func TestUnavailable(t *testing.T) {
	db := openSQLite(t)
	s := newStore(t, db, sqlstore.SQLite, randomTable("keys_"))
	m := newManager(t, s)
	ctx := context.Background()
	token, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice"})
	require.NoError(t, err)
	require.NoError(t, db.Close())
	_, err = m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrUnavailable)
	assert.NotErrorIs(t, err, apikey.ErrInvalid)
	_, err = s.Get(ctx, "x")
	assert.Error(t, err)
	assert.NotErrorIs(t, err, apikey.ErrNotFound)
}
