package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

// purge deletes the keys revoked or expired longer ago than --older-than,
// and only those.
func TestPurge(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	revoked := h.json("issue", "--owner", "o")["id"].(string)
	expired := h.json("issue", "--owner", "o", "--ttl", "1ms")["id"].(string)
	active := h.json("issue", "--owner", "o")["id"].(string)
	require.Equal(t, exitOK, h.run("", "revoke", revoked).code)
	time.Sleep(20 * time.Millisecond)

	out := h.json("purge", "--older-than", "30d")
	assert.EqualValues(t, 0, out["purged"], "nothing is that old")
	assert.Equal(t, "720h0m0s", out["older_than"])
	for _, id := range []string{revoked, expired, active} {
		assert.Equal(t, exitOK, h.run("", "show", id).code, id)
	}

	out = h.json("purge", "--older-than", "10ms")
	assert.EqualValues(t, 2, out["purged"])
	for _, id := range []string{revoked, expired} {
		r := h.run("", "show", id)
		assert.Equal(t, exitNotFound, r.code, id)
	}
	assert.Equal(t, "active", h.json("show", active)["status"], "a usable key is never purged")
	r := h.run("", "purge", "--older-than", "0s")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "0 keys revoked or expired before")

	for _, c := range []struct {
		args []string
		line string
	}{
		{[]string{"purge"}, "apikey purge: purge needs --older-than, e.g. --older-than 30d"},
		{[]string{"purge", "--older-than", "-1h"}, "apikey purge: --older-than must not be negative"},
		{[]string{"purge", "--older-than", "soon"}, `apikey purge: --older-than "soon" is not a duration (e.g. 720h, 30d)`},
		{[]string{"purge", "--older-than", "99999999d"}, `apikey purge: --older-than "99999999d" is not a duration (e.g. 720h, 30d)`},
		{[]string{"purge", "old", "--older-than", "1h"}, "apikey purge: purge takes no arguments; use --older-than"},
	} {
		r := h.run("", c.args...)
		assert.Equal(t, exitUsage, r.code, "%q", c.args)
		assert.Equal(t, c.line+"\n", r.stderr, "%q", c.args)
	}
}

// revoke-chain revokes the key, its predecessor in grace and its
// successors; revoking one key of a chain would leave the others working.
func TestRevokeChain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	ctx := context.Background()
	first := h.json("issue", "--owner", "o")
	second := h.json("rotate", first["id"].(string), "--grace", "1h")
	third := h.json("rotate", second["id"].(string), "--grace", "1h")
	other := h.json("issue", "--owner", "o")
	m := h.manager()
	for _, k := range []map[string]any{second, third} {
		_, err := m.Verify(ctx, k["key"].(string))
		require.NoError(t, err, "the predecessor in grace and the newest key work")
	}

	out := h.json("revoke-chain", second["id"].(string))
	assert.Equal(t, second["id"], out["key"])
	assert.ElementsMatch(t, []any{first["id"], second["id"], third["id"]}, out["revoked"])
	for _, k := range []map[string]any{second, third} {
		_, err := h.manager().Verify(ctx, k["key"].(string))
		assert.ErrorIs(t, err, apikey.ErrRevoked)
	}
	_, err := h.manager().Verify(ctx, other["key"].(string))
	assert.NoError(t, err, "another chain of the owner is untouched")

	r := h.run("", "revoke-chain", third["id"].(string))
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "0 keys of the chain of "+third["id"].(string)+" revoked", "a revoked chain: nothing more")

	r = h.run("", "revoke-chain", "AAAAAAAAAAAAAAAA")
	assert.Equal(t, exitNotFound, r.code)
	assert.Equal(t, "apikey revoke-chain: key not found\n", r.stderr)
	r = h.run("", "revoke-chain")
	assert.Equal(t, exitUsage, r.code)
	assert.Equal(t, "apikey revoke-chain: revoke-chain takes one key id\n", r.stderr)
}
