// Package memlimit is an in-process limits.Limiter: rates by GCRA, quotas
// per UTC calendar window and credits, kept in memory.
//
// Pick it for a single server, for tests, or as the fallback of
// redislimit while Redis is unreachable. Limits are not shared between
// processes and are lost on restart, credits included; use redislimit to
// share them and keep them across restarts.
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
	"math"
	"strings"
	"sync"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/fastclock"
	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/internal/limitbuf"
	"github.com/gokeys/apikey/limits"
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
	// inlineLimits is how many limits one call handles without allocating.
	inlineLimits = 4
	// indexAt is the number of slots above which a subject's slots are
	// found through a map rather than by a scan, and below which adding a
	// slot drops the subject's expired slots every time.
	indexAt = 8
)

// Options configures a Limiter. The zero value is valid.
type Options struct {
	// Now returns the current time. Rates use the difference between two
	// readings (monotonic when Now's times carry a monotonic reading, as
	// time.Now's do); quotas use the UTC calendar. Default time.Now.
	Now func() time.Time

	// MaxKeys caps the number of states held, one per (subject, limit
	// name, kind, limit Subject) in use. Zero means DefaultMaxKeys; negative is an error.
	//
	// The cap is enforced per shard: the limiter splits its states over up
	// to 256 shards by subject, each holding at most MaxKeys divided by the
	// number of shards, so the limiter as a whole never holds more than
	// MaxKeys states. When new states would exceed their shard's cap, Allow
	// first drops the expired states of up to 32 other subjects of the
	// shard and, when none was expired, evicts all states of one of those
	// subjects that holds no credits (arbitrary, not the least recently
	// used), repeating until the new states fit. Evicting forgets what
	// that subject consumed, so it can only make the limiter more
	// permissive for it, never deny a request that should be allowed;
	// Allow never fails because of the cap. Credits are never evicted
	// (forgetting them would grant them again): a shard full of credits
	// holds more than its cap. (Only when a single subject uses more limits
	// than a shard holds are its extra limits left uncounted.) Size MaxKeys
	// above the number of (subject, limit) pairs active within a window so
	// that eviction does not happen in normal use.
	MaxKeys int
}

// Limiter is an in-memory limits.Limiter. Create it with New; the zero value
// is not usable. It is safe for concurrent use: states are split over
// sharded mutexes by subject, and all limits of one call are decided under
// one lock.
type Limiter struct {
	now  func() time.Time
	base time.Time // origin of rate times, read once from now
	// monotonic is set when now is the real clock: a rate then reads only the
	// monotonic clock (time.Since), the one it needs.
	monotonic bool
	seed      maphash.Seed
	mask      uint64
	perShard  int
	shards    []shard
}

var (
	_ limits.Limiter = (*Limiter)(nil)
	_ limits.Peeker  = (*Limiter)(nil)
	_ limits.Debiter = (*Limiter)(nil)
)

// entry holds the states of one subject, one slot per limit in use.
// Keying the shard's table by the subject's hash (the one that chose the
// shard), with a short slice of slots, hashes the subject once per call
// and never the limit name. The first slot is held in the entry itself,
// so that a subject with one limit is one allocation, read in one place.
//
// A subject may hold many slots (the credits of every key it ever had):
// a call then finds its limits through index, and expired slots are
// dropped when the slots have doubled since the last time or when one may
// have expired (expMono, expWall), so that a call costs what its own
// limits cost, whatever the subject's history.
//
// The fields a call reads come first. A subject of up to shortSubject
// bytes is held in short, in the entry, so that finding the entry reads
// no other memory.
type entry struct {
	short [shortSubject]byte // the subject, when it fits
	size  uint8              // its length, or longSubject
	slots []slot             // one[:0] at first
	// No slot of a rate expires before expMono, none of a quota or
	// credits before expWall: lower bounds, exact after a compaction.
	expMono, expWall int64
	one              [1]slot
	long             string // the subject, when it does not fit in short
	// index maps a limit to its slot when there are more than indexAt
	// slots; nil otherwise.
	index map[slotID]int32
	// compactAt is the number of slots at which add drops expired slots.
	compactAt int32
	// credits counts the slots of credits.
	credits int32
}

// shortSubject is the longest subject an entry holds in itself, and
// longSubject the size of an entry whose subject is in long.
const shortSubject, longSubject = 24, 0xff

// newEntry returns an entry for subject, holding no slot.
func newEntry(subject string) *entry {
	e := &entry{expMono: math.MaxInt64, expWall: math.MaxInt64}
	if len(subject) <= shortSubject {
		e.size = uint8(copy(e.short[:], subject))
	} else {
		e.size, e.long = longSubject, strings.Clone(subject)
	}
	e.slots = e.one[:0]
	return e
}

// is reports whether e is the entry of subject.
func (e *entry) is(subject string) bool {
	if n := len(subject); n <= shortSubject {
		return int(e.size) == n && string(e.short[:n]) == subject
	}
	return e.size == longSubject && e.long == subject
}

// subject returns the subject of e.
func (e *entry) subject() string {
	if e.size == longSubject {
		return e.long
	}
	return string(e.short[:e.size])
}

// slotID identifies the slot of a limit within its subject's entry.
type slotID struct {
	name, sub string
	kind      limits.Kind
}

// slot is the stored state of one limit of a subject.
//
// For a rate, v is the theoretical arrival time (TAT) in nanoseconds since
// Limiter.base, w the time of the call that wrote it, and exp equals v.
// For a quota or credits, w is the start of
// the current window in Unix nanoseconds, v the amount consumed in it, and
// exp the end of the window in Unix nanoseconds (MaxInt64 for credits
// never refilled). sub is the limit's own Subject.
type slot struct {
	name   string
	kind   limits.Kind
	window limits.Window
	sub    string
	// The rest of the limit the slot was last written for, which
	// limits.ValidateAllow accepted: a call with the same limit need not
	// validate it again (see allowOne).
	count, burst int64
	period       time.Duration
	// interval is the emission interval of that limit, for a rate.
	interval  int64
	v, w, exp int64
}

// validated reports whether lim, which s holds (s.is(lim)), is the limit s
// was last written for, and so a valid one.
func (s *slot) validated(lim *limits.Limit) bool {
	return s.count == lim.Count && s.period == lim.Period && s.burst == lim.Burst && s.window == lim.Window
}

// is reports whether s holds the state of lim.
func (s *slot) is(lim *limits.Limit) bool {
	return s.name == lim.Name && s.kind == lim.Kind && s.sub == lim.Subject
}

// expired reports whether a slot no longer matters: a rate whose TAT has
// passed, or a quota whose window has ended.
func (s *slot) expired(mono, wall int64) bool {
	if s.kind == limits.KindRate {
		return s.exp <= mono
	}
	return s.exp <= wall
}

type shard struct {
	mu      sync.Mutex
	tab     []bucket // the entries, by the subject's hash (see table.go)
	used    int      // entries in tab
	n       int      // slots held
	sweepAt int
	cursor  int      // where evict looks next
	_       [64]byte // keep shards on distinct cache lines
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
		now = fastclock.New().Now // time.Now at one clock read
	}
	n := 1
	for n < maxShards && maxKeys/(2*n) >= minPerShard {
		n *= 2
	}
	l := &Limiter{
		now:       now,
		base:      now(),
		monotonic: opts.Now == nil,
		seed:      maphash.MakeSeed(),
		mask:      uint64(n - 1),
		perShard:  maxKeys / n,
		shards:    make([]shard, n),
	}
	for i := range l.shards {
		l.shards[i].tab = make([]bucket, minTable)
		l.shards[i].sweepAt = minSweep
	}
	return l, nil
}

// InProcess reports true: Allow never waits for anything but its shard's
// mutex, so the middleware calls it without a deadline.
func (l *Limiter) InProcess() bool { return true }

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
	o         gcra.Outcome
	t         int64 // a rate's emission interval; 0 for a count
	fix       bool  // a denied rate whose TAT moved (the clock stepped back): store it anyway
}

// Allow takes cost from every limit in limits for subject; see
// limits.Limiter. It reports an error wrapping apikey.ErrInvalidOptions when
// subject is empty, cost is below 1, a limit is invalid or two limits share
// a name and Subject, and the context's error when ctx is done. A cost
// above a limit's capacity (its burst for a rate, its count for a quota or
// credits) can never be allowed: it is denied with RetryAfter equal to
// Reset, which for a rate is at least one emission interval.
func (l *Limiter) Allow(ctx context.Context, subject string, ls []limits.Limit, cost int64) (res limits.Result, err error) {
	if len(ls) == 1 && subject != "" && cost >= 1 {
		// The limit itself is validated by allowOne, unless it is the one
		// its slot was written for.
		if err := ctx.Err(); err != nil {
			return limits.Result{}, fmt.Errorf("memlimit: %w", err)
		}
		if err := l.allowOne(&res, subject, ls, cost); err != nil {
			return limits.Result{}, fmt.Errorf("memlimit: %w", err)
		}
		return res, nil
	}
	// A few limits are validated under the shard's lock, before anything
	// is decided, unless each is the one its slot was written for; more
	// (or a bad subject or cost) are validated first.
	lazy := subject != "" && cost >= 1 && len(ls) <= inlineLimits
	if !lazy {
		if err := limits.ValidateAllow(subject, ls, cost); err != nil {
			return limits.Result{}, fmt.Errorf("memlimit: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return limits.Result{}, fmt.Errorf("memlimit: %w", err)
	}
	if len(ls) == 0 {
		return limits.Result{Allowed: true}, nil
	}

	t := l.now()
	mono := int64(t.Sub(l.base))
	wall := t.UnixNano()

	var buf [inlineLimits]pending
	pend := buf[:0]
	if len(ls) > inlineLimits {
		pend = make([]pending, 0, len(ls))
	}

	states := limitbuf.States[limits.State](ctx, len(ls)) // the middleware's room, if it lends one

	h := maphash.String(l.seed, subject)
	sh := &l.shards[h&l.mask]
	sh.mu.Lock()
	e := sh.get(h, subject)
	for i := range ls { // each limit's slot, found once
		_, j := e.find(&ls[i])
		pend = append(pend, pending{slot: j})
	}
	if lazy {
		if err := validate(e, subject, ls, cost, pend); err != nil {
			sh.mu.Unlock()
			return limits.Result{}, fmt.Errorf("memlimit: %w", err)
		}
	}

	res.States = states
	var best gcra.Outcome
	bi := 0
	for i := range ls {
		var st *slot
		idx := pend[i].slot
		if idx >= 0 {
			st = &e.slots[idx]
		}
		o, p := decide(&ls[i], st, mono, wall, cost)
		p.slot = idx
		pend[i] = p
		if i == 0 || gcra.Tighter(o, best) {
			best, bi = o, i
		}
	}
	allowed := best.Allowed // the tightest denies when any does
	if !allowed {
		for i := range pend {
			if p := &pend[i]; p.fix && p.slot >= 0 {
				e.set(&e.slots[p.slot], p)
			}
		}
	} else {
		added := 0
		for i := range pend {
			if p := &pend[i]; p.slot >= 0 {
				e.set(&e.slots[p.slot], p)
			} else {
				added++
			}
		}
		if added > 0 {
			l.add(sh, h, e, subject, ls, pend, added, mono, wall)
		}
	}
	sh.mu.Unlock()
	for i := range pend {
		o := pend[i].o
		if !allowed {
			o = o.Unspent(cost, pend[i].t)
		}
		res.States[i] = state(o)
	}
	fill(&res, ls, bi, best)
	return res, nil
}

// Peek reports what Allow with a cost of 1 would answer for subject and
// limits, consuming nothing; see limits.Peeker. It reports the errors
// Allow reports. With a single limit, States is nil, as with Allow.
func (l *Limiter) Peek(ctx context.Context, subject string, ls []limits.Limit) (limits.Result, error) {
	if err := limits.ValidateAllow(subject, ls, 1); err != nil {
		return limits.Result{}, fmt.Errorf("memlimit: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return limits.Result{}, fmt.Errorf("memlimit: %w", err)
	}
	if len(ls) == 0 {
		return limits.Result{Allowed: true}, nil
	}
	t := l.now()
	mono, wall := int64(t.Sub(l.base)), t.UnixNano()
	var buf [inlineLimits]pending
	pend := buf[:0]
	h := maphash.String(l.seed, subject)
	sh := &l.shards[h&l.mask]
	sh.mu.Lock()
	e := sh.get(h, subject)
	var best gcra.Outcome
	bi := 0
	for i := range ls {
		st, _ := e.find(&ls[i])
		o, p := decide(&ls[i], st, mono, wall, 1)
		pend = append(pend, p)
		if i == 0 || gcra.Tighter(o, best) {
			best, bi = o, i
		}
	}
	sh.mu.Unlock()
	var res limits.Result
	if len(ls) > 1 {
		res.States = make([]limits.State, len(ls))
		for i := range pend {
			o := pend[i].o
			if !best.Allowed {
				o = o.Unspent(1, pend[i].t)
			}
			res.States[i] = state(o)
		}
	}
	fill(&res, ls, bi, best)
	return res, nil
}

// Debit takes amount from every quota and credits in limits for subject,
// without an admission check, atomically; see limits.Debiter. A negative
// amount refunds, never below what was used in the current window, and a
// balance may fall below zero. Rates are not debited: their state is
// reported as it stands. It reports the errors Peek reports, and an error
// wrapping limits.ErrInvalid for an amount beyond ±(10^14-1).
func (l *Limiter) Debit(ctx context.Context, subject string, ls []limits.Limit, amount int64) (limits.Result, error) {
	if err := limits.ValidateAllow(subject, ls, 1); err != nil {
		return limits.Result{}, fmt.Errorf("memlimit: %w", err)
	}
	if err := gcra.CheckAmount(amount); err != nil {
		return limits.Result{}, fmt.Errorf("memlimit: %w: %w", limits.ErrInvalid, err)
	}
	if err := ctx.Err(); err != nil {
		return limits.Result{}, fmt.Errorf("memlimit: %w", err)
	}
	if len(ls) == 0 {
		return limits.Result{Allowed: true}, nil
	}
	t := l.now()
	mono, wall := int64(t.Sub(l.base)), t.UnixNano()
	pend := make([]pending, len(ls))
	res := limits.Result{States: make([]limits.State, len(ls))}
	var added []limits.Limit
	var addedPend []pending
	h := maphash.String(l.seed, subject)
	sh := &l.shards[h&l.mask]
	sh.mu.Lock()
	e := sh.get(h, subject)
	var best gcra.Outcome
	bi := 0
	for i := range ls {
		lim := &ls[i]
		st, j := e.find(lim)
		var o gcra.Outcome
		if lim.Kind == limits.KindRate {
			o, _ = decide(lim, st, mono, wall, 0) // cost 0: the state as it stands
		} else {
			ws, we := gcra.Window(uint8(lim.Window), wall)
			var used int64
			if st != nil && st.w == ws {
				used = st.v
			}
			used = gcra.Debit(used, amount)
			o = gcra.Outcome{Allowed: true, Remaining: lim.Count - used, Reset: we - wall}
			if lim.Window == limits.Never {
				o.Reset = 0
			}
			p := pending{slot: j, v: used, w: ws, exp: we}
			switch {
			case amount == 0:
			case st != nil:
				e.set(st, &p)
			case used > 0:
				p.slot = -1
				added = append(added, *lim)
				addedPend = append(addedPend, p)
			}
		}
		pend[i].o = o
		if i == 0 || gcra.Tighter(o, best) {
			best, bi = o, i
		}
	}
	if len(added) > 0 {
		l.add(sh, h, e, subject, added, addedPend, len(added), mono, wall)
	}
	sh.mu.Unlock()
	for i := range pend {
		res.States[i] = state(pend[i].o)
	}
	fill(&res, ls, bi, best)
	return res, nil
}

// allowOne is Allow for a single limit, without the bookkeeping that
// deciding several limits together needs. The caller checked subject and
// cost; allowOne validates the limit (before deciding anything) unless its
// slot was last written for the same limit, which was valid then.
func (l *Limiter) allowOne(res *limits.Result, subject string, ls []limits.Limit, cost int64) error {
	lim := &ls[0]
	// A known rate needs only the monotonic clock. Otherwise the time is
	// read in full, under the lock when the rate turns out not to be known.
	var mono, wall int64
	byMono := l.monotonic && lim.Kind == limits.KindRate
	if byMono {
		mono = int64(time.Since(l.base))
	} else {
		t := l.now()
		mono, wall = int64(t.Sub(l.base)), t.UnixNano()
	}
	h := maphash.String(l.seed, subject)
	sh := &l.shards[h&l.mask]
	sh.mu.Lock()
	e := sh.get(h, subject)
	st, _ := e.find(lim)
	if st != nil && lim.Kind == limits.KindRate && st.validated(lim) {
		// The common case, a rate known to its slot, without the
		// bookkeeping of decide: what Rate answers to write is written.
		burst := lim.Burst
		if burst == 0 {
			burst = lim.Count
		}
		o, nt, write := gcra.Rate(st.v, st.w, mono, st.interval, burst, cost)
		if write {
			st.v, st.w, st.exp = nt, mono, nt
			e.expMono = min(e.expMono, nt)
		}
		sh.mu.Unlock()
		fill(res, ls, 0, o)
		return nil
	}
	if byMono {
		t := l.now()
		mono, wall = int64(t.Sub(l.base)), t.UnixNano()
	}
	if st == nil || !st.validated(lim) {
		if err := limits.ValidateAllow(subject, ls, cost); err != nil {
			sh.mu.Unlock()
			return err
		}
		if st != nil { // another limit of the same name: the slot now holds this valid one
			st.count, st.burst, st.period, st.window = lim.Count, lim.Burst, lim.Period, lim.Window
			st.interval = interval(lim)
		}
	}
	o, p := decide(lim, st, mono, wall, cost)
	switch {
	case !o.Allowed:
		if p.fix && st != nil {
			e.set(st, &p)
		}
	case st != nil:
		e.set(st, &p)
	default:
		p.slot = -1
		l.add(sh, h, e, subject, ls, []pending{p}, 1, mono, wall)
	}
	sh.mu.Unlock()
	fill(res, ls, 0, o)
	return nil
}

// validate is limits.ValidateAllow of a call whose subject and cost are
// valid, for limits whose slots in e were written for them: it only checks
// that no two limits share a name and Subject. Otherwise it validates the
// call in full and, when it is valid, has the slots of e hold its limits.
// The slot of ls[i] in e is pend[i].slot (-1 for none). The caller holds
// the shard's lock.
func validate(e *entry, subject string, ls []limits.Limit, cost int64, pend []pending) error {
	known := true
	for i := range ls {
		lim := &ls[i]
		for j := range i {
			if o := &ls[j]; o.Name == lim.Name && o.Subject == lim.Subject {
				return limits.ValidateAllow(subject, ls, cost)
			}
		}
		if j := pend[i].slot; j < 0 || !e.slots[j].validated(lim) {
			known = false
		}
	}
	if known {
		return nil
	}
	if err := limits.ValidateAllow(subject, ls, cost); err != nil {
		return err
	}
	for i := range ls {
		if j := pend[i].slot; j >= 0 {
			lim, st := &ls[i], &e.slots[j]
			st.count, st.burst, st.period, st.window = lim.Count, lim.Burst, lim.Period, lim.Window
			st.interval = interval(lim)
		}
	}
	return nil
}

// find returns the slot of lim in e and its index, or nil and -1.
func (e *entry) find(lim *limits.Limit) (*slot, int) {
	switch {
	case e == nil:
	case e.index != nil:
		if j, ok := e.index[slotID{lim.Name, lim.Subject, lim.Kind}]; ok {
			return &e.slots[j], int(j)
		}
	default:
		for j := range e.slots {
			if s := &e.slots[j]; s.is(lim) {
				return s, j
			}
		}
	}
	return nil, -1
}

// set writes the decision p to s, a slot of e.
func (e *entry) set(s *slot, p *pending) {
	s.v, s.w, s.exp = p.v, p.w, p.exp
	if s.kind == limits.KindRate {
		e.expMono = min(e.expMono, p.exp)
	} else {
		e.expWall = min(e.expWall, p.exp)
	}
}

// decide applies lim to a call of cost given its stored state st.
func decide(lim *limits.Limit, st *slot, mono, wall, cost int64) (gcra.Outcome, pending) {
	if lim.Kind == limits.KindRate {
		var t, burst int64
		tat, seen := mono, int64(gcra.NoState)
		if st != nil && st.validated(lim) { // the interval is the slot's
			t, burst, tat, seen = st.interval, lim.Burst, st.v, st.w
			if burst == 0 {
				burst = lim.Count
			}
		} else {
			t, burst = gcra.GCRA(lim.Count, lim.Period, lim.Burst, time.Nanosecond)
			if st != nil {
				tat, seen = st.v, st.w
			}
		}
		o, nt, write := gcra.Rate(tat, seen, mono, t, burst, cost)
		return o, pending{v: nt, w: mono, exp: nt, o: o, t: t, fix: write && !o.Allowed}
	}
	ws, we := gcra.Window(uint8(lim.Window), wall)
	var used int64
	if st != nil && st.w == ws {
		used = st.v
	}
	reset := we - wall
	if lim.Window == limits.Never {
		reset = 0
	}
	o := gcra.Count(lim.Count, used, cost, reset)
	return o, pending{v: used + cost, w: ws, exp: we, o: o}
}

// interval returns the emission interval of lim in nanoseconds, for a
// rate (0 otherwise).
func interval(lim *limits.Limit) int64 {
	if lim.Kind != limits.KindRate {
		return 0
	}
	t, _ := gcra.GCRA(lim.Count, lim.Period, lim.Burst, time.Nanosecond)
	return t
}

func state(o gcra.Outcome) limits.State {
	return limits.State{Remaining: o.Remaining, Reset: time.Duration(o.Reset), RetryAfter: time.Duration(o.Retry)}
}

// fill sets the headline fields of res from the tightest limit, ls[i].
func fill(res *limits.Result, ls []limits.Limit, i int, o gcra.Outcome) {
	res.Allowed, res.Limit, res.Remaining, res.Reset = o.Allowed, ls[i], o.Remaining, time.Duration(o.Reset)
	if !o.Allowed {
		res.RetryAfter = time.Duration(o.Retry)
	}
}

// add stores the new slots of a call: those of pend with no slot. It drops
// the expired slots of the key id, makes room when the shard is at its cap
// and sweeps expired states when the shard has doubled since the last
// sweep. The caller holds sh.mu and has updated the existing slots, so none
// of the key's slots used by this call is expired.
func (l *Limiter) add(sh *shard, h uint64, e *entry, subject string, ls []limits.Limit, pend []pending, added int, mono, wall int64) {
	if e == nil {
		e = newEntry(subject)
		sh.insert(h, e)
	} else if len(e.slots) <= indexAt || len(e.slots)+added > int(e.compactAt) || sh.n+added > l.perShard {
		sh.n -= e.compact(mono, wall)
	}
	if sh.n+added > l.perShard {
		sh.evict(e, sh.n+added-l.perShard, mono, wall)
	}
	// Only when one subject has more limits than a shard holds, or the
	// shard is full of credits: what does not fit is not counted, except
	// credits, which are always kept.
	room, n := l.perShard-sh.n, 0
	for i := range pend {
		if p := &pend[i]; p.slot < 0 && (room > 0 || ls[i].Kind == limits.KindCredits) {
			lim := &ls[i]
			e.slots = append(e.slots, slot{name: lim.Name, sub: lim.Subject, kind: lim.Kind, window: lim.Window,
				count: lim.Count, burst: lim.Burst, period: lim.Period, interval: p.t})
			e.set(&e.slots[len(e.slots)-1], p)
			if lim.Kind == limits.KindCredits {
				e.credits++
			}
			if e.index != nil {
				e.index[slotID{lim.Name, lim.Subject, lim.Kind}] = int32(len(e.slots) - 1)
			}
			room--
			n++
		}
	}
	added = n
	if e.index == nil && len(e.slots) > indexAt {
		e.reindex()
	}
	if len(e.slots) == 0 {
		sh.remove(h, e)
	}
	sh.n += added
	if sh.n >= sh.sweepAt {
		for i := 0; i < len(sh.tab); i++ {
			e := sh.tab[i].e
			if e == nil {
				continue
			}
			if sh.n -= e.compact(mono, wall); len(e.slots) == 0 {
				sh.removeAt(i)
				i-- // another entry may have moved to i
			}
		}
		sh.shrink()
		sh.sweepAt = max(minSweep, 2*sh.n)
	}
}

// compact drops the expired slots of e and returns how many it dropped.
// It reads the slots only when one may have expired.
func (e *entry) compact(mono, wall int64) int {
	e.compactAt = int32(max(indexAt, 2*len(e.slots)))
	if e.expMono > mono && e.expWall > wall {
		return 0
	}
	kept := e.slots[:0]
	e.expMono, e.expWall, e.credits = math.MaxInt64, math.MaxInt64, 0
	for _, s := range e.slots {
		if s.expired(mono, wall) {
			continue
		}
		kept = append(kept, s)
		switch s.kind {
		case limits.KindRate:
			e.expMono = min(e.expMono, s.exp)
		case limits.KindCredits:
			e.credits++
			fallthrough
		default:
			e.expWall = min(e.expWall, s.exp)
		}
	}
	n := len(e.slots) - len(kept)
	clear(e.slots[len(kept):])
	e.slots = kept
	e.compactAt = int32(max(indexAt, 2*len(kept)))
	if n > 0 {
		e.reindex()
	}
	return n
}

// reindex rebuilds the index of e's slots, or drops it when e holds few.
func (e *entry) reindex() {
	if len(e.slots) <= indexAt {
		e.index = nil
		return
	}
	e.index = make(map[slotID]int32, len(e.slots))
	for j := range e.slots {
		s := &e.slots[j]
		e.index[slotID{s.name, s.sub, s.kind}] = int32(j)
	}
}

// evict frees at least need slots of subjects other than own's, when the
// shard holds that many. It inspects up to evictSample entries at a time,
// drops their expired slots, and when that frees nothing drops one entry
// whole, never one holding credits.
func (sh *shard) evict(own *entry, need int, mono, wall int64) {
	for need > 0 {
		freed, seen := 0, 0
		var victim *entry
		var victimH uint64
		var next int
		// Each scan goes on from where the last one stopped, so that
		// successive evictions look at different subjects.
		k := 0
		for ; k < len(sh.tab) && seen < evictSample; k++ {
			i := (sh.cursor + k) & (len(sh.tab) - 1)
			b := sh.tab[i]
			if b.e == nil || b.e == own {
				continue
			}
			seen++
			freed += b.e.compact(mono, wall)
			if len(b.e.slots) == 0 {
				sh.removeAt(i)
				k-- // another entry may have moved to i
			} else if victim == nil && b.e.credits == 0 {
				victim, victimH, next = b.e, b.h, i+1
			}
		}
		if freed == 0 {
			if victim == nil {
				return // nothing but own's states and credits
			}
			freed = len(victim.slots)
			sh.remove(victimH, victim)
			sh.cursor = next // the next victim is another subject
		} else {
			sh.cursor += k
		}
		sh.n -= freed
		need -= freed
	}
}
