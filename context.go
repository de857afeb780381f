package apikey

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/gokeys/apikey/internal/limitbuf"
	"github.com/gokeys/apikey/limits"
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
// RateLimit header and the States of its Limiter call, for a Middleware
// with a Limiter: the one allocation of the request's context holds them
// too. It also carries what the verification found (its time and the
// customer record), so that Limit does not read them again.
type limitContext struct {
	keyContext
	now  time.Time // when the key was verified
	cust *Customer // the record the verification used; nil without customer records
	hv   headerValue
	used atomic.Bool // hv was handed out: its bytes are a header value now

	states     [limitbuf.Size]limits.State
	statesUsed atomic.Bool // states was handed out to a Limiter
}

// Value answers the room for the States of a Limiter call once, and asks
// the keyContext otherwise.
func (c *limitContext) Value(key any) any {
	if _, ok := key.(limitbuf.Key); ok {
		if !c.statesUsed.Load() && c.statesUsed.CompareAndSwap(false, true) {
			return &c.states
		}
		return nil
	}
	return c.keyContext.Value(key)
}

// verifiedWith returns the verification time and customer record of k's
// request, if ctx is its limitContext.
func verifiedWith(ctx context.Context, k *Key) (now time.Time, c *Customer, ok bool) {
	if lc, is := ctx.(*limitContext); is && lc.k == k {
		return lc.now, lc.cust, true
	}
	return time.Time{}, nil, false
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
