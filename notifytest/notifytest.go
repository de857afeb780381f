// Package notifytest is the conformance suite of apikey.Notifier and a
// measurement of how fast a revocation crosses a fleet. A Notifier
// implementation calls both from its tests, as below.
//
//	func TestConformance(t *testing.T) {
//		notifytest.Run(t, func(t *testing.T, n int) []apikey.Notifier {
//			return n notifiers of one fresh channel, each as if in its own process
//		})
//	}
//
//	func TestPropagation(t *testing.T) {
//		ns := newFleet(t, 2)
//		r := notifytest.Propagation(t, ns[0], ns[1], notifytest.Trials, notifytest.Bound)
//		t.Log(r)
//	}
package notifytest

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// Defaults of Propagation. Every one of Trials revocations must be refused
// by the other instance within Bound.
const (
	Trials = 100
	Bound  = time.Second
)

// wait is how long the suite waits for a message that must arrive.
const wait = 5 * time.Second

// Run runs the conformance suite. newFleet must return n notifiers of one
// fresh channel (no other test publishes on it), each with connections of
// its own as if in its own process. Register their cleanup with t.Cleanup.
func Run(t *testing.T, newFleet func(t *testing.T, n int) []apikey.Notifier) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, func(*testing.T, int) []apikey.Notifier)
	}{
		{"SubscribeCallsChangedWithEmptyIDOnceSubscribed", testSubscribed},
		{"PublishReachesEverySubscriberIncludingThePublisher", testReach},
		{"EmptyIDIsDeliveredAsEmpty", testEmpty},
		{"ChangedIsNeverCalledConcurrently", testSerial},
		{"SubscribeReturnsCtxErrWhenDone", testDone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newFleet) })
	}
}

// subscriber records what one Subscribe call receives.
type subscriber struct {
	mu       sync.Mutex
	ids      []string
	got      chan string
	inside   atomic.Bool
	overlaps atomic.Int64
	done     chan error
	cancel   context.CancelFunc
}

// subscribe runs n.Subscribe in a goroutine until the test ends and waits
// for its first changed("").
func subscribe(t *testing.T, n apikey.Notifier) *subscriber {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscriber{got: make(chan string, 4096), done: make(chan error, 1), cancel: cancel}
	go func() {
		s.done <- n.Subscribe(ctx, func(id string) {
			if s.inside.Swap(true) {
				s.overlaps.Add(1)
			}
			s.mu.Lock()
			s.ids = append(s.ids, id)
			s.mu.Unlock()
			select {
			case s.got <- id:
			default:
			}
			time.Sleep(10 * time.Microsecond) // widen the window for overlaps
			s.inside.Store(false)
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(wait):
			t.Errorf("Subscribe did not return within %v of its context's end", wait)
		}
	})
	s.expect(t, "")
	return s
}

// expect waits for id, skipping others.
func (s *subscriber) expect(t *testing.T, id string) {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case got := <-s.got:
			if got == id {
				return
			}
		case <-timeout:
			t.Fatalf("changed(%q) not called within %v", id, wait)
		}
	}
}

// expectAll waits until every one of ids has been received.
func (s *subscriber) expectAll(t *testing.T, ids []string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		s.mu.Lock()
		missing := 0
		for _, id := range ids {
			if !slices.Contains(s.ids, id) {
				missing++
			}
		}
		s.mu.Unlock()
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d ids not received within %v", missing, len(ids), wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testSubscribed(t *testing.T, newFleet func(*testing.T, int) []apikey.Notifier) {
	s := subscribe(t, newFleet(t, 1)[0])
	s.mu.Lock()
	defer s.mu.Unlock()
	assert.Equal(t, "", s.ids[0], "the first call announces the subscription")
}

func testReach(t *testing.T, newFleet func(*testing.T, int) []apikey.Notifier) {
	ns := newFleet(t, 2)
	a, b := subscribe(t, ns[0]), subscribe(t, ns[1])
	id := apikey.NewID()
	require.NoError(t, ns[0].Publish(context.Background(), id))
	a.expect(t, id)
	b.expect(t, id)
}

func testEmpty(t *testing.T, newFleet func(*testing.T, int) []apikey.Notifier) {
	ns := newFleet(t, 2)
	b := subscribe(t, ns[1])
	marker := apikey.NewID()
	require.NoError(t, ns[0].Publish(context.Background(), ""))
	require.NoError(t, ns[0].Publish(context.Background(), marker))
	b.expect(t, marker)
	b.mu.Lock()
	defer b.mu.Unlock()
	rest := b.ids[1:] // after the subscription's own ""
	empty, mark := slices.Index(rest, ""), slices.Index(rest, marker)
	assert.True(t, empty >= 0 && empty < mark, "a published \"\" arrives as \"\": got %q", b.ids)
}

func testSerial(t *testing.T, newFleet func(*testing.T, int) []apikey.Notifier) {
	ns := newFleet(t, 3)
	s := subscribe(t, ns[0])
	const per = 100
	ids := make([][]string, 2)
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Go(func() {
			for range per {
				id := apikey.NewID()
				ids[p] = append(ids[p], id)
				assert.NoError(t, ns[1+p].Publish(context.Background(), id))
			}
		})
	}
	wg.Wait()
	s.expectAll(t, append(ids[0], ids[1]...))
	assert.Zero(t, s.overlaps.Load(), "changed was called concurrently with itself")
}

func testDone(t *testing.T, newFleet func(*testing.T, int) []apikey.Notifier) {
	n := newFleet(t, 1)[0]
	ctx, cancel := context.WithCancel(context.Background())
	subscribed := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- n.Subscribe(ctx, func(string) {
			select {
			case subscribed <- struct{}{}:
			default:
			}
		})
	}()
	select {
	case <-subscribed:
	case <-time.After(wait):
		t.Fatal("not subscribed")
	}
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(wait):
		t.Fatalf("Subscribe did not return within %v", wait)
	}
}

// Result is the outcome of Propagation. It holds the delay from the start
// of Revoke on one instance to the first refusal on the other, per trial.
type Result struct {
	Delays        []time.Duration // in trial order
	P50, P99, Max time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("%d trials: p50 %v, p99 %v, max %v", len(r.Delays), r.P50, r.P99, r.Max)
}

// Propagation runs two Managers over one store, A with notifier a and B with
// notifier b, each driven from a goroutine of its own. Their cache TTL is an
// hour, so that only a notification can explain a refusal. In each of trials
// rounds A issues a key, B verifies it (caching it), A revokes it and B
// verifies until it is refused. It fails the test if any refusal took longer
// than bound, and returns the delays.
func Propagation(t *testing.T, a, b apikey.Notifier, trials int, bound time.Duration) Result {
	t.Helper()
	store := memstore.New()
	opts := func(n apikey.Notifier) apikey.Options {
		return apikey.Options{Notifier: n, CacheTTL: time.Hour, LastUsedInterval: -1}
	}
	ma, err := apikey.New(store, opts(a))
	require.NoError(t, err)
	mb, err := apikey.New(store, opts(b))
	require.NoError(t, err)
	t.Cleanup(func() {
		ma.Close(context.Background())
		mb.Close(context.Background())
	})
	return Between(t, ma, mb, trials, bound)
}

// Between is Propagation between two Managers built by the caller (over
// one store, each with its own Notifier and a long cache TTL).
func Between(t *testing.T, ma, mb *apikey.Manager, trials int, bound time.Duration) Result {
	t.Helper()
	ctx := context.Background()
	type trial struct {
		token string
		start time.Time
	}
	cached := make(chan string)
	revoked := make(chan trial)
	refused := make(chan time.Duration)
	bErr := make(chan error, 1)
	go func() { // B
		for {
			token, ok := <-cached
			if !ok {
				return
			}
			if _, err := mb.Verify(ctx, token); err != nil {
				bErr <- fmt.Errorf("B cannot verify a fresh key: %w", err)
				return
			}
			cached <- token
			tr := <-revoked
			for {
				_, err := mb.Verify(ctx, tr.token)
				if err != nil {
					if !assert.ErrorIs(t, err, apikey.ErrRevoked) {
						bErr <- err
						return
					}
					refused <- time.Since(tr.start)
					break
				}
				if time.Since(tr.start) > 2*bound+wait {
					bErr <- fmt.Errorf("B still accepts the key %v after its revocation", time.Since(tr.start))
					return
				}
				time.Sleep(50 * time.Microsecond)
			}
		}
	}()
	defer close(cached)
	var r Result
	for i := range trials {
		token, k, err := ma.Issue(ctx, apikey.IssueParams{Owner: "propagation"})
		require.NoError(t, err)
		cached <- token
		select {
		case <-cached:
		case err := <-bErr:
			t.Fatalf("trial %d: %v", i, err)
		}
		start := time.Now()
		require.NoError(t, ma.Revoke(ctx, k.ID))
		revoked <- trial{token, start}
		select {
		case d := <-refused:
			r.Delays = append(r.Delays, d)
		case err := <-bErr:
			t.Fatalf("trial %d: %v", i, err)
		}
	}
	r.summarize()
	late := 0
	for _, d := range r.Delays {
		if d > bound {
			late++
		}
	}
	assert.Zero(t, late, "revocations refused later than %v: %d of %d (%v)", bound, late, trials, r)
	return r
}

func (r *Result) summarize() {
	if len(r.Delays) == 0 {
		return
	}
	s := slices.Clone(r.Delays)
	slices.Sort(s)
	at := func(q float64) time.Duration { // nearest rank
		return s[max(0, int(math.Ceil(q*float64(len(s))))-1)]
	}
	r.P50, r.P99, r.Max = at(0.50), at(0.99), s[len(s)-1]
}
