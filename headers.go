package apikey

import (
	"net/http"
	"strconv"
	"time"
	"unsafe"

	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limits"
)

// rateHeaders writes the RateLimit-Policy and RateLimit headers of a
// decision (IETF draft-ietf-httpapi-ratelimit-headers), and optionally the
// X-RateLimit-* trio.
type rateHeaders struct {
	legacy bool             // also X-RateLimit-Limit, -Remaining and -Reset
	now    func() time.Time // a quota's calendar window is measured at now
}

// write writes RateLimit-Policy (policy when precomputed) and RateLimit
// for every limit of ls, and optionally the X-RateLimit-* trio of the
// tightest limit. The RateLimit value is built in v, unless nil; v must
// never be written again.
func (rh rateHeaders) write(h http.Header, policy []string, ls []limits.Limit, res limits.Result, v *headerValue) {
	if policy == nil {
		var buf [256]byte
		policy = []string{string(appendPolicy(buf[:0], ls, rh.now()))}
	}
	h["Ratelimit-Policy"] = policy
	if v == nil { // the value and its one-element slice share one allocation
		v = new(headerValue)
	}
	b := v.b[:0]
	if len(res.States) == len(ls) {
		for i := range ls {
			b = appendState(b, i, &ls[i], res.States[i].Remaining, res.States[i].Reset)
		}
	} else { // a Limiter that reports only the tightest limit
		b = appendState(b, 0, &res.Limit, res.Remaining, res.Reset)
	}
	if len(b) <= len(v.b) {
		v.v[0] = unsafe.String(unsafe.SliceData(b), len(b)) // b is v.b, never written again
	} else {
		v.v[0] = string(b)
	}
	h["Ratelimit"] = v.v[:]
	if rh.legacy {
		h.Set("X-RateLimit-Limit", strconv.FormatInt(res.Limit.Count, 10))
		h.Set("X-RateLimit-Remaining", strconv.FormatInt(res.Remaining, 10))
		// Credits that are never refilled have no reset: 0 would invite a
		// retry at once, as RateLimit omits its t for them.
		if l := &res.Limit; res.Reset > 0 || l.Kind != limits.KindCredits || l.Window != limits.Never {
			h.Set("X-RateLimit-Reset", strconv.FormatInt(ceilSeconds(res.Reset), 10))
		}
	}
}

// headerValue is a one-value header and the bytes of its value.
type headerValue struct {
	v [1]string
	b [184]byte
}

// policyOf returns the RateLimit-Policy value of ls, precomputed, or nil
// when it depends on the date (a monthly quota's window).
func policyOf(ls []limits.Limit) []string {
	for _, l := range ls {
		if l.Window == limits.Month {
			return nil
		}
	}
	return []string{string(appendPolicy(nil, ls, time.Time{}))}
}

// appendPolicy appends the RateLimit-Policy items of ls: `"name";q=N;w=W`,
// W the window in seconds (a rate's period rounded up; a quota's calendar
// window at now, a month its real length), without w for credits never
// refilled.
func appendPolicy(b []byte, ls []limits.Limit, now time.Time) []byte {
	for i := range ls {
		l := &ls[i]
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '"')
		b = append(b, l.Name...)
		b = append(b, `";q=`...)
		b = strconv.AppendInt(b, l.Count, 10)
		w := int64(0)
		if l.Kind == limits.KindRate {
			w = max(1, ceilSeconds(l.Period))
		} else {
			w = gcra.WindowSeconds(uint8(l.Window), now)
		}
		if w > 0 {
			b = append(b, ";w="...)
			b = strconv.AppendInt(b, w, 10)
		}
	}
	return b
}

// appendState appends the RateLimit item of limit l: `"name";r=R;t=T`,
// without t when it never resets.
func appendState(b []byte, i int, l *limits.Limit, remaining int64, reset time.Duration) []byte {
	if i > 0 {
		b = append(b, ", "...)
	}
	b = append(b, '"')
	b = append(b, l.Name...)
	b = append(b, `";r=`...)
	b = strconv.AppendInt(b, remaining, 10)
	if reset > 0 || l.Kind != limits.KindCredits || l.Window != limits.Never {
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, ceilSeconds(reset), 10)
	}
	return b
}

// balance returns res as the RateLimit headers show it: no remaining below
// zero (a balance overdrawn by costs reported after the work).
func balance(res limits.Result) limits.Result {
	res.Remaining = max(0, res.Remaining)
	for i := range res.States {
		res.States[i].Remaining = max(0, res.States[i].Remaining)
	}
	return res
}

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

// seconds renders d in whole seconds, rounded up, at least 1, as
// Retry-After takes it.
func seconds(d time.Duration) string { return strconv.FormatInt(max(1, ceilSeconds(d)), 10) }
