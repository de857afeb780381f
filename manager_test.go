package apikey_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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

func TestIssueAndVerify(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Prefix: "sk_live", Now: c.Now})
	token, k, err := m.Issue(context.Background(), apikey.IssueParams{
		Name: "ci", Owner: "alice", Scopes: []string{"read", "write"}, Plan: "pro",
		Metadata: map[string]string{"env": "prod"}, TTL: time.Hour,
	})
	require.NoError(t, err)
	tok, err := m.Format().Parse(token)
	require.NoError(t, err)
	assert.Equal(t, tok.ID, k.ID)
	assert.Equal(t, "sk_live_..."+token[len(token)-4:], k.Hint)
	assert.Equal(t, "hmac-sha256:1", k.HashVersion)
	assert.Equal(t, c.Now().Add(time.Hour), k.ExpiresAt)

	got, err := m.Verify(context.Background(), token)
	require.NoError(t, err)
	assert.Equal(t, k.ID, got.ID)
	assert.Equal(t, "alice", got.Owner)
	assert.Equal(t, []string{"read", "write"}, got.Scopes)
	assert.Equal(t, "pro", got.Plan)
	assert.Equal(t, "prod", got.Metadata["env"])
}

func TestIssueValidates(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now})
	for name, tc := range map[string]struct {
		field string
		p     apikey.IssueParams
	}{
		"past expiry":      {"expires_at", apikey.IssueParams{ExpiresAt: c.Now().Add(-time.Second)}},
		"expiry now":       {"expires_at", apikey.IssueParams{ExpiresAt: c.Now()}},
		"negative TTL":     {"ttl", apikey.IssueParams{TTL: -time.Second}},
		"empty scope":      {"scopes", apikey.IssueParams{Scopes: []string{""}}},
		"scope with space": {"scopes", apikey.IssueParams{Scopes: []string{"a b"}}},
		"scope with quote": {"scopes", apikey.IssueParams{Scopes: []string{`a"`}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := m.Issue(context.Background(), tc.p)
			assertInputError(t, err, tc.field)
		})
	}
}

func TestFlippedCharacterNeedsNoStore(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{})
	token, _ := issue(t, m, apikey.IssueParams{})
	before := spy.calls.Load()
	for i := len("sk_"); i < len(token); i++ {
		b := []byte(token)
		b[i] = map[bool]byte{true: 'B', false: 'A'}[b[i] == 'A']
		_, err := m.Verify(context.Background(), string(b))
		assert.ErrorIs(t, err, apikey.ErrMalformed, "position %d", i)
	}
	_, err := m.Verify(context.Background(), strings.Repeat("x", 10_000))
	assert.ErrorIs(t, err, apikey.ErrMalformed)
	assert.Equal(t, before, spy.calls.Load(), "a malformed token reached the store")
}

func TestNoSecretAtRest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts apikey.Options
	}{
		{"hmac", apikey.Options{Peppers: testPepper}},
		{"sha256", apikey.Options{}},
		{"bcrypt", apikey.Options{Hasher: mustBcrypt(t)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := memstore.New()
			m := newManager(t, store, tc.opts)
			var tokens []string
			for range 5 {
				token, _ := issue(t, m, apikey.IssueParams{Owner: "alice", Name: "k"})
				tokens = append(tokens, token)
				_, err := m.Verify(context.Background(), token)
				require.NoError(t, err)
			}
			_, err := m.Rotate(context.Background(), store.All()[0].ID, time.Hour)
			require.NoError(t, err)
			require.NoError(t, m.Close(context.Background()))

			dump, err := json.Marshal(store.All())
			require.NoError(t, err)
			raw := fmt.Sprintf("%s %#v", dump, rawKeys(store.All()))
			for _, token := range tokens {
				tok, err := m.Format().Parse(token)
				require.NoError(t, err)
				assert.NotContains(t, raw, token)
				assert.NotContains(t, raw, tok.Secret)
				for _, k := range store.All() {
					assert.False(t, bytes.Contains(k.Hash, []byte(tok.Secret)), "secret in a hash field")
				}
			}
		})
	}
}

// rawKeys strips the Key type so that %#v shows every field, Hash included.
func rawKeys(ks []*apikey.Key) []any {
	type raw apikey.Key
	out := make([]any, len(ks))
	for i, k := range ks {
		out[i] = raw(*k)
	}
	return out
}

func mustBcrypt(t testing.TB) apikey.Hasher {
	h, err := apikey.NewBcryptHasher(4)
	require.NoError(t, err)
	return h
}

func TestUnknownIDAndWrongSecretAreAlike(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts apikey.Options
	}{
		{"hmac", apikey.Options{}},
		{"bcrypt", apikey.Options{Hasher: mustBcrypt(t)}},
		{"hmac without cache", apikey.Options{CacheTTL: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, memstore.New(), tc.opts)
			token, _ := issue(t, m, apikey.IssueParams{})
			_, err := m.Verify(context.Background(), token) // warm the cache
			require.NoError(t, err)
			tok, err := m.Format().Parse(token)
			require.NoError(t, err)

			unknown, _ := m.Format().New()
			wrongSecret := rebuild(t, m.Format(), tok.ID, "")
			_, errUnknown := m.Verify(context.Background(), unknown)
			_, errWrong := m.Verify(context.Background(), wrongSecret)
			assert.Equal(t, apikey.ErrInvalid, errUnknown)
			assert.Equal(t, errUnknown, errWrong)
		})
	}
}

// rebuild returns a well-formed token of format with the given id and a
// random secret (or the given one).
func rebuild(t testing.TB, f apikey.Format, id, secret string) string {
	t.Helper()
	if secret == "" {
		_, fresh := f.New()
		secret = fresh.Secret
	}
	token, err := f.Compose(id, secret)
	require.NoError(t, err)
	return token
}

func TestExpiredAndRevoked(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now, DefaultTTL: time.Hour})
	token, _ := issue(t, m, apikey.IssueParams{})
	_, err := m.Verify(context.Background(), token)
	require.NoError(t, err)
	c.Add(time.Hour - time.Nanosecond)
	_, err = m.Verify(context.Background(), token)
	require.NoError(t, err)
	c.Add(time.Nanosecond)
	_, err = m.Verify(context.Background(), token)
	assert.ErrorIs(t, err, apikey.ErrExpired)

	token2, k2 := issue(t, m, apikey.IssueParams{})
	_, err = m.Verify(context.Background(), token2)
	require.NoError(t, err)
	require.NoError(t, m.Revoke(context.Background(), k2.ID))
	_, err = m.Verify(context.Background(), token2)
	assert.ErrorIs(t, err, apikey.ErrRevoked)
	require.NoError(t, m.Revoke(context.Background(), k2.ID), "revoking twice is fine")
	assert.ErrorIs(t, m.Revoke(context.Background(), "unknown"), apikey.ErrNotFound)
}

func TestStoreErrorIsNotInvalid(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{CacheTTL: -1})
	token, _ := issue(t, m, apikey.IssueParams{})
	boom := errors.New("connection refused")
	spy.failWith(boom)
	_, err := m.Verify(context.Background(), token)
	assert.ErrorIs(t, err, apikey.ErrUnavailable)
	assert.ErrorIs(t, err, boom)
	assert.NotErrorIs(t, err, apikey.ErrInvalid)

	unknown, _ := m.Format().New()
	_, err = m.Verify(context.Background(), unknown)
	assert.ErrorIs(t, err, apikey.ErrUnavailable, "an unknown key during an outage is not reported invalid either")

	spy.hook = func(string) { panic("store bug") }
	spy.failWith(nil)
	_, err = m.Verify(context.Background(), token)
	assert.ErrorIs(t, err, apikey.ErrUnavailable, "a panicking store fails closed")
}

func TestPepperRotation(t *testing.T) {
	t.Parallel()
	store := memstore.New()
	old := apikey.Pepper{Version: "2025", Secret: []byte(strings.Repeat("o", 32))}
	m1 := newManager(t, store, apikey.Options{Peppers: []apikey.Pepper{old}})
	token, k := issue(t, m1, apikey.IssueParams{})
	assert.Equal(t, "hmac-sha256:2025", k.HashVersion)

	next := apikey.Pepper{Version: "2026", Secret: []byte(strings.Repeat("n", 32))}
	m2 := newManager(t, store, apikey.Options{Peppers: []apikey.Pepper{next, old}})
	_, err := m2.Verify(context.Background(), token)
	require.NoError(t, err, "keys hashed with the previous pepper still verify")
	_, k2 := issue(t, m2, apikey.IssueParams{})
	assert.Equal(t, "hmac-sha256:2026", k2.HashVersion)

	m3 := newManager(t, store, apikey.Options{Peppers: []apikey.Pepper{next}})
	_, err = m3.Verify(context.Background(), token)
	assert.ErrorIs(t, err, apikey.ErrUnavailable, "a retired pepper is a configuration fault, not a bad key")
	assert.ErrorIs(t, err, apikey.ErrUnknownHashVersion)
}

func TestBcryptHasher(t *testing.T) {
	t.Parallel()
	h := mustBcrypt(t)
	_, _, err := h.Hash(bytes.Repeat([]byte("a"), 73))
	assert.ErrorIs(t, err, apikey.ErrMalformed, "over 72 bytes is rejected, not truncated")
	d, v, err := h.Hash(bytes.Repeat([]byte("a"), 72))
	require.NoError(t, err)
	ok, err := h.Compare(bytes.Repeat([]byte("a"), 72), d, v)
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = h.Compare(append(bytes.Repeat([]byte("a"), 72), 'b'), d, v)
	require.NoError(t, err)
	assert.False(t, ok, "a 73rd byte must not be ignored")
	_, err = h.Compare([]byte("a"), []byte("not a bcrypt hash"), v)
	assert.Error(t, err, "a corrupt digest is an error, not a mismatch")

	m := newManager(t, memstore.New(), apikey.Options{Hasher: h, SecretBits: 256})
	token, k := issue(t, m, apikey.IssueParams{})
	assert.Equal(t, apikey.VersionBcrypt, k.HashVersion)
	_, err = m.Verify(context.Background(), token)
	require.NoError(t, err)
}

func TestKeyPrintsNoHash(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	_, k := issue(t, m, apikey.IssueParams{Name: "n"})
	hash := fmt.Sprintf("%x", k.Hash)
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("key", "key", k, "value", *k)
	js, err := json.Marshal(k)
	require.NoError(t, err)
	for _, out := range []string{
		fmt.Sprintf("%v", k), fmt.Sprintf("%+v", k), fmt.Sprintf("%#v", k),
		fmt.Sprintf("%v", *k), fmt.Sprintf("%+v", *k), fmt.Sprintf("%s", k), string(js), logged.String(),
	} {
		assert.Contains(t, out, k.ID)
		assert.Contains(t, out, k.Hint)
		assert.NotContains(t, out, hash)
		assert.NotContains(t, out, string(k.Hash))
		assert.NotContains(t, strings.ToLower(out), `"hash"`)
	}
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
