package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/outbox"
	"github.com/gokeys/apikey/webhook"
)

// runDeliveryTests delivers a Manager's events with webhook.Dispatcher
// through what must lose none of them: a crash between the change and the
// delivery, a receiver down for an hour, two instances delivering at once
// to a receiver that fails, is slow and restarts, and an instance killed
// in the middle of an attempt. Each webhook id must be acknowledged once.
func runDeliveryTests(t *testing.T, newStore func(t *testing.T) apikey.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, apikey.Store, outbox.Store)
	}{
		{"DeliveryAfterACrashBetweenTheChangeAndTheDelivery", testDeliveryAfterCrash},
		{"DeliveryToAReceiverDownForAnHour", testDeliveryReceiverDown},
		{"DeliveryByTwoInstancesAtOnce", testDeliveryTwoInstances},
		{"DeliveryAfterAnInstanceIsKilledMidAttempt", testDeliveryKilledMidAttempt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			tc.fn(t, s, outboxStore(t, s))
		})
	}
}

// secret signs the test deliveries.
const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// receiver is a webhook endpoint that verifies every request and counts,
// per webhook id, the requests and the acknowledgements (2xx answers
// written to a client still waiting), and notes two attempts of one id at
// once.
type receiver struct {
	t      *testing.T
	v      *webhook.Verifier
	behave func(id string, n int) (status int, delay time.Duration) // n: the request's number, from 1

	mu       sync.Mutex
	srv      *httptest.Server
	gen      int // counts stops: an answer across one acknowledged nothing
	addr     string
	requests int
	got      map[string]int
	acks     map[string]int
	inflight map[string]int
	overlaps []string
	bad      int
}

// newReceiver starts a receiver on a fresh port, verifying with now.
func newReceiver(t *testing.T, now func() time.Time, behave func(id string, n int) (int, time.Duration)) *receiver {
	v, err := webhook.NewVerifier([]string{secret}, webhook.VerifierOptions{Now: now})
	require.NoError(t, err)
	r := &receiver{t: t, v: v, behave: behave, got: map[string]int{}, acks: map[string]int{}, inflight: map[string]int{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r.addr = l.Addr().String()
	r.serve(l)
	t.Cleanup(r.stop)
	return r
}

func (r *receiver) url() string { return "http://" + r.addr + "/hooks" }

func (r *receiver) serve(l net.Listener) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(r.handle))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
}

// stop takes the receiver down, as a restart does: the requests under
// way are answered, then connections are refused.
func (r *receiver) stop() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.gen++
	r.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// restart brings the receiver up again on its address.
func (r *receiver) restart() {
	var l net.Listener
	var err error
	for range 100 { // the port may take a moment to be free again
		if l, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(r.t, err)
	r.serve(l)
}

func (r *receiver) handle(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, outbox.MaxPayload+1))
	if err != nil {
		return
	}
	if err := r.v.Verify(req.Header, body); err != nil {
		r.mu.Lock()
		r.bad++
		r.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	id := req.Header.Get(webhook.HeaderID)
	r.mu.Lock()
	gen := r.gen
	r.requests++
	n := r.requests
	r.got[id]++
	r.inflight[id]++
	if r.inflight[id] > 1 {
		r.overlaps = append(r.overlaps, id)
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight[id]--
		r.mu.Unlock()
	}()
	status, delay := r.behave(id, n)
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-req.Context().Done(): // the sender went away: nothing acknowledged
			return
		}
	}
	// An acknowledgement is a 2xx that went out on the connection: a
	// receiver taken down as it answers (a restart) acknowledged nothing.
	// The answer is flushed under the lock that stop takes before it
	// closes the connections, so it either went out before them or is not
	// counted. A sender that reads the answer and then closes its
	// connection did get it: the request's context decides nothing.
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != gen {
		panic(http.ErrAbortHandler) // no answer at all, not net/http's implicit 200
	}
	w.WriteHeader(status)
	if status >= 200 && status <= 299 && http.NewResponseController(w).Flush() == nil {
		r.acks[id]++
	}
}

// check asserts that every id of want was acknowledged exactly once, none
// other was, no two attempts of one id overlapped and every signature
// verified.
func (r *receiver) check(t *testing.T, want []string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range want {
		assert.Equal(t, 1, r.acks[id], "webhook %s acknowledged %d times", id, r.acks[id])
	}
	assert.Len(t, r.acks, len(want), "acknowledged ids")
	assert.Empty(t, r.overlaps, "two attempts of one webhook at once")
	assert.Zero(t, r.bad, "requests with a bad signature")
}

// issueMany issues n keys through m (one event each, no expiry), and
// returns the webhook ids written.
func issueMany(t *testing.T, m *apikey.Manager, os outbox.Store, n int) []string {
	t.Helper()
	for i := range n {
		_, _, err := m.Issue(ctx(t), apikey.IssueParams{Owner: fmt.Sprintf("owner-%d", i%3)})
		require.NoError(t, err)
	}
	return pendingIDs(t, os)
}

// pendingIDs returns the ids of the pending events, sorted.
func pendingIDs(t *testing.T, os outbox.Store) []string {
	t.Helper()
	var ids []string
	for id, byEP := range allEvents(t, os) {
		if byEP[outbox.DefaultEndpoint].State == outbox.Pending {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// assertDelivered asserts that every event of ids is delivered.
func assertDelivered(t *testing.T, os outbox.Store, ids []string) {
	t.Helper()
	all := allEvents(t, os)
	for _, id := range ids {
		assert.Equal(t, outbox.Delivered, all[id][outbox.DefaultEndpoint].State, "event %s", id)
	}
}

// dispatcher returns a Dispatcher of os to url.
func dispatcher(t *testing.T, os outbox.Store, url string, o webhook.Options) *webhook.Dispatcher {
	t.Helper()
	o.Endpoints = []webhook.Endpoint{{URL: url, Secrets: []string{"whsec_" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", secret}, Concurrency: 4}}
	d, err := webhook.New(os, o)
	require.NoError(t, err)
	return d
}

// pollUntil polls d, advancing clk to the next due event after each
// round, until nothing is pending or the clock passed until.
func pollUntil(t *testing.T, d *webhook.Dispatcher, os outbox.Store, clk *clock, until time.Time) {
	t.Helper()
	for clk.Now().Before(until) {
		n, err := d.Poll(ctx(t))
		require.NoError(t, err)
		next := time.Time{}
		for _, byEP := range allEvents(t, os) {
			if e := byEP[outbox.DefaultEndpoint]; e.State == outbox.Pending && (next.IsZero() || e.DueAt.Before(next)) {
				next = e.DueAt
			}
		}
		if next.IsZero() {
			return
		}
		now := clk.Now()
		if !next.After(now) {
			require.NotZero(t, n, "an event is due at %v and no attempt was made", next)
			continue
		}
		clk.Advance(next.Sub(now))
	}
}

func testDeliveryAfterCrash(t *testing.T, s apikey.Store, os outbox.Store) {
	clk := newClock(t0)
	// The first instance makes its changes and dies before any delivery:
	// it never runs a dispatcher and is never closed.
	crashed := eventManager(t, s, clk.Now, outbox.Policy{ExpiringLead: -1})
	ids := issueMany(t, crashed, os, 8)
	_, k, err := crashed.Issue(ctx(t), apikey.IssueParams{Owner: "owner-x"})
	require.NoError(t, err)
	_, err = crashed.Rotate(ctx(t), k.ID, 0)
	require.NoError(t, err)
	require.NoError(t, crashed.Revoke(ctx(t), k.ID))
	ids = pendingIDs(t, os)
	require.Len(t, ids, 11, "8 created, then created, rotated, revoked")

	// Another instance, started later, delivers them all.
	rcv := newReceiver(t, clk.Now, func(string, int) (int, time.Duration) { return http.StatusNoContent, 0 })
	d := dispatcher(t, os, rcv.url(), webhook.Options{Now: clk.Now})
	// An hour of virtual time: an attempt that a loaded machine makes time
	// out is retried (1 s, 5 s, 30 s, 5 min, ...), as in production.
	pollUntil(t, d, os, clk, t0.Add(time.Hour))
	assertDelivered(t, os, ids)
	rcv.check(t, ids)
	assert.Equal(t, uint64(len(ids)), d.Stats().Delivered)
}

func testDeliveryReceiverDown(t *testing.T, s apikey.Store, os outbox.Store) {
	clk := newClock(t0)
	m := eventManager(t, s, clk.Now, outbox.Policy{ExpiringLead: -1})
	ids := issueMany(t, m, os, 5)
	up := t0.Add(time.Hour)
	var firstRetry atomic.Int64
	rcv := newReceiver(t, clk.Now, func(string, int) (int, time.Duration) {
		if clk.Now().Before(up) {
			return http.StatusServiceUnavailable, 0
		}
		return http.StatusOK, 0
	})
	d := dispatcher(t, os, rcv.url(), webhook.Options{Now: clk.Now})
	_, err := d.Poll(ctx(t))
	require.NoError(t, err)
	for _, byEP := range allEvents(t, os) {
		e := byEP[outbox.DefaultEndpoint]
		require.Equal(t, outbox.Pending, e.State)
		assert.Equal(t, "503 Service Unavailable", e.LastError)
		wait := e.DueAt.Sub(t0)
		firstRetry.Store(int64(wait))
		assert.True(t, wait >= 800*time.Millisecond && wait <= 1200*time.Millisecond, "the first retry within seconds: %v", wait)
	}
	pollUntil(t, d, os, clk, t0.Add(12*time.Hour))
	assertDelivered(t, os, ids)
	rcv.check(t, ids)
	for _, id := range ids {
		e := allEvents(t, os)[id][outbox.DefaultEndpoint]
		assert.False(t, e.AttemptedAt.Before(up), "delivered once the receiver is back: %v", e.AttemptedAt)
		// 1 s, 5 s, 30 s, 5 min, 30 min, 2 h (each ±20%): the seventh
		// attempt, about 2h36 after the first, is the first after the hour.
		assert.Equal(t, 7, e.Attempts, "attempts of %s", id)
		assert.Less(t, e.AttemptedAt.Sub(t0), 4*time.Hour)
	}
	st := d.Stats()
	assert.Equal(t, uint64(len(ids)), st.Delivered)
	assert.Zero(t, st.Dead)
	assert.Equal(t, uint64(6*len(ids)), st.Failed)
}

func testDeliveryTwoInstances(t *testing.T, s apikey.Store, os outbox.Store) {
	const events = 30
	m := eventManager(t, s, time.Now, outbox.Policy{ExpiringLead: -1})
	var rcv *receiver
	var restarts sync.Once
	rcv = newReceiver(t, time.Now, func(id string, n int) (int, time.Duration) {
		switch {
		case n == events/2: // the receiver restarts: down for 300 ms
			restarts.Do(func() {
				go func() {
					rcv.stop()
					time.Sleep(300 * time.Millisecond)
					rcv.restart()
				}()
			})
			return http.StatusOK, 0
		case rand.IntN(10) < 3:
			return http.StatusInternalServerError, 0
		case rand.IntN(10) < 2:
			return http.StatusOK, time.Duration(rand.IntN(150)) * time.Millisecond // slow
		}
		return http.StatusOK, 0
	})
	o := webhook.Options{Schedule: []time.Duration{20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond},
		MaxAttempts: 1000, Poll: 10 * time.Millisecond, Timeout: 2 * time.Second, Lease: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	a, b := dispatcher(t, os, rcv.url(), o), dispatcher(t, os, rcv.url(), o)
	run, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = a.Run(run) })
	wg.Go(func() { _ = b.Run(run) })
	// The changes happen while both deliver.
	var want []string
	for i := range events {
		_, k, err := m.Issue(ctx(t), apikey.IssueParams{Owner: fmt.Sprintf("owner-%d", i%4)})
		require.NoError(t, err)
		want = append(want, eventIDOf(t, os, outbox.KeyCreated, k.ID))
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(pendingIDs(t, os)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	wg.Wait()
	assertDelivered(t, os, want)
	rcv.check(t, want)
	sa, sb := a.Stats(), b.Stats()
	assert.Equal(t, uint64(events), sa.Delivered+sb.Delivered, "each event recorded delivered once: %+v %+v", sa, sb)
	assert.Zero(t, sa.Lost+sb.Lost, "no lease was lost")
	t.Logf("instance a: %+v; instance b: %+v", sa, sb)
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("outbox")) {
		w.t.Log(string(p))
	}
	return len(p), nil
}

// eventIDOf returns the id of the event of type typ about key id.
func eventIDOf(t *testing.T, os outbox.Store, typ, id string) string {
	t.Helper()
	for _, e := range eventsOfType(t, os, outbox.DefaultEndpoint, typ) {
		if e.P.Data.Key != nil && e.P.Data.Key.ID == id {
			return e.ID
		}
	}
	t.Fatalf("no %s event of key %s", typ, id)
	return ""
}

// killable is an outbox whose instance can be killed: every call fails
// afterwards, as if the process were gone, so it records nothing, not
// even the release of its claims.
type killable struct {
	outbox.Store
	dead atomic.Bool
}

var errKilled = errors.New("the instance was killed")

func (k *killable) Claim(ctx context.Context, endpoint, claim string, now, until time.Time, limit int) ([]outbox.Event, error) {
	if k.dead.Load() {
		return nil, errKilled
	}
	return k.Store.Claim(ctx, endpoint, claim, now, until, limit)
}

func (k *killable) Settle(ctx context.Context, r outbox.Result) error {
	if k.dead.Load() {
		return errKilled
	}
	return k.Store.Settle(ctx, r)
}

func (k *killable) PurgeEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	if k.dead.Load() {
		return 0, errKilled
	}
	return k.Store.PurgeEvents(ctx, before, limit)
}

func testDeliveryKilledMidAttempt(t *testing.T, s apikey.Store, os outbox.Store) {
	clk := newClock(t0)
	m := eventManager(t, s, clk.Now, outbox.Policy{ExpiringLead: -1})
	ids := issueMany(t, m, os, 1)
	require.Len(t, ids, 1)
	inAttempt := make(chan struct{})
	var once sync.Once
	rcv := newReceiver(t, clk.Now, func(string, int) (int, time.Duration) {
		slow := time.Duration(0)
		once.Do(func() { // the first attempt hangs until its sender dies
			close(inAttempt)
			slow = time.Hour
		})
		return http.StatusOK, slow
	})
	lease := time.Minute
	victim := &killable{Store: os}
	a := dispatcher(t, victim, rcv.url(), webhook.Options{Now: clk.Now, Lease: lease})
	run, kill := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(run); close(done) }()
	select {
	case <-inAttempt:
	case <-time.After(30 * time.Second):
		t.Fatal("no attempt reached the receiver")
	}
	victim.dead.Store(true) // the process dies: its store calls fail from now on
	kill()
	<-done

	e := allEvents(t, os)[ids[0]][outbox.DefaultEndpoint]
	require.Equal(t, outbox.Pending, e.State, "the dead instance recorded nothing")
	require.NotEmpty(t, e.Claim, "its claim holds until its lease ends")

	b := dispatcher(t, os, rcv.url(), webhook.Options{Now: clk.Now, Lease: lease})
	n, err := b.Poll(ctx(t))
	require.NoError(t, err)
	assert.Zero(t, n, "no other instance delivers while the lease holds")
	clk.Advance(lease)
	n, err = b.Poll(ctx(t))
	require.NoError(t, err)
	assert.Equal(t, 1, n, "another instance delivers once the lease ended")
	assertDelivered(t, os, ids)
	rcv.check(t, ids)
	assert.Equal(t, 2, allEvents(t, os)[ids[0]][outbox.DefaultEndpoint].Attempts, "the killed attempt counts")
}
