package apikey_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/outbox"
)

func TestOutboxOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		store  apikey.Store
		policy outbox.Policy
	}{
		{"StoreWithoutOutbox", newSpy(), outbox.Policy{}},
		{"UnknownType", memstore.New(), outbox.Policy{Types: []string{"key.exploded"}}},
		{"RepeatedEndpoint", memstore.New(), outbox.Policy{Endpoints: []string{"a", "a"}}},
		{"EmptyEndpoint", memstore.New(), outbox.Policy{Endpoints: []string{""}}},
		{"NegativeQueue", memstore.New(), outbox.Policy{Queue: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := apikey.New(tc.store, apikey.Options{Outbox: &tc.policy})
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
		})
	}
}

// countingOutbox is a memstore that counts the appends of request-path
// events (Append calls, not the writes of changes).
type countingOutbox struct {
	*memstore.Store
	appends atomic.Int64
}

func (s *countingOutbox) Append(ctx context.Context, evs []outbox.Event) error {
	s.appends.Add(1)
	return s.Store.Append(ctx, evs)
}

// requestEvents returns the events of type typ in s, decoded.
func requestEvents(t *testing.T, s outbox.Store, typ string) []outbox.Payload {
	t.Helper()
	evs, err := s.Events(context.Background(), outbox.Query{Size: 1000})
	require.NoError(t, err)
	var out []outbox.Payload
	for _, e := range evs {
		if e.Type != typ {
			continue
		}
		var p outbox.Payload
		require.NoError(t, json.Unmarshal(e.Payload, &p))
		out = append(out, p)
	}
	return out
}

func TestQuotaExhaustedOncePerWindowInBulk(t *testing.T) {
	t.Parallel()
	store := &countingOutbox{Store: memstore.New()}
	e := newLimitEnvOver(t, store, apikey.Options{Outbox: &outbox.Policy{}, UsageInterval: time.Hour}, apikey.MiddlewareOptions{})
	var ran bool
	h := e.handler(&ran)
	token, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"}) // 3 a day
	codes := map[int]int{}
	for range 10 {
		codes[hit(h, bearer(token)).Code]++
	}
	assert.Equal(t, map[int]int{200: 3, 429: 7}, codes)
	assert.Zero(t, store.appends.Load(), "nothing written on the request path")
	assert.Empty(t, requestEvents(t, store, outbox.CustomerQuotaExhausted), "written with the next flush")

	require.NoError(t, e.m.Close(context.Background()))
	assert.Equal(t, int64(1), store.appends.Load(), "one bulk write")
	got := requestEvents(t, store, outbox.CustomerQuotaExhausted)
	require.Len(t, got, 1, "once per window, however many requests saw it")
	lim := got[0].Data.Limit
	require.NotNil(t, lim)
	assert.Equal(t, "ann", got[0].Data.Customer)
	assert.Equal(t, "daily", lim.Name)
	assert.Equal(t, "quota", lim.Kind)
	assert.Equal(t, int64(3), lim.Count)
	assert.Zero(t, lim.Remaining)
	day := e.c.Now().UTC().Truncate(24 * time.Hour)
	assert.True(t, day.Equal(lim.WindowStart) && day.Add(24*time.Hour).Equal(lim.WindowEnd), "the window: %v to %v", lim.WindowStart, lim.WindowEnd)
	assert.Equal(t, uint64(1), e.m.Stats().EventsWritten)
}

func TestQuotaExhaustedAgainInTheNextWindow(t *testing.T) {
	t.Parallel()
	store := memstore.New()
	e := newLimitEnvOver(t, store, apikey.Options{Outbox: &outbox.Policy{}, UsageInterval: time.Hour}, apikey.MiddlewareOptions{})
	var ran bool
	h := e.handler(&ran)
	token, _ := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"})
	for day := range 2 {
		for range 4 {
			hit(h, bearer(token))
		}
		if day == 0 {
			e.c.Add(24 * time.Hour)
		}
	}
	require.NoError(t, e.m.Close(context.Background()))
	assert.Len(t, requestEvents(t, store, outbox.CustomerQuotaExhausted), 2, "one per window")
}

func TestCreditsLowAtTheThreshold(t *testing.T) {
	t.Parallel()
	store := memstore.New()
	plans := limits.Plans{"free": {limits.Quota("daily", 1000, limits.Day)}}
	e := newLimitEnvOver(t, store, apikey.Options{Plans: plans, Outbox: &outbox.Policy{}, UsageInterval: time.Hour}, apikey.MiddlewareOptions{})
	_, err := e.m.SetCustomer(context.Background(), "bob", func(c *apikey.Customer) error {
		c.Plan, c.Credits = "free", 50
		return nil
	})
	require.NoError(t, err)
	var ran bool
	h := e.handler(&ran)
	token, _ := issue(t, e.m, apikey.IssueParams{Owner: "bob"})
	for range 44 { // 6 left: above a tenth of 50
		require.Equal(t, 200, hit(h, bearer(token)).Code)
	}
	require.NoError(t, e.m.Close(context.Background())) // flushes; the Manager keeps verifying
	assert.Empty(t, requestEvents(t, store, outbox.CustomerCreditsLow), "6 left of 50: not low yet")

	e2 := newLimitEnvOver(t, store, apikey.Options{Plans: plans, Outbox: &outbox.Policy{}, UsageInterval: time.Hour}, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: e.l}})
	h2 := e2.handler(&ran)
	for range 6 {
		require.Equal(t, 200, hit(h2, bearer(token)).Code)
	}
	require.NoError(t, e2.m.Close(context.Background()))
	got := requestEvents(t, store, outbox.CustomerCreditsLow)
	require.Len(t, got, 1, "once, at the crossing of the threshold")
	lim := got[0].Data.Limit
	assert.Equal(t, "bob", got[0].Data.Customer)
	assert.Equal(t, apikey.CreditsLimit, lim.Name)
	assert.Equal(t, "credits", lim.Kind)
	assert.Equal(t, int64(5), lim.Remaining, "raised at the first balance at or below the threshold")
	assert.Equal(t, int64(5), lim.Threshold, "a tenth of the grant")
	assert.True(t, lim.WindowStart.IsZero(), "credits never refilled have no window")
}

// TestRequestEventsLostInACrashAreRaisedAgain crashes an instance that
// raised customer.quota_exhausted before its flush: the event is lost with
// it, and raised again, with the same webhook id, by the next request of
// the customer on any instance.
func TestRequestEventsLostInACrashAreRaisedAgain(t *testing.T) {
	t.Parallel()
	store := memstore.New()
	clk := newClock()
	l, err := memlimit.New(memlimit.Options{Now: clk.Now}) // the budget the fleet shares
	require.NoError(t, err)
	opts := apikey.Options{Plans: testPlans, Now: clk.Now, Peppers: testPepper, Outbox: &outbox.Policy{}, UsageInterval: time.Hour}
	instance := func() (*apikey.Manager, *apikey.Middleware) {
		m, err := apikey.New(store, opts)
		require.NoError(t, err)
		mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: l}})
		require.NoError(t, err)
		return m, mw
	}
	crashed, mw := instance() // never flushed, never closed: it crashed
	_ = crashed
	token, _ := issue(t, crashed, apikey.IssueParams{Owner: "ann", Plan: "free"})
	var ran bool
	h := mw.Handler(mw.Limit(okHandler(&ran)))
	for range 5 {
		hit(h, bearer(token))
	}
	assert.Empty(t, requestEvents(t, store, outbox.CustomerQuotaExhausted), "lost with the instance")

	next, mw2 := instance()
	h2 := mw2.Handler(mw2.Limit(okHandler(&ran)))
	assert.Equal(t, 429, hit(h2, bearer(token)).Code)
	require.NoError(t, next.Close(context.Background()))
	got := requestEvents(t, store, outbox.CustomerQuotaExhausted)
	require.Len(t, got, 1, "raised again by the next request")

	// Had the first instance flushed after all, the event is still one.
	again, mw3 := instance()
	assert.Equal(t, 429, hit(mw3.Handler(mw3.Limit(okHandler(&ran))), bearer(token)).Code)
	require.NoError(t, again.Close(context.Background()))
	assert.Len(t, requestEvents(t, store, outbox.CustomerQuotaExhausted), 1, "one webhook id per window")
}

// BenchmarkLimitOutbox serves requests through Handler and Limit (memstore,
// memlimit, a daily quota) without Options.Outbox, with it, and with it for
// a customer whose quota is exhausted (every request raises
// customer.quota_exhausted, which the instance keeps once).
func BenchmarkLimitOutbox(b *testing.B) {
	for _, bc := range []struct {
		name      string
		outbox    bool
		exhausted bool
	}{{"Off", false, false}, {"On", true, false}, {"OffExhausted", false, true}, {"OnExhausted", true, true}} {
		b.Run(bc.name, func(b *testing.B) {
			count := int64(1_000_000_000_000)
			if bc.exhausted {
				count = 1
			}
			opts := apikey.Options{Plans: limits.Plans{"p": {limits.Quota("daily", count, limits.Day)}}, UsageInterval: -1}
			if bc.outbox {
				opts.Outbox = &outbox.Policy{}
			}
			m := newManager(b, memstore.New(), opts)
			token, _ := issue(b, m, apikey.IssueParams{Owner: "alice", Plan: "p"})
			l, err := memlimit.New(memlimit.Options{})
			if err != nil {
				b.Fatal(err)
			}
			mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: l}})
			if err != nil {
				b.Fatal(err)
			}
			want := http.StatusOK
			if bc.exhausted {
				want = http.StatusTooManyRequests
				hit(mw.Handler(mw.Limit(benchHandler)), bearer(token))
			}
			serve(b, mw.Handler(mw.Limit(benchHandler)), "Bearer "+token, want)
		})
	}
}
