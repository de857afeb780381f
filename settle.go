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
// LimitOptions.ReportedCosts. Once a cost is reported, the request costs
// the total reported instead of its admission cost. The difference is
// taken from its customer's quotas and credits, or refunded when lower,
// when the handler writes its response header (the RateLimit headers then
// show the balance after the debit) and when it returns (they then show
// the balance before it, as sent). A debit that fails is retried, and
// counted in Stats. A balance may fall below zero (see
// LimitOptions.ReportedCosts). ReportCost returns false, and does
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

// settlement is what a request admitted by Limit owes: what Limit
// charged and on which Limiter, and what its handler reported.
type settlement struct {
	s      *limitStage
	k      *Key
	charge        // on admission; ls nil: nothing to settle
	header string // CostHeader, canonical; "" for none

	mu       sync.Mutex
	reported int64 // the total reported
	any      bool  // a cost was reported
	settled  int64 // the cost taken so far: reserved, then each debit
	closed   bool  // the handler returned: no more reports
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

// serveSettled runs next for a request of k admitted by Limit with ch,
// whose cost may be reported after the work (by ReportCost, or in the
// response header or trailer header unless ""), and settles it.
func (s *limitStage) serveSettled(w http.ResponseWriter, r *http.Request, k *Key, ch charge, header string, next http.Handler) {
	st := &settlement{s: s, k: k, charge: ch, header: header, settled: ch.cost}
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
	if st.header != "" && len(h["Trailer"]) > 0 {
		h["Trailer"] = untrailer(h["Trailer"], st.header)
	}
	if a := st.due(false); a != 0 {
		if res, ok := st.debit(w.ctx, a, 1); ok {
			st.s.headers.write(h, h["Ratelimit-Policy"], st.ls, balance(res), nil)
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
	st := w.st
	if st.header == "" {
		return
	}
	for _, name := range []string{st.header, http.TrailerPrefix + st.header} {
		vs, ok := h[name]
		if !ok {
			continue
		}
		delete(h, name)
		for _, v := range vs {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil || n < 0 || n > gcra.MaxCount {
				st.s.p.logError(w.ctx, "apikey: cost header ignored", fmt.Errorf("%s: %q is not a cost", st.header, v))
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
	res, err := st.s.debit(ctx, st.on, st.subject, st.ls, amount, attempts)
	if err == nil || attempts == debitAttempts {
		st.mu.Lock()
		st.settled += amount
		st.mu.Unlock()
		meterDebit(ctx, st.s.m.meter, st.k, amount)
	}
	return res, err == nil
}

// debit takes amount from the quotas and credits among ls for subject on
// l, trying up to attempts times while l's failures are its own (not a
// bad argument) and, for the Limiter, its circuit is closed. A debit of
// debitAttempts attempts that fails is counted and logged.
func (s *limitStage) debit(ctx context.Context, l limits.Limiter, subject string, ls []limits.Limit, amount int64, attempts int) (limits.Result, error) {
	d := l.(limits.Debiter)
	pause := debitBackoff
	var err error
	for i := range attempts {
		if i > 0 {
			if l == s.limiter && s.breaker.open() {
				break // the circuit is open: the Limiter is known to fail
			}
			s.m.debits.retries.Add(1)
			time.Sleep(pause)
			pause *= 2
		}
		c, cancel := ctx, context.CancelFunc(nil)
		if s.timeout > 0 && l == s.limiter {
			c, cancel = context.WithTimeout(ctx, s.timeout)
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
		s.m.debits.failures.Add(1)
		if log := s.p.log; log != nil {
			log.LogAttrs(ctx, slog.LevelError, "apikey: debit given up: a cost reported after the work was not taken",
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

// meterDebit records in usage that k's request cost delta more (less
// when negative) than the Cost counted on admission: on the request's own
// counter when ctx is the request's, else on k's current hour.
func meterDebit(ctx context.Context, u *meter, k *Key, delta int64) {
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
