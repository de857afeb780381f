package apikey_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	bc, err := apikey.NewBcryptHasher(4)
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		store apikey.Store
		opts  apikey.Options
	}{
		{"nil store", nil, apikey.Options{}},
		{"bad prefix", memstore.New(), apikey.Options{Prefix: "SK-live"}},
		{"short secret", memstore.New(), apikey.Options{SecretBits: 64}},
		{"short pepper", memstore.New(), apikey.Options{Peppers: []apikey.Pepper{{Version: "1", Secret: []byte("short")}}}},
		{"pepper without version", memstore.New(), apikey.Options{Peppers: []apikey.Pepper{{Secret: testPepper[0].Secret}}}},
		{"duplicate pepper version", memstore.New(), apikey.Options{Peppers: append(testPepper, testPepper[0])}},
		{"hasher and peppers", memstore.New(), apikey.Options{Hasher: bc, Peppers: testPepper}},
		{"bcrypt with 512-bit secrets (over 72 bytes)", memstore.New(), apikey.Options{Hasher: bc, SecretBits: 512}},
		{"negative TTL", memstore.New(), apikey.Options{DefaultTTL: -time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := apikey.New(tc.store, tc.opts)
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
			assert.Nil(t, m)
		})
	}
	_, err = apikey.NewBcryptHasher(100)
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
}

func TestZeroOptionsWork(t *testing.T) {
	t.Parallel()
	m, err := apikey.New(memstore.New(), apikey.Options{})
	require.NoError(t, err)
	defer m.Close(context.Background())
	token, k, err := m.Issue(context.Background(), apikey.IssueParams{})
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(token, apikey.DefaultPrefix+"_"))
	assert.Equal(t, apikey.VersionSHA256, k.HashVersion)
	got, err := m.Verify(context.Background(), token)
	require.NoError(t, err)
	assert.Equal(t, k.ID, got.ID)
	assert.True(t, got.ExpiresAt.IsZero(), "no expiry unless configured")
}

func TestManagementOperations(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	ctx := context.Background()
	var ids []string
	for range 3 {
		_, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
		ids = append(ids, k.ID)
	}
	_, bob := issue(t, m, apikey.IssueParams{Owner: "bob"})
	list, err := m.List(ctx, "alice", apikey.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, list, 3)
	got, err := m.Get(ctx, ids[0])
	require.NoError(t, err)
	assert.Equal(t, ids[0], got.ID)
	_, err = m.Get(ctx, "nope")
	assert.ErrorIs(t, err, apikey.ErrNotFound)

	revoked, err := m.RevokeOwner(ctx, "alice")
	require.NoError(t, err)
	assert.ElementsMatch(t, ids, revoked)
	b, err := m.Get(ctx, bob.ID)
	require.NoError(t, err)
	assert.True(t, b.RevokedAt.IsZero())

	require.NoError(t, m.Delete(ctx, bob.ID))
	assert.ErrorIs(t, m.Delete(ctx, bob.ID), apikey.ErrNotFound)
}
