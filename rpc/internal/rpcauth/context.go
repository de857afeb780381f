package rpcauth

import (
	"context"
	"net/http"
	"strconv"

	"github.com/gokeys/apikey"
)

// The core puts the verified key in a context under an unexported key
// type and exports no constructor for such a context, only FromContext.
// Until it does (apikey.NewContext), the Guard learns the key FromContext
// looks up by asking it once, and answers that key in a context of its
// own: the handler's apikey.FromContext then reads the key as it does
// behind the HTTP middleware, at the cost of one allocation, as
// context.WithValue's.

// probe is a context that records the first key it is asked for.
type probe struct {
	context.Context
	key  any
	seen bool
}

func (p *probe) Value(key any) any {
	if !p.seen {
		p.key, p.seen = key, true
	}
	return nil
}

// ContextKey returns the first key that lookup asks its context for:
// the unexported key of a package that exports only a reader, such as
// apikey.FromContext. Callers check what they learn before relying on it.
func ContextKey(lookup func(context.Context)) any {
	p := &probe{Context: context.Background()}
	lookup(p)
	return p.key
}

// coreContextKey returns the key under which apikey.FromContext looks for
// the verified key.
func coreContextKey() any {
	return ContextKey(func(ctx context.Context) { apikey.FromContext(ctx) })
}

// keyContext is a context carrying a verified key for apikey.FromContext.
type keyContext struct {
	context.Context
	key any
	k   *apikey.Key
}

func (c *keyContext) Value(key any) any {
	if key == c.key {
		return c.k
	}
	return c.Context.Value(key)
}

func (c *keyContext) String() string { return "apikey.WithKey" }

// WithKey returns ctx carrying k, read back with apikey.FromContext.
func (g *Guard) WithKey(ctx context.Context, k *apikey.Key) context.Context {
	return &keyContext{Context: ctx, key: g.ctxKey, k: k}
}

// Grace returns the Deprecation (RFC 9745; "" when the rotation time is
// unknown) and Sunset values of a key in its grace period, as the HTTP
// middleware sends them, and whether k is in one.
func Grace(k *apikey.Key) (deprecation, sunset string, ok bool) {
	if k.RotatedTo == "" { // in its grace period: Verify refused it otherwise
		return "", "", false
	}
	if !k.RotatedAt.IsZero() {
		deprecation = "@" + strconv.FormatInt(k.RotatedAt.Unix(), 10)
	}
	return deprecation, k.ExpiresAt.UTC().Format(http.TimeFormat), true
}
