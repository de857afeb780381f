package rpctest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/rpc/internal/rpcauth"
)

// RunRevokedDuringStream checks that a stream is authorized once, at its
// start. A key revoked while a long stream runs leaves that stream
// running, and is refused at the next stream's start and the next call.
func RunRevokedDuringStream(t *testing.T, newDriver func(t *testing.T, env *Env) Driver) {
	env := NewEnv(t, Default)
	d := newDriver(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	token, key := env.Issue(t, Key{})
	long := d.Open(ctx, Chat, Bearer(token))
	defer long.Close()
	code, msg := long.Round()
	require.Zero(t, code, msg)

	require.NoError(t, env.M.Revoke(ctx, key.ID))
	for range 3 {
		code, msg = long.Round()
		assert.Zero(t, code, "the running stream goes on: %s", msg)
	}
	next := d.Open(ctx, Chat, Bearer(token))
	defer next.Close()
	code, msg = next.Round()
	assert.Equal(t, rpcauth.Unauthenticated, code)
	assert.Equal(t, unauthenticated, msg)
	o := d.Stream(ctx, Watch, Bearer(token), 2)
	assert.Equal(t, rpcauth.Unauthenticated, o.Code)
	assert.Empty(t, o.Replies)
	o = d.Unary(ctx, Echo, Bearer(token), Request(nil))
	assert.Equal(t, rpcauth.Unauthenticated, o.Code)
}
