// Package limits is the vocabulary of rate limits, quotas and credits
// shared by the apikey middleware and the Limiters that decide them
// (memlimit in process, redislimit through Redis). A Limit is plain data.
// A Limiter decides a call against a set of them. Plans name sets of limits.
package limits

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"time"

	"github.com/gokeys/apikey/internal/gcra"
)

// ErrInvalid is wrapped by every error about a malformed limit, plan or
// Limiter call.
var ErrInvalid = errors.New("limits: invalid")

// A Limiter decides whether a subject may make a request under a set of
// limits. The library ships memlimit (in process) and redislimit (shared
// through Redis).
//
// The middleware calls it with the request's customer as subject (see
// Key.Customer), so that all keys of a customer share one budget, and with
// the customer's limits. A key's own limits carry their own Subject, the
// key's lineage, so that they belong to a key and its rotations.
//
// To implement a Limiter, follow these rules.
//
//  1. Be safe for concurrent use.
//  2. Decide all limits of one call together, atomically. If any denies,
//     none of them consumes anything. Concurrent calls never admit more
//     than a limit allows.
//  3. Take the limits from the call, not from configuration, so that a
//     plan change applies to the next request.
//  4. Keep state per subject and limit (name and kind). A limit with a
//     Subject keeps its state per (call subject, limit, limit Subject), so
//     that everything one call decides can live in one place (one Redis
//     hash slot). Never derive storage names from anything but these.
//  5. Answer one State per limit, in the order of the call, when the
//     call has more than one limit.
//  6. Return an error (wrapping apikey.ErrUnavailable) only when the
//     backend failed. A denial is a result with Allowed false, not an
//     error.
//  7. Honour ctx.
//
// Run limitertest.Run from your tests to check an implementation.
type Limiter interface {
	// Allow takes cost (at least 1) from every limit in limits for
	// subject. With no limits it allows and consumes nothing. An empty
	// subject, a cost below 1, an invalid limit (see Limit.Validate) or
	// two limits with one name and Subject give an error wrapping
	// ErrInvalid. A cost above a limit's capacity (a rate's burst, a
	// quota's or credits' count) can never be allowed. It is denied,
	// consuming nothing, with RetryAfter equal to Reset (for a rate, at
	// least one emission interval). After that it is still denied.
	Allow(ctx context.Context, subject string, limits []Limit, cost int64) (Result, error)
}

// Kind is the algorithm of a Limit. In JSON it is "rate", "quota" or
// "credits".
type Kind uint8

const (
	// KindRate is a smooth rate, N per period with a burst, by GCRA.
	KindRate Kind = iota + 1
	// KindQuota is a count per calendar window aligned to UTC boundaries.
	KindQuota
	// KindCredits is a number of uses, never refilled or refilled to
	// its count at each UTC day or month (Window). Credits add to a plan's
	// limits and are counted per key (see Limit.Subject).
	KindCredits
)

// Window is the calendar window of a quota, or the refill of credits,
// aligned to UTC. In JSON it is "minute", "hour", "day", "month" or, for
// credits never refilled, "never".
type Window uint8

// The windows of a quota and the refills of credits.
const (
	Never Window = iota // credits only, never refilled
	Minute
	Hour
	Day
	Month
)

// kindName and windowName name the kinds and windows, "" when unknown.
func kindName(k Kind) string {
	switch k {
	case KindRate:
		return "rate"
	case KindQuota:
		return "quota"
	case KindCredits:
		return "credits"
	}
	return ""
}

func windowName(w Window) string {
	switch w {
	case Never:
		return "never"
	case Minute:
		return "minute"
	case Hour:
		return "hour"
	case Day:
		return "day"
	case Month:
		return "month"
	}
	return ""
}

var (
	_ encoding.TextMarshaler   = Kind(0)
	_ encoding.TextUnmarshaler = (*Kind)(nil)
	_ encoding.TextMarshaler   = Window(0)
	_ encoding.TextUnmarshaler = (*Window)(nil)
)

// String names the kind, "rate", "quota" or "credits".
func (k Kind) String() string { return nameOf(k, kindName, "Kind") }

// MarshalText encodes a known kind by its name.
func (k Kind) MarshalText() ([]byte, error) { return marshalName(k, kindName, "limit kind") }

// UnmarshalText decodes a kind's name.
func (k *Kind) UnmarshalText(b []byte) error {
	return unmarshalName(k, b, KindRate, KindCredits, kindName, "limit kind")
}

// String names the window, "never", "minute", "hour", "day" or "month".
func (w Window) String() string { return nameOf(w, windowName, "Window") }

// MarshalText encodes a known window by its name.
func (w Window) MarshalText() ([]byte, error) { return marshalName(w, windowName, "window") }

// UnmarshalText decodes a window's name.
func (w *Window) UnmarshalText(b []byte) error {
	return unmarshalName(w, b, Never, Month, windowName, "window")
}

// nameOf, marshalName and unmarshalName give Kind and Window their
// names.
func nameOf[T ~uint8](v T, name func(T) string, typ string) string {
	if n := name(v); n != "" {
		return n
	}
	return fmt.Sprintf("%s(%d)", typ, uint8(v))
}

func marshalName[T ~uint8](v T, name func(T) string, what string) ([]byte, error) {
	if n := name(v); n != "" {
		return []byte(n), nil
	}
	return nil, fmt.Errorf("%w: unknown %s %d", ErrInvalid, what, uint8(v))
}

func unmarshalName[T ~uint8](v *T, b []byte, lo, hi T, name func(T) string, what string) error {
	for c := lo; c <= hi; c++ {
		if name(c) == string(b) {
			*v = c
			return nil
		}
	}
	return fmt.Errorf("%w: unknown %s %q", ErrInvalid, what, b)
}

// Limit is one rate limit, quota or credits limit. Build it with Rate,
// Quota or Credits. It is plain data, encoded to JSON with the field names
// below (Period in nanoseconds), which is how stores keep Key.Limits.
type Limit struct {
	// Name identifies the limit in storage and in the RateLimit headers,
	// e.g. "per-second" or "daily". It is a letter then up to 63 letters,
	// digits or !#$%&'*+-.^_`|~:/ (a structured-field token). Limits of
	// one call need distinct names.
	Name string `json:"name"`
	// Kind is KindRate, KindQuota or KindCredits.
	Kind Kind `json:"kind"`
	// Count is the number of requests per Period (rate) or per Window
	// (quota), or the credits granted (credits). It is at most 10^14-1,
	// and a rate admits at most one request per nanosecond.
	Count int64 `json:"count"`
	// Period is the period of a rate.
	Period time.Duration `json:"period,omitempty"`
	// Burst is how many requests a rate admits at once, Count when 0.
	Burst int64 `json:"burst,omitempty"`
	// Window is the window of a quota, or when credits are refilled to
	// Count. Never, the zero value, never refills them.
	Window Window `json:"window,omitzero"`
	// Subject, if set, counts the limit for this subject instead of the
	// call's, within the call's subject (see Limiter). The middleware sets
	// it to the key's Lineage for a key's own limits. It is not stored.
	Subject string `json:"-"`
}

// Rate returns a smooth rate limit of n requests per period, admitting up
// to burst at once (n when burst is 0).
func Rate(name string, n int64, period time.Duration, burst int64) Limit {
	return Limit{Name: name, Kind: KindRate, Count: n, Period: period, Burst: burst}
}

// Quota returns a quota of n requests per calendar window. "100 per day"
// admits at most 100 between two UTC midnights.
func Quota(name string, n int64, w Window) Limit {
	return Limit{Name: name, Kind: KindQuota, Count: n, Window: w}
}

// Credits returns a credits limit of n uses, refilled to n at the start of
// each UTC day or month (refill Day or Month), or never (refill Never).
func Credits(name string, n int64, refill Window) Limit {
	return Limit{Name: name, Kind: KindCredits, Count: n, Window: refill}
}

// Validate reports whether l is well formed, with an error wrapping
// ErrInvalid. A valid limit has a valid name, a count between 1 and
// 10^14-1, and a known kind and window. Credits refill Never, Day or
// Month. A rate has a positive period, at most one request per
// nanosecond and a burst window (burst times period/count) below 2^50
// microseconds.
func (l Limit) Validate() error { return l.check() }

// check is Validate without copying l.
func (l *Limit) check() error {
	err := gcra.Check(l.Name, uint8(l.Kind), l.Count, l.Period, l.Burst, uint8(l.Window))
	if err == nil && l.Kind == KindCredits && l.Window != Never && l.Window != Day && l.Window != Month {
		err = gcra.ErrWindow
	}
	if err != nil {
		return fmt.Errorf("%w: limit %q: %w", ErrInvalid, l.Name, err)
	}
	return nil
}

// Result is a Limiter's answer. It is plain data, owned by the caller.
type Result struct {
	// Allowed reports whether the request may proceed (and was counted).
	Allowed bool
	// Limit is the tightest limit. It is the one that denied (the longest
	// wait when several did), or else the one with the fewest requests
	// remaining (then the longest Reset).
	Limit Limit
	// Remaining is what the tightest limit still admits after this call.
	Remaining int64
	// Reset is the time until the tightest limit is fully available
	// again. For a quota it is the end of its window. For a rate it is
	// when its burst is whole again. For credits never refilled it is 0.
	Reset time.Duration
	// RetryAfter, when denied, is the time until the same call could be
	// allowed. It is the longest wait of the denying limits. A quota waits
	// for the end of its window, and a rate until it has room for the
	// cost. It is 0 when only credits that are never refilled deny, and
	// when allowed.
	RetryAfter time.Duration
	// States holds the state of every limit of the call, in its order,
	// when the call has more than one limit. With a single limit it may be
	// nil, the fields above being that limit's state.
	States []State
}

// State is the state of one limit after a Limiter call. It is plain data.
type State struct {
	// Remaining is what the limit still admits.
	Remaining int64
	// Reset is the time until the limit is fully available again. It is 0
	// for credits never refilled.
	Reset time.Duration
	// RetryAfter is, when the limit denied the call, the wait until it
	// would admit it. It is 0 otherwise.
	RetryAfter time.Duration
}

// Plans maps a plan name (Key.Plan) to its limits. Set them in
// Options.Plans.
//
//	limits.Plans{
//		"free": {limits.Quota("daily", 100, limits.Day)},
//		"pro":  {limits.Quota("daily", 10_000, limits.Day), limits.Rate("per-second", 100, time.Second, 0)},
//	}
type Plans map[string][]Limit

// Validate checks every limit of every plan, and that no plan uses a
// limit name twice.
func (p Plans) Validate() error {
	for name, ls := range p {
		if err := validLimits(ls); err != nil {
			return fmt.Errorf("plan %q: %w", name, err)
		}
	}
	return nil
}

// validLimits checks limits and that no two share a name and Subject.
func validLimits(ls []Limit) error {
	for i := range ls {
		l := &ls[i]
		if err := l.check(); err != nil {
			return err
		}
		for j := range i {
			if o := &ls[j]; o.Name == l.Name && o.Subject == l.Subject {
				return fmt.Errorf("%w: limit name %q used twice", ErrInvalid, l.Name)
			}
		}
	}
	return nil
}

// ValidateAllow checks the arguments of a Limiter's Allow as the Limiter
// contract states them, with an error wrapping ErrInvalid. The subject
// must not be empty, the cost must be at least 1, every limit must be
// valid, and no two may share a name and Subject. Limiters call it.
func ValidateAllow(subject string, limits []Limit, cost int64) error {
	switch {
	case subject == "":
		return fmt.Errorf("%w: empty subject", ErrInvalid)
	case cost < 1:
		return fmt.Errorf("%w: cost %d is below 1", ErrInvalid, cost)
	}
	return validLimits(limits)
}

// A Peeker is a Limiter that can also report the state of limits
// without spending anything, for example to show a customer the balance
// of his credits. memlimit and redislimit implement it.
type Peeker interface {
	// Peek answers what Allow with a cost of 1 would answer for the
	// same subject and limits (Allowed, Remaining, Reset and States),
	// without consuming anything.
	Peek(ctx context.Context, subject string, limits []Limit) (Result, error)
}

// A Debiter is a Limiter that can settle a request's cost after its
// response, when only then is it known (tokens generated, rows scanned).
// memlimit and redislimit implement it.
type Debiter interface {
	// Debit takes amount from the quotas and credits among limits for
	// subject, atomically and without an admission check. A negative
	// amount refunds. Rates are not debited, since they decide admission
	// only. A balance may fall below zero. A quota's debt ends with its
	// window, and a credits debt stays until refilled or granted. A refund
	// never takes a limit above its count.
	//
	// Debit answers the state of every limit after the debit as Allow
	// does (a rate's as it stands), with Allowed true. Remaining is the
	// balance, below zero for a debt. An amount of 0 only reads them. An
	// empty subject, an invalid limit, two limits with one name and
	// Subject or an amount beyond ±(10^14-1) give an error wrapping
	// ErrInvalid.
	Debit(ctx context.Context, subject string, limits []Limit, amount int64) (Result, error)
}
