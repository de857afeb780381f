// Package lease is a limits.Limiter on Redis that decides most requests
// in memory: each instance leases part of a customer's remaining budget
// from Redis, spends it locally, and gives back what it did not spend. The
// fleet never admits more than a limit allows, because every unit is
// reserved in Redis before an instance spends it.
//
// It counts in the keys redislimit uses, with the same layout, so that
// redislimit's Peek and Debit, the middleware's Balance and plain
// redislimit instances see the same budgets:
//
//	client := redis.NewClient(&redis.Options{Addr: addr})
//	limiter, err := lease.New(client, lease.Options{})
//	if err != nil {
//		return err
//	}
//	defer limiter.Close(ctx) // gives back what is leased
//	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limiter: limiter})
//
// docs/scale.md ("Leased limits") gives the measured figures.
//
// # Leases
//
// A customer's first request on an instance is decided by Redis, as
// redislimit decides it, in one round trip. Once the instance sees demand
// for a limit (at least two units per lease), each round trip also leases
// units of it. A lease holds what the instance's demand would spend in 0.8
// of a lease's life, at most Options.MaxLease, at most twice the last
// lease. The instance then admits requests from what it holds, without
// Redis. It leases again in the background when what it holds would be
// spent, or its last lease would end, within two round trips, so that a
// request rarely waits. What an instance holds is given back when the
// lease ends (Options.Lifetime), when the limit changes (a plan change),
// and on Close.
//
// Quotas and credits lease naturally. A lease adds its units to the count
// used in the current window, at most half of what remains. An instance
// spends them only within that window: its lease ends before the window
// does. So the units spent in a window never exceed its count, whatever
// the instances do and whenever they do it.
//
// A rate (GCRA, N per period with a burst B) needs more care. A unit
// reserved at time r and spent later could join units reserved after it
// and exceed the burst. So a rate's lease lives d = min(Lifetime,
// Options.RateReserve × B × T), where T is the emission interval. Its
// units are placed in the rate's state at r + d, as if they arrived when
// the lease ends: the state becomes max(TAT, r+d) + g×T, at most r + B×T.
// Redis's Allow places its units at r. Every unit is spent between its
// reservation r and r + d.
//
// Then in any span [a, b] the units spent number at most B + (b−a)/T,
// which is what one exact GCRA admits. Take the first reservation x of the
// units spent in [a, b]: it is placed at x+d ≥ a (a lease, x ≥ a−d) or at
// x ≥ a (Allow). Each reservation up to the last adds T to the state, so
// the state after the last is at least a plus T per unit. The last was
// admitted only if that state is at most its own time, at most b, plus
// B×T. This holds for leases and Allow's spends in any order, plain
// redislimit instances included. A rate is leased only when d spans at
// least 32 emission intervals; slower rates are decided by Redis.
//
// # What it costs
//
// The fleet never over-admits; it may under-admit:
//
//   - An instance holds of each limit about what its demand spends in 0.8
//     Lifetime, at most three leases. When it goes idle, the others cannot
//     spend those units until they come back: within Lifetime and a
//     quarter (the sweep). When it dies, a quota's come back when its
//     window ends; credits never refilled are lost.
//   - A count's units leased and not spent when its window ends are lost
//     for that window. Leases shrink as a window ends, to what demand
//     spends before it.
//   - A rate's units not spent within d are lost, unless nothing was
//     reserved after them. While a customer's leases are active, the rate
//     admits at once only B − d/T of its burst (a quarter less by
//     default). It still admits N per period.
//   - When Redis denies a limit, the instance believes it: a rate's until
//     its retry, a count's for Lifetime/8 or until its window ends. Units
//     given back meanwhile by other instances wait that long.
//   - While a limit is exhausted for the whole fleet, an instance with
//     demand asks Redis again in the background every Lifetime/8 (a
//     count) or d/2 (a rate), and refuses meanwhile.
//
// Remaining and Reset are estimates: what Redis had left at this
// instance's last round trip, plus what it holds. They are exact for a
// single instance. A window's end follows Redis's clock, seen through this
// instance's monotonic clock from before each round trip. So a lease
// always ends before its window does; a step of Redis's clock moves a
// window's end by the step.
//
// Debit takes a cost known after the response from what the instance
// holds first, then from Redis: a debt arises only from costs beyond the
// reservations, never from leases.
package lease

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit"
	"github.com/gokeys/apikey/redislimit/internal/storage"
)

// DefaultLifetime is the default of Options.Lifetime.
const DefaultLifetime = time.Second

// DefaultRateReserve is the default of Options.RateReserve.
const DefaultRateReserve = 0.25

// DefaultMaxLease is the default of Options.MaxLease.
const DefaultMaxLease = 10_000

//go:embed lease.lua
var leaseSource string

// nlimits defines, for storage.Legacy, the number of limits of a call of
// lease.lua: eight arguments each after two.
const nlimits = "local nlimits = (#ARGV - 2) / 8\n"

// Options configures a Limiter. The zero value is valid.
type Options struct {
	// Prefix starts every storage key, as redislimit.Options.Prefix:
	// instances that share a budget use the same. Default
	// redislimit.DefaultPrefix.
	Prefix string

	// CreditsTTL is redislimit.Options.CreditsTTL. Default
	// redislimit.DefaultCreditsTTL.
	CreditsTTL time.Duration

	// Lifetime is the longest an instance holds a lease before it gives
	// back what it did not spend: it bounds how long units leased by an
	// idle instance are unavailable to the others, and how often a busy
	// instance asks Redis for more (about once per 0.8 Lifetime, per
	// customer and limit). Default DefaultLifetime (1 s); negative is an
	// error.
	Lifetime time.Duration

	// RateReserve is the share of a rate's burst window (burst × period
	// / count) that its leases live, at most Lifetime: the rate then
	// admits at once that share less of its burst while leases are
	// active. A rate whose lease would span fewer than 32 emission
	// intervals is not leased. Between 0 and 0.5; default
	// DefaultRateReserve (1/4).
	RateReserve float64

	// MaxLease is the most units one lease holds. Default
	// DefaultMaxLease; negative is an error.
	MaxLease int64

	// Now returns the current time, for tests. It must be monotonic, as
	// time.Now is. Default time.Now.
	Now func() time.Time
}

// Limiter is an limits.Limiter on Redis that leases budgets to decide
// locally. Create it with New and stop it with Close; the zero value is
// not usable. It is safe for concurrent use. Any number of Limiters, in
// any number of processes, may share one Redis deployment and prefix with
// each other and with redislimit Limiters.
type Limiter struct {
	client    redis.UniversalClient
	cluster   *redis.ClusterClient // client, when it is one
	plain     *redislimit.Limiter
	prefix    string
	creditsMS int64
	script    *redis.Script
	life      time.Duration
	reserve   float64
	maxLease  int64
	now       func() time.Time

	seed   maphash.Seed
	shards [shardCount]shard
	rtt    atomic.Int64 // a round trip's duration, smoothed, in ns
	stats  counters

	closed atomic.Bool
	stop   chan struct{}
	wg     sync.WaitGroup // the sweeper and background round trips
}

var (
	_ limits.Limiter = (*Limiter)(nil)
	_ limits.Peeker  = (*Limiter)(nil)
	_ limits.Debiter = (*Limiter)(nil)
)

// New returns a Limiter storing its state through client, and starts its
// background work (leases given back when they end). It reports an error
// wrapping apikey.ErrInvalidOptions for options redislimit.New refuses, a
// negative Lifetime or MaxLease, or a RateReserve outside [0, 0.5]. It
// does not contact Redis.
func New(client redis.UniversalClient, opts Options) (*Limiter, error) {
	plain, err := redislimit.New(client, redislimit.Options{Prefix: opts.Prefix, CreditsTTL: opts.CreditsTTL})
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	switch {
	case opts.Lifetime < 0:
		return nil, fmt.Errorf("%w: lease: Lifetime %v is negative", apikey.ErrInvalidOptions, opts.Lifetime)
	case opts.MaxLease < 0:
		return nil, fmt.Errorf("%w: lease: MaxLease %d is negative", apikey.ErrInvalidOptions, opts.MaxLease)
	case !(opts.RateReserve >= 0 && opts.RateReserve <= 0.5):
		return nil, fmt.Errorf("%w: lease: RateReserve %v is not between 0 and 0.5", apikey.ErrInvalidOptions, opts.RateReserve)
	}
	cluster, _ := client.(*redis.ClusterClient)
	l := &Limiter{
		client:   client,
		cluster:  cluster,
		plain:    plain,
		prefix:   cmp(opts.Prefix, redislimit.DefaultPrefix),
		script:   redis.NewScript(nlimits + storage.Window + storage.Legacy + leaseSource),
		life:     cmp(opts.Lifetime, DefaultLifetime),
		reserve:  cmp(opts.RateReserve, DefaultRateReserve),
		maxLease: cmp(opts.MaxLease, DefaultMaxLease),
		now:      opts.Now,
		seed:     maphash.MakeSeed(),
		stop:     make(chan struct{}),
	}
	if l.now == nil {
		l.now = time.Now
	}
	ttl := cmp(opts.CreditsTTL, redislimit.DefaultCreditsTTL)
	l.creditsMS = int64((ttl + time.Millisecond - 1) / time.Millisecond)
	for i := range l.shards {
		l.shards[i].m = make(map[string]*subject)
	}
	l.rtt.Store(int64(time.Millisecond))
	l.wg.Add(1)
	go l.sweep()
	return l, nil
}

// cmp returns v, or def when v is its type's zero value.
func cmp[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Allow takes cost from every limit in limits for subject; see
// limits.Limiter. It decides from what this instance holds when every
// limit holds enough, and asks Redis otherwise (see the package
// documentation). It reports the errors redislimit's Allow reports.
func (l *Limiter) Allow(ctx context.Context, subject string, ls []limits.Limit, cost int64) (limits.Result, error) {
	if err := limits.ValidateAllow(subject, ls, cost); err != nil {
		return limits.Result{}, fmt.Errorf("lease: %w", err)
	}
	if len(ls) == 0 {
		return limits.Result{Allowed: true}, nil
	}
	l.stats.calls.Add(1)
	var buf [4]*entry
	for waited := false; ; {
		s := l.subject(subject)
		s.mu.Lock()
		if s.dead {
			s.mu.Unlock()
			continue
		}
		now := l.now()
		s.seen = now
		es := s.match(l, buf[:0], ls, now)
		switch decide(es, cost, now) {
		case local:
			res := l.spend(s, es, ls, cost, now)
			s.mu.Unlock()
			if !waited {
				l.stats.local.Add(1)
			}
			return res, nil
		case refuse:
			res := l.refuse(s, es, ls, cost, now)
			s.mu.Unlock()
			if !waited {
				l.stats.local.Add(1)
			}
			return res, nil
		}
		if f := s.flying; f != nil {
			s.mu.Unlock()
			if !waited {
				waited = true
				l.stats.waited.Add(1)
			}
			select {
			case <-f.done:
				continue
			case <-ctx.Done():
				return limits.Result{}, fmt.Errorf("%w: lease: %w", apikey.ErrUnavailable, ctx.Err())
			}
		}
		if err := ctx.Err(); err != nil {
			s.mu.Unlock()
			return limits.Result{}, fmt.Errorf("%w: lease: %w", apikey.ErrUnavailable, err)
		}
		if !waited {
			waited = true
			l.stats.waited.Add(1)
		}
		return l.ask(ctx, s, es, ls, cost, now)
	}
}

// Peek reports what Allow with a cost of 1 would answer for subject and
// limits, without consuming anything; see limits.Peeker. It reads
// Redis in one round trip, after any other of this instance for subject,
// and counts what this instance holds. It reports the errors Allow
// reports.
func (l *Limiter) Peek(ctx context.Context, subject string, ls []limits.Limit) (limits.Result, error) {
	if err := limits.ValidateAllow(subject, ls, 1); err != nil {
		return limits.Result{}, fmt.Errorf("lease: %w", err)
	}
	if len(ls) == 0 {
		return limits.Result{Allowed: true}, nil
	}
	return l.peek(ctx, subject, ls)
}

// Debit takes amount from every quota and credits in limits for subject,
// without an admission check; see limits.Debiter. A positive amount is
// taken first from what this instance holds of each, and the rest from
// Redis in one round trip (none when the instance holds enough); a
// negative amount is refunded in Redis, as redislimit's Debit does. The
// answer is Redis's state plus what this instance holds. It reports the
// errors redislimit's Debit reports.
func (l *Limiter) Debit(ctx context.Context, subject string, ls []limits.Limit, amount int64) (limits.Result, error) {
	if err := limits.ValidateAllow(subject, ls, 1); err != nil {
		return limits.Result{}, fmt.Errorf("lease: %w", err)
	}
	if err := gcra.CheckAmount(amount); err != nil {
		return limits.Result{}, fmt.Errorf("lease: %w: %w", limits.ErrInvalid, err)
	}
	if len(ls) == 0 {
		return limits.Result{Allowed: true}, nil
	}
	return l.debit(ctx, subject, ls, amount)
}

// Close stops the background work and gives back every unit this
// instance holds, in one round trip per customer, waiting for them until
// ctx ends. After Close, Allow works without leases, as redislimit does.
// It returns ctx's error when the units could not all be given back in
// time; calling it again is a no-op.
func (l *Limiter) Close(ctx context.Context) error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(l.stop)
	l.giveBackAll()
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("lease: close: %w", ctx.Err())
	}
}

// Stats counts what a Limiter did since New: plain data.
type Stats struct {
	// Calls counts Allow calls with limits.
	Calls int64
	// Local counts the Allow calls decided without waiting for Redis.
	Local int64
	// Waited counts the Allow calls that waited for a round trip: their
	// own, or another call's for the same customer.
	Waited int64
	// Trips counts round trips to Redis: Allow's, the background leases
	// and returns, Peek's and Debit's.
	Trips int64
	// Leased counts the units leased.
	Leased int64
	// Returned counts the units given back and taken back by Redis.
	Returned int64
	// Lost counts the units leased that were neither spent nor taken
	// back: a rate's whose state moved on, those of a failed round trip.
	Lost int64
}

// Stats returns the counters. It is safe for concurrent use.
func (l *Limiter) Stats() Stats {
	c := &l.stats
	return Stats{
		Calls: c.calls.Load(), Local: c.local.Load(), Waited: c.waited.Load(), Trips: c.trips.Load(),
		Leased: c.leased.Load(), Returned: c.returned.Load(), Lost: c.lost.Load(),
	}
}

// counters are the Stats of a Limiter.
type counters struct {
	calls, local, waited, trips, leased, returned, lost atomic.Int64
}

// wrap marks a Redis failure as apikey.ErrUnavailable; other errors (bad
// arguments) are passed with the package's prefix.
func wrap(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, apikey.ErrUnavailable), errors.Is(err, limits.ErrInvalid), errors.Is(err, apikey.ErrInvalidOptions):
		return fmt.Errorf("lease: %w", err)
	}
	return fmt.Errorf("%w: lease: %w", apikey.ErrUnavailable, err)
}

// result builds a LimitResult from the outcome of each limit of a call.
func result(ls []limits.Limit, out []outcome, allowed bool) limits.Result {
	best := 0
	for i := 1; i < len(out); i++ {
		if gcra.Tighter(gcra.Outcome(out[i]), gcra.Outcome(out[best])) {
			best = i
		}
	}
	b := out[best]
	res := limits.Result{
		Allowed:   allowed,
		Limit:     ls[best],
		Remaining: b.Remaining,
		Reset:     time.Duration(b.Reset),
	}
	if !allowed {
		res.RetryAfter = time.Duration(b.Retry)
	}
	if len(out) > 1 {
		res.States = make([]limits.State, len(out))
		for i, o := range out {
			res.States[i] = limits.State{Remaining: o.Remaining, Reset: time.Duration(o.Reset), RetryAfter: time.Duration(o.Retry)}
		}
	}
	return res
}
