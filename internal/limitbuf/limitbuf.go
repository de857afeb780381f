// Package limitbuf lets the HTTP middleware lend a Limiter of this module
// the room for the States of one call, in the request's context, so that
// the call allocates none.
package limitbuf

import "github.com/gokeys/apikey/limits"

// Size is how many States the room holds.
const Size = 4

// Key is the context key of the room: ctx.Value(Key{}) is a *[Size]limits.State,
// or nil. The room is handed out once per request. The Limiter that gets
// it owns it and may return it in its Result.
type Key struct{}

// States returns n States in the room ctx offers, or newly allocated ones
// when it offers none or too few.
func States(ctx interface{ Value(any) any }, n int) []limits.State {
	if n <= Size {
		if b, ok := ctx.Value(Key{}).(*[Size]limits.State); ok && b != nil {
			return b[:n:n]
		}
	}
	return make([]limits.State, n)
}
