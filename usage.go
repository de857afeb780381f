package apikey

import (
	"context"
)

// A Debiter is a Limiter that can settle a request's cost after its
// response, when only then is it known (tokens generated, rows scanned).
// memlimit and redislimit implement it.
type Debiter interface {
	// Debit takes amount from the quotas and credits among limits for
	// subject, without an admission check, atomically; a negative
	// amount refunds. Rates are not debited: they decide admission only.
	// A balance may fall below zero: a quota's debt ends with its window,
	// a credits debt stays until refilled or granted.
	Debit(ctx context.Context, subject string, limits []Limit, amount int64) (LimitResult, error)
}
