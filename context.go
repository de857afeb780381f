package apikey

import "context"

type contextKey struct{}

// FromContext returns the key verified for the request whose context is
// ctx, or nil when there is none (no middleware, or an anonymous request
// in Optional mode). The key must not be modified.
func FromContext(ctx context.Context) *Key {
	k, _ := ctx.Value(contextKey{}).(*Key)
	return k
}

// NewContext returns ctx carrying k, as FromContext reads it, for a
// surface other than the HTTP middleware (an RPC interceptor) that
// verified k with Manager.Verify.
func NewContext(ctx context.Context, k *Key) context.Context { return newContext(ctx, k) }

// newContext returns ctx carrying k, as FromContext reads it.
func newContext(ctx context.Context, k *Key) context.Context {
	return &keyContext{Context: ctx, k: k}
}
