package rpcauth

import (
	"context"
	"net/http"
	"strconv"

	"github.com/gokeys/apikey"
)

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

// ContextKey returns the first key that lookup asks its context for. That
// is the unexported key of a package that exports only a reader, such as
// apikey.FromContext. Callers check what they learn before relying on it.
func ContextKey(lookup func(context.Context)) any {
	p := &probe{Context: context.Background()}
	lookup(p)
	return p.key
}

// WithKey returns ctx carrying k, read back with apikey.FromContext.
func (g *Guard) WithKey(ctx context.Context, k *apikey.Key) context.Context {
	return apikey.NewContext(ctx, k)
}

// Grace returns the Deprecation (RFC 9745) and Sunset values of a key in
// its grace period, as the HTTP middleware sends them, and whether k is in
// one. Deprecation is "" when the rotation time is unknown.
func Grace(k *apikey.Key) (deprecation, sunset string, ok bool) {
	if k.RotatedTo == "" { // in its grace period: Verify refused it otherwise
		return "", "", false
	}
	if !k.RotatedAt.IsZero() {
		deprecation = "@" + strconv.FormatInt(k.RotatedAt.Unix(), 10)
	}
	return deprecation, k.ExpiresAt.UTC().Format(http.TimeFormat), true
}
