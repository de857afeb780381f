// Package limitbuf lets the HTTP middleware lend a Limiter of this module
// the room for the States of one call, in the request's context, so that
// the call allocates none.
package limitbuf

// Size is how many States the room holds.
const Size = 4

// Key is the context key of the room: ctx.Value(Key{}) is a *[Size]S of
// the Limiter's state type S (limits.State), or nil. The room is handed
// out once per request. The Limiter that gets it owns it and may return
// it in its Result.
type Key struct{}

// States returns n values in the room ctx offers, or newly allocated ones
// when it offers none or too few.
func States[S any](ctx interface{ Value(any) any }, n int) []S {
	if n <= Size {
		if b, ok := ctx.Value(Key{}).(*[Size]S); ok && b != nil {
			return b[:n:n]
		}
	}
	return make([]S, n)
}
