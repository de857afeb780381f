package apikey

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limits"
)

// Limit returns a middleware that spends the request's key's limits, after
// Handler and after every check that may refuse the request:
//
//	mw.Handler(mw.RequireScopes("write")(mw.Limit(h)))
//
// Exactly the requests that reach Limit with a key count. A request
// refused before (no key, an invalid, expired, revoked or disabled key, a
// missing scope, any refusal of your own placed before Limit) spends
// nothing. A request Limit refuses (429, or 403 for a key whose plan is
// not configured) spends nothing either. Every method counts, HEAD and
// OPTIONS like GET, unless MiddlewareOptions.Cost says otherwise. A
// request that passes counts even if the handler then fails.
//
// A request's limits are those of its customer (see Customer). They are
// the limits of the customer's plan (Options.Plans). A plan not there
// falls back to Options.DefaultPlan, and without it the request is
// refused with 403 and the plan logged once. The limits the operator
// granted the customer replace the plan's of the same name, and his
// credits grant adds a limit. All of these are counted per customer. The
// key's own Limits are added to them and counted per key lineage, so that
// a key can narrow what its customer has but never widen it. Without
// customer records (a store without CustomerStore and no
// Options.Customers) the key's Plan names the plan. Without a Limiter, or
// for an anonymous request let through by Optional, Limit spends nothing.
//
// Limit writes RateLimit-Policy and RateLimit listing every limit applied
// (IETF draft-ietf-httpapi-ratelimit-headers). On 429 it writes
// Retry-After, the wait until every exhausted limit admits the request.
// With LimitOptions.ReportedCosts, a request costs what its handler
// reports after the work (see ReportCost).
func (mw *Middleware) Limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := FromContext(r.Context())
		switch {
		case k == nil:
			if !mw.optional {
				mw.Error(w, r, ErrMissingKey)
				return
			}
		case mw.rl.limiter == nil:
			mw.meterCost(r, k)
		case mw.rl.reported:
			if ch, ok := mw.limit(w, r, k); ok {
				mw.rl.serveSettled(w, r, k, ch, mw.costHeader, next)
			}
			return
		default:
			if _, ok := mw.limit(w, r, k); !ok {
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// limit spends the cost of r, a request of k, and writes the RateLimit
// headers. It reports whether the request may go on, and what it was
// charged. If it may not, limit has answered it.
func (mw *Middleware) limit(w http.ResponseWriter, r *http.Request, k *Key) (ch charge, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			mw.p.logError(r.Context(), "apikey: panic in rate limiting", panicError{p})
			mw.Error(w, r, ErrUnavailable)
			ch, ok = charge{}, false
		}
	}()
	cost := int64(1)
	if mw.cost != nil {
		if cost = mw.cost(r, k); cost == 0 {
			return charge{}, true
		} else if cost < 0 {
			mw.meterLimit(r, 0, ErrInvalidOptions)
			mw.p.internal(w, r, fmt.Errorf("apikey: Cost returned %d", cost))
			return charge{}, false
		}
	}
	ch, err := mw.rl.spend(r.Context(), k, cost, w.Header())
	mw.meterLimit(r, cost, err)
	switch {
	case err == nil:
		return ch, true
	case errors.Is(err, limits.ErrInvalid): // a bad limit: not the backend's fault
		mw.p.internal(w, r, err)
	default:
		mw.Error(w, r, err)
	}
	return charge{}, false
}

// Spend takes cost from the limits of k's customer as Limit does, for a
// surface other than net/http (an RPC interceptor). It writes the
// RateLimit headers into h, unless h is nil. It returns nil when the
// request may go on, a *RateLimitError when a limit refuses it,
// ErrUnknownPlan, ErrUnavailable when a dependency failed and the failure
// policy refuses, or an error wrapping ErrInvalidOptions for a
// misconfiguration (a negative cost, an invalid limit). A cost of 0, or
// no Limiter, spends nothing. Debit settles a cost known only after the
// work. With usage recording, each call with a key and a cost of 0 or
// more counts as one request (see Options.UsageInterval).
func (mw *Middleware) Spend(ctx context.Context, k *Key, cost int64, h http.Header) (err error) {
	if u := mw.m.meter; u != nil && k != nil && cost >= 0 {
		defer func() { countSpent(u, k, cost, err) }()
	}
	defer func() {
		if p := recover(); p != nil {
			mw.p.logError(ctx, "apikey: panic in rate limiting", panicError{p})
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
	_, err = mw.rl.spend(ctx, k, cost, h)
	return err
}

// Debit settles the cost of k's request known only after its work, for a
// surface other than net/http (an RPC interceptor), as Limit does with
// ReportCost. It takes amount from the quotas and credits of k's customer
// as Spend counts them (rates decide admission only), without an
// admission check. A negative amount refunds what Spend charged beyond
// the real cost. Debit writes the RateLimit headers of the balance after
// it into h, unless h is nil. A balance may fall below zero (see
// LimitOptions.ReportedCosts). Debit is not cancelled with ctx: a cost is
// owed even when the client went away. A failed debit is retried and
// counted (Stats.DebitRetries). One given up is logged, counted in
// Stats.DebitFailures and answered ErrUnavailable. Debit returns
// ErrMissingKey for a nil k, ErrUnknownPlan, ErrUnavailable when the
// customer's record cannot be read, an error wrapping ErrInvalidOptions
// for an amount beyond ±(10^14-1), and one wrapping errors.ErrUnsupported
// when the Limiter does not implement limits.Debiter. An amount of 0, or
// no Limiter, debits nothing.
func (mw *Middleware) Debit(ctx context.Context, k *Key, amount int64, h http.Header) error {
	rl := &mw.rl
	switch {
	case k == nil:
		return ErrMissingKey
	case gcra.CheckAmount(amount) != nil:
		return fmt.Errorf("%w: amount %d: %w", ErrInvalidOptions, amount, gcra.ErrAmount)
	case amount == 0 || rl.limiter == nil:
		return nil
	}
	if _, ok := rl.limiter.(limits.Debiter); !ok {
		return fmt.Errorf("apikey: debit: %w: the Limiter does not implement Debiter", errors.ErrUnsupported)
	}
	ctx = context.WithoutCancel(ctx)
	c, err := mw.m.customerOf(ctx, k, mw.m.now())
	if err != nil {
		return ErrUnavailable
	}
	_, ls, err := rl.plans.limitsFor(ctx, k, c)
	if err != nil {
		return ErrUnknownPlan
	}
	if len(ls) == 0 {
		return nil
	}
	res, err := rl.debit(ctx, rl.limiter, k.Customer(), ls, amount, debitAttempts)
	meterDebit(ctx, mw.m.meter, k, amount)
	switch {
	case errors.Is(err, limits.ErrInvalid):
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	case err != nil:
		return ErrUnavailable
	}
	if h != nil {
		rl.headers.write(h, nil, ls, balance(res), nil)
	}
	return nil
}

// meterLimit moves the request of r, counted allowed by Handler, to the
// outcome err of spending cost in Limit.
func (mw *Middleware) meterLimit(r *http.Request, cost int64, err error) {
	if mw.m.meter == nil {
		return
	}
	if c := counterOf(r.Context()); c != nil {
		countSpend(c, cost, err)
	}
}

// meterCost adds the cost of a request of k to its usage when Limit has
// no Limiter: what MiddlewareOptions.Cost says, 1 by default. A panic in
// Cost is logged and counts no cost: without a Limiter, Cost decides
// nothing else.
func (mw *Middleware) meterCost(r *http.Request, k *Key) {
	if mw.m.meter == nil {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			mw.p.logError(r.Context(), "apikey: panic in Cost", panicError{p})
		}
	}()
	cost := int64(1)
	if mw.cost != nil {
		cost = mw.cost(r, k)
	}
	if c := counterOf(r.Context()); c != nil && cost > 0 { // a negative cost is a bug Limit answers 500 with a Limiter
		c.cost.Add(cost)
	}
}

// countSpent counts a request of k through Spend in usage, by the outcome
// err of spending cost.
func countSpent(u *meter, k *Key, cost int64, err error) {
	c := u.acquire(k, u.now())
	if c == nil {
		return
	}
	c.allowed.Add(1)
	countSpend(c, cost, err)
	c.release()
}

// countSpend moves a request counted allowed to the outcome err of
// spending cost: allowed (cost added), limited, refused for an
// unconfigured plan, or not counted at all when a dependency failed or
// the configuration is broken (the request was answered 5xx).
func countSpend(c *meterCounter, cost int64, err error) {
	switch classify(err) {
	case outcomeOK:
		if cost > 0 {
			c.cost.Add(cost)
		}
	case outcomeRateLimited:
		c.move(&c.limited)
	case outcomeUnknownPlan:
		c.move(&c.refused)
	default:
		c.allowed.Add(-1)
	}
}
