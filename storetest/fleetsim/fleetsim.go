// Package fleetsim simulates a fleet of Managers over one store in
// virtual time, to count the last-used writes the fleet makes: each
// instance verifies every key once per flush interval and then flushes,
// at its own phase of the interval, as independent instances whose
// flush tickers are spread over the interval do.
//
// Time is virtual (each instance's Options.Now), so that minutes of
// traffic run in seconds; flushes are real, through the Manager's own
// flush loop and the store's real writes. The instances of one interval
// run one after the other, in the order of their phases, which is the
// order in which their writes would reach the database; concurrent
// flushes are the concern of storetest's races.
package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gokeys/apikey"
)

// Config describes a simulation.
type Config struct {
	// Store is shared by every instance; Tokens are keys issued in it.
	Store  apikey.Store
	Tokens []string
	// Instances is the number of Managers: 16 when 0.
	Instances int
	// Options are each instance's; Run sets Now, LastUsedInterval,
	// Metrics and UsageInterval (off).
	Options apikey.Options
	// Interval is the virtual flush interval: 10 seconds (the default
	// of Options.LastUsedInterval) when 0.
	Interval time.Duration
	// Steps is the number of intervals Run simulates.
	Steps int
	// Start is the virtual time of the first interval; it must be
	// after the keys' creation.
	Start time.Time
}

// Result counts what the fleet did.
type Result struct {
	// Verified counts verifications, all successful.
	Verified int
	// Recorded counts the uses the instances handed to their last-used
	// recorders (Stats.UsesRecorded).
	Recorded uint64
	// Sent counts the keys the flushes gave the store (Metrics.Flushed).
	Sent uint64
	// Written counts the rows the store reported written
	// (Stats.UsesWritten).
	Written uint64
	// Calls counts the store calls of the flushes (one per batch).
	Calls uint64
	// Writing is the time the store calls took (Metrics.Flushed).
	Writing time.Duration
	// Flushing is the real time spent waiting for the flushes.
	Flushing time.Duration
	// End is the virtual time after the last interval.
	End time.Time
}

// instance is one Manager with its clock and the flush reports it heard.
type instance struct {
	m       *apikey.Manager
	now     atomic.Int64 // Unix nanoseconds of the virtual clock
	mu      sync.Mutex
	reports int // UsesQueued calls
	queued  int // the last one's queue
	sent    uint64
	calls   uint64
	writing time.Duration
	failed  error
	heard   chan struct{} // signalled on each report
}

func (in *instance) Now() time.Time { return time.Unix(0, in.now.Load()).UTC() }

// Verified, Limited and LimiterFailed implement apikey.Metrics.
func (in *instance) Verified(string, string, time.Duration) {}
func (in *instance) Limited(string, string)                 {}
func (in *instance) LimiterFailed(string, bool)             {}

// Flushed implements apikey.Metrics.
func (in *instance) Flushed(keys int, d time.Duration, err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.calls++
	in.writing += d
	if err != nil {
		in.failed = err
		return
	}
	in.sent += uint64(keys)
}

// UsesQueued implements apikey.Metrics.
func (in *instance) UsesQueued(queued, _ int) {
	in.mu.Lock()
	in.reports++
	in.queued = queued
	in.mu.Unlock()
	select {
	case in.heard <- struct{}{}:
	default:
	}
}

// waitFlushed waits until a flush that started after the call wrote
// every pending use: the second report after the call, with an empty
// queue.
func (in *instance) waitFlushed(ctx context.Context) error {
	in.mu.Lock()
	mark := in.reports
	in.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-in.heard:
		}
		in.mu.Lock()
		done, queued, failed := in.reports >= mark+2, in.queued, in.failed
		in.mu.Unlock()
		switch {
		case failed != nil:
			return fmt.Errorf("fleetsim: flush failed: %w", failed)
		case done && queued == 0:
			return nil
		}
	}
}

// Fleet is a simulation in progress: its Managers keep their caches and
// queues from one Run to the next.
type Fleet struct {
	c        Config
	ins      []*instance
	step     int
	verified int
	flushing time.Duration
}

// New starts the Managers of a fleet; c.Steps is not used.
func New(c Config) (*Fleet, error) {
	if c.Instances == 0 {
		c.Instances = 16
	}
	if c.Interval == 0 {
		c.Interval = 10 * time.Second
	}
	if c.Store == nil || len(c.Tokens) == 0 || c.Start.IsZero() {
		return nil, errors.New("fleetsim: a store, tokens and a start are needed")
	}
	f := &Fleet{c: c}
	for range c.Instances {
		in := &instance{heard: make(chan struct{}, 1)}
		in.now.Store(c.Start.UnixNano())
		o := c.Options
		o.Now, o.Metrics = in.Now, in
		o.LastUsedInterval, o.UsageInterval = 2*time.Millisecond, -1
		m, err := apikey.New(c.Store, o)
		if err != nil {
			f.Close()
			return nil, err
		}
		in.m = m
		f.ins = append(f.ins, in)
	}
	return f, nil
}

// Close closes the Managers.
func (f *Fleet) Close() {
	for _, in := range f.ins {
		in.m.Close(context.Background())
	}
}

// Run simulates steps more flush intervals and returns what the fleet
// did since New.
func (f *Fleet) Run(ctx context.Context, steps int) (Result, error) {
	c := f.c
	for range steps {
		for i, in := range f.ins {
			phase := time.Duration(i) * c.Interval / time.Duration(c.Instances)
			in.now.Store(c.Start.Add(time.Duration(f.step)*c.Interval + phase).UnixNano())
			if err := verifyAll(ctx, in.m, c.Tokens); err != nil {
				return Result{}, fmt.Errorf("fleetsim: instance %d, step %d: %w", i, f.step, err)
			}
			f.verified += len(c.Tokens)
			start := time.Now()
			if err := in.waitFlushed(ctx); err != nil {
				return Result{}, err
			}
			f.flushing += time.Since(start)
		}
		f.step++
	}
	r := Result{Verified: f.verified, Flushing: f.flushing, End: c.Start.Add(time.Duration(f.step) * c.Interval)}
	for _, in := range f.ins {
		st := in.m.Stats()
		r.Recorded += st.UsesRecorded
		r.Written += st.UsesWritten
		in.mu.Lock()
		r.Sent += in.sent
		r.Calls += in.calls
		r.Writing += in.writing
		in.mu.Unlock()
	}
	return r, nil
}

// Sub returns what r counts beyond earlier, a Result of the same Fleet.
func (r Result) Sub(earlier Result) Result {
	return Result{
		Verified: r.Verified - earlier.Verified, Recorded: r.Recorded - earlier.Recorded,
		Sent: r.Sent - earlier.Sent, Written: r.Written - earlier.Written, Calls: r.Calls - earlier.Calls,
		Writing: r.Writing - earlier.Writing, Flushing: r.Flushing - earlier.Flushing, End: r.End,
	}
}

// Run simulates c.Steps flush intervals of a new fleet and closes it.
func Run(ctx context.Context, c Config) (Result, error) {
	if c.Steps <= 0 {
		return Result{}, errors.New("fleetsim: no steps")
	}
	f, err := New(c)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	return f.Run(ctx, c.Steps)
}

// verifyAll verifies every token with m, from as many goroutines as
// there are processors.
func verifyAll(ctx context.Context, m *apikey.Manager, tokens []string) error {
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(tokens); i += workers {
				if _, err := m.Verify(ctx, tokens[i]); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
