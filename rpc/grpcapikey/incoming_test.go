package grpcapikey

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"

	"github.com/gokeys/apikey/rpc/internal/rpcauth"
)

// TestIncomingMetadata: the metadata is read in place (the context key of
// grpc's metadata package was learnt), and read like
// metadata.ValueFromIncomingContext, keys in any case included, whether in
// place or through it.
func TestIncomingMetadata(t *testing.T) {
	require.NotNil(t, incomingKey(), "grpc's metadata key could not be learnt: reads fall back to ValueFromIncomingContext")
	auth := &rpcauth.Source{Key: "authorization"}
	apiKey := &rpcauth.Source{Key: "x-api-key"}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.MD{"X-Api-Key": {"k"}, "authorization": {"a", "b"}})
	for name, ic := range map[string]*Interceptor{"in place": {mdKey: incomingKey()}, "fallback": {}} {
		in := ic.metadataOf(ctx)
		assert.Equal(t, []string{"a", "b"}, in.Values(auth), name)
		assert.Equal(t, []string{"k"}, in.Values(apiKey), name)
		assert.Nil(t, in.Values(&rpcauth.Source{Key: "x-other"}), name)
		assert.Nil(t, ic.metadataOf(context.Background()).Values(auth), name)
	}
}
