// Package gcra holds the arithmetic shared by the core's Limit validation
// and headers, memlimit and redislimit. It holds the bounds a limit must
// keep, GCRA, UTC calendar windows and the choice of the tightest limit.
// It works on plain numbers so that the core can import it.
package gcra

import (
	"errors"
	"math/bits"
	"time"
)

// Kinds, as limits.Kind.
const (
	KindRate    = 1
	KindQuota   = 2
	KindCredits = 3
)

// Windows, as limits.Window. Never is a credits limit that is never
// refilled.
const (
	Never  = 0
	Minute = 1
	Hour   = 2
	Day    = 3
	Month  = 4
)

// Bounds that keep every limiter's arithmetic exact. Redis's Lua holds
// integers below 2^53 in doubles and formats counts with 14 digits.
const (
	// MaxCount bounds a count and a burst.
	MaxCount = int64(100_000_000_000_000 - 1)
	// MaxHorizonMicros bounds a rate's burst times its emission interval,
	// in microseconds (about 35 years).
	MaxHorizonMicros = int64(1) << 50
	// MaxNameLength bounds a limit name.
	MaxNameLength = 64
)

// Errors of Check. The caller wraps them with its sentinel and the name.
var (
	ErrName    = errors.New("name must be 1 to 64 characters: a letter, then letters, digits or !#$%&'*+-.^_`|~:/")
	ErrCount   = errors.New("count must be between 1 and 10^14-1")
	ErrKind    = errors.New("unknown kind")
	ErrWindow  = errors.New("unknown window")
	ErrPeriod  = errors.New("rate needs a positive period")
	ErrBurst   = errors.New("burst must be between 0 and 10^14-1")
	ErrTooFast = errors.New("rate is above one per nanosecond")
	ErrHorizon = errors.New("burst times period/count is longer than 2^50 microseconds")
)

// Check reports what is wrong with a limit, or nil.
func Check(name string, kind uint8, count int64, period time.Duration, burst int64, window uint8) error {
	if !ValidName(name) {
		return ErrName
	}
	if count < 1 || count > MaxCount {
		return ErrCount
	}
	switch kind {
	case KindRate:
		switch {
		case period <= 0:
			return ErrPeriod
		case burst < 0 || burst > MaxCount:
			return ErrBurst
		case count > int64(period):
			return ErrTooFast
		}
		// GCRA's interval in µs, ceil(ceil(period/count)/1000), is
		// ceil(period/(1000*count)): one division (1000*count < 2^63).
		d := 1000 * count
		t := int64(period) / d
		if int64(period)%d != 0 {
			t++
		}
		b := burst
		if b == 0 {
			b = count
		}
		if hi, lo := bits.Mul64(uint64(t), uint64(b)); hi != 0 || lo >= uint64(MaxHorizonMicros) {
			return ErrHorizon
		}
	case KindQuota:
		if window < Minute || window > Month {
			return ErrWindow
		}
	case KindCredits:
		if window > Month {
			return ErrWindow
		}
	default:
		return ErrKind
	}
	return nil
}

// ValidName reports whether name is a structured-field token (RFC 9651)
// that needs no escaping inside a structured-field string either. Such a
// name is a letter, then token characters, at most MaxNameLength.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > MaxNameLength {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i == 0:
			return false
		case c >= '0' && c <= '9':
		default:
			switch c {
			case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~', ':', '/':
			default:
				return false
			}
		}
	}
	return true
}

// GCRA returns a checked rate's emission interval in units of unit,
// rounded up so that a limiter is never more permissive than the limit,
// and its burst (count when burst is 0).
func GCRA(count int64, period time.Duration, burst int64, unit time.Duration) (t, b int64) {
	// period/count rounded up, without overflowing period+count-1.
	ns := int64(period) / count
	if int64(period)%count != 0 {
		ns++
	}
	t = ns / int64(unit)
	if ns%int64(unit) != 0 {
		t++
	}
	if burst == 0 {
		burst = count
	}
	return t, burst
}

// Outcome is what one limit answers to one call. Durations are in the
// caller's unit.
type Outcome struct {
	Allowed   bool
	Remaining int64
	// Reset is the time until the limit is whole again. It is 0 for
	// credits that are never refilled.
	Reset int64
	// Retry is the wait until the call could be allowed, when denied.
	Retry int64
}

// NoState is the seen time of a rate with no stored state. It is earlier
// than any reading of a clock.
const NoState = -1 << 63

// Rate applies GCRA to a request of cost at now, with emission interval t
// and burst b. It is given the stored theoretical arrival time tat and the
// time seen of the call that stored it (tat = now and seen = NoState when
// none). A request is allowed when max(tat, now) + cost*t - now <= b*t.
//
// A clock that stepped back (now before seen) counts as no time having
// passed since seen. What was outstanding then, tat - seen, is
// outstanding now. A step back thus neither denies a subject that has
// spent less than its burst nor grants more than the burst. A tat further
// ahead than the burst window (a state written for a smaller burst)
// counts as now + b*t.
//
// Rate returns the tat to store with seen = now and whether to store it.
// When allowed, that is the new tat. When denied, it is the tat moved to
// the new clock when it was moved (so that time counts again from now),
// unless nothing is outstanding. A cost above the burst can never fit. It
// waits until the rate is whole, at least one interval.
func Rate(tat, seen, now, t, b, cost int64) (o Outcome, next int64, write bool) {
	tau := b * t
	moved := false
	if now < seen {
		tat, moved = now+max(0, tat-seen), true
	}
	if tat < now {
		tat = now
	}
	if tat > now+tau {
		tat, moved = now+tau, true
	}
	moved = moved && tat > now
	d := tat - now
	remaining := func(d int64) int64 { return max(0, min(b, (tau-d)/t)) }
	if cost > b {
		reset := max(d, t)
		return Outcome{Remaining: remaining(d), Reset: reset, Retry: reset}, tat, moved
	}
	nt := tat + cost*t
	if nt-now > tau {
		return Outcome{Remaining: remaining(d), Reset: d, Retry: nt - now - tau}, tat, moved
	}
	return Outcome{Allowed: true, Remaining: remaining(nt - now), Reset: nt - now}, nt, true
}

// Count applies a count limit (a quota or credits) of count with used
// already spent and reset left until the window ends.
func Count(count, used, cost, reset int64) Outcome {
	left := max(0, count-used)
	if cost > left {
		retry := reset
		if reset == 0 {
			retry = 0 // never refilled: no wait helps
		}
		return Outcome{Remaining: left, Reset: reset, Retry: retry}
	}
	return Outcome{Allowed: true, Remaining: left - cost, Reset: reset}
}

// Unspent returns an allowing outcome as it stands when the call is denied
// by another limit and nothing is spent. Then cost more remains, and for a
// rate of interval t (0 for a count) the reset is cost*t sooner.
func (o Outcome) Unspent(cost, t int64) Outcome {
	if o.Allowed {
		o.Remaining += cost
		o.Reset -= cost * t
	}
	return o
}

// Tighter reports whether o should be reported instead of b. A denial
// comes before an allowance. Among denials the longest wait wins. Among
// allowances the fewest remaining wins, and then the longest reset.
func Tighter(o, b Outcome) bool {
	if o.Allowed != b.Allowed {
		return !o.Allowed
	}
	if !o.Allowed {
		return o.Retry > b.Retry
	}
	if o.Remaining != b.Remaining {
		return o.Remaining < b.Remaining
	}
	return o.Reset > b.Reset
}

// Window returns the UTC calendar window of w holding the Unix time now
// (nanoseconds) as Unix nanoseconds [start, end). Never is the window
// [0, MaxInt64).
func Window(w uint8, now int64) (start, end int64) {
	var size int64
	switch w {
	case Never:
		return 0, 1<<63 - 1
	case Minute:
		size = int64(time.Minute)
	case Hour:
		size = int64(time.Hour)
	case Day:
		size = int64(24 * time.Hour)
	default: // Month
		y, m, _ := time.Unix(0, now).UTC().Date()
		s := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
		return s.UnixNano(), s.AddDate(0, 1, 0).UnixNano()
	}
	start = now - now%size
	if now%size < 0 {
		start -= size
	}
	return start, start + size
}

// WindowSeconds returns the length in seconds of the window of w holding
// now. A month is its real length. Never gives 0.
func WindowSeconds(w uint8, now time.Time) int64 {
	if w == Never {
		return 0
	}
	s, e := Window(w, now.UnixNano())
	return (e - s) / int64(time.Second)
}

// MaxUsed bounds what a quota or credits may hold as used, debts
// included, so that Redis's Lua doubles stay exact (below 2^53).
const MaxUsed = int64(1) << 52

// ErrAmount is the error of a debit beyond MaxCount either way.
var ErrAmount = errors.New("amount must be between -(10^14-1) and 10^14-1")

// CheckAmount reports what is wrong with the amount of a debit, or nil.
func CheckAmount(amount int64) error {
	if amount < -MaxCount || amount > MaxCount {
		return ErrAmount
	}
	return nil
}

// Debit returns what a quota or credits has used after a debit of amount
// (a refund when negative) from used. The result is never below 0, so that
// a refund never gives back more than was used. It is at most MaxUsed.
func Debit(used, amount int64) int64 {
	return min(MaxUsed, max(0, used+amount))
}
