package apikey

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// LimiterFailurePolicy says what the middleware does when the Limiter's
// backend fails. It is never answered with 429.
type LimiterFailurePolicy uint8

const (
	// FailClosed answers 503 with Retry-After. It is the zero value.
	FailClosed LimiterFailurePolicy = iota
	// FailOpen lets the request through unlimited.
	FailOpen
	// FailFallback asks MiddlewareOptions.FallbackLimiter instead (for
	// example a memlimit.Limiter: limits then hold per process).
	FailFallback
)

// String names the policy.
func (p LimiterFailurePolicy) String() string {
	switch p {
	case FailOpen:
		return "fail-open"
	case FailFallback:
		return "fallback"
	}
	return "fail-closed"
}

// RateLimitError is the refusal of a request over its key's limit. It
// matches ErrRateLimited with errors.Is.
type RateLimitError struct {
	// Result is the limiter's answer.
	Result LimitResult
}

// Error returns ErrRateLimited's message.
func (e *RateLimitError) Error() string { return ErrRateLimited.Error() }

// Is makes errors.Is(e, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

// limit applies k's limits and writes the RateLimit headers. It reports
// whether the request may go on; if not, it has answered it.
func (mw *Middleware) limit(w http.ResponseWriter, r *http.Request, k *Key) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			mw.logError(r.Context(), "apikey: panic in rate limiting", panicError{p})
			mw.Error(w, r, ErrUnavailable)
			ok = false
		}
	}()
	if mw.limitsFor == nil {
		return true
	}
	limits := mw.limitsFor(k)
	if len(limits) == 0 {
		return true
	}
	res, err := mw.limiter.Allow(r.Context(), k.ID, limits, 1)
	if err != nil {
		if mw.failed != nil {
			mw.failed(r, err, mw.onFailure)
		}
		mw.logError(r.Context(), "apikey: limiter failed, policy "+mw.onFailure.String(), err)
		switch mw.onFailure {
		case FailOpen:
			return true
		case FailFallback:
			res, err = mw.fallback.Allow(r.Context(), k.ID, limits, 1)
		}
		if err != nil {
			mw.Error(w, r, ErrUnavailable)
			return false
		}
	}
	mw.rateLimitHeaders(w.Header(), limits, res)
	if !res.Allowed {
		mw.Error(w, r, &RateLimitError{Result: res})
		return false
	}
	return true
}

// rateLimitHeaders writes RateLimit-Policy and RateLimit as in the IETF
// httpapi rate-limit headers draft, and optionally the X-RateLimit-* trio.
func (mw *Middleware) rateLimitHeaders(h http.Header, limits []Limit, res LimitResult) {
	var b strings.Builder
	for i, l := range limits {
		if i > 0 {
			b.WriteString(", ")
		}
		q, w := l.Count, l.window()
		fmt.Fprintf(&b, "%q;q=%d;w=%d", l.Name, q, w)
	}
	h.Set("RateLimit-Policy", b.String())
	reset := seconds(res.Reset)
	h.Set("RateLimit", fmt.Sprintf("%q;r=%d;t=%s", res.Limit.Name, res.Remaining, reset))
	if mw.legacy {
		h.Set("X-RateLimit-Limit", strconv.FormatInt(res.Limit.Count, 10))
		h.Set("X-RateLimit-Remaining", strconv.FormatInt(res.Remaining, 10))
		h.Set("X-RateLimit-Reset", reset)
	}
}

// window is the length in seconds of l's window for RateLimit-Policy
// (a month counts 30 days).
func (l Limit) window() int64 {
	if l.Kind == KindRate {
		return max(1, int64((l.Period+time.Second-1)/time.Second))
	}
	switch l.Window {
	case Minute:
		return 60
	case Hour:
		return 3600
	case Day:
		return 86400
	}
	return 30 * 86400
}

// seconds renders d in whole seconds, rounded up, at least 1.
func seconds(d time.Duration) string {
	return strconv.FormatInt(max(1, int64((d+time.Second-1)/time.Second)), 10)
}
