package apikey_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

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
