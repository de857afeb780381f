package apikey_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/usage"
)

// usageStore is a memstore whose usage writes can be made to fail, per
// key or altogether, and are counted.
type usageStore struct {
	*memstore.Store
	failKey atomic.Pointer[string] // AddUsage fails for a batch with this key
	failAll atomic.Bool
	adds    atomic.Int64 // successful AddUsage calls
	mu      sync.Mutex
	purges  []time.Time // the before of each PurgeUsage call
}

func newUsageStore() *usageStore { return &usageStore{Store: memstore.New()} }

func (s *usageStore) AddUsage(ctx context.Context, rs []usage.Record) error {
	if s.failAll.Load() {
		return errors.New("database is down")
	}
	if id := s.failKey.Load(); id != nil {
		for _, r := range rs {
			if r.KeyID == *id {
				return errors.New("row locked")
			}
		}
	}
	if err := s.Store.AddUsage(ctx, rs); err != nil {
		return err
	}
	s.adds.Add(1)
	return nil
}

func (s *usageStore) PurgeUsage(ctx context.Context, before time.Time) (int, error) {
	s.mu.Lock()
	s.purges = append(s.purges, before)
	s.mu.Unlock()
	return s.Store.PurgeUsage(ctx, before)
}

func (s *usageStore) purgeCalls() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.purges)
}

// allTime covers every hour a test records.
var allTime = usage.Query{From: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}

// stored returns the sum of the stored usage of a customer (or a key,
// when id is set), and the hourly records.
func stored(t testing.TB, s usage.Store, customer, id string) (usage.Record, []usage.Record) {
	t.Helper()
	q := allTime
	q.Customer, q.KeyID = customer, id
	rs, err := s.Usage(context.Background(), q)
	require.NoError(t, err)
	var sum usage.Record
	for _, r := range rs {
		sum.Allowed += r.Allowed
		sum.Limited += r.Limited
		sum.Refused += r.Refused
		sum.Cost += r.Cost
	}
	return sum, rs
}

// counts is an expected usage.
func counts(allowed, limited, refused, cost int64) usage.Record {
	return usage.Record{Allowed: allowed, Limited: limited, Refused: refused, Cost: cost}
}

// statusHandler answers 200.
var statusHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

func serveStatus(h http.Handler, token string) int { return serveAt(h, "/", token) }

// serveAt serves GET path with token as a Bearer credential.
func serveAt(h http.Handler, path, token string) int {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, get(path, "Authorization", "Bearer "+token))
	return rec.Code
}

// Every outcome is counted for the key whose secret verified, in the hour
// of the request: allowed (with its cost), limited, refused for a scope,
// for the key's state or for an unconfigured plan; nothing for a wrong
// secret, an unknown id, garbage or no key; and nothing is written before
// a flush (here Close).
func TestUsageCountsEachOutcome(t *testing.T) {
	ctx := context.Background()
	store := newUsageStore()
	plans := limits.Plans{"free": {limits.Quota("daily", 3, limits.Day)}}
	cost := func(r *http.Request, _ *apikey.Key) int64 {
		if r.URL.Query().Get("big") != "" {
			return 2
		}
		return 1
	}
	e := newLimitEnvOver(t, store, apikey.Options{Plans: plans, UsageInterval: time.Hour}, apikey.MiddlewareOptions{Cost: cost})
	m, mw := e.m, e.mw
	read := mw.Handler(mw.RequireScopes("read")(mw.Limit(statusHandler)))
	write := mw.Handler(mw.RequireScopes("write")(mw.Limit(statusHandler)))
	bare := mw.Handler(statusHandler)
	free := apikey.IssueParams{Owner: "ann", Plan: "free", Scopes: []string{"read"}}
	a, ka := issue(t, m, free)
	gold, kg := issueGold(t, store, apikey.IssueParams{Owner: "gus", Plan: "gold", Scopes: []string{"read"}})
	paused, kp := issue(t, m, apikey.IssueParams{Owner: "bob"})
	_, err := m.Pause(ctx, kp.ID)
	require.NoError(t, err)
	revoked, kr := issue(t, m, apikey.IssueParams{Owner: "bob"})
	require.NoError(t, m.Revoke(ctx, kr.ID))
	disabled, kd := issue(t, m, apikey.IssueParams{Owner: "bob"})
	_, err = m.Disable(ctx, kd.ID)
	require.NoError(t, err)
	expiring, kx := issue(t, m, apikey.IssueParams{Owner: "bob", TTL: time.Minute})
	tok, err := m.Format().Parse(a)
	require.NoError(t, err)
	wrong := rebuild(t, m.Format(), tok.ID, "")
	unknown, _ := m.Format().New()
	noLimiter, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Cost: cost})
	require.NoError(t, err)
	unlimited := noLimiter.Handler(noLimiter.Limit(statusHandler))

	big := func(h http.Handler, token string) int {
		rec := httptest.NewRecorder()
		r := bearer(token)
		r.URL.RawQuery = "big=1"
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	assert.Equal(t, 200, serveStatus(read, a))
	assert.Equal(t, 200, serveStatus(read, a))
	assert.Equal(t, 429, big(read, a), "cost 2 over the 1 left")
	assert.Equal(t, 200, serveStatus(read, a))
	assert.Equal(t, 429, serveStatus(read, a))
	assert.Equal(t, 403, serveStatus(write, a))
	assert.Equal(t, 200, serveStatus(bare, a), "no Limit: allowed, no cost")
	assert.Equal(t, 200, big(unlimited, a), "Limit without a Limiter: the cost is counted")
	assert.Equal(t, 403, serveStatus(read, gold), "unconfigured plan")
	for _, tk := range []string{paused, revoked, disabled, wrong, unknown, "sk_garbage"} {
		assert.Equal(t, 401, serveStatus(read, tk))
	}
	for _, r := range []*http.Request{get("/"), get("/", "Authorization", "Bearer "+a, "X-API-Key", a)} {
		rec := httptest.NewRecorder()
		read.ServeHTTP(rec, r)
		assert.Contains(t, []int{400, 401}, rec.Code, "no key, two keys")
	}
	e.c.Add(time.Hour) // 13:00: the key of a minute has expired
	assert.Equal(t, 401, serveStatus(read, expiring))
	assert.Equal(t, 429, serveStatus(read, a))
	assert.Zero(t, store.adds.Load(), "nothing written before a flush")
	st := m.Stats()
	assert.EqualValues(t, 14, st.UsageRecorded)
	assert.Zero(t, st.UsageDropped)

	require.NoError(t, m.Close(ctx))
	sum, rs := stored(t, store, "", ka.ID)
	assert.Equal(t, counts(5, 3, 1, 5), sum)
	require.Len(t, rs, 2)
	noon := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	assert.Equal(t, usage.Record{Customer: "ann", KeyID: ka.ID, Start: noon, Allowed: 5, Limited: 2, Refused: 1, Cost: 5}, rs[0])
	assert.Equal(t, usage.Record{Customer: "ann", KeyID: ka.ID, Start: noon.Add(time.Hour), Limited: 1}, rs[1])
	sum, _ = stored(t, store, "", kg.ID)
	assert.Equal(t, counts(0, 0, 1, 0), sum)
	sum, _ = stored(t, store, "ann", "")
	assert.Equal(t, counts(5, 3, 1, 5), sum, "the customer's keys")
	for _, id := range []string{kp.ID, kr.ID, kd.ID, kx.ID} {
		sum, _ = stored(t, store, "", id)
		assert.Equal(t, counts(0, 0, 1, 0), sum, id)
	}
	sum, _ = stored(t, store, "bob", "")
	assert.Equal(t, counts(0, 0, 4, 0), sum)
	assert.EqualValues(t, 1, m.Stats().UsageFlushes, "one batch")
}

// Middleware.Spend, the RPC surfaces' entry, counts each call as one
// request: allowed with its cost, limited, or refused for an
// unconfigured plan; a failing Limiter's refusal counts nothing.
func TestUsageCountsSpend(t *testing.T) {
	ctx := context.Background()
	store := newUsageStore()
	e := newLimitEnvOver(t, store, apikey.Options{UsageInterval: time.Hour}, apikey.MiddlewareOptions{})
	_, k := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"})
	_, kg := issueGold(t, store, apikey.IssueParams{Owner: "gus", Plan: "gold"})
	for i := range 4 {
		err := e.mw.Spend(ctx, k, 1, nil)
		if i < 3 {
			require.NoError(t, err)
		} else {
			require.ErrorIs(t, err, apikey.ErrRateLimited)
		}
	}
	require.NoError(t, e.mw.Spend(ctx, k, 0, nil), "free of charge: allowed")
	require.ErrorIs(t, e.mw.Spend(ctx, kg, 1, nil), apikey.ErrUnknownPlan)
	require.ErrorIs(t, e.mw.Spend(ctx, k, -1, nil), apikey.ErrInvalidOptions)
	require.ErrorIs(t, e.mw.Spend(ctx, nil, 1, nil), apikey.ErrMissingKey)
	gone, cancel := context.WithCancel(ctx)
	cancel()
	failing, err := apikey.NewMiddleware(e.m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: failingLimiter{}}})
	require.NoError(t, err)
	require.ErrorIs(t, failing.Spend(gone, k, 1, nil), apikey.ErrUnavailable)

	require.NoError(t, e.m.Close(ctx))
	sum, _ := stored(t, store, "", k.ID)
	assert.Equal(t, counts(4, 1, 0, 3), sum)
	sum, _ = stored(t, store, "", kg.ID)
	assert.Equal(t, counts(0, 0, 1, 0), sum)
}

// issueGold issues a key of plan "gold" into store, through a Manager
// that has the plan: the Managers of the tests do not.
func issueGold(t *testing.T, store apikey.Store, p apikey.IssueParams) (string, *apikey.Key) {
	m := newManager(t, store, apikey.Options{Plans: limits.Plans{"gold": {limits.Quota("daily", 9, limits.Day)}}, UsageInterval: -1})
	return issue(t, m, p)
}

// failingLimiter always fails.
type failingLimiter struct{}

func (failingLimiter) Allow(context.Context, string, []limits.Limit, int64) (limits.Result, error) {
	return limits.Result{}, errors.New("limiter down")
}

// A client that does not hold a key's secret cannot make it count
// anything: a wrong secret (cached key or not), an unknown id, the id of
// a paused or revoked key with a wrong secret, whatever the route.
func TestUsageWrongSecretCountsNothing(t *testing.T) {
	ctx := context.Background()
	for _, cacheTTL := range []time.Duration{0, -1} {
		store := newUsageStore()
		e := newLimitEnvOver(t, store, apikey.Options{CacheTTL: cacheTTL, UsageInterval: time.Hour}, apikey.MiddlewareOptions{})
		h := e.mw.Handler(e.mw.RequireScopes("read")(e.mw.Limit(statusHandler)))
		good, _ := issue(t, e.m, apikey.IssueParams{Owner: "victim", Plan: "free", Scopes: []string{"read"}})
		paused, kp := issue(t, e.m, apikey.IssueParams{Owner: "victim"})
		_, err := e.m.Pause(ctx, kp.ID)
		require.NoError(t, err)
		revoked, kr := issue(t, e.m, apikey.IssueParams{Owner: "victim"})
		require.NoError(t, e.m.Revoke(ctx, kr.ID))
		require.Equal(t, 200, serveStatus(h, good)) // cached, when the cache is on
		var forged []string
		for _, tk := range []string{good, paused, revoked} {
			tok, err := e.m.Format().Parse(tk)
			require.NoError(t, err)
			forged = append(forged, rebuild(t, e.m.Format(), tok.ID, ""))
		}
		unknown, _ := e.m.Format().New()
		forged = append(forged, unknown)
		for range 20 {
			for _, tk := range forged {
				require.Equal(t, 401, serveStatus(h, tk))
				_, err := e.m.Verify(ctx, tk)
				require.ErrorIs(t, err, apikey.ErrInvalid)
			}
		}
		assert.EqualValues(t, 1, e.m.Stats().UsageRecorded, "cache TTL %v", cacheTTL)
		require.NoError(t, e.m.Close(ctx))
		sum, _ := stored(t, store, "victim", "")
		assert.Equal(t, counts(1, 0, 0, 1), sum, "only the request with the secret")
		for _, id := range []string{kp.ID, kr.ID} {
			sum, _ = stored(t, store, "", id)
			assert.Zero(t, sum, "no refusal counted without the secret")
		}
	}
}

// usageMetrics records what a Manager reports of usage recording (the
// optional methods of Metrics).
type usageMetrics struct {
	nopMetrics
	mu      sync.Mutex
	queued  []int
	dropped int
	flushed []int
	errs    int
}

func (u *usageMetrics) UsageQueued(queued, dropped int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.queued = append(u.queued, queued)
	u.dropped += dropped
}

func (u *usageMetrics) UsageFlushed(records int, _ time.Duration, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.flushed = append(u.flushed, records)
	if err != nil {
		u.errs++
	}
}

func (u *usageMetrics) last() (queued, dropped int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.queued) == 0 {
		return -1, u.dropped
	}
	return u.queued[len(u.queued)-1], u.dropped
}

// The queue holds at most UsageQueue (key, hour) counters: requests of
// further keys are dropped, counted in Stats and reported to Metrics,
// until the hour is over and its counters are flushed out.
func TestUsageQueueBound(t *testing.T) {
	store := newUsageStore()
	met := &usageMetrics{}
	c := newClock()
	m := newManager(t, store, apikey.Options{Now: c.Now, UsageQueue: 2, UsageInterval: 2 * time.Millisecond, Metrics: met})
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	h := mw.Handler(statusHandler)
	var tokens []string
	var ids []string
	for range 3 {
		tk, k := issue(t, m, apikey.IssueParams{Owner: "ann"})
		tokens, ids = append(tokens, tk), append(ids, k.ID)
	}
	for i, n := range []int{2, 1, 3} {
		for range n {
			require.Equal(t, 200, serveStatus(h, tokens[i]), "a dropped count never refuses a request")
		}
	}
	st := m.Stats()
	assert.EqualValues(t, 3, st.UsageRecorded)
	assert.EqualValues(t, 3, st.UsageDropped)
	require.Eventually(t, func() bool { s, _ := stored(t, store, "ann", ""); return s.Allowed == 3 }, 5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { _, d := met.last(); return d == 3 }, 5*time.Second, time.Millisecond)

	// The hour's counters stay until it is over: still full.
	require.Equal(t, 200, serveStatus(h, tokens[2]))
	assert.EqualValues(t, 4, m.Stats().UsageDropped)
	c.Add(time.Hour)
	require.Eventually(t, func() bool { q, _ := met.last(); return q == 0 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 200, serveStatus(h, tokens[2]))
	require.NoError(t, m.Close(context.Background()))
	for i, want := range []int64{2, 1, 1} {
		s, _ := stored(t, store, "", ids[i])
		assert.Equal(t, want, s.Allowed, "key %d", i)
	}
	_, dropped := met.last()
	assert.Equal(t, 4, dropped)
}

// A batch that fails is retried at the next flush without holding up the
// others, and counts are added exactly once whatever failed.
func TestUsageFailedBatchIsRetried(t *testing.T) {
	store := newUsageStore()
	met := &usageMetrics{}
	m := newManager(t, store, apikey.Options{UsageInterval: 2 * time.Millisecond, LastUsedBatch: 1, Metrics: met})
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	h := mw.Handler(statusHandler)
	stuck, ks := issue(t, m, apikey.IssueParams{Owner: "ann"})
	fine, kf := issue(t, m, apikey.IssueParams{Owner: "ann"})
	store.failKey.Store(&ks.ID)
	for range 5 {
		require.Equal(t, 200, serveStatus(h, stuck))
		require.Equal(t, 200, serveStatus(h, fine))
	}
	require.Eventually(t, func() bool { s, _ := stored(t, store, "", kf.ID); return s.Allowed == 5 }, 5*time.Second, time.Millisecond,
		"the other key's batch is written while one fails")
	require.Eventually(t, func() bool { return m.Stats().UsageFlushErrors >= 3 }, 5*time.Second, time.Millisecond)
	for range 5 { // more requests of the failing key meanwhile
		require.Equal(t, 200, serveStatus(h, stuck))
	}
	s, _ := stored(t, store, "", ks.ID)
	assert.Zero(t, s.Allowed)
	store.failKey.Store(nil)
	require.Eventually(t, func() bool { s, _ := stored(t, store, "", ks.ID); return s.Allowed == 10 }, 5*time.Second, time.Millisecond)
	require.NoError(t, m.Close(context.Background()))
	s, _ = stored(t, store, "ann", "")
	assert.Equal(t, counts(15, 0, 0, 0), s)
	assert.EqualValues(t, 15, m.Stats().UsageRecorded)
	met.mu.Lock()
	assert.Positive(t, met.errs)
	met.mu.Unlock()
}

// Close writes what is pending; with a failing store it gives up with an
// error when ctx is done.
func TestUsageCloseFlushes(t *testing.T) {
	store := newUsageStore()
	m, err := apikey.New(store, apikey.Options{Peppers: testPepper, UsageInterval: time.Hour})
	require.NoError(t, err)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	tk, k := issue(t, m, apikey.IssueParams{Owner: "ann"})
	for range 7 {
		require.Equal(t, 200, serveStatus(mw.Handler(statusHandler), tk))
	}
	assert.Zero(t, store.adds.Load())
	require.NoError(t, m.Close(context.Background()))
	s, _ := stored(t, store, "", k.ID)
	assert.EqualValues(t, 7, s.Allowed)
	require.Equal(t, 200, serveStatus(mw.Handler(statusHandler), tk), "verifies after Close")
	assert.EqualValues(t, 7, m.Stats().UsageRecorded, "counts nothing after Close")

	down := newUsageStore()
	down.failAll.Store(true)
	m2, err := apikey.New(down, apikey.Options{Peppers: testPepper, UsageInterval: time.Hour})
	require.NoError(t, err)
	mw2, err := apikey.NewMiddleware(m2, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	tk2, _ := issue(t, m2, apikey.IssueParams{Owner: "ann"})
	require.Equal(t, 200, serveStatus(mw2.Handler(statusHandler), tk2))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, m2.Close(ctx), apikey.ErrUnavailable)
}

// gate is a middleware that holds each request until released.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func (g *gate) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.entered <- struct{}{}
		<-g.release
		next.ServeHTTP(w, r)
	})
}

// A request counted at 12:59:59 and limited after 13:00, once flushes
// have written its hour, moves to limited in the hour it was counted in:
// its counter stays while the request is in flight, and goes after.
func TestUsageRequestAcrossAnHour(t *testing.T) {
	store := newUsageStore()
	met := &usageMetrics{}
	e := newLimitEnvOver(t, store, apikey.Options{Metrics: met, UsageInterval: time.Millisecond},
		apikey.MiddlewareOptions{Cost: func(*http.Request, *apikey.Key) int64 { return 5 }}) // above the quota of 3
	c := e.c
	c.Add(59*time.Minute + 59*time.Second)
	tk, k := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "free"})
	g := &gate{entered: make(chan struct{}), release: make(chan struct{})}
	h := e.mw.Handler(g.wrap(e.mw.Limit(statusHandler)))
	code := make(chan int)
	go func() { code <- serveStatus(h, tk) }()
	<-g.entered
	c.Add(time.Minute)
	hour := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	require.Eventually(t, func() bool {
		_, rs := stored(t, store, "", k.ID)
		return len(rs) == 1 && rs[0].Start.Equal(hour) && rs[0].Allowed == 1
	}, 5*time.Second, time.Millisecond, "the allowed count flushed while the request is in flight")
	met.mu.Lock()
	n := len(met.queued)
	met.mu.Unlock()
	require.Eventually(t, func() bool { met.mu.Lock(); defer met.mu.Unlock(); return len(met.queued) > n+2 }, 5*time.Second, time.Millisecond)
	q, _ := met.last()
	assert.Equal(t, 1, q, "a counter of a past hour stays while pinned")
	close(g.release)
	require.Equal(t, 429, <-code)
	require.Eventually(t, func() bool { q, _ := met.last(); return q == 0 }, 5*time.Second, time.Millisecond, "then it goes")
	require.NoError(t, e.m.Close(context.Background()))
	sum, rs := stored(t, store, "", k.ID)
	assert.Equal(t, counts(0, 1, 0, 0), sum)
	for _, r := range rs {
		assert.True(t, r.Start.Equal(hour), "all in the hour it was counted in: %v", r.Start)
	}
}

// Old usage is purged from the flush loop, at most once an hour, keeping
// UsageRetention; a negative retention keeps everything.
func TestUsagePurge(t *testing.T) {
	ctx := context.Background()
	for _, retention := range []time.Duration{48 * time.Hour, -1} {
		store := newUsageStore()
		c := newClock()
		now := c.Now()
		require.NoError(t, store.Store.AddUsage(ctx, []usage.Record{
			{Customer: "ann", KeyID: "old", Start: now.Add(-72 * time.Hour), Allowed: 1},
			{Customer: "ann", KeyID: "new", Start: now.Add(-24 * time.Hour), Allowed: 1},
		}))
		m := newManager(t, store, apikey.Options{Now: c.Now, UsageInterval: time.Millisecond, UsageRetention: retention})
		if retention < 0 {
			time.Sleep(50 * time.Millisecond)
			assert.Empty(t, store.purgeCalls())
			require.NoError(t, m.Close(ctx))
			continue
		}
		require.Eventually(t, func() bool { return len(store.purgeCalls()) == 1 }, 5*time.Second, time.Millisecond)
		assert.True(t, store.purgeCalls()[0].Equal(now.Add(-retention)), "%v", store.purgeCalls()[0])
		_, rs := stored(t, store, "ann", "")
		require.Len(t, rs, 1)
		assert.Equal(t, "new", rs[0].KeyID)
		time.Sleep(50 * time.Millisecond) // many flushes
		assert.Len(t, store.purgeCalls(), 1, "at most once an hour")
		c.Add(time.Hour)
		require.Eventually(t, func() bool { return len(store.purgeCalls()) == 2 }, 5*time.Second, time.Millisecond)
		require.NoError(t, m.Close(ctx))
	}
}

// hourlyClock is a clock that another goroutine moves on by the hour.
type hourlyClock struct{ t atomic.Int64 }

func (c *hourlyClock) Now() time.Time { return time.Unix(0, c.t.Load()).UTC() }

// N goroutines send M requests each with random outcomes (allowed, 429
// past a small credit, 403 for a scope, a paused key, a wrong secret, an
// unknown id) through three Managers over one store that flush every
// millisecond while the clock moves on by the hour, so that counters of
// past hours are removed while requests may still hold them. The stored
// sums equal what the clients saw, per outcome, key and customer.
func TestUsageSumsUnderConcurrency(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	clk := &hourlyClock{}
	clk.t.Store(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC).UnixNano())
	plans := limits.Plans{"tiny": {limits.Credits("credits", 150, limits.Never)}, "big": {limits.Quota("daily", 1<<40, limits.Day)}}
	lim, err := memlimit.New(memlimit.Options{Now: clk.Now})
	require.NoError(t, err)
	cost := func(r *http.Request, _ *apikey.Key) int64 {
		if r.URL.Path == "/w" {
			return 2
		}
		return 1
	}
	type surface struct {
		m      *apikey.Manager
		mw     *apikey.Middleware
		routes map[string]http.Handler
	}
	var surfaces []surface
	for range 3 {
		m := newManager(t, store, apikey.Options{Now: clk.Now, Plans: plans, UsageInterval: time.Millisecond, LastUsedBatch: 7})
		mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: lim}, Cost: cost})
		require.NoError(t, err)
		surfaces = append(surfaces, surface{m, mw, map[string]http.Handler{
			"/r": mw.Handler(mw.RequireScopes("read")(mw.Limit(statusHandler))),
			"/w": mw.Handler(mw.RequireScopes("write")(mw.Limit(statusHandler))),
		}})
	}
	m0 := surfaces[0].m
	type client struct {
		token, id, customer string
		counted             bool // its secret verifies
	}
	var clients []client
	add := func(p apikey.IssueParams) apikey.IssueParams {
		tk, k := issue(t, m0, p)
		clients = append(clients, client{tk, k.ID, k.Customer(), true})
		return p
	}
	add(apikey.IssueParams{Owner: "c1", Plan: "tiny", Scopes: []string{"read"}})
	add(apikey.IssueParams{Owner: "c1", Plan: "tiny", Scopes: []string{"read", "write"}})
	add(apikey.IssueParams{Owner: "c2", Plan: "big", Scopes: []string{"read", "write"}})
	add(apikey.IssueParams{Owner: "c2", Plan: "big", Scopes: []string{"read"}})
	_, err = m0.Pause(ctx, clients[3].id)
	require.NoError(t, err)
	tok, err := m0.Format().Parse(clients[2].token)
	require.NoError(t, err)
	unknown, _ := m0.Format().New()
	clients = append(clients,
		client{rebuild(t, m0.Format(), tok.ID, ""), clients[2].id, "c2", false},
		client{unknown, "", "", false})

	stop := make(chan struct{})
	var ticker sync.WaitGroup
	ticker.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(3 * time.Millisecond):
				clk.t.Add(int64(time.Hour))
			}
		}
	})
	const goroutines, requests = 8, 250
	var mu sync.Mutex
	want := map[string]usage.Record{} // by key id
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(g), 1))
			got := map[string]usage.Record{}
			for range requests {
				cl := clients[rnd.IntN(len(clients))]
				path := []string{"/r", "/w"}[rnd.IntN(2)]
				s := surfaces[rnd.IntN(len(surfaces))]
				code := serveAt(s.routes[path], path, cl.token)
				r := got[cl.id]
				switch {
				case !cl.counted:
					if code != 401 {
						panic(fmt.Sprintf("forged token answered %d", code))
					}
					continue
				case code == 200:
					r.Allowed++
					r.Cost += cost(httptest.NewRequest("GET", path, nil), nil)
				case code == 429:
					r.Limited++
				case code == 403, code == 401:
					r.Refused++
				default:
					panic(fmt.Sprintf("status %d", code))
				}
				got[cl.id] = r
			}
			mu.Lock()
			defer mu.Unlock()
			for id, r := range got {
				w := want[id]
				w.Allowed += r.Allowed
				w.Limited += r.Limited
				w.Refused += r.Refused
				w.Cost += r.Cost
				want[id] = w
			}
		})
	}
	wg.Wait()
	close(stop)
	ticker.Wait()
	var recorded, dropped uint64
	for _, s := range surfaces {
		require.NoError(t, s.m.Close(ctx))
		st := s.m.Stats()
		recorded += st.UsageRecorded
		dropped += st.UsageDropped
	}
	byCustomer := map[string]usage.Record{}
	var total int64
	for _, cl := range clients[:4] {
		w := want[cl.id]
		got, rs := stored(t, store, "", cl.id)
		assert.Equal(t, w, got, "key of %s", cl.customer)
		assert.Greater(t, len(rs), 1, "spread over hours")
		c := byCustomer[cl.customer]
		c.Allowed += w.Allowed
		c.Limited += w.Limited
		c.Refused += w.Refused
		c.Cost += w.Cost
		byCustomer[cl.customer] = c
		total += w.Allowed + w.Limited + w.Refused
	}
	for _, customer := range []string{"c1", "c2"} {
		got, _ := stored(t, store, customer, "")
		assert.Equal(t, byCustomer[customer], got, customer)
	}
	w1 := byCustomer["c1"]
	assert.Positive(t, w1.Limited, "some requests over the credit")
	assert.LessOrEqual(t, w1.Cost, int64(150))
	assert.Positive(t, want[clients[3].id].Refused, "paused key")
	assert.Positive(t, want[clients[0].id].Refused, "scope")
	assert.EqualValues(t, total, recorded)
	assert.Zero(t, dropped)
}

// Options: a negative UsageQueue is refused; a store without usage.Store
// or a negative UsageInterval records nothing.
func TestUsageOptions(t *testing.T) {
	_, err := apikey.New(memstore.New(), apikey.Options{UsageQueue: -1})
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
	store := newUsageStore()
	m := newManager(t, store, apikey.Options{UsageInterval: -1})
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	tk, _ := issue(t, m, apikey.IssueParams{Owner: "ann"})
	require.Equal(t, 200, serveStatus(mw.Handler(statusHandler), tk))
	require.NoError(t, m.Close(context.Background()))
	assert.Zero(t, m.Stats().UsageRecorded)
	s, _ := stored(t, store, "ann", "")
	assert.Zero(t, s)
}

// discardWriter is a ResponseWriter that keeps nothing and allocates
// nothing once its header map holds the middleware's headers.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// usagePath returns the route of the overhead measures: Handler, or
// Handler, RequireScopes and Limit (memlimit) when chain is set, with
// usage recording on or off, and a request with a valid key.
func usagePath(tb testing.TB, on, chain bool) (http.Handler, *http.Request, *discardWriter) {
	interval := time.Duration(-1)
	if on {
		interval = time.Hour
	}
	m := newManager(tb, memstore.New(), apikey.Options{
		UsageInterval: interval, CacheTTL: time.Hour,
		Plans: limits.Plans{"big": {limits.Quota("daily", 1e13, limits.Day)}},
	})
	lim, err := memlimit.New(memlimit.Options{})
	require.NoError(tb, err)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: lim}})
	require.NoError(tb, err)
	token, _ := issue(tb, m, apikey.IssueParams{Owner: "ann", Plan: "big", Scopes: []string{"read"}})
	var h http.Handler = statusHandler
	if chain {
		h = mw.RequireScopes("read")(mw.Limit(h))
	}
	h = mw.Handler(h)
	req := bearer(token)
	w := &discardWriter{h: http.Header{}}
	for range 3 {
		h.ServeHTTP(w, req)
		require.Equal(tb, 200, w.code)
	}
	return h, req, w
}

// BenchmarkUsageOverhead serves a cached key through Handler alone
// ("handler") and through Handler, RequireScopes and Limit with memlimit
// ("chain"), with usage recording off and on, in alternating blocks of
// operations so that both see the same machine: it reports the median
// ns/op of each ("off-ns/op", "on-ns/op") and the median over blocks of
// their difference ("delta-ns/op"), the cost of counting a request.
func BenchmarkUsageOverhead(b *testing.B) {
	for _, chain := range []bool{false, true} {
		b.Run(map[bool]string{false: "handler", true: "chain"}[chain], func(b *testing.B) {
			var blocks [2]func()
			for i, on := range []bool{false, true} {
				h, req, w := usagePath(b, on, chain)
				blocks[i] = func() {
					for range usageBlock {
						h.ServeHTTP(w, req)
					}
					if w.code != 200 {
						b.Fatal(w.code)
					}
				}
			}
			var off, on, delta []float64
			b.ReportAllocs()
			for b.Loop() {
				var ns [2]float64
				for i, block := range blocks {
					start := time.Now()
					block()
					ns[i] = float64(time.Since(start).Nanoseconds()) / usageBlock
				}
				off, on, delta = append(off, ns[0]), append(on, ns[1]), append(delta, ns[1]-ns[0])
			}
			b.ReportMetric(medianOf(off), "off-ns/op")
			b.ReportMetric(medianOf(on), "on-ns/op")
			b.ReportMetric(medianOf(delta), "delta-ns/op")
		})
	}
}

// usageBlock is the number of requests of a block of
// BenchmarkUsageOverhead.
const usageBlock = 200

func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// A cost reported after the response is recorded in usage with the
// request, the reservation refunded or topped up: usage shows what
// handlers reported, through the HTTP middleware and through Debit.
func TestUsageRecordsReportedCosts(t *testing.T) {
	ctx := context.Background()
	store := newUsageStore()
	e := newLimitEnvOver(t, store, apikey.Options{UsageInterval: time.Hour,
		Plans: limits.Plans{"big": {limits.Quota("daily", 1000, limits.Day)}}},
		apikey.MiddlewareOptions{Limits: apikey.LimitOptions{ReportedCosts: true}})
	token, k := issue(t, e.m, apikey.IssueParams{Owner: "ann", Plan: "big"})
	for _, cost := range []int64{7, 0, 3} {
		h := e.mw.Handler(e.mw.Limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			apikey.ReportCost(r.Context(), cost)
		})))
		require.Equal(t, 200, serveStatus(h, token))
	}
	require.NoError(t, e.mw.Debit(ctx, k, 5, nil))
	require.NoError(t, e.m.Close(ctx))
	sum, _ := stored(t, store, "", k.ID)
	assert.Equal(t, counts(3, 0, 0, 7+0+3+5), sum, "a request reporting 0 is refunded its reservation of 1")
}
