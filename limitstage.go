package apikey

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gokeys/apikey/limits"
)

// defaultLimiterTimeout is the deadline of a Limiter call.
const defaultLimiterTimeout = 50 * time.Millisecond

// LimitOptions configures how requests spend their customer's limits:
// the Limiter, what to do when it fails, and the RateLimit headers. The
// HTTP Middleware (MiddlewareOptions.Limits) and the RPC interceptors
// take the same options, so that every surface of a service spends one
// budget under one policy. The zero value spends nothing: no Limiter, no
// limits.
type LimitOptions struct {
	// Limiter, if set, is what requests spend with: each request that
	// passes Middleware.Limit (or Middleware.Spend) takes its cost from
	// the limits of its customer (see Middleware.Limit), counted per
	// customer (Key.Customer). Nil means no limits.
	Limiter limits.Limiter
	// Timeout bounds every Limiter call: 50 milliseconds when 0, no
	// deadline but the request's when negative. A call that runs out of
	// time is a failure of the Limiter. A Limiter that never waits says so
	// with a method InProcess() bool returning true (memlimit does). It
	// gets no deadline, which would only cost allocations. The Limiter's
	// client must honour the deadline: with go-redis, set
	// ContextTimeoutEnabled.
	Timeout time.Duration
	// Fallback, if set, decides in place of a failing Limiter (for
	// example a memlimit.Limiter: limits then hold per process). Without
	// it, a failing Limiter's requests are refused with ErrUnavailable
	// (503 with Retry-After), never ErrRateLimited, unless FailOpen is
	// set.
	Fallback limits.Limiter
	// FailOpen lets the requests of a failing Limiter (and of a failing
	// Fallback) through, unlimited, instead of refusing them.
	FailOpen bool
	// OnFailure, if set, is called each time a failure of the Limiter is
	// handled (by Fallback, FailOpen or a refusal), with the request's
	// context and the backend's error. While the circuit breaker is open,
	// the error is ErrCircuitOpen, which wraps ErrUnavailable.
	OnFailure func(ctx context.Context, err error)
	// BreakerFailures is how many consecutive Limiter failures open the
	// circuit breaker: 5 when 0, never when negative. While it is open,
	// failures are handled at once, without calling the Limiter. After
	// BreakerCoolDown one request probes the Limiter, and closes the
	// circuit if it answers.
	BreakerFailures int
	// BreakerCoolDown is how long the circuit stays open before a probe:
	// 5 seconds when 0, negative refused. The Manager's clock
	// (Options.Now) measures it.
	BreakerCoolDown time.Duration
	// ReportedCosts lets a handler behind Middleware.Limit report what
	// its request cost once the work is done, with ReportCost. The request
	// then costs that instead of its admission cost. The difference is
	// taken from (or refunded to) its customer's quotas and credits. Rates
	// decide admission only. A request is admitted only while its limits
	// hold its admission cost, so a balance falls below zero only by what
	// admitted requests cost beyond it. With requests admitted
	// concurrently, it never falls below minus the sum of their costs. The
	// next request is then refused until the balance recovers. A quota's
	// debt ends with its window. A debt of credits stays until they are
	// refilled or granted. It needs a Limiter, and a Fallback if set,
	// that implements limits.Debiter.
	ReportedCosts bool
	// LegacyHeaders also sends X-RateLimit-Limit, -Remaining and -Reset
	// (seconds until reset, absent for credits never refilled) of the
	// tightest limit beside the standard RateLimit headers.
	LegacyHeaders bool
}

// failurePolicy is what a failure of the Limiter leads to, as
// LimitOptions.Fallback and FailOpen set it. A failure is never answered
// with 429.
type failurePolicy uint8

const (
	failClosed   failurePolicy = iota // refused with ErrUnavailable
	failOpen                          // through, unlimited
	failFallback                      // the Fallback decides
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

// limitStage spends the limits of requests: LimitOptions compiled for a
// Manager. Build it with init; it is safe for concurrent use.
type limitStage struct {
	limiter   limits.Limiter
	fallback  limits.Limiter
	onFailure failurePolicy
	failOpen  bool // also after the fallback failed
	failed    func(context.Context, error)
	timeout   time.Duration
	reported  bool // costs may be reported after the work: settle.go
	headers   rateHeaders
	plans     planSet
	breaker   breaker

	m *Manager  // its clock, customers, metrics, usage meter and debit counts
	p *problems // logs failures
}

// charge is what spend took: the subject and limits it was taken from, on
// which Limiter, and how much. A request let through by FailOpen was
// charged nothing.
type charge struct {
	subject string
	ls      []limits.Limit // nil: no limits
	on      limits.Limiter
	cost    int64
}

// init compiles o for m. A Limiter or Fallback that is not a
// limits.Debiter with ReportedCosts, or a negative BreakerCoolDown, gives
// an error wrapping ErrInvalidOptions.
func (s *limitStage) init(m *Manager, o LimitOptions, p *problems) error {
	if o.BreakerCoolDown < 0 {
		return fmt.Errorf("%w: negative BreakerCoolDown", ErrInvalidOptions)
	}
	if o.ReportedCosts {
		_, ok := o.Limiter.(limits.Debiter)
		if _, fb := o.Fallback.(limits.Debiter); !ok || (o.Fallback != nil && !fb) {
			return fmt.Errorf("%w: ReportedCosts needs a Limiter, and a Fallback if set, that implements limits.Debiter", ErrInvalidOptions)
		}
	}
	*s = limitStage{
		limiter: o.Limiter, fallback: o.Fallback, failOpen: o.FailOpen, failed: o.OnFailure,
		timeout: o.Timeout, reported: o.ReportedCosts, headers: rateHeaders{legacy: o.LegacyHeaders, now: m.now},
		m: m, p: p,
	}
	switch {
	case s.fallback != nil:
		s.onFailure = failFallback
	case s.failOpen:
		s.onFailure = failOpen
	}
	if s.timeout == 0 {
		s.timeout = defaultLimiterTimeout
	}
	if ip, ok := s.limiter.(interface{ InProcess() bool }); ok && ip.InProcess() {
		s.timeout = -1 // it never waits: a deadline would only cost allocations
	}
	s.breaker.init(o.BreakerFailures, o.BreakerCoolDown, m.now)
	s.plans.init(m.plans, m.defaultPlan, p.log)
	return nil
}

// spend takes cost (positive) from k's limits and writes the RateLimit
// headers into h. It returns what it charged, and nil, a sentinel, a
// *RateLimitError, or an error wrapping ErrInvalidOptions.
func (s *limitStage) spend(ctx context.Context, k *Key, cost int64, h http.Header) (charge, error) {
	now, c, ok := verifiedWith(ctx, k) // what Handler's verification found
	if !ok {
		var err error
		now = s.m.now()
		if c, err = s.m.customerOf(ctx, k, now); err != nil {
			return charge{}, ErrUnavailable
		}
	}
	p, ls, err := s.plans.limitsFor(ctx, k, c)
	if err != nil || len(ls) == 0 {
		return charge{}, err
	}
	ch := charge{subject: k.Customer(), ls: ls, on: s.limiter}
	res, err := s.allow(ctx, ch.subject, ls, cost)
	if err != nil {
		switch {
		case errors.Is(err, limits.ErrInvalid):
			return charge{}, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		case ctx.Err() != nil: // the client went away
			return charge{}, ErrUnavailable
		}
		var open bool
		if res, open, err = s.failure(ctx, ch.subject, ls, cost, err); err != nil {
			s.limited("error", "")
			return charge{}, ErrUnavailable
		}
		if s.onFailure == failFallback {
			ch.on = s.fallback
		}
		if open { // let through, unlimited
			s.limited("error", "")
			return ch, nil
		}
	}
	s.m.hooks.observe(ch.subject, ls, res, now) // credits low, quota exhausted: outbox_queue.go
	if res.Allowed {
		s.limited("allowed", res.Limit.Name)
	} else {
		s.limited("denied", res.Limit.Name)
	}
	s.headers.write(h, p.policyFor(ls), ls, res, headerBuffer(ctx))
	if !res.Allowed {
		return charge{}, &RateLimitError{Result: res}
	}
	ch.cost = cost
	return ch, nil
}

// failure applies the failure policy to the Limiter's failure err: it
// returns the Fallback's answer, open to let the request through
// unlimited, or an error to refuse it.
func (s *limitStage) failure(ctx context.Context, subject string, ls []limits.Limit, cost int64, err error) (res limits.Result, open bool, _ error) {
	if s.failed != nil {
		s.failed(ctx, err)
	}
	if met := s.m.metrics; met != nil {
		met.LimiterFailed(s.onFailure.String(), err == ErrCircuitOpen)
	}
	if err != ErrCircuitOpen {
		s.p.logError(ctx, "apikey: limiter failed, policy "+s.onFailure.String(), err)
	}
	switch s.onFailure {
	case failOpen:
		return res, true, nil
	case failFallback:
		res, err = s.fallback.Allow(ctx, subject, ls, cost)
		if err != nil && s.failOpen {
			return res, true, nil
		}
	}
	return res, false, err
}

// allow calls the Limiter through the circuit breaker, within the timeout.
func (s *limitStage) allow(parent context.Context, subject string, ls []limits.Limit, cost int64) (limits.Result, error) {
	ctx := parent
	if !s.breaker.admit() {
		return limits.Result{}, ErrCircuitOpen
	}
	if s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	res, err := s.limiter.Allow(ctx, subject, ls, cost)
	if err == nil || errors.Is(err, limits.ErrInvalid) {
		s.breaker.done(true)
	} else if parent.Err() == nil {
		s.breaker.failed(subject)
	} else { // a client that went away is not the backend's failure
		s.breaker.abandon()
	}
	return res, err
}

// limited reports a rate-limit decision to Metrics, if set.
func (s *limitStage) limited(outcome, limit string) {
	if met := s.m.metrics; met != nil {
		met.Limited(outcome, limit)
	}
}
