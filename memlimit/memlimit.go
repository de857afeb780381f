// Package memlimit is an in-process apikey.Limiter: rates by GCRA and
// quotas per UTC calendar window, kept in memory.
//
// It suits a single server, or tests. Limits are not shared between
// processes and are lost on restart; use redislimit to share them.
//
// The limiter starts no goroutine. Memory is bounded: states whose window or
// theoretical arrival time has passed are dropped lazily while the limiter
// is in use, and Options.MaxKeys caps the number of states held (see
// Options.MaxKeys for what happens at the cap).
package memlimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/bits"
	"sync"
	"time"

	"github.com/gokeys/apikey"
)

// DefaultMaxKeys is the default of Options.MaxKeys.
const DefaultMaxKeys = 1_000_000

const (
	// maxShards bounds the number of shards; each shard has its own mutex.
	maxShards = 256
	// minPerShard is the smallest cap a shard gets before the limiter uses
	// fewer shards.
	minPerShard = 64
	// evictSample is how many states Allow inspects to make room at the cap.
	evictSample = 32
	// minSweep is the shard size below which no sweep happens.
	minSweep = 64
	// maxHorizon bounds a rate's burst times its emission interval, so that
	// time arithmetic in nanoseconds cannot overflow.
	maxHorizon = int64(1) << 61
	// inlineLimits is how many limits one call handles without allocating.
	inlineLimits = 4
)

// Options configures a Limiter. The zero value is valid.
type Options struct {
	// Now returns the current time. Rates use the difference between two
	// readings (monotonic when Now's times carry a monotonic reading, as
	// time.Now's do); quotas use the UTC calendar. Default time.Now.
	Now func() time.Time

	// MaxKeys caps the number of states held, one per (key id, limit
	// name, kind) in use. Zero means DefaultMaxKeys; negative is an error.
	//
	// The cap is enforced per shard: the limiter splits its states over up
	// to 256 shards by key id, each holding at most MaxKeys divided by the
	// number of shards, so the limiter as a whole never holds more than
	// MaxKeys states. When new states would exceed their shard's cap, Allow
	// first drops the expired states of up to 32 other key ids of the shard
	// and, when none was expired, evicts all states of one of those key ids
	// (arbitrary, not the least recently used), repeating until the new
	// states fit. Evicting forgets what that key consumed, so it can only
	// make the limiter more permissive for that key, never deny a request
	// that should be allowed; Allow never fails because of the cap. (Only
	// when a single key id uses more limits than a shard holds are its
	// extra limits left uncounted.) Size MaxKeys above the number of (key,
	// limit) pairs active within a window so that eviction does not happen
	// in normal use.
	MaxKeys int
}

// Limiter is an in-memory apikey.Limiter. Create it with New; the zero value
// is not usable. It is safe for concurrent use: states are split over
// sharded mutexes by key id, and all limits of one key id are decided under
// one lock.
type Limiter struct {
	now      func() time.Time
	base     time.Time // origin of rate times, read once from now
	seed     maphash.Seed
	mask     uint64
	perShard int
	shards   []shard
}

var _ apikey.Limiter = (*Limiter)(nil)

// entry holds the states of one key id, one slot per limit in use. Keying
// the shard's map by key id alone, with a short slice of slots, avoids
// building a string or hashing the limit name per call.
type entry struct {
	slots []slot
}

// slot is the stored state of one limit of a key id.
//
// For a rate, v is the theoretical arrival time (TAT) in nanoseconds since
// Limiter.base and exp equals v. For a quota, w is the start of the current
// window in Unix nanoseconds, v the amount consumed in it, and exp the end
// of the window in Unix nanoseconds.
type slot struct {
	name      string
	kind      apikey.LimitKind
	v, w, exp int64
}

// expired reports whether a slot no longer matters: a rate whose TAT has
// passed, or a quota whose window has ended.
func (s *slot) expired(mono, wall int64) bool {
	if s.kind == apikey.KindRate {
		return s.exp <= mono
	}
	return s.exp <= wall
}

type shard struct {
	mu      sync.Mutex
	m       map[string]*entry
	n       int // slots held
	sweepAt int
	_       [32]byte // keep shards on distinct cache lines
}

// New returns a Limiter configured by opts. It reports an error wrapping
// apikey.ErrInvalidOptions when opts.MaxKeys is negative.
func New(opts Options) (*Limiter, error) {
	if opts.MaxKeys < 0 {
		return nil, fmt.Errorf("%w: memlimit: MaxKeys %d is negative", apikey.ErrInvalidOptions, opts.MaxKeys)
	}
	maxKeys := opts.MaxKeys
	if maxKeys == 0 {
		maxKeys = DefaultMaxKeys
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	n := 1
	for n < maxShards && maxKeys/(2*n) >= minPerShard {
		n *= 2
	}
	l := &Limiter{
		now:      now,
		base:     now(),
		seed:     maphash.MakeSeed(),
		mask:     uint64(n - 1),
		perShard: maxKeys / n,
		shards:   make([]shard, n),
	}
	for i := range l.shards {
		l.shards[i].m = make(map[string]*entry)
		l.shards[i].sweepAt = minSweep
	}
	return l, nil
}

// Len returns the number of states the limiter holds, expired or not. It is
// meant for monitoring and tests.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}

// pending is the decision on one limit of a call, kept until all limits of
// the call are decided: the slot to update (-1 for a new one) and its new
// values.
type pending struct {
	slot      int
	v, w, exp int64
}

// Allow takes cost from every limit in limits for keyID; see
// apikey.Limiter. It reports an error wrapping apikey.ErrInvalidOptions when
// cost is below 1, a limit is invalid or two limits share a name, and the
// context's error when ctx is done. A cost above a limit's capacity (its
// burst for a rate, its count for a quota) can never be allowed: it is
// denied with RetryAfter equal to Reset, which for a rate is at least one
// emission interval.
func (l *Limiter) Allow(ctx context.Context, keyID string, limits []apikey.Limit, cost int64) (res apikey.LimitResult, err error) {
	if err := validate(limits, cost); err != nil {
		return apikey.LimitResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return apikey.LimitResult{}, fmt.Errorf("memlimit: %w", err)
	}
	if len(limits) == 0 {
		return apikey.LimitResult{Allowed: true}, nil
	}

	t := l.now()
	mono := int64(t.Sub(l.base))
	wall := t.UnixNano()
	if len(limits) == 1 {
		l.allowOne(&res, keyID, limits, cost, mono, wall)
		return res, nil
	}

	var buf [inlineLimits]pending
	pend := buf[:0]
	if len(limits) > inlineLimits {
		pend = make([]pending, 0, len(limits))
	}

	sh := &l.shards[maphash.String(l.seed, keyID)&l.mask]
	sh.mu.Lock()
	e := sh.m[keyID]

	var best outcome
	allowed := true
	for i := range limits {
		lim := &limits[i]
		var st *slot
		idx := -1
		if e != nil {
			for j := range e.slots {
				if s := &e.slots[j]; s.name == lim.Name && s.kind == lim.Kind {
					st, idx = s, j
					break
				}
			}
		}
		var o outcome
		var p pending
		if lim.Kind == apikey.KindRate {
			o, p = decideRate(lim, st, mono, cost)
		} else {
			o, p = decideQuota(lim, st, wall, cost)
		}
		p.slot = idx
		pend = append(pend, p)
		o.index = i
		if !o.allowed {
			allowed = false
		}
		if i == 0 || o.tighter(best) {
			best = o
		}
	}

	res = apikey.LimitResult{
		Allowed:   allowed,
		Limit:     limits[best.index],
		Remaining: best.remaining,
		Reset:     time.Duration(best.reset),
	}
	if !allowed {
		res.RetryAfter = time.Duration(best.retry)
		sh.mu.Unlock()
		return res, nil
	}
	added := 0
	for i := range pend {
		if p := &pend[i]; p.slot >= 0 {
			s := &e.slots[p.slot]
			s.v, s.w, s.exp = p.v, p.w, p.exp
		} else {
			added++
		}
	}
	if added > 0 {
		l.add(sh, e, keyID, limits, pend, added, mono, wall)
	}
	sh.mu.Unlock()
	return res, nil
}

// allowOne is Allow for a single limit, without the bookkeeping that
// deciding several limits together needs.
func (l *Limiter) allowOne(res *apikey.LimitResult, keyID string, limits []apikey.Limit, cost, mono, wall int64) {
	lim := &limits[0]
	sh := &l.shards[maphash.String(l.seed, keyID)&l.mask]
	sh.mu.Lock()
	e := sh.m[keyID]
	var st *slot
	if e != nil {
		for j := range e.slots {
			if s := &e.slots[j]; s.name == lim.Name && s.kind == lim.Kind {
				st = s
				break
			}
		}
	}
	var o outcome
	var p pending
	if lim.Kind == apikey.KindRate {
		o, p = decideRate(lim, st, mono, cost)
	} else {
		o, p = decideQuota(lim, st, wall, cost)
	}
	switch {
	case !o.allowed:
	case st != nil:
		st.v, st.w, st.exp = p.v, p.w, p.exp
	default:
		p.slot = -1
		l.add(sh, e, keyID, limits, []pending{p}, 1, mono, wall)
	}
	sh.mu.Unlock()
	res.Allowed, res.Limit, res.Remaining, res.Reset = o.allowed, *lim, o.remaining, time.Duration(o.reset)
	if !o.allowed {
		res.RetryAfter = time.Duration(o.retry)
	}
}

// add stores the new slots of a call: those of pend with no slot. It drops
// the expired slots of the key id, makes room when the shard is at its cap
// and sweeps expired states when the shard has doubled since the last
// sweep. The caller holds sh.mu and has updated the existing slots, so none
// of the key's slots used by this call is expired.
func (l *Limiter) add(sh *shard, e *entry, keyID string, limits []apikey.Limit, pend []pending, added int, mono, wall int64) {
	if e == nil {
		e = &entry{slots: make([]slot, 0, added)}
		sh.m[keyID] = e
	} else {
		sh.n -= e.compact(mono, wall)
	}
	if sh.n+added > l.perShard {
		sh.evict(keyID, sh.n+added-l.perShard, mono, wall)
		// Only when one key id has more limits than a shard holds: what
		// does not fit is not counted.
		added = max(0, min(added, l.perShard-sh.n))
	}
	for i, n := 0, 0; i < len(pend) && n < added; i++ {
		if p := &pend[i]; p.slot < 0 {
			e.slots = append(e.slots, slot{name: limits[i].Name, kind: limits[i].Kind, v: p.v, w: p.w, exp: p.exp})
			n++
		}
	}
	if len(e.slots) == 0 {
		delete(sh.m, keyID)
	}
	sh.n += added
	if sh.n >= sh.sweepAt {
		for id, e := range sh.m {
			if sh.n -= e.compact(mono, wall); len(e.slots) == 0 {
				delete(sh.m, id)
			}
		}
		sh.sweepAt = max(minSweep, 2*sh.n)
	}
}

// compact drops the expired slots of e and returns how many it dropped.
func (e *entry) compact(mono, wall int64) int {
	kept := e.slots[:0]
	for _, s := range e.slots {
		if !s.expired(mono, wall) {
			kept = append(kept, s)
		}
	}
	n := len(e.slots) - len(kept)
	clear(e.slots[len(kept):])
	e.slots = kept
	return n
}

// evict frees at least need slots of key ids other than id, when the shard
// holds that many. It inspects up to evictSample entries at a time, drops
// their expired slots, and when that frees nothing drops one entry whole.
func (sh *shard) evict(id string, need int, mono, wall int64) {
	for need > 0 {
		freed, seen := 0, 0
		var victim string
		found := false
		for k, e := range sh.m {
			if k == id {
				continue
			}
			n := e.compact(mono, wall)
			if len(e.slots) == 0 {
				delete(sh.m, k)
			}
			freed += n
			if !found && len(e.slots) > 0 {
				victim, found = k, true
			}
			if seen++; seen == evictSample {
				break
			}
		}
		if freed == 0 {
			if !found {
				return // nothing but id's own states
			}
			freed = len(sh.m[victim].slots)
			delete(sh.m, victim)
		}
		sh.n -= freed
		need -= freed
	}
}

// outcome is the answer of one limit.
type outcome struct {
	index        int
	allowed      bool
	remaining    int64
	reset, retry int64 // nanoseconds
}

// tighter reports whether o should be reported instead of b: a denial
// before an allowance, among denials the longest wait, among allowances the
// fewest remaining and then the longest reset.
func (o outcome) tighter(b outcome) bool {
	if o.allowed != b.allowed {
		return !o.allowed
	}
	if !o.allowed {
		return o.retry > b.retry
	}
	if o.remaining != b.remaining {
		return o.remaining < b.remaining
	}
	return o.reset > b.reset
}

// gcra returns a rate's emission interval T in nanoseconds (rounded up, so
// that the limiter is never more permissive than the limit) and its burst.
func gcra(lim *apikey.Limit) (t, burst int64) {
	n := lim.Count
	t = (int64(lim.Period) + n - 1) / n
	burst = lim.Burst
	if burst == 0 {
		burst = n
	}
	return t, burst
}

// shortHorizon reports, without dividing, that burst*period (which bounds
// burst*T) is below maxHorizon.
func shortHorizon(lim *apikey.Limit) bool {
	burst := lim.Burst
	if burst == 0 {
		burst = lim.Count
	}
	hi, lo := bits.Mul64(uint64(burst), uint64(lim.Period))
	return hi == 0 && lo <= uint64(maxHorizon)
}

// decideRate applies GCRA: a request of cost c at now is allowed when
// max(TAT, now) + c*T - now <= B*T, and then moves TAT there.
func decideRate(lim *apikey.Limit, st *slot, now, cost int64) (outcome, pending) {
	t, burst := gcra(lim)
	tau := burst * t
	tat := now
	if st != nil && st.v > now {
		tat = st.v
	}
	d := tat - now
	remaining := func(d int64) int64 { return max(0, min(burst, (tau-d)/t)) }
	if cost > burst { // can never fit
		reset := max(d, t)
		return outcome{remaining: remaining(d), reset: reset, retry: reset}, pending{}
	}
	nt := tat + cost*t
	if nt-now > tau {
		return outcome{remaining: remaining(d), reset: d, retry: nt - now - tau}, pending{}
	}
	return outcome{allowed: true, remaining: remaining(nt - now), reset: nt - now},
		pending{v: nt, exp: nt}
}

// decideQuota counts cost against the current UTC window.
func decideQuota(lim *apikey.Limit, st *slot, now, cost int64) (outcome, pending) {
	ws, we := window(lim.Window, now)
	var used int64
	if st != nil && st.w == ws {
		used = st.v
	}
	left := max(0, lim.Count-used)
	reset := we - now
	if cost > left {
		return outcome{remaining: left, reset: reset, retry: reset}, pending{}
	}
	return outcome{allowed: true, remaining: left - cost, reset: reset},
		pending{v: used + cost, w: ws, exp: we}
}

// window returns the UTC window of w holding the Unix time now, as Unix
// nanoseconds [start, end).
func window(w apikey.Window, now int64) (start, end int64) {
	var size int64
	switch w {
	case apikey.Minute:
		size = int64(time.Minute)
	case apikey.Hour:
		size = int64(time.Hour)
	case apikey.Day:
		size = int64(24 * time.Hour)
	default: // Month
		y, m, _ := time.Unix(0, now).UTC().Date()
		s := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
		return s.UnixNano(), s.AddDate(0, 1, 0).UnixNano()
	}
	start = now - now%size
	if now%size < 0 {
		start -= size
	}
	return start, start + size
}

// validate checks the arguments of Allow.
func validate(limits []apikey.Limit, cost int64) error {
	if cost < 1 {
		return fmt.Errorf("%w: memlimit: cost %d is below 1", apikey.ErrInvalidOptions, cost)
	}
	for i := range limits {
		lim := &limits[i]
		if err := lim.Validate(); err != nil {
			return fmt.Errorf("memlimit: %w", err)
		}
		if lim.Kind == apikey.KindRate && !shortHorizon(lim) {
			if t, burst := gcra(lim); burst > maxHorizon/t {
				return fmt.Errorf("%w: memlimit: limit %q: burst times period/count is too long", apikey.ErrInvalidOptions, lim.Name)
			}
		}
		for j := range i {
			if limits[j].Name == lim.Name {
				return fmt.Errorf("%w: memlimit: limit name %q used twice", apikey.ErrInvalidOptions, lim.Name)
			}
		}
	}
	return nil
}
