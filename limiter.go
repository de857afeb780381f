package apikey

import (
	"context"
	"fmt"
	"time"
)

// A Limiter decides whether a key may make a request under a set of limits.
// The library ships memlimit (in process) and redislimit (shared through
// Redis).
//
// How to implement a Limiter:
//
//  1. Be safe for concurrent use.
//  2. Decide all limits of one call together: if any denies, none of them
//     consumes anything.
//  3. Take the limits from the call, not from configuration, so that a
//     plan change applies to the next request.
//  4. Keep state per key id and limit; never derive storage names from
//     anything but the key id and the limit.
//  5. Return an error (wrapping ErrUnavailable) only when the backend
//     failed; a denial is a result with Allowed false, not an error.
//  6. Honour ctx.
//
// Run limitertest.Run from your tests to check an implementation.
type Limiter interface {
	// Allow takes cost (at least 1) from every limit in limits for keyID.
	// With no limits it allows and consumes nothing. A cost below 1, an
	// invalid limit or two limits with one name give an error wrapping
	// ErrInvalidOptions. A cost above a limit's capacity (a rate's burst, a
	// quota's count) can never be allowed: it is denied, consuming nothing,
	// with RetryAfter equal to Reset (for a rate, at least one emission
	// interval), after which it is still denied.
	Allow(ctx context.Context, keyID string, limits []Limit, cost int64) (LimitResult, error)
}

// LimitKind is the algorithm of a Limit.
type LimitKind uint8

const (
	// KindRate is a smooth rate, N per period with a burst, by GCRA.
	KindRate LimitKind = iota + 1
	// KindQuota is a count per calendar window aligned to UTC boundaries.
	KindQuota
)

// Window is the calendar window of a quota, aligned to UTC.
type Window uint8

// The windows of a quota.
const (
	Minute Window = iota + 1
	Hour
	Day
	Month
)

// Limit is one rate limit or quota. Build it with Rate or Quota.
type Limit struct {
	// Name identifies the limit in storage and in the RateLimit-Policy
	// header, e.g. "per-second" or "daily". Limits of one request need
	// distinct names.
	Name string
	// Kind is KindRate or KindQuota.
	Kind LimitKind
	// Count is N: requests per Period (rate) or per Window (quota).
	Count int64
	// Period is the period of a rate.
	Period time.Duration
	// Burst is how many requests a rate admits at once; Count when 0.
	Burst int64
	// Window is the window of a quota.
	Window Window
}

// Rate returns a smooth rate limit of n requests per period, admitting up
// to burst at once (n when burst is 0).
func Rate(name string, n int64, period time.Duration, burst int64) Limit {
	return Limit{Name: name, Kind: KindRate, Count: n, Period: period, Burst: burst}
}

// Quota returns a quota of n requests per calendar window: "100 per day"
// admits at most 100 between two UTC midnights.
func Quota(name string, n int64, w Window) Limit {
	return Limit{Name: name, Kind: KindQuota, Count: n, Window: w}
}

// Validate reports whether l is well formed.
func (l Limit) Validate() error {
	switch {
	case l.Name == "":
		return fmt.Errorf("%w: limit without a name", ErrInvalidOptions)
	case l.Count <= 0:
		return fmt.Errorf("%w: limit %q: count must be positive", ErrInvalidOptions, l.Name)
	case l.Kind == KindRate && (l.Period <= 0 || l.Burst < 0):
		return fmt.Errorf("%w: limit %q: rate needs a positive period and a non-negative burst", ErrInvalidOptions, l.Name)
	case l.Kind == KindQuota && (l.Window < Minute || l.Window > Month):
		return fmt.Errorf("%w: limit %q: unknown window", ErrInvalidOptions, l.Name)
	case l.Kind != KindRate && l.Kind != KindQuota:
		return fmt.Errorf("%w: limit %q: unknown kind", ErrInvalidOptions, l.Name)
	}
	return nil
}

// LimitResult is a Limiter's answer.
type LimitResult struct {
	// Allowed reports whether the request may proceed (and was counted).
	Allowed bool
	// Limit is the tightest limit: the one that denied (the longest wait
	// when several did), or the one with the fewest requests remaining
	// (then the longest Reset).
	Limit Limit
	// Remaining is what the tightest limit still admits after this call.
	Remaining int64
	// Reset is the time until the tightest limit is fully available again
	// (for a quota, the end of its window; for a rate, until its burst is
	// whole again).
	Reset time.Duration
	// RetryAfter, when denied, is the time until the same call could be
	// allowed: for a quota, the end of its window; for a rate, until it
	// has room for the cost. With several denying limits it is the longest
	// of their waits, and Limit is that limit. Zero when allowed.
	RetryAfter time.Duration
}

// Plans maps a plan name (Key.Plan) to its limits.
//
//	apikey.Plans{
//		"free": {apikey.Quota("daily", 100, apikey.Day)},
//		"pro":  {apikey.Quota("daily", 10_000, apikey.Day), apikey.Rate("per-second", 100, time.Second, 0)},
//	}
//
// A key whose plan is not in the map gets the limits of the plan named ""
// when there is one, and no limits otherwise.
type Plans map[string][]Limit

// For returns the limits of k's plan.
func (p Plans) For(k *Key) []Limit {
	if l, ok := p[k.Plan]; ok {
		return l
	}
	return p[""]
}

// Validate checks every limit of every plan.
func (p Plans) Validate() error {
	for name, limits := range p {
		seen := map[string]bool{}
		for _, l := range limits {
			if err := l.Validate(); err != nil {
				return fmt.Errorf("plan %q: %w", name, err)
			}
			if seen[l.Name] {
				return fmt.Errorf("%w: plan %q: limit name %q used twice", ErrInvalidOptions, name, l.Name)
			}
			seen[l.Name] = true
		}
	}
	return nil
}
