package apikey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limits"
)

// A request's cost is settled after its work: Limit charges Cost on
// admission (the reservation), the handler reports what the request really
// cost (ReportCost, MiddlewareOptions.CostHeader), and the difference is
// debited from the customer's quotas and credits with limits.Debiter, or
// refunded when negative. It is settled when the handler writes its
// response header, if it reported a cost by then, so that the RateLimit
// headers show the balance after it, and when the handler returns.
//
// The overdraft rule follows: a request is admitted only while its limits
// hold its reservation, so a balance falls below zero only by what
// requests admitted before that cost beyond their reservation. With C
// requests admitted concurrently, a balance never falls below minus the
// sum of their costs, and the next request is refused until it recovers.

// debitAttempts is how many times a debit is tried before it is given up;
// debitBackoff is the pause before the first retry, doubled for each next
// one.
const (
	debitAttempts = 3
	debitBackoff  = 10 * time.Millisecond
)

// ReportCost adds n to the cost of the request whose context is ctx, for a
// handler behind Limit that knows what its request cost only after doing
// the work (tokens generated, rows scanned), with
// MiddlewareOptions.ReportedCosts. Once a cost is reported, the request
// costs the total reported instead of Cost: the difference is taken from
// its customer's quotas and credits, or refunded when lower, when the
// handler writes its response header (the RateLimit headers then show the
// balance after the debit) and when it returns (they then show the balance
// before it, as sent). A debit that fails is retried, and counted in
// Stats. A balance may fall below zero: see MiddlewareOptions.ReportedCosts. ReportCost returns false, and does
// nothing, when ctx is not that of such a request (no ReportedCosts, a
// free request, one without limits), after the handler returned, or when n
// is negative or the total would exceed 10^14-1. It is safe for
// concurrent use.
func ReportCost(ctx context.Context, n int64) bool {
	st, _ := ctx.Value(costKey{}).(*settlement)
	return st != nil && st.add(n)
}

// costKey is the context key of a request's *settlement.
type costKey struct{}

// postCosts configures the settlement of costs reported after the work.
type postCosts struct {
	on      bool   // ReportedCosts or CostHeader
	header  string // CostHeader, canonical; "" for none
	trailer string // header with http.TrailerPrefix
}

// init checks and keeps the options of reported costs.
func (p *postCosts) init(opts *MiddlewareOptions) error {
	*p = postCosts{on: opts.ReportedCosts || opts.CostHeader != ""}
	if !p.on {
		return nil
	}
	if opts.CostHeader != "" {
		p.header = http.CanonicalHeaderKey(opts.CostHeader)
		p.trailer = http.TrailerPrefix + p.header
	}
	_, ok := opts.Limiter.(limits.Debiter)
	if _, fb := opts.FallbackLimiter.(limits.Debiter); !ok || (opts.FallbackLimiter != nil && !fb) {
		return fmt.Errorf("%w: ReportedCosts needs a Limiter, and a FallbackLimiter if set, that implements limits.Debiter", ErrInvalidOptions)
	}
	return nil
}

// settlement is what a request admitted by Limit owes: what Limit
// charged and on which Limiter, and what its handler reported.
type settlement struct {
	mw       *Middleware
	k        *Key
	subject  string
	ls       []limits.Limit // nil: nothing to settle
	on       limits.Limiter // the Limiter that decided the request
	reserved int64          // Cost, charged on admission

	mu       sync.Mutex
	reported int64 // the total reported
	any      bool  // a cost was reported
	settled  int64 // the cost taken so far: reserved, then each debit
	closed   bool  // the handler returned: no more reports
}

// limits notes the limits of the request and the Limiter deciding them.
// st may be nil.
func (st *settlement) limits(subject string, ls []limits.Limit, on limits.Limiter) {
	if st != nil {
		st.subject, st.ls, st.on, st.reserved = subject, ls, on, 0
	}
}

// reserve notes that cost was charged on admission. st may be nil.
func (st *settlement) reserve(cost int64) {
	if st != nil {
		st.reserved, st.settled = cost, cost
	}
}

// add adds a reported cost, as ReportCost does.
func (st *settlement) add(n int64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || st.ls == nil || n < 0 || n > gcra.MaxCount-st.reported {
		return false
	}
	st.reported += n
	st.any = true
	return true
}

// due returns what is left to debit, and whether anything is.
func (st *settlement) due(close bool) int64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = st.closed || close
	if !st.any {
		return 0
	}
	return st.reported - st.settled
}

// serveSettled runs next behind Limit for a request whose cost may be
// reported after the work, and settles it.
func (mw *Middleware) serveSettled(w http.ResponseWriter, r *http.Request, k *Key, next http.Handler) {
	st := &settlement{mw: mw, k: k}
	if !mw.limit(w, r, k, st) {
		return
	}
	ctx := r.Context()
	sw := &settleWriter{ResponseWriter: w, st: st, ctx: context.WithoutCancel(ctx)}
	defer sw.finish()
	next.ServeHTTP(sw, r.WithContext(context.WithValue(ctx, costKey{}, st)))
}

// settleWriter settles a request's reported cost before its response
// header is written, and removes CostHeader from the response.
type settleWriter struct {
	http.ResponseWriter
	st    *settlement
	ctx   context.Context // the request's, never cancelled: a cost is owed even when the client went away
	wrote bool            // the response header is written
}

// WriteHeader settles, unless code is informational, then writes.
func (w *settleWriter) WriteHeader(code int) {
	if !w.wrote && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.before()
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write settles before the first write, then writes.
func (w *settleWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.before()
	}
	return w.ResponseWriter.Write(b)
}

// Flush settles before the first write, then flushes.
func (w *settleWriter) Flush() {
	if !w.wrote {
		w.before()
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap returns the wrapped ResponseWriter, for http.ResponseController.
func (w *settleWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// before takes CostHeader out of the response header about to be written,
// stops it from being announced as a trailer, and settles what was
// reported so far, once, writing the RateLimit headers of the balance
// after it. A failure leaves the debit to finish.
func (w *settleWriter) before() {
	w.wrote = true
	st, h := w.st, w.ResponseWriter.Header()
	w.take(h)
	if p := st.mw.rl.post.header; p != "" && len(h["Trailer"]) > 0 {
		h["Trailer"] = untrailer(h["Trailer"], p)
	}
	if a := st.due(false); a != 0 {
		if res, ok := st.debit(w.ctx, a, 1); ok {
			st.mw.rl.headers(h, h["Ratelimit-Policy"], st.ls, balance(res))
		}
	}
}

// finish settles what the handler reported and was not settled yet,
// retrying a failed debit, once the handler returned or panicked.
func (w *settleWriter) finish() {
	if !w.wrote {
		w.before() // the response header is written after this
	}
	w.take(w.ResponseWriter.Header()) // the trailers
	if a := w.st.due(true); a != 0 {
		w.st.debit(w.ctx, a, debitAttempts)
	}
}

// take adds the cost in CostHeader, as a header or trailer of h, and
// removes it.
func (w *settleWriter) take(h http.Header) {
	st, p := w.st, &w.st.mw.rl.post
	if p.header == "" {
		return
	}
	for _, name := range []string{p.header, p.trailer} {
		vs, ok := h[name]
		if !ok {
			continue
		}
		delete(h, name)
		for _, v := range vs {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil || n < 0 || n > gcra.MaxCount {
				st.mw.logError(w.ctx, "apikey: cost header ignored", fmt.Errorf("%s: %q is not a cost", p.header, v))
				continue
			}
			st.add(n)
		}
	}
}

// untrailer returns the values of a Trailer header without name.
func untrailer(vs []string, name string) []string {
	var out []string
	for _, v := range vs {
		var kept []string
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" && !strings.EqualFold(f, name) {
				kept = append(kept, f)
			}
		}
		if len(kept) > 0 {
			out = append(out, strings.Join(kept, ", "))
		}
	}
	return out
}

// debit takes amount from st's quotas and credits on the Limiter that
// decided the request, trying up to attempts times, and records it in
// usage. It reports whether the Limiter took it; a debit given up after
// debitAttempts is counted and logged.
func (st *settlement) debit(ctx context.Context, amount int64, attempts int) (limits.Result, bool) {
	res, err := st.mw.debit(ctx, st.on, st.subject, st.ls, amount, attempts)
	if err == nil || attempts == debitAttempts {
		st.mu.Lock()
		st.settled += amount
		st.mu.Unlock()
		st.mw.meterDebit(ctx, st.k, amount)
	}
	return res, err == nil
}

// debit takes amount from the quotas and credits among ls for subject on
// l, trying up to attempts times while l's failures are its own (not a
// bad argument) and, for the Limiter, its circuit is closed. A debit of
// debitAttempts attempts that fails is counted and logged.
func (mw *Middleware) debit(ctx context.Context, l limits.Limiter, subject string, ls []limits.Limit, amount int64, attempts int) (limits.Result, error) {
	rl, d := &mw.rl, l.(limits.Debiter)
	pause := debitBackoff
	var err error
	for i := range attempts {
		if i > 0 {
			if l == rl.limiter && rl.breaker.probeAt.Load() != 0 {
				break // the circuit is open: the Limiter is known to fail
			}
			mw.m.debits.retries.Add(1)
			time.Sleep(pause)
			pause *= 2
		}
		c, cancel := ctx, context.CancelFunc(nil)
		if rl.timeout > 0 && l == rl.limiter {
			c, cancel = context.WithTimeout(ctx, rl.timeout)
		}
		var res limits.Result
		res, err = debitOnce(c, d, subject, ls, amount)
		if cancel != nil {
			cancel()
		}
		if err == nil {
			return res, nil
		}
		if errors.Is(err, limits.ErrInvalid) {
			break
		}
	}
	if attempts == debitAttempts {
		mw.m.debits.failures.Add(1)
		if mw.log != nil {
			mw.log.LogAttrs(ctx, slog.LevelError, "apikey: debit given up: a cost reported after the work was not taken",
				slog.String("customer", subject), slog.Int64("amount", amount), slog.String("error", err.Error()))
		}
	}
	return limits.Result{}, err
}

// debitOnce calls d.Debit, turning a panic into an error.
func debitOnce(ctx context.Context, d limits.Debiter, subject string, ls []limits.Limit, amount int64) (res limits.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError{p}
		}
	}()
	return d.Debit(ctx, subject, ls, amount)
}

// balance returns res as the RateLimit headers show it: no remaining below
// zero.
func balance(res limits.Result) limits.Result {
	res.Remaining = max(0, res.Remaining)
	for i := range res.States {
		res.States[i].Remaining = max(0, res.States[i].Remaining)
	}
	return res
}

// Debit settles the cost of k's request known only after its work, for a
// surface other than net/http (an RPC interceptor), as Limit does with
// ReportCost: it takes amount from the quotas and credits of k's customer
// as Spend counts them (rates decide admission only), without an admission
// check, or refunds when amount is negative (what Spend charged beyond
// the real cost), and writes the RateLimit headers of the balance after
// it into h, unless h is nil. A balance may fall below zero (see
// MiddlewareOptions.ReportedCosts). Debit is not cancelled with ctx: a
// cost is owed even when the client went away. A failed debit is retried
// and counted (Stats.DebitRetries); one given up is logged, counted in
// Stats.DebitFailures and answered ErrUnavailable. Debit returns
// ErrMissingKey for a nil k, ErrUnknownPlan, ErrUnavailable when the
// customer's record cannot be read, an error wrapping ErrInvalidOptions
// for an amount beyond ±(10^14-1), and one wrapping errors.ErrUnsupported
// when the Limiter does not implement Debiter. An amount of 0, or no
// Limiter, debits nothing.
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
	c, err := mw.m.customerOf(ctx, k, rl.now())
	if err != nil {
		return ErrUnavailable
	}
	_, ls, err := rl.limitsFor(k, c)
	if err != nil {
		return ErrUnknownPlan
	}
	if len(ls) == 0 {
		return nil
	}
	res, err := mw.debit(ctx, rl.limiter, k.Customer(), ls, amount, debitAttempts)
	mw.meterDebit(ctx, k, amount)
	switch {
	case errors.Is(err, limits.ErrInvalid):
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	case err != nil:
		return ErrUnavailable
	}
	if h != nil {
		rl.headers(h, nil, ls, balance(res))
	}
	return nil
}

// meterDebit records in usage that k's request cost delta more (less
// when negative) than the Cost counted on admission: on the request's own
// counter when ctx is the request's, else on k's current hour.
func (mw *Middleware) meterDebit(ctx context.Context, k *Key, delta int64) {
	u := mw.m.meter
	if u == nil || delta == 0 {
		return
	}
	if c := counterOf(ctx); c != nil {
		c.cost.Add(delta)
		return
	}
	if c := u.acquire(k, u.now()); c != nil {
		c.cost.Add(delta)
		c.release()
	}
}
