package lease

import (
	"hash/maphash"
	"math"
	"sync"
	"time"

	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit/internal/storage"
)

// shardCount is the number of shards of a Limiter's subjects.
const shardCount = 64

// Leasing constants: a lease holds what demand spends in hold of a
// lease's life; a new lease is asked for when what is held would last
// less than lead round trips; a limit exhausted for the fleet is asked
// again after its life divided by recheck (a count) or by rateRecheck (a
// rate); a rate is leased when its lease spans minIntervals emission
// intervals; demand is sampled over at least minSpan.
const (
	hold         = 0.8
	lead         = 2
	recheck      = 8
	rateRecheck  = 2
	minIntervals = 32
	minSpan      = time.Millisecond
	maxPools     = 3
)

// shard holds the subjects whose name hashes to it.
type shard struct {
	mu sync.RWMutex
	m  map[string]*subject
}

// subject is what an instance knows of one call subject (a customer):
// an entry per limit, and the round trip in progress. Its fields are
// guarded by mu.
type subject struct {
	name    string
	mu      sync.Mutex
	entries map[entryKey]*entry
	flying  *flight   // the round trip leasing for it, nil when none
	seen    time.Time // the last call
	dead    bool      // removed from its shard: look it up again
}

// entryKey identifies a limit of a subject, as its storage key does.
type entryKey struct {
	kind          limits.Kind
	name, subject string
}

// subject returns the state of the subject name, creating it.
func (l *Limiter) subject(name string) *subject {
	sh := &l.shards[maphash.String(l.seed, name)%shardCount]
	sh.mu.RLock()
	s := sh.m[name]
	sh.mu.RUnlock()
	if s != nil {
		return s
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s = sh.m[name]; s == nil {
		s = &subject{name: name, entries: make(map[entryKey]*entry, 2)}
		sh.m[name] = s
	}
	return s
}

// peekSubject returns the state of the subject name, or nil.
func (l *Limiter) peekSubject(name string) *subject {
	sh := &l.shards[maphash.String(l.seed, name)%shardCount]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.m[name]
}

// entry is what an instance holds of one limit of a subject, and what it
// last learnt of the limit's state in Redis.
type entry struct {
	lim limits.Limit
	key string
	gen uint64 // counts the changes of the limit

	t, b  int64         // a rate's emission interval in µs and burst; 0 for a count
	d     int64         // a rate's lease life in µs
	life  time.Duration // how long a lease lives
	lease bool          // the limit may be leased

	pools   []pool // oldest first
	back    int64  // units to give back, against backTag
	backTag string
	sent    int64 // units being given back by the flight in progress

	// Redis's state at the last round trip, in local time: when it was
	// sent, what remained, and when a count's window ends or a rate's TAT
	// falls (zero for credits never refilled).
	known   bool
	at      time.Time
	rem     int64
	resetAt time.Time

	// Demand: units asked since mark, and their rate in units per second.
	asked  int64
	mark   time.Time
	lambda float64
	hot    bool  // demand asks for leases
	ramp   int64 // the last lease asked for
	seen   time.Time

	// starved: Redis had nothing more for this limit at the last round
	// trip; believed until until.
	starved bool
	until   time.Time
}

// pool is the unspent part of one lease.
type pool struct {
	units int64
	end   time.Time // spent strictly before
	tag   string    // what Redis's key held after the lease; "" when it cannot be given back
}

// match returns the entries of a call's limits, in order, appended to buf:
// created when new, reset when the limit changed, with their ended leases
// set aside to be given back.
func (s *subject) match(l *Limiter, buf []*entry, ls []limits.Limit, now time.Time) []*entry {
	for i := range ls {
		lim := &ls[i]
		k := entryKey{lim.Kind, lim.Name, lim.Subject}
		e := s.entries[k]
		switch {
		case e == nil:
			e = &entry{key: storage.Keys(l.prefix, s.name, ls[i:i+1])[0], mark: now}
			e.set(l, *lim)
			s.entries[k] = e
		case !sameLimit(&e.lim, lim):
			e.change(l, *lim, now)
		}
		e.seen = now
		e.refresh(l, now)
		buf = append(buf, e)
	}
	return buf
}

// sameLimit reports whether a and b, of one name, kind and Subject, count
// alike.
func sameLimit(a, b *limits.Limit) bool {
	return a.Count == b.Count && a.Period == b.Period && a.Burst == b.Burst && a.Window == b.Window
}

// set takes the arithmetic of lim.
func (e *entry) set(l *Limiter, lim limits.Limit) {
	e.lim = lim
	e.t, e.b, e.d, e.life, e.lease = 0, 0, 0, l.life, true
	if lim.Kind == limits.KindRate {
		e.t, e.b = gcra.GCRA(lim.Count, lim.Period, lim.Burst, time.Microsecond)
		d := min(l.life.Microseconds(), int64(l.reserve*float64(e.b)*float64(e.t)))
		e.d, e.lease = d, d >= minIntervals*e.t
		e.life = time.Duration(d) * time.Microsecond
	}
}

// change applies a changed limit (a plan change): what is held under the
// old one is given back, or lost for a rate, whose interval changed, and
// demand is measured afresh.
func (e *entry) change(l *Limiter, lim limits.Limit, now time.Time) {
	for _, p := range e.pools {
		if e.t == 0 {
			e.giveBack(l, p.units, p.tag)
		} else {
			l.stats.lost.Add(p.units)
		}
	}
	if e.t != 0 {
		l.stats.lost.Add(e.back)
		e.back = 0
	}
	*e = entry{key: e.key, gen: e.gen + 1, back: e.back, backTag: e.backTag, mark: now, pools: e.pools[:0]}
	e.set(l, lim)
}

// refresh sets aside the leases that ended, to be given back, and forgets
// a count's state when its window ended. A clock that went back before
// the last round trip (Options.Now is not monotonic) ends every lease and
// forgets the state.
func (e *entry) refresh(l *Limiter, now time.Time) {
	if e.known && now.Before(e.at) {
		for _, p := range e.pools {
			e.giveBack(l, p.units, p.tag)
		}
		e.pools = e.pools[:0]
		e.known, e.starved = false, false
	}
	n := 0
	for n < len(e.pools) && !now.Before(e.pools[n].end) {
		n++
	}
	if n > 0 {
		for _, p := range e.pools[:n] {
			e.giveBack(l, p.units, p.tag)
		}
		e.pools = append(e.pools[:0], e.pools[n:]...)
	}
	if e.known && e.t == 0 && !e.resetAt.IsZero() && !now.Before(e.resetAt) {
		e.known, e.starved = false, false
	}
}

// giveBack sets units aside to be given back against tag.
func (e *entry) giveBack(l *Limiter, units int64, tag string) {
	if tag == "" {
		l.stats.lost.Add(units)
		return
	}
	if e.back > 0 && e.backTag != tag {
		// An older lease: Redis's key moved on since (a rate) or its
		// window ended (a count), so it could not be taken back.
		l.stats.lost.Add(e.back)
		e.back = 0
	}
	e.back += units
	e.backTag = tag
}

// units returns what the entry holds.
func (e *entry) units() int64 {
	var n int64
	for i := range e.pools {
		n += e.pools[i].units
	}
	return n
}

// take spends n units of what the entry holds, oldest first, and returns
// what it took for put to restore: the units and the earliest end.
func (e *entry) take(n int64) (taken int64, end time.Time) {
	for n > 0 && len(e.pools) > 0 {
		p := &e.pools[0]
		if end.IsZero() || p.end.Before(end) {
			end = p.end
		}
		k := min(n, p.units)
		p.units -= k
		n -= k
		taken += k
		if p.units == 0 {
			e.pools = append(e.pools[:0], e.pools[1:]...)
		}
	}
	return taken, end
}

// put restores units taken from the entry for a call that was denied,
// spent before end. They cannot be given back: their lease is unknown.
func (e *entry) put(n int64, end time.Time) {
	if n > 0 {
		e.pools = append([]pool{{units: n, end: end}}, e.pools...)
	}
}

// add holds a new lease.
func (e *entry) add(l *Limiter, p pool) {
	if len(e.pools) == maxPools {
		e.giveBack(l, e.pools[0].units, e.pools[0].tag)
		e.pools = append(e.pools[:0], e.pools[1:]...)
	}
	e.pools = append(e.pools, p)
	l.stats.leased.Add(p.units)
}

// short reports whether the entry is known not to have room for cost:
// Redis denied or had nothing more at the last round trip, and what the
// entry holds plus what Redis had left then (a cold rate's grown with
// time since) is less than cost; believed until until.
func (e *entry) short(cost int64, now time.Time) bool {
	if !e.starved || !e.known || !now.Before(e.until) {
		return false
	}
	avail := max(0, e.rem)
	if e.t > 0 && !e.hot {
		avail = e.rateLeft(now)
	}
	return e.units()+avail < cost
}

// rateLeft returns what a rate had left at now, from its state at the
// last round trip: what this instance alone knows of it, never less than
// Redis has.
func (e *entry) rateLeft(now time.Time) int64 {
	d := max(0, e.resetAt.Sub(now).Microseconds())
	return max(0, min(e.b, (e.b*e.t-d)/e.t))
}

// stale reports whether a hot entry was starved, holds less than cost,
// and the time to ask Redis again came: it is asked in the background
// while calls are refused.
func (e *entry) stale(cost int64, now time.Time) bool {
	return e.hot && e.starved && e.known && !now.Before(e.until) && e.units() < cost
}

// verdict is what an instance can decide of a call alone.
type verdict uint8

const (
	local  verdict = iota // every limit holds the cost: spend it
	refuse                // a limit is known short: deny
	remote                // ask Redis
)

// decide returns the verdict of a call of cost on entries.
func decide(es []*entry, cost int64, now time.Time) verdict {
	v := local
	for _, e := range es {
		switch {
		case e.units() >= cost:
		case e.short(cost, now) || e.stale(cost, now):
			return refuse
		default:
			v = remote
		}
	}
	return v
}

// spend admits a call from what its entries hold, and leases again in
// the background when what they hold runs low.
func (l *Limiter) spend(s *subject, es []*entry, ls []limits.Limit, cost int64, now time.Time) limits.Result {
	var buf [4]outcome
	out := buf[:0]
	low := false
	rtt := time.Duration(l.rtt.Load())
	for _, e := range es {
		e.asked += cost
		e.take(cost)
		out = append(out, e.outcome(now).noDebt())
		low = low || (e.hot && !e.starved && e.runsOut(now, e.lead(rtt)))
	}
	if low && s.flying == nil {
		l.flyAsync(s, es, now, true)
	}
	return result(ls, out, true)
}

// refuse denies a call that a limit is known not to have room for, and
// asks Redis again in the background when the time came.
func (l *Limiter) refuse(s *subject, es []*entry, ls []limits.Limit, cost int64, now time.Time) limits.Result {
	var buf [4]outcome
	out := buf[:0]
	again := false
	for _, e := range es {
		e.asked += cost
		o := e.outcome(now).noDebt()
		switch {
		case e.stale(cost, now):
			// Until the background round trip lands.
			o.Allowed, o.Retry = false, max(int64(e.life/rateRecheck), e.t*int64(time.Microsecond))
			if e.t == 0 && !e.resetAt.IsZero() {
				o.Retry = max(0, int64(e.resetAt.Sub(now)))
			} else if e.t == 0 {
				o.Retry = 0
			}
			again = true
			e.until = now.Add(e.life)
		case e.short(cost, now):
			o.Allowed = false
			o.Retry, o.Reset = e.retry(cost, now, o.Reset)
		}
		out = append(out, o)
	}
	if again && s.flying == nil {
		l.flyAsync(s, es, now, true)
	}
	return result(ls, out, false)
}

// retry returns, for an entry short of cost, the wait until cost could
// fit and the entry's reset (reset unless a cost above a rate's burst
// waits until it is whole): a count's window end (0 for credits never
// refilled), a hot rate's next round trip, a cold rate's time until cost
// fits as Redis's Allow computes it.
func (e *entry) retry(cost int64, now time.Time, reset int64) (int64, int64) {
	us := int64(time.Microsecond)
	switch {
	case e.t == 0 && e.resetAt.IsZero():
		return 0, reset
	case e.t == 0:
		return max(0, int64(e.resetAt.Sub(now))), reset
	case e.hot:
		return max(int64(e.until.Sub(now)), e.t*us), reset
	}
	d := max(0, e.resetAt.Sub(now).Microseconds())
	if cost > e.b {
		r := max(d, e.t) * us
		return r, r
	}
	return max(0, d+cost*e.t-e.b*e.t) * us, reset
}

// outcome returns the entry's state as an allowing outcome: what Redis
// had left at the last round trip plus what the entry holds or is giving
// back. A count's Remaining is below zero for a debt.
func (e *entry) outcome(now time.Time) outcome {
	return e.outcomeWith(now, e.units()+e.back+e.sent, 0)
}

// outcomeWith returns the entry's state holding u units, after spending
// cost more in Redis.
func (e *entry) outcomeWith(now time.Time, u, cost int64) outcome {
	o := outcome{Allowed: true}
	if !e.known {
		o.Remaining = e.lim.Count - cost
		if e.t > 0 {
			o.Remaining = e.b - cost
		}
		return o
	}
	if e.t > 0 {
		d := max(0, e.resetAt.Sub(now).Microseconds()) + cost*e.t
		o.Remaining = min(e.b, max(0, (e.b*e.t-d)/e.t)+u)
		o.Reset = max(0, d-u*e.t) * int64(time.Microsecond)
		return o
	}
	o.Remaining = e.rem - cost + u
	if !e.resetAt.IsZero() {
		o.Reset = max(0, int64(e.resetAt.Sub(now)))
	}
	return o
}

// outcome is the state of one limit after a call.
type outcome gcra.Outcome

// noDebt returns o with a debt shown as nothing left, as Allow shows it.
func (o outcome) noDebt() outcome {
	o.Remaining = max(0, o.Remaining)
	return o
}

// runsOut reports whether what the entry holds would last less than
// lead at its demand: spent, or ended.
func (e *entry) runsOut(now time.Time, lead time.Duration) bool {
	if len(e.pools) == 0 {
		return true
	}
	return e.pools[len(e.pools)-1].end.Sub(now) < lead || float64(e.usable(now)) < e.lambda*lead.Seconds()
}

// usable returns what of the entry's units its demand can spend before
// their leases end.
func (e *entry) usable(now time.Time) int64 {
	var n int64
	for i := range e.pools {
		p := &e.pools[i]
		n += min(p.units, int64(math.Ceil(e.lambda*max(0, p.end.Sub(now)).Seconds())))
	}
	return n
}

// lead returns how long what the entry holds should last when a new lease
// is asked for: two round trips, within half a lease's life.
func (e *entry) lead(rtt time.Duration) time.Duration {
	return min(max(lead*rtt, 100*time.Microsecond), e.life/2)
}

// want returns how many units to lease for the entry: what its demand
// spends in hold of a lease's life (or until a count's window ends), less
// what it holds, at most maxLease and twice the last lease plus cost. A
// limit with less demand is not leased.
func (l *Limiter) want(e *entry, now time.Time, cost int64) int64 {
	span := now.Sub(e.mark)
	if span >= minSpan || (e.lambda == 0 && e.asked > cost) {
		sample := float64(e.asked) / max(span, minSpan).Seconds()
		if e.lambda == 0 {
			e.lambda = sample
		} else {
			e.lambda = (e.lambda + sample) / 2
		}
		e.asked, e.mark = 0, now
	}
	// What lands is spent after what is held, which lasts about the
	// lead: all of it before the lease ends.
	span = min(time.Duration(hold*float64(e.life)), e.life-e.lead(time.Duration(l.rtt.Load())))
	if e.t == 0 && e.known && !e.resetAt.IsZero() {
		// No more than the window's end leaves time to spend.
		span = min(span, e.resetAt.Sub(now))
	}
	target := int64(math.Ceil(e.lambda * span.Seconds()))
	e.hot = e.lease && target >= 2 && !l.closed.Load()
	if !e.hot {
		return 0
	}
	w := min(target-e.usable(now), l.maxLease, 2*e.ramp+2*max(cost, 1))
	if w <= 0 {
		return 0
	}
	e.ramp = w
	return w
}

// held returns what this instance holds of each limit of a call.
func (l *Limiter) held(name string, ls []limits.Limit) []int64 {
	out := make([]int64, len(ls))
	s := l.peekSubject(name)
	if s == nil {
		return out
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := l.now()
	for i := range ls {
		lim := &ls[i]
		if e := s.entries[entryKey{lim.Kind, lim.Name, lim.Subject}]; e != nil && sameLimit(&e.lim, lim) {
			e.refresh(l, now)
			out[i] = e.units() + e.back + e.sent
		}
	}
	return out
}
