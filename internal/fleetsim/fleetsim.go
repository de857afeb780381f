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
	// Steps is the number of intervals simulated.
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
	failed  error
	heard   chan struct{} // signalled on each report
}

func (in *instance) Now() time.Time { return time.Unix(0, in.now.Load()).UTC() }

// Verified, Limited and LimiterFailed implement apikey.Metrics.
func (in *instance) Verified(string, string, time.Duration) {}
func (in *instance) Limited(string, string)                 {}
func (in *instance) LimiterFailed(string, bool)             {}

// Flushed implements apikey.Metrics.
func (in *instance) Flushed(keys int, _ time.Duration, err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.calls++
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

// Run simulates c.Steps flush intervals of the fleet and closes its
// Managers.
func Run(ctx context.Context, c Config) (Result, error) {
	if c.Instances == 0 {
		c.Instances = 16
	}
	if c.Interval == 0 {
		c.Interval = 10 * time.Second
	}
	if c.Store == nil || len(c.Tokens) == 0 || c.Steps <= 0 || c.Start.IsZero() {
		return Result{}, errors.New("fleetsim: a store, tokens, steps and a start are needed")
	}
	fleet := make([]*instance, c.Instances)
	for i := range fleet {
		in := &instance{heard: make(chan struct{}, 1)}
		in.now.Store(c.Start.UnixNano())
		o := c.Options
		o.Now, o.Metrics = in.Now, in
		o.LastUsedInterval, o.UsageInterval = 2*time.Millisecond, -1
		m, err := apikey.New(c.Store, o)
		if err != nil {
			return Result{}, err
		}
		in.m = m
		fleet[i] = in
	}
	defer func() {
		for _, in := range fleet {
			in.m.Close(context.Background())
		}
	}()
	var r Result
	for step := range c.Steps {
		for i, in := range fleet {
			phase := time.Duration(i) * c.Interval / time.Duration(c.Instances)
			in.now.Store(c.Start.Add(time.Duration(step)*c.Interval + phase).UnixNano())
			for _, token := range c.Tokens {
				if _, err := in.m.Verify(ctx, token); err != nil {
					return r, fmt.Errorf("fleetsim: instance %d, step %d: %w", i, step, err)
				}
				r.Verified++
			}
			start := time.Now()
			if err := in.waitFlushed(ctx); err != nil {
				return r, err
			}
			r.Flushing += time.Since(start)
		}
	}
	r.End = c.Start.Add(time.Duration(c.Steps) * c.Interval)
	for _, in := range fleet {
		st := in.m.Stats()
		r.Recorded += st.UsesRecorded
		r.Written += st.UsesWritten
		in.mu.Lock()
		r.Sent += in.sent
		r.Calls += in.calls
		in.mu.Unlock()
	}
	return r, nil
}
