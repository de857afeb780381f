package grpcapikey_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/rpc/grpcapikey"
	"github.com/gokeys/apikey/rpc/internal/rpcauth"
	"github.com/gokeys/apikey/rpc/internal/rpctest"
	"github.com/gokeys/apikey/usage"
)

// Calls count in usage as requests over HTTP do: allowed, refused for a
// missing scope, refused for a paused key; a wrong token counts nothing.
func TestUsageCountsCalls(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	m, err := apikey.New(store, apikey.Options{Prefix: "sk_test", UsageInterval: time.Hour,
		Plans: limits.Plans{"free": {limits.Quota("daily", 1000, limits.Day)}}, DefaultPlan: "free"})
	require.NoError(t, err)
	l, err := memlimit.New(memlimit.Options{})
	require.NoError(t, err)
	ic, err := grpcapikey.New(m, options(rpcauth.Config{Limits: apikey.LimitOptions{Limiter: l}, Methods: rpctest.Methods()}))
	require.NoError(t, err)
	d := rpctest.GRPC(t, rpctest.Bufconn, ic.Unary, ic.Stream)

	token, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann", Scopes: []string{"read"}})
	require.NoError(t, err)
	paused, pk, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann", Scopes: []string{"read"}})
	require.NoError(t, err)
	_, err = m.Pause(ctx, pk.ID)
	require.NoError(t, err)
	req := &structpb.Struct{}
	for range 3 {
		d.Unary(ctx, rpctest.Echo, rpctest.Bearer(token), req) // allowed
	}
	d.Unary(ctx, rpctest.Write, rpctest.Bearer(token), req)    // no "write" scope
	d.Unary(ctx, rpctest.Echo, rpctest.Bearer(paused), req)    // paused
	d.Unary(ctx, rpctest.Echo, rpctest.Bearer(token+"x"), req) // malformed: nothing
	require.NoError(t, m.Close(ctx))

	now := time.Now()
	got, err := store.Usage(ctx, usage.Query{Customer: "ann", From: now.Add(-2 * time.Hour), To: now.Add(time.Hour)})
	require.NoError(t, err)
	sums := map[string][2]int64{}
	for _, r := range got {
		s := sums[r.KeyID]
		sums[r.KeyID] = [2]int64{s[0] + r.Allowed, s[1] + r.Refused}
	}
	assert.Equal(t, map[string][2]int64{k.ID: {3, 1}, pk.ID: {0, 1}}, sums)
}
