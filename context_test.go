package apikey_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gokeys/apikey"
)

type otherKey struct{}

func TestContextCarriesTheKeyAndItsParent(t *testing.T) {
	assert.Nil(t, apikey.FromContext(context.Background()), "no key without a verification")
	parent := context.WithValue(context.Background(), otherKey{}, "v")
	k := &apikey.Key{ID: "k1"}
	ctx := apikey.NewContext(parent, k)
	assert.Same(t, k, apikey.FromContext(ctx))
	assert.Equal(t, "v", ctx.Value(otherKey{}), "the parent's values stay readable")
	inner := context.WithValue(ctx, otherKey{}, "w")
	assert.Same(t, k, apikey.FromContext(inner), "a derived context keeps the key")
	k2 := &apikey.Key{ID: "k2"}
	assert.Same(t, k2, apikey.FromContext(apikey.NewContext(ctx, k2)), "the nearest key wins")
}

func TestContextEndsWithItsParent(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	ctx := apikey.NewContext(parent, &apikey.Key{ID: "k1"})
	cancel()
	<-ctx.Done()
	assert.ErrorIs(t, ctx.Err(), context.Canceled)
}

func ExampleNewContext() {
	// An RPC interceptor verified k with Manager.Verify; the handler reads it.
	k := &apikey.Key{ID: "k1", Owner: "alice"}
	ctx := apikey.NewContext(context.Background(), k)
	fmt.Println(apikey.FromContext(ctx).Owner)
	// Output: alice
}
