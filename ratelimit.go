package apikey

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limits"
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
	Result limits.Result
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
// A request's limits are those of its customer (see Customer): the
// limits of the customer's plan (Options.Plans; a plan not there falls
// back to Options.DefaultPlan, and without it the request is refused with
// 403 and the plan logged once), with the limits the operator granted the
// customer (a limit named like one of the plan's replaces it) and his
// credits grant, all counted per customer; and the key's own Limits, added
// to them and counted per key lineage, so that a key can narrow what its
// customer has but never widen it. Without customer records (a store
// without CustomerStore and no Options.Customers) the key's Plan names the
// plan. Without a Limiter, or for an anonymous request let through by
// Optional, Limit spends nothing.
//
// Limit writes RateLimit-Policy and RateLimit listing every limit applied
// (IETF draft-ietf-httpapi-ratelimit-headers), and on 429 Retry-After, the
// wait until every exhausted limit admits the request. With
// MiddlewareOptions.ReportedCosts, a request costs what its handler reports
// after the work (see ReportCost).
func (mw *Middleware) Limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := FromContext(r.Context())
		if k == nil {
			if !mw.optional {
				mw.Error(w, r, ErrMissingKey)
				return
			}
		} else if mw.rl.limiter == nil {
			mw.meterCost(r, k)
		} else if mw.rl.post.on {
			mw.serveSettled(w, r, k, next)
			return
		} else if !mw.limit(w, r, k, nil) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// rateLimits is the rate limiting configuration of a Middleware.
type rateLimits struct {
	limiter   limits.Limiter
	fallback  limits.Limiter
	onFailure failurePolicy
	failOpen  bool // also after the fallback failed
	failed    func(*http.Request, error)
	legacy    bool
	cost      func(*http.Request, *Key) int64
	timeout   time.Duration
	now       func() time.Time
	post      postCosts // costs reported after the work: settle.go

	plans   map[string]*plan // nil: no plans configured
	def     *plan            // DefaultPlan's, or nil
	unknown sync.Map         // plan names already logged as not configured
	breaker breaker
}

// plan is a plan's limits with what the request path needs precomputed.
type plan struct {
	limits []limits.Limit
	policy []string // the RateLimit-Policy value; nil when it depends on the date
}

func (rl *rateLimits) init(m *Manager, opts *MiddlewareOptions) error {
	if opts.BreakerCoolDown < 0 {
		return fmt.Errorf("%w: negative BreakerCoolDown", ErrInvalidOptions)
	}
	*rl = rateLimits{
		limiter: opts.Limiter, fallback: opts.FallbackLimiter, failOpen: opts.FailOpen,
		failed: opts.LimiterFailed, legacy: opts.LegacyRateLimitHeaders,
		cost: opts.Cost, timeout: opts.LimiterTimeout, now: m.now,
	}
	if err := rl.post.init(opts); err != nil {
		return err
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
	rl.breaker = breaker{threshold: int64(threshold), coolDown: int64(coolDown), now: m.now, seed: maphash.MakeSeed()}
	if m.plans != nil {
		rl.plans = make(map[string]*plan, len(m.plans))
		for name, ls := range m.plans {
			p := &plan{limits: ls}
			fixed := true
			for _, l := range ls {
				fixed = fixed && l.Window != limits.Month
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

// limit applies k's limits and writes the RateLimit headers, noting in
// st, unless nil, what to settle. It reports whether the request may go
// on; if not, it has answered it.
func (mw *Middleware) limit(w http.ResponseWriter, r *http.Request, k *Key, st *settlement) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			mw.logError(r.Context(), "apikey: panic in rate limiting", panicError{p})
			mw.Error(w, r, ErrUnavailable)
			ok = false
		}
	}()
	cost := int64(1)
	if mw.rl.cost != nil {
		if cost = mw.rl.cost(r, k); cost == 0 {
			return true
		} else if cost < 0 {
			mw.meterLimit(r, 0, ErrInvalidOptions)
			mw.internal(w, r, fmt.Errorf("apikey: Cost returned %d", cost))
			return false
		}
	}
	err := mw.spend(r.Context(), r, k, cost, w.Header(), st)
	mw.meterLimit(r, cost, err)
	switch {
	case err == nil:
		return true
	case errors.Is(err, limits.ErrInvalid): // a bad limit: not the backend's fault
		mw.internal(w, r, err)
	default:
		mw.Error(w, r, err)
	}
	return false
}

// Spend takes cost from the limits of k's customer as Limit does, for a
// surface other than net/http (an RPC interceptor), so that both share one
// budget, one circuit breaker and one failure policy. It writes the
// RateLimit headers into h, unless h is nil. It returns nil when the
// request may go on, a *RateLimitError when a limit refuses it,
// ErrUnknownPlan, ErrUnavailable when a dependency failed and the failure
// policy refuses, or an error wrapping ErrInvalidOptions for a
// misconfiguration (a negative cost, an invalid limit). A cost of 0, or
// no Limiter, spends nothing. LimiterFailed receives a nil request for
// the failures of Spend. Debit settles a cost known only after the work.
// With usage recording, each call with a key and a cost of 0 or more
// counts as one request (see Options.UsageInterval).
func (mw *Middleware) Spend(ctx context.Context, k *Key, cost int64, h http.Header) (err error) {
	if u := mw.m.meter; u != nil && k != nil && cost >= 0 {
		defer func() { u.spent(k, cost, err) }()
	}
	defer func() {
		if p := recover(); p != nil {
			mw.logError(ctx, "apikey: panic in rate limiting", panicError{p})
			err = ErrUnavailable
		}
	}()
	switch {
	case k == nil:
		return ErrMissingKey
	case cost < 0:
		return fmt.Errorf("%w: negative cost %d", ErrInvalidOptions, cost)
	case cost == 0 || mw.rl.limiter == nil:
		return nil
	}
	if h == nil {
		h = http.Header{}
	}
	return mw.spend(ctx, nil, k, cost, h, nil)
}

// spend takes cost from k's limits and writes the RateLimit headers into
// h; r, the HTTP request if any, is for LimiterFailed; st, unless nil,
// notes what to settle. It returns nil, a sentinel for Error, a
// *RateLimitError, or an error wrapping ErrInvalidOptions.
func (mw *Middleware) spend(ctx context.Context, r *http.Request, k *Key, cost int64, h http.Header, st *settlement) error {
	rl := &mw.rl
	c, err := mw.m.customerOf(ctx, k, rl.now())
	if err != nil {
		return ErrUnavailable
	}
	p, ls, err := rl.limitsFor(k, c)
	if err != nil {
		plan := k.Plan
		if c != nil {
			plan = c.Plan
		}
		if _, logged := rl.unknown.LoadOrStore(plan, true); !logged && mw.log != nil {
			mw.log.LogAttrs(ctx, slog.LevelError, "apikey: key refused: its customer's plan is not configured and there is no DefaultPlan",
				slog.String("plan", plan), slog.String("key_id", k.ID), slog.String("customer", k.Customer()))
		}
		return ErrUnknownPlan
	}
	if len(ls) == 0 {
		return nil
	}
	subject := k.Customer()
	st.limits(subject, ls, rl.limiter)
	res, err := rl.allow(ctx, subject, ls, cost)
	if err != nil {
		switch {
		case errors.Is(err, limits.ErrInvalid):
			return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		case ctx.Err() != nil: // the client went away
			return ErrUnavailable
		}
		if rl.failed != nil {
			rl.failed(r, err)
		}
		if met := mw.m.metrics; met != nil {
			met.LimiterFailed(rl.onFailure.String(), err == ErrCircuitOpen)
		}
		if err != ErrCircuitOpen {
			mw.logError(ctx, "apikey: limiter failed, policy "+rl.onFailure.String(), err)
		}
		switch rl.onFailure {
		case failOpen:
			mw.limited("error", "")
			return nil
		case failFallback:
			res, err = rl.fallback.Allow(ctx, subject, ls, cost)
			st.limits(subject, ls, rl.fallback)
			if err != nil && rl.failOpen {
				mw.limited("error", "")
				return nil
			}
		}
		if err != nil {
			mw.limited("error", "")
			return ErrUnavailable
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
	rl.headers(h, policy, ls, res)
	if !res.Allowed {
		return &RateLimitError{Result: res}
	}
	st.reserve(cost)
	return nil
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

// planOf returns the plan of a request of k whose customer record is c
// (nil without customer records), nil without plans.
func (rl *rateLimits) planOf(k *Key, c *Customer) (*plan, error) {
	if rl.plans == nil {
		return nil, nil
	}
	name := k.Plan // without customer records, or for a customer without one
	if c != nil && (c.Plan != "" || c.Revision != 0) {
		name = c.Plan
	}
	if p := rl.plans[name]; p != nil {
		return p, nil
	}
	if rl.def == nil {
		return nil, ErrUnknownPlan
	}
	return rl.def, nil
}

// limitsFor returns the plan (nil without plans) and the limits of a
// request of k whose customer record is c; they are the plan's limits
// themselves when neither the customer nor the key adds any.
func (rl *rateLimits) limitsFor(k *Key, c *Customer) (*plan, []limits.Limit, error) {
	p, err := rl.planOf(k, c)
	if err != nil {
		return nil, nil, err
	}
	extra := c != nil && (len(c.Limits) > 0 || c.Credits > 0)
	if len(k.Limits) == 0 && !extra {
		if p == nil {
			return nil, nil, nil
		}
		return p, p.limits, nil
	}
	ls := make([]limits.Limit, 0, len(k.Limits)+8)
	line := lineage(k)
	for _, l := range k.Limits {
		l.Subject = line
		ls = append(ls, l)
	}
	if p != nil {
	plan:
		for _, l := range p.limits {
			if c != nil {
				for _, o := range c.Limits {
					if o.Name == l.Name {
						continue plan
					}
				}
				if c.Credits > 0 && l.Name == CreditsLimit {
					continue
				}
			}
			ls = append(ls, l)
		}
	}
	if c != nil {
		ls = append(ls, c.Limits...)
		if c.Credits > 0 {
			ls = append(ls, limits.Credits(CreditsLimit, c.Credits, limits.Never))
		}
	}
	return p, ls, nil
}

// Balance returns what the limits of customer id have left now, without
// spending anything: those of his plan and his grants, as a request of a
// key without limits of its own spends them. Remaining may be negative
// after costs reported post hoc. It needs a Limiter that implements
// limits.Debiter (read with a debit of 0) or limits.Peeker.
func (mw *Middleware) Balance(ctx context.Context, id string) (limits.Result, error) {
	rl := &mw.rl
	d, debits := rl.limiter.(limits.Debiter)
	pk, peeks := rl.limiter.(limits.Peeker)
	if !debits && !peeks {
		return limits.Result{}, fmt.Errorf("apikey: balance: %w: the Limiter implements neither Debiter nor limits.Peeker", errors.ErrUnsupported)
	}
	k := &Key{ID: id, Owner: id}
	var c *Customer
	if mw.m.custs != nil {
		var err error
		if c, err = mw.m.custs.read(ctx, id); err != nil {
			return limits.Result{}, fmt.Errorf("apikey: balance: %w: %w", ErrUnavailable, err)
		}
	}
	_, ls, err := rl.limitsFor(k, c)
	if err != nil || len(ls) == 0 {
		return limits.Result{Allowed: err == nil}, err
	}
	if debits { // a debit of 0 reads the balances as they are
		res, err := d.Debit(ctx, id, ls, 0)
		res.Allowed = err == nil && res.Remaining > 0 // whether a request of cost 1 would pass
		for _, st := range res.States {
			res.Allowed = res.Allowed && st.Remaining > 0
		}
		return res, err
	}
	res, err := pk.Peek(ctx, id, ls) // what one more request would leave
	if err != nil || !res.Allowed {
		return res, err
	}
	res.Remaining++
	for i := range res.States {
		res.States[i].Remaining++
	}
	return res, nil
}

// allow calls the Limiter through the circuit breaker, within the timeout.
func (rl *rateLimits) allow(parent context.Context, subject string, ls []limits.Limit, cost int64) (limits.Result, error) {
	ctx := parent
	if !rl.breaker.admit() {
		return limits.Result{}, ErrCircuitOpen
	}
	if rl.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rl.timeout)
		defer cancel()
	}
	res, err := rl.limiter.Allow(ctx, subject, ls, cost)
	if err == nil || errors.Is(err, limits.ErrInvalid) {
		rl.breaker.done(true)
	} else if parent.Err() == nil {
		rl.breaker.failed(subject)
	} else { // a client that went away is not the backend's failure
		rl.breaker.abandon()
	}
	return res, err
}

// breaker is a circuit breaker over the Limiter: after threshold
// consecutive failures, seen for at least breakerSubjects different
// subjects (or threshold, if lower), it opens, and admits no call until
// coolDown has passed; then it admits one call at a time (a probe) until
// one succeeds, and a failed probe opens it again. Counting subjects
// keeps one customer whose calls are slow or failing from opening the
// circuit for every other customer: while it is closed, every call is
// admitted, however many of one subject's calls failed.
type breaker struct {
	seed     maphash.Seed
	mu       sync.Mutex // guards subjects and distinct, on failures only
	subjects [breakerSubjects]uint64
	distinct int

	threshold int64 // 0 or less: never opens
	coolDown  int64 // nanoseconds
	now       func() time.Time
	fails     atomic.Int64
	probeAt   atomic.Int64 // 0 while closed; else Unix nanoseconds from which a probe may run
	probing   atomic.Bool
}

// admit reports whether to call the Limiter.
func (b *breaker) admit() bool {
	at := b.probeAt.Load()
	if at == 0 { // closed
		return true
	}
	if b.now().UnixNano() < at {
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
		if b.probeAt.Load() != 0 {
			b.probeAt.Store(0) // closed
		}
		if b.probing.Load() {
			b.probing.Store(false)
		}
		return
	}
	b.failed("")
}

// breakerSubjects is how many different subjects must fail before the
// breaker opens.
const breakerSubjects = 3

// failed records a failed call for subject, admitted by admit.
func (b *breaker) failed(subject string) {
	if b.threshold <= 0 {
		return
	}
	h := maphash.String(b.seed, subject)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fails.Load() == 0 {
		b.distinct = 0
	}
	seen := false
	for _, s := range b.subjects[:b.distinct] {
		seen = seen || s == h
	}
	if !seen && b.distinct < len(b.subjects) {
		b.subjects[b.distinct] = h
		b.distinct++
	}
	// Open, or open again after a failed probe (the count of subjects
	// is kept while failures go on).
	if b.fails.Add(1) >= b.threshold && int64(b.distinct) >= min(breakerSubjects, b.threshold) {
		b.probeAt.Store(max(1, b.now().UnixNano()+b.coolDown))
		b.probing.Store(false)
	}
}

// headers writes RateLimit-Policy (policy when precomputed) and RateLimit
// for every limit of ls, and optionally the X-RateLimit-* trio of the
// tightest limit.
func (rl *rateLimits) headers(h http.Header, policy []string, ls []limits.Limit, res limits.Result) {
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

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

// seconds renders d in whole seconds, rounded up, at least 1.
func seconds(d time.Duration) string { return strconv.FormatInt(max(1, ceilSeconds(d)), 10) }
