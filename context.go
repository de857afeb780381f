package apikey

import (
	"context"
	"sync/atomic"
)

// contextKey is the context key of a request's verified key.
type contextKey struct{}

// counterKey is the context key of the usage counter of a request.
type counterKey struct{}

// keyContext is a context carrying a verified key (see FromContext) and
// the usage counter of its request: one allocation, as
// context.WithValue's.
type keyContext struct {
	context.Context
	k *Key
	c *meterCounter // nil without usage recording
}

// Value answers the key and the counter, and asks the parent otherwise.
func (c *keyContext) Value(key any) any {
	switch key.(type) {
	case contextKey:
		return c.k
	case counterKey:
		return c.c
	}
	return c.Context.Value(key)
}

// String names the context.
func (c *keyContext) String() string { return "apikey.keyContext" }

// limitContext is a keyContext with room for the value of the request's
// RateLimit header, for a Middleware with a Limiter: the one allocation of
// the request's context holds it too.
type limitContext struct {
	keyContext
	hv   headerValue
	used atomic.Bool // hv was handed out: its bytes are a header value now
}

// headerBuffer returns the room for a RateLimit header value in ctx, once
// per request, or nil.
func headerBuffer(ctx context.Context) *headerValue {
	if lc, ok := ctx.(*limitContext); ok && !lc.used.Load() && lc.used.CompareAndSwap(false, true) {
		return &lc.hv
	}
	return nil
}

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
func NewContext(ctx context.Context, k *Key) context.Context {
	return &keyContext{Context: ctx, k: k}
}

// counterOf returns the usage counter of the request whose context is
// ctx, nil when it has none.
func counterOf(ctx context.Context) *meterCounter {
	c, _ := ctx.Value(counterKey{}).(*meterCounter)
	return c
}
