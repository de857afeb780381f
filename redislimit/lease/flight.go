package lease

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit/internal/storage"
)

// flight is one round trip to Redis for entries of one subject: units to
// spend, to lease, to give back and to debit, per entry.
type flight struct {
	done  chan struct{} // closed when it landed
	peek  bool          // only reads
	es    []*entry
	gens  []uint64 // each entry's gen when the flight was sealed
	spend []int64
	want  []int64
	back  []int64
	taken []int64     // units taken from the entry for the call, restored if it is denied
	ends  []time.Time // the earliest end of what was taken
	keys  []string
	args  []any
}

// newFlight returns a flight for es, to be filled then sealed.
func newFlight(es []*entry) *flight {
	n := len(es)
	return &flight{
		done:  make(chan struct{}),
		es:    append([]*entry(nil), es...),
		gens:  make([]uint64, n),
		spend: make([]int64, n),
		want:  make([]int64, n),
		back:  make([]int64, n),
		taken: make([]int64, n),
		ends:  make([]time.Time, n),
	}
}

// seal builds the flight's keys and arguments (see lease.lua), moving
// what its entries give back into it unless it only reads, with debit
// per entry (nil: none). The subject's lock is held.
func (l *Limiter) seal(s *subject, f *flight, debit []int64) {
	n := len(f.es)
	f.keys = make([]string, n, n+1)
	f.args = make([]any, 2, 2+8*n)
	f.args[0], f.args[1] = l.creditsMS, "0"
	if f.peek {
		f.args[1] = "1"
	}
	lims := make([]limits.Limit, n)
	for i, e := range f.es {
		f.gens[i], f.keys[i], lims[i] = e.gen, e.key, e.lim
		var tag string
		if !f.peek {
			f.back[i], tag = e.back, e.backTag
			e.sent += e.back
			e.back, e.backTag = 0, ""
		}
		a, b, d := -e.lim.Count, int64(e.lim.Window), int64(0)
		if e.t > 0 {
			a, b, d = e.t, e.b, e.d
		}
		var db int64
		if debit != nil {
			db = debit[i]
		}
		f.args = append(f.args, a, b, d, f.spend[i], f.want[i], f.back[i], tag, db)
	}
	if k := storage.LegacyKey(l.prefix, s.name, lims); k != "" {
		f.keys = append(f.keys, k)
	}
}

// run makes the round trip.
func (l *Limiter) run(ctx context.Context, f *flight) ([]int64, error) {
	start := l.now()
	vals, err := l.script.Run(ctx, l.client, f.keys, f.args...).Int64Slice()
	if err != nil && l.cluster != nil {
		// As redislimit: a dead master answers no MOVED, so the layout
		// is reloaded for calls to reach the promoted replica at once.
		l.cluster.ReloadState(ctx)
	}
	if err == nil {
		// A smoothed round trip, for when to lease again.
		rtt := l.rtt.Load()
		l.rtt.Store(rtt + (max(0, int64(l.now().Sub(start)))-rtt)/8)
		if len(vals) != 1+7*len(f.es) {
			err = fmt.Errorf("unexpected script reply %v", vals)
		}
	}
	return vals, err
}

// land applies a flight's answer to its entries, sealed at time at (before
// it was sent, so that every local deadline falls before Redis's), and
// marks it done. The subject's lock is held.
func (l *Limiter) land(s *subject, f *flight, at time.Time, vals []int64, err error) {
	l.stats.trips.Add(1)
	if s.flying == f {
		s.flying = nil
	}
	defer close(f.done)
	for i, e := range f.es {
		e.sent -= f.back[i]
	}
	if err != nil {
		for i := range f.es {
			l.stats.lost.Add(f.back[i])
		}
		return
	}
	for i, e := range f.es {
		v := vals[1+7*i : 8+7*i]
		granted, taken, rem, reset, retry, ok := v[0], v[1], v[2], v[3], v[4], v[6]
		tag := strconv.FormatInt(v[5], 10)
		l.stats.returned.Add(taken)
		l.stats.lost.Add(f.back[i] - taken)
		if e.gen != f.gens[i] {
			// The limit changed during the flight: what it leased under
			// the old one goes back (a count) or is lost (a rate).
			if e.t == 0 {
				e.giveBack(l, granted, tag)
			} else {
				l.stats.lost.Add(granted)
			}
			continue
		}
		e.known, e.at, e.rem = true, at, rem
		e.resetAt = at.Add(micros(reset))
		if e.t == 0 && e.lim.Window == limits.Never {
			e.resetAt = time.Time{}
		}
		if granted > 0 {
			end := at.Add(e.life)
			if e.t > 0 {
				// Spent strictly within the lease's life: d less a
				// thousandth, for the clocks' rates.
				end = at.Add(micros(e.d - max(1, e.d/1000)))
			} else if !e.resetAt.IsZero() && e.resetAt.Before(end) {
				end = e.resetAt
			}
			e.add(l, pool{units: granted, end: end, tag: tag})
		}
		// Starved: Redis denied the spend, or had less than a hot entry
		// asked for. A cold rate's denial is exact until its retry; a hot
		// rate is asked again after half a lease's life, a count after an
		// eighth (or at the end of its window), in case other instances
		// gave units back.
		switch {
		case f.peek:
		case e.t > 0 && ok == 0 && !e.hot:
			e.starved, e.until = true, at.Add(micros(retry))
		case e.t > 0 && e.hot && (ok == 0 || granted < f.want[i]):
			e.starved, e.until = true, at.Add(max(micros(retry), e.life/rateRecheck))
		case e.t == 0 && (ok == 0 || e.hot && rem <= 0):
			e.starved, e.until = true, at.Add(e.life/recheck)
			if !e.resetAt.IsZero() && e.resetAt.Before(e.until) {
				e.until = e.resetAt
			}
		default:
			e.starved = false
		}
	}
	if l.closed.Load() {
		l.drain(s, at)
	}
}

// micros returns n microseconds.
func micros(n int64) time.Duration { return time.Duration(n) * time.Microsecond }

// ask decides a call in a round trip of its own, as redislimit's Allow
// does, leasing for its limits on the way: a limit that holds the cost
// spends it here (restored if the call is denied), a quota or credits
// that holds less gives it back and spends the cost in Redis, a rate that
// holds less spends it in Redis. The subject's lock is held on entry and
// released on return.
func (l *Limiter) ask(ctx context.Context, s *subject, es []*entry, ls []limits.Limit, cost int64, now time.Time) (limits.Result, error) {
	defer s.mu.Unlock()
	f := newFlight(es)
	for i, e := range es {
		e.asked += cost
		switch u := e.units(); {
		case u >= cost:
			f.taken[i], f.ends[i] = e.take(cost)
		case e.t == 0 && u > 0:
			for _, p := range e.pools {
				e.giveBack(l, p.units, p.tag)
			}
			e.pools = e.pools[:0]
			f.spend[i] = cost
		default:
			f.spend[i] = cost
		}
		f.want[i] = l.want(e, now, cost)
	}
	l.seal(s, f, nil)
	s.flying = f
	s.mu.Unlock()
	vals, err := l.run(ctx, f)
	s.mu.Lock()
	l.land(s, f, now, vals, err)
	allowed := err == nil && vals[0] == 1
	if !allowed {
		for i, e := range es {
			if e.gen == f.gens[i] {
				e.put(f.taken[i], f.ends[i])
			} else {
				l.stats.lost.Add(f.taken[i])
			}
		}
	}
	if err != nil {
		return limits.Result{}, wrap(err)
	}
	var buf [4]outcome
	out := buf[:0]
	for i, e := range es {
		o := e.outcome(now).noDebt()
		if v := vals[1+7*i:]; v[6] == 0 {
			// A cost above a rate's burst waits until the rate is
			// whole, at least an interval: its reset is its retry.
			o.Allowed, o.Retry = false, int64(micros(v[4]))
			o.Reset = max(o.Reset, o.Retry)
		}
		out = append(out, o)
	}
	return result(ls, out, allowed), nil
}

// flyAsync gives back what es set aside in the background, and leases
// for them when lease is set, when there is anything to do. The
// subject's lock is held.
func (l *Limiter) flyAsync(s *subject, es []*entry, now time.Time, lease bool) {
	f := newFlight(es)
	any := false
	for i, e := range es {
		if lease {
			f.want[i] = l.want(e, now, 0)
		}
		any = any || f.want[i] > 0 || e.back > 0
	}
	if !any {
		return
	}
	l.seal(s, f, nil)
	s.flying = f
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), max(2*l.life, time.Second))
		vals, err := l.run(ctx, f)
		cancel()
		s.mu.Lock()
		l.land(s, f, now, vals, err)
		s.mu.Unlock()
	}()
}

// drain sets aside everything a subject holds and gives it back, once
// the Limiter is closed. The subject's lock is held.
func (l *Limiter) drain(s *subject, now time.Time) {
	var es []*entry
	for _, e := range s.entries {
		for _, p := range e.pools {
			e.giveBack(l, p.units, p.tag)
		}
		e.pools = e.pools[:0]
		if e.back > 0 {
			es = append(es, e)
		}
	}
	if len(es) > 0 && s.flying == nil {
		l.flyAsync(s, es, now, false)
	}
}

// giveBackAll drains every subject.
func (l *Limiter) giveBackAll() {
	for i := range l.shards {
		for _, s := range l.shards[i].list() {
			s.mu.Lock()
			l.drain(s, l.now())
			s.mu.Unlock()
		}
	}
}

// debit runs Debit for valid arguments: see Limiter.Debit.
func (l *Limiter) debit(ctx context.Context, name string, ls []limits.Limit, amount int64) (limits.Result, error) {
	s := l.subject(name)
	s.mu.Lock()
	for s.dead {
		s.mu.Unlock()
		s = l.subject(name)
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	now := l.now()
	var buf [4]*entry
	es := s.match(l, buf[:0], ls, now)
	f := newFlight(es)
	debit := make([]int64, len(es))
	trip := amount == 0
	for i, e := range es {
		if e.t > 0 {
			continue
		}
		d := amount
		if amount > 0 {
			f.taken[i], f.ends[i] = e.take(amount)
			d -= f.taken[i]
		} else {
			e.starved = false
		}
		debit[i] = d
		trip = trip || d != 0
	}
	if trip {
		l.seal(s, f, debit)
		s.mu.Unlock()
		vals, err := l.run(ctx, f)
		s.mu.Lock()
		l.land(s, f, now, vals, err)
		if err != nil {
			// Nothing is debited: the caller may try again.
			for i, e := range es {
				e.put(f.taken[i], f.ends[i])
			}
			return limits.Result{}, wrap(err)
		}
	}
	var obuf [4]outcome
	out := obuf[:0]
	for _, e := range es {
		out = append(out, e.outcome(now))
	}
	return result(ls, out, true), nil
}

// peek runs Peek for valid arguments with limits: see Limiter.Peek.
func (l *Limiter) peek(ctx context.Context, name string, ls []limits.Limit) (limits.Result, error) {
	for {
		s := l.subject(name)
		s.mu.Lock()
		if s.dead {
			s.mu.Unlock()
			continue
		}
		if f := s.flying; f != nil {
			s.mu.Unlock()
			select {
			case <-f.done:
				continue
			case <-ctx.Done():
				return limits.Result{}, fmt.Errorf("%w: lease: %w", apikey.ErrUnavailable, ctx.Err())
			}
		}
		now := l.now()
		es := s.match(l, nil, ls, now)
		f := newFlight(es)
		f.peek = true
		for i := range f.spend {
			f.spend[i] = 1
		}
		l.seal(s, f, nil)
		s.flying = f
		s.mu.Unlock()
		vals, err := l.run(ctx, f)
		s.mu.Lock()
		l.land(s, f, now, vals, err)
		defer s.mu.Unlock()
		if err != nil {
			return limits.Result{}, wrap(err)
		}
		// What Allow of cost 1 would answer: each limit spends from what
		// the entry holds, or else from Redis if Redis had room.
		before := make([]outcome, len(es))
		after := make([]outcome, len(es))
		allowed := true
		for i, e := range es {
			v := vals[1+7*i:]
			u := e.units() + e.back + e.sent
			before[i] = e.outcome(now).noDebt()
			switch {
			case u >= 1:
				after[i] = e.outcomeWith(now, u-1, 0).noDebt()
			case v[6] == 1:
				after[i] = e.outcomeWith(now, u, 1).noDebt()
			default:
				allowed = false
				before[i].Allowed, before[i].Retry = false, int64(micros(v[4]))
			}
		}
		if allowed {
			return result(ls, after, true), nil
		}
		return result(ls, before, false), nil
	}
}
