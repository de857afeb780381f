package apikey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gokeys/apikey/internal/limits"
)

// failurePolicy is what the middleware does when the Limiter fails, as
// MiddlewareOptions.FallbackLimiter and FailOpen set it. A failure is never
// answered with 429.
type failurePolicy uint8

const (
	failClosed   failurePolicy = iota // 503 with Retry-After
	failOpen                          // through, unlimited
	failFallback                      // FallbackLimiter decides
)

// String names the policy, as reported to Metrics.LimiterFailed.
func (p failurePolicy) String() string {
	switch p {
	case failOpen:
		return "fail-open"
	case failFallback:
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

// Limit returns a middleware that spends the request's key's limits, after
// Handler and after every check that may refuse the request:
//
//	mw.Handler(mw.RequireScopes("write")(mw.Limit(h)))
//
// Exactly the requests that reach Limit with a key count: a request
// refused before (no key, an invalid, expired, revoked or disabled key, a
// missing scope, any refusal of your own placed before Limit) spends
// nothing, and a request Limit refuses (429, or 403 for a key whose plan
// is not configured) spends nothing either. Every method counts, HEAD and
// OPTIONS like GET, unless MiddlewareOptions.Cost says otherwise. A
// request that passes counts even if the handler then fails.
//
// A key's limits are those of its plan (Options.Plans; a plan not there
// falls back to Options.DefaultPlan, and without it the request is refused
// with 403 and the plan logged once), with the key's own Limits: its rates
// and quotas, if any, replace all of the plan's rates and quotas; its
// credits add to the plan's (a limit of the key replaces the plan's limit
// of the same name). Rates and quotas are counted per LimitKey, credits
// per key Lineage. Without a Limiter, or for an anonymous request let
// through by Optional, Limit spends nothing.
//
// Limit writes RateLimit-Policy and RateLimit listing every limit applied
// (IETF draft-ietf-httpapi-ratelimit-headers), and on 429 Retry-After, the
// wait until every exhausted limit admits the request.
func (mw *Middleware) Limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := FromContext(r.Context())
		if k == nil {
			if !mw.optional {
				mw.Error(w, r, ErrMissingKey)
				return
			}
		} else if mw.rl.limiter != nil && !mw.limit(w, r, k) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// rateLimits is the rate limiting configuration of a Middleware.
type rateLimits struct {
	limiter   Limiter
	fallback  Limiter
	onFailure failurePolicy
	failOpen  bool // also after the fallback failed
	failed    func(*http.Request, error)
	legacy    bool
	key       func(*Key) string
	cost      func(*http.Request, *Key) int64
	timeout   time.Duration
	now       func() time.Time

	plans   map[string]*plan // nil: no plans configured
	def     *plan            // DefaultPlan's, or nil
	unknown sync.Map         // plan names already logged as not configured
	breaker breaker
}

// plan is a plan's limits with what the request path needs precomputed.
type plan struct {
	limits  []Limit
	credits bool     // has credits, which need a Subject per request
	policy  []string // the RateLimit-Policy value; nil when it depends on the date
}

func (rl *rateLimits) init(m *Manager, opts *MiddlewareOptions) error {
	if opts.BreakerCoolDown < 0 {
		return fmt.Errorf("%w: negative BreakerCoolDown", ErrInvalidOptions)
	}
	*rl = rateLimits{
		limiter: opts.Limiter, fallback: opts.FallbackLimiter, failOpen: opts.FailOpen,
		failed: opts.LimiterFailed, legacy: opts.LegacyRateLimitHeaders, key: opts.LimitKey,
		cost: opts.Cost, timeout: opts.LimiterTimeout, now: m.now,
	}
	switch {
	case rl.fallback != nil:
		rl.onFailure = failFallback
	case rl.failOpen:
		rl.onFailure = failOpen
	}
	if rl.timeout == 0 {
		rl.timeout = defaultLimiterTimeout
	}
	if ip, ok := rl.limiter.(interface{ InProcess() bool }); ok && ip.InProcess() {
		rl.timeout = -1 // it never waits: a deadline would only cost allocations
	}
	threshold, coolDown := opts.BreakerFailures, opts.BreakerCoolDown
	if threshold == 0 {
		threshold = defaultBreakerFailures
	}
	if coolDown == 0 {
		coolDown = defaultBreakerCoolDown
	}
	rl.breaker = breaker{threshold: int64(threshold), coolDown: int64(coolDown), now: m.now}
	if m.plans != nil {
		rl.plans = make(map[string]*plan, len(m.plans))
		for name, ls := range m.plans {
			p := &plan{limits: ls}
			fixed := true
			for _, l := range ls {
				p.credits = p.credits || l.Kind == KindCredits
				fixed = fixed && l.Window != Month
			}
			if fixed {
				p.policy = []string{string(appendPolicy(nil, ls, time.Time{}))}
			}
			rl.plans[name] = p
		}
		rl.def = rl.plans[m.defaultPlan]
		if m.defaultPlan == "" {
			rl.def = nil
		}
	}
	return nil
}

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
	rl := &mw.rl
	cost := int64(1)
	if rl.cost != nil {
		if cost = rl.cost(r, k); cost == 0 {
			return true
		} else if cost < 0 {
			mw.internal(w, r, fmt.Errorf("apikey: Cost returned %d", cost))
			return false
		}
	}
	p, ls, err := rl.limitsFor(k)
	if err != nil {
		if _, logged := rl.unknown.LoadOrStore(k.Plan, true); !logged && mw.log != nil {
			mw.log.LogAttrs(r.Context(), slog.LevelError, "apikey: key refused: its plan is not configured and there is no DefaultPlan",
				slog.String("plan", k.Plan), slog.String("key_id", k.ID))
		}
		mw.Error(w, r, ErrUnknownPlan)
		return false
	}
	if len(ls) == 0 {
		return true
	}
	res, err := rl.allow(r.Context(), rl.subject(k), ls, cost)
	if err != nil {
		switch {
		case errors.Is(err, ErrInvalidOptions): // a bad limit on the key: not the backend's fault
			mw.internal(w, r, err)
			return false
		case r.Context().Err() != nil: // the client went away
			mw.Error(w, r, ErrUnavailable)
			return false
		}
		if rl.failed != nil {
			rl.failed(r, err)
		}
		if met := mw.m.metrics; met != nil {
			met.LimiterFailed(rl.onFailure.String(), err == ErrCircuitOpen)
		}
		if err != ErrCircuitOpen {
			mw.logError(r.Context(), "apikey: limiter failed, policy "+rl.onFailure.String(), err)
		}
		switch rl.onFailure {
		case failOpen:
			mw.limited("error", "")
			return true
		case failFallback:
			res, err = rl.fallback.Allow(r.Context(), rl.subject(k), ls, cost)
			if err != nil && rl.failOpen {
				mw.limited("error", "")
				return true
			}
		}
		if err != nil {
			mw.limited("error", "")
			mw.Error(w, r, ErrUnavailable)
			return false
		}
	}
	if res.Allowed {
		mw.limited("allowed", res.Limit.Name)
	} else {
		mw.limited("denied", res.Limit.Name)
	}
	var policy []string
	if p != nil && len(ls) > 0 && len(p.limits) == len(ls) && &ls[0] == &p.limits[0] {
		policy = p.policy
	}
	rl.headers(w.Header(), policy, ls, res)
	if !res.Allowed {
		mw.Error(w, r, &RateLimitError{Result: res})
		return false
	}
	return true
}

// limited reports a rate-limit decision to Metrics, if set.
func (mw *Middleware) limited(outcome, limit string) {
	if met := mw.m.metrics; met != nil {
		met.Limited(outcome, limit)
	}
}

// internal answers 500 for a bug in the configuration and logs it.
func (mw *Middleware) internal(w http.ResponseWriter, r *http.Request, err error) {
	mw.logError(r.Context(), "apikey: rate limiting misconfigured", err)
	h := w.Header()
	h["Content-Type"] = mw.hdrProblem
	h["Cache-Control"] = mw.hdrNoStore
	h["X-Content-Type-Options"] = mw.hdrNoSniff
	w.WriteHeader(http.StatusInternalServerError)
	w.Write(mw.bodies[http.StatusInternalServerError])
}

// subject is the subject k's rates and quotas are counted for. A subject
// that is the key's own id is its lineage's, so that a rotation never
// resets a budget whatever LimitKey returns.
func (rl *rateLimits) subject(k *Key) string {
	if rl.key != nil {
		if s := rl.key(k); s != "" && s != k.ID {
			return s
		}
	} else if k.Owner != "" {
		return k.Owner
	}
	return lineage(k)
}

// lineage is the first key of k's rotation chain.
func lineage(k *Key) string {
	if k.Lineage != "" {
		return k.Lineage
	}
	return k.ID
}

// limitsFor returns k's plan (nil without plans) and the limits of a
// request of k; they are p.limits themselves when k adds nothing.
func (rl *rateLimits) limitsFor(k *Key) (*plan, []Limit, error) {
	var p *plan
	if rl.plans != nil {
		if p = rl.plans[k.Plan]; p == nil {
			if p = rl.def; p == nil {
				return nil, nil, ErrUnknownPlan
			}
		}
	}
	if len(k.Limits) == 0 {
		if p == nil {
			return nil, nil, nil
		}
		if !p.credits {
			return p, p.limits, nil
		}
	}
	own := false // k has rates or quotas: they replace the plan's
	for _, l := range k.Limits {
		own = own || l.Kind != KindCredits
	}
	ls := make([]Limit, 0, len(k.Limits)+4)
	ls = append(ls, k.Limits...)
	if p != nil {
	plan:
		for _, l := range p.limits {
			if own && l.Kind != KindCredits {
				continue
			}
			for _, o := range k.Limits {
				if o.Name == l.Name {
					continue plan
				}
			}
			ls = append(ls, l)
		}
	}
	for i := range ls {
		if ls[i].Kind == KindCredits {
			ls[i].Subject = lineage(k)
		}
	}
	return p, ls, nil
}

// allow calls the Limiter through the circuit breaker, within the timeout.
func (rl *rateLimits) allow(parent context.Context, subject string, ls []Limit, cost int64) (LimitResult, error) {
	ctx := parent
	if !rl.breaker.admit() {
		return LimitResult{}, ErrCircuitOpen
	}
	if rl.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rl.timeout)
		defer cancel()
	}
	res, err := rl.limiter.Allow(ctx, subject, ls, cost)
	if err == nil || errors.Is(err, ErrInvalidOptions) {
		rl.breaker.done(true)
	} else if parent.Err() == nil {
		rl.breaker.done(false)
	} else { // a client that went away is not the backend's failure
		rl.breaker.abandon()
	}
	return res, err
}

// breaker is a circuit breaker over the Limiter: after threshold
// consecutive failures it opens, and admits no call until coolDown has
// passed; then it admits one call at a time (a probe) until one succeeds.
type breaker struct {
	threshold int64 // 0 or less: never opens
	coolDown  int64 // nanoseconds
	now       func() time.Time
	fails     atomic.Int64
	probeAt   atomic.Int64 // Unix nanoseconds from which a probe may run
	probing   atomic.Bool
}

// admit reports whether to call the Limiter.
func (b *breaker) admit() bool {
	if b.threshold <= 0 || b.fails.Load() < b.threshold {
		return true
	}
	if b.now().UnixNano() < b.probeAt.Load() {
		return false
	}
	return b.probing.CompareAndSwap(false, true)
}

// abandon records a call admitted by admit that proved nothing (its
// client went away): a probe may run again.
func (b *breaker) abandon() {
	if b.probing.Load() {
		b.probing.Store(false)
	}
}

// done records the outcome of a call admitted by admit.
func (b *breaker) done(ok bool) {
	if ok {
		if b.fails.Load() != 0 {
			b.fails.Store(0)
		}
		if b.probing.Load() {
			b.probing.Store(false)
		}
		return
	}
	if b.threshold <= 0 {
		return
	}
	if b.fails.Add(1) >= b.threshold {
		b.probeAt.Store(b.now().UnixNano() + b.coolDown)
		b.probing.Store(false)
	}
}

// headers writes RateLimit-Policy (policy when precomputed) and RateLimit
// for every limit of ls, and optionally the X-RateLimit-* trio of the
// tightest limit.
func (rl *rateLimits) headers(h http.Header, policy []string, ls []Limit, res LimitResult) {
	if policy == nil {
		var buf [256]byte
		policy = []string{string(appendPolicy(buf[:0], ls, rl.now()))}
	}
	h["Ratelimit-Policy"] = policy
	// The value and its one-element slice share one allocation.
	v := new(headerValue)
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
	if rl.legacy {
		h.Set("X-RateLimit-Limit", strconv.FormatInt(res.Limit.Count, 10))
		h.Set("X-RateLimit-Remaining", strconv.FormatInt(res.Remaining, 10))
		// Credits that are never refilled have no reset: 0 would invite a
		// retry at once, as RateLimit omits its t for them.
		if l := &res.Limit; res.Reset > 0 || l.Kind != KindCredits || l.Window != Never {
			h.Set("X-RateLimit-Reset", strconv.FormatInt(ceilSeconds(res.Reset), 10))
		}
	}
}

// headerValue is a one-value header and the bytes of its value.
type headerValue struct {
	v [1]string
	b [184]byte
}

// appendPolicy appends the RateLimit-Policy items of ls: `"name";q=N;w=W`,
// W the window in seconds (a rate's period rounded up; a quota's calendar
// window at now, a month its real length), without w for credits never
// refilled.
func appendPolicy(b []byte, ls []Limit, now time.Time) []byte {
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
		if l.Kind == KindRate {
			w = max(1, ceilSeconds(l.Period))
		} else {
			w = limits.WindowSeconds(uint8(l.Window), now)
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
func appendState(b []byte, i int, l *Limit, remaining int64, reset time.Duration) []byte {
	if i > 0 {
		b = append(b, ", "...)
	}
	b = append(b, '"')
	b = append(b, l.Name...)
	b = append(b, `";r=`...)
	b = strconv.AppendInt(b, remaining, 10)
	if reset > 0 || l.Kind != KindCredits || l.Window != Never {
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, ceilSeconds(reset), 10)
	}
	return b
}

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

// seconds renders d in whole seconds, rounded up, at least 1.
func seconds(d time.Duration) string { return strconv.FormatInt(max(1, ceilSeconds(d)), 10) }
