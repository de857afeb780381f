package apikey

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the circuit breaker over the Limiter.
const (
	// defaultBreakerFailures is how many consecutive Limiter failures
	// open the circuit breaker.
	defaultBreakerFailures = 5
	// defaultBreakerCoolDown is how long the circuit stays open before a
	// probe.
	defaultBreakerCoolDown = 5 * time.Second
	// breakerSubjects is how many different subjects must fail before the
	// breaker opens.
	breakerSubjects = 3
)

// breaker is a circuit breaker over the Limiter: after threshold
// consecutive failures, seen for at least breakerSubjects different
// subjects (or threshold, if lower), it opens, and admits no call until
// coolDown has passed; then it admits one call at a time (a probe) until
// one succeeds, and a failed probe opens it again. Counting subjects
// keeps one customer whose calls are slow or failing from opening the
// circuit for every other customer: while it is closed, every call is
// admitted, however many of one subject's calls failed.
type breaker struct {
	seed     maphash.Seed
	mu       sync.Mutex // guards subjects and distinct, on failures only
	subjects [breakerSubjects]uint64
	distinct int

	threshold int64 // 0 or less: never opens
	coolDown  int64 // nanoseconds
	now       func() time.Time
	fails     atomic.Int64
	probeAt   atomic.Int64 // 0 while closed; else Unix nanoseconds from which a probe may run
	probing   atomic.Bool
}

// init sets up b: threshold failures open it (5 when 0, never when
// negative), for coolDown (5 seconds when 0) measured with now.
func (b *breaker) init(threshold int, coolDown time.Duration, now func() time.Time) {
	if threshold == 0 {
		threshold = defaultBreakerFailures
	}
	if coolDown == 0 {
		coolDown = defaultBreakerCoolDown
	}
	b.threshold, b.coolDown, b.now, b.seed = int64(threshold), int64(coolDown), now, maphash.MakeSeed()
}

// admit reports whether to call the Limiter.
func (b *breaker) admit() bool {
	at := b.probeAt.Load()
	if at == 0 { // closed
		return true
	}
	if b.now().UnixNano() < at {
		return false
	}
	return b.probing.CompareAndSwap(false, true)
}

// open reports whether the circuit is open (or half open, probing).
func (b *breaker) open() bool { return b.probeAt.Load() != 0 }

// abandon records a call admitted by admit that proved nothing (its
// client went away): a probe may run again.
func (b *breaker) abandon() {
	if b.probing.Load() {
		b.probing.Store(false)
	}
}

// done records the outcome of a call admitted by admit.
func (b *breaker) done(ok bool) {
	if ok {
		if b.fails.Load() != 0 {
			b.fails.Store(0)
		}
		if b.probeAt.Load() != 0 {
			b.probeAt.Store(0) // closed
		}
		if b.probing.Load() {
			b.probing.Store(false)
		}
		return
	}
	b.failed("")
}

// failed records a failed call for subject, admitted by admit.
func (b *breaker) failed(subject string) {
	if b.threshold <= 0 {
		return
	}
	h := maphash.String(b.seed, subject)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fails.Load() == 0 {
		b.distinct = 0
	}
	seen := false
	for _, s := range b.subjects[:b.distinct] {
		seen = seen || s == h
	}
	if !seen && b.distinct < len(b.subjects) {
		b.subjects[b.distinct] = h
		b.distinct++
	}
	// Open, or open again after a failed probe (the count of subjects
	// is kept while failures go on).
	if b.fails.Add(1) >= b.threshold && int64(b.distinct) >= min(breakerSubjects, b.threshold) {
		b.probeAt.Store(max(1, b.now().UnixNano()+b.coolDown))
		b.probing.Store(false)
	}
}
