package redislimit

import (
	"context"

	"github.com/gokeys/apikey/limits"
)

// Keys returns the storage keys of a call's limits.
var Keys = (*Limiter).keys

// AllowGeneral is Allow through limit.lua, the script of any number of
// limits, even for a single rate.
func AllowGeneral(l *Limiter, ctx context.Context, subject string, ls []limits.Limit, cost int64) (limits.Result, error) {
	return l.run(ctx, l.allow, subject, ls, cost)
}

// PeekGeneral is Peek through limit.lua.
func PeekGeneral(l *Limiter, ctx context.Context, subject string, ls []limits.Limit) (limits.Result, error) {
	return l.run(ctx, l.peek, subject, ls, 1)
}
