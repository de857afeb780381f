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
	// to 256 shards, each holding at most MaxKeys divided by the number of
	// shards, so the limiter as a whole never holds more than MaxKeys
	// states. When a new state would exceed its shard's cap, Allow drops
	// states found expired among up to 32 states of the shard, and when
	// none is expired it evicts one of them (belonging to another key id
	// when possible). Evicting a state forgets what that key consumed, so
	// it can only make the limiter more permissive for that key, never
	// deny a request that should be allowed; Allow never fails because of
	// the cap. Size MaxKeys above the number of (key, limit) pairs active
	// within a window so that eviction does not happen in normal use.
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

// stateKey identifies one state. A struct key avoids building a string per
// call.
type stateKey struct {
	id   string
	name string
	kind apikey.LimitKind
}

// state is the stored state of one limit for one key id.
//
// For a rate, v is the theoretical arrival time (TAT) in nanoseconds since
// Limiter.base and exp equals v. For a quota, w is the start of the current
// window in Unix nanoseconds, v the amount consumed in it, and exp the end
// of the window in Unix nanoseconds.
type state struct {
	v, w, exp int64
}

type shard struct {
	mu      sync.Mutex
	m       map[stateKey]*state
	sweepAt int
	_       [40]byte // keep shards on distinct cache lines
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
		l.shards[i].m = make(map[stateKey]*state)
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
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// pending is the decision on one limit of a call, kept until all limits of
// the call are decided.
type pending struct {
	st        *state
	v, w, exp int64
}

// Allow takes cost from every limit in limits for keyID; see
// apikey.Limiter. It reports an error wrapping apikey.ErrInvalidOptions when
// cost is below 1, a limit is invalid or two limits share a name, and the
// context's error when ctx is done. A cost above a limit's capacity (its
// burst for a rate, its count for a quota) can never be allowed: it is
// denied with RetryAfter equal to Reset.
func (l *Limiter) Allow(ctx context.Context, keyID string, limits []apikey.Limit, cost int64) (apikey.LimitResult, error) {
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

	var buf [inlineLimits]pending
	pend := buf[:0]
	if len(limits) > inlineLimits {
		pend = make([]pending, 0, len(limits))
	}

	sh := &l.shards[maphash.String(l.seed, keyID)&l.mask]
	sh.mu.Lock()
	defer sh.mu.Unlock()

	var best outcome
	allowed := true
	for i := range limits {
		lim := &limits[i]
		st := sh.m[stateKey{id: keyID, name: lim.Name, kind: lim.Kind}]
		var o outcome
		var p pending
		if lim.Kind == apikey.KindRate {
			o, p = decideRate(lim, st, mono, cost)
		} else {
			o, p = decideQuota(lim, st, wall, cost)
		}
		p.st = st
		pend = append(pend, p)
		o.index = i
		if !o.allowed {
			allowed = false
		}
		if i == 0 || o.tighter(best) {
			best = o
		}
	}

	res := apikey.LimitResult{
		Allowed:   allowed,
		Limit:     limits[best.index],
		Remaining: best.remaining,
		Reset:     time.Duration(best.reset),
	}
	if !allowed {
		res.RetryAfter = time.Duration(best.retry)
		return res, nil
	}
	// Update existing states before inserting new ones: an insert may
	// evict expired states, and the states of this call are not expired
	// once updated.
	fresh := false
	for i := range pend {
		if p := &pend[i]; p.st != nil {
			p.st.v, p.st.w, p.st.exp = p.v, p.w, p.exp
		} else {
			fresh = true
		}
	}
	if fresh {
		for i := range pend {
			if p := &pend[i]; p.st == nil {
				lim := &limits[i]
				sh.insert(stateKey{id: keyID, name: lim.Name, kind: lim.Kind},
					&state{v: p.v, w: p.w, exp: p.exp}, l.perShard, mono, wall)
			}
		}
	}
	return res, nil
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

// decideRate applies GCRA: a request of cost c at now is allowed when
// max(TAT, now) + c*T - now <= B*T, and then moves TAT there.
func decideRate(lim *apikey.Limit, st *state, now, cost int64) (outcome, pending) {
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
func decideQuota(lim *apikey.Limit, st *state, now, cost int64) (outcome, pending) {
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
		if lim.Kind == apikey.KindRate {
			t, burst := gcra(lim)
			if burst > maxHorizon/t {
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

// expired reports whether a state no longer matters: a rate whose TAT has
// passed, or a quota whose window has ended.
func expired(k stateKey, st *state, mono, wall int64) bool {
	if k.kind == apikey.KindRate {
		return st.exp <= mono
	}
	return st.exp <= wall
}

// insert adds a state, making room first when the shard is at its cap and
// sweeping expired states when the shard has doubled since the last sweep.
// The caller holds sh.mu.
func (sh *shard) insert(k stateKey, st *state, limit int, mono, wall int64) {
	if len(sh.m) >= limit {
		sh.evict(k.id, mono, wall)
	}
	sh.m[k] = st
	if len(sh.m) >= sh.sweepAt {
		for k, st := range sh.m {
			if expired(k, st, mono, wall) {
				delete(sh.m, k)
			}
		}
		sh.sweepAt = max(minSweep, 2*len(sh.m))
	}
}

// evict drops the expired states among up to evictSample states of the
// shard; when none was expired, it drops one live state, of another key id
// than id when it saw one.
func (sh *shard) evict(id string, mono, wall int64) {
	var victim, fallback *stateKey
	seen, dropped := 0, 0
	for k, st := range sh.m {
		if expired(k, st, mono, wall) {
			delete(sh.m, k)
			dropped++
		} else if victim == nil && k.id != id {
			victim = &k
		} else if fallback == nil {
			fallback = &k
		}
		if seen++; seen == evictSample {
			break
		}
	}
	switch {
	case dropped > 0:
	case victim != nil:
		delete(sh.m, *victim)
	case fallback != nil:
		delete(sh.m, *fallback)
	}
}
