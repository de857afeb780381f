package leak_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/leak"
	"github.com/gokeys/apikey/memstore"
)

// report posts tokens to h from addr.
func report(h http.Handler, addr string, tokens ...string) *httptest.ResponseRecorder {
	b, _ := json.Marshal(map[string][]string{"credentials": append([]string{}, tokens...)})
	return reportRaw(h, addr, string(b))
}

func reportRaw(h http.Handler, addr, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/credentials/revoke", strings.NewReader(body))
	req.RemoteAddr = addr
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func newReports(t *testing.T, m *apikey.Manager, opts leak.ReportsOptions) *leak.Reports {
	t.Helper()
	r, err := leak.NewReports(m, opts)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

// A report that matches a key, one that matches none and garbage get the
// same answer, byte for byte; the keys reported are revoked, on every
// instance, and their owners told.
func TestReportsAnswerTheSameAndRevoke(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, fleet, audit := memstore.New(), newHub(), &events{}
	a := newManager(t, store, apikey.Options{Notifier: fleet.notifier(), CacheTTL: time.Hour, Logger: slog.New(audit)})
	b := newManager(t, store, apikey.Options{Notifier: fleet.notifier(), CacheTTL: time.Hour})
	token, k := issue(t, a, "ann")
	kept, _ := issue(t, a, "ann")
	_, err := b.Verify(ctx, token)
	require.NoError(t, err)

	var mu sync.Mutex
	var told []leak.Leak
	r := newReports(t, a, leak.ReportsOptions{OnLeak: func(_ context.Context, l leak.Leak) {
		mu.Lock()
		told = append(told, l)
		mu.Unlock()
	}})

	answers := []*httptest.ResponseRecorder{
		report(r, "198.51.100.1:5000", token),
		report(r, "198.51.100.2:5000", unknownToken(t, a)),
		report(r, "198.51.100.3:5000", "sk_live_garbage", "hello"),
		report(r, "198.51.100.4:5000"),
		report(r, "198.51.100.5:5000", token, token), // again, twice
	}
	for _, rec := range answers {
		assert.Equal(t, http.StatusAccepted, rec.Code)
		assert.Equal(t, answers[0].Body.String(), rec.Body.String())
		assert.Equal(t, answers[0].Header(), rec.Header())
	}

	require.Eventually(t, func() bool {
		_, err := b.Verify(ctx, token)
		return errors.Is(err, apikey.ErrRevoked)
	}, 10*time.Second, time.Millisecond, "refused by the other instance")
	require.NoError(t, r.Close(ctx))
	_, err = a.Verify(ctx, kept)
	assert.NoError(t, err, "only the key reported is revoked")

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, told, 2, "the owner is told of each report of his key")
	assert.Equal(t, k.ID, told[0].Key.ID)
	assert.Equal(t, "report", told[0].Source)
	assert.True(t, told[0].Changed())
	assert.False(t, told[1].Changed(), "the second report changed nothing")
	leaks := audit.of("leak")
	require.Len(t, leaks, 2)
	assert.Equal(t, "", leaks[0]["url"])
	assert.Len(t, audit.of("revoke"), 1)

	assert.Equal(t, http.StatusServiceUnavailable, report(r, "198.51.100.6:5000", token).Code, "closed")
}

// The answer is written before any token is looked up: with the store
// held, a report of a key and a report of nothing are both answered at
// once, and alike.
func TestReportsAnswerBeforeAnyLookup(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{})
	token, k := issue(t, m, "ann")
	r := newReports(t, m, leak.ReportsOptions{})

	release := spy.hold()
	calls := spy.calls.Load()
	done := make(chan [2]*httptest.ResponseRecorder, 1)
	go func() {
		done <- [2]*httptest.ResponseRecorder{report(r, "192.0.2.1:1", token), report(r, "192.0.2.2:1", unknownToken(t, m))}
	}()
	select {
	case got := <-done:
		assert.Equal(t, http.StatusAccepted, got[0].Code)
		assert.Equal(t, got[0].Body.String(), got[1].Body.String())
	case <-time.After(5 * time.Second):
		t.Fatal("the answer waited for the store")
	}
	assert.LessOrEqual(t, spy.calls.Load(), calls+1, "at most the worker's first read is waiting")
	release()
	require.NoError(t, r.Close(context.Background()))
	got, err := m.Get(context.Background(), k.ID)
	require.NoError(t, err)
	assert.False(t, got.RevokedAt.IsZero())
}

// Each client address gets Requests per Period; an IPv6 /64 is one
// client; a refused request reads no body and touches no store.
func TestReportsRateLimitPerAddress(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{})
	var mu sync.Mutex
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := newReports(t, m, leak.ReportsOptions{Requests: 3, Period: time.Hour, Now: clock})

	for i := range 3 {
		assert.Equal(t, http.StatusAccepted, report(r, "203.0.113.7:4000", "x").Code, i)
	}
	calls := spy.calls.Load()
	rec := reportRaw(r, "203.0.113.7:4001", "not even JSON")
	assert.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.Equal(t, "1200", rec.Header().Get("Retry-After"), "one request every 20 minutes")
	assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	assert.Equal(t, calls, spy.calls.Load())
	assert.Equal(t, http.StatusAccepted, report(r, "203.0.113.8:4000", "x").Code, "another address")
	assert.Equal(t, http.StatusAccepted, report(r, "[::ffff:203.0.113.9]:4000", "x").Code)

	for i := range 3 {
		assert.Equal(t, http.StatusAccepted, report(r, fmt.Sprintf("[2001:db8::%d]:443", i+1), "x").Code)
	}
	assert.Equal(t, http.StatusTooManyRequests, report(r, "[2001:db8::ffff%eth0]:443", "x").Code, "the same /64")
	assert.Equal(t, http.StatusAccepted, report(r, "[2001:db8:0:1::1]:443", "x").Code, "another /64")

	mu.Lock()
	now = now.Add(20 * time.Minute)
	mu.Unlock()
	assert.Equal(t, http.StatusAccepted, report(r, "203.0.113.7:4000", "x").Code, "refilled by one")
	assert.Equal(t, http.StatusTooManyRequests, report(r, "203.0.113.7:4000", "x").Code)
}

// A flood from many addresses and goroutines never admits more than the
// rate of each address.
func TestReportsRateLimitUnderConcurrency(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	r := newReports(t, m, leak.ReportsOptions{Requests: 5, Period: time.Hour, Queue: 10_000})
	var admitted [10]atomic.Int64
	var wg sync.WaitGroup
	for g := range 20 {
		wg.Go(func() {
			for i := range 50 {
				a := (g + i) % len(admitted)
				if report(r, fmt.Sprintf("192.0.2.%d:1", a), "x").Code == http.StatusAccepted {
					admitted[a].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for a := range admitted {
		assert.EqualValues(t, 5, admitted[a].Load(), "address %d", a)
	}
}

// The addresses tracked are bounded: while the table is full of limited
// addresses, new ones are refused; once they refill, they are forgotten.
func TestReportsBoundTheAddressesTracked(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	var mu sync.Mutex
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := newReports(t, m, leak.ReportsOptions{Requests: 2, Period: time.Minute, MaxAddresses: 3, Now: clock})
	for i := range 3 {
		require.Equal(t, http.StatusAccepted, report(r, fmt.Sprintf("192.0.2.%d:1", i), "x").Code)
	}
	assert.Equal(t, http.StatusTooManyRequests, report(r, "192.0.2.200:1", "x").Code, "table full")
	assert.Equal(t, http.StatusAccepted, report(r, "192.0.2.0:1", "x").Code, "a known address keeps its budget")
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	assert.Equal(t, http.StatusAccepted, report(r, "192.0.2.200:1", "x").Code, "refilled addresses were forgotten")
}

// Bad bodies are refused before any lookup.
func TestReportsRefuseBadBodies(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{})
	token, _ := issue(t, m, "ann")
	r := newReports(t, m, leak.ReportsOptions{MaxCredentials: 3, MaxBody: 1024, Requests: 1000})
	calls := spy.calls.Load()
	for name, tc := range map[string]struct {
		body   string
		status int
	}{
		"not JSON":            {`{"credentials": [`, http.StatusBadRequest},
		"no credentials":      {`{"tokens": ["x"]}`, http.StatusBadRequest},
		"credentials null":    {`{"credentials": null}`, http.StatusBadRequest},
		"not strings":         {`{"credentials": [1, 2]}`, http.StatusBadRequest},
		"an array":            {`["` + token + `"]`, http.StatusBadRequest},
		"too many":            {`{"credentials": ["a", "b", "c", "` + token + `"]}`, http.StatusBadRequest},
		"too large":           {`{"credentials": ["` + strings.Repeat("a", 2000) + `"]}`, http.StatusRequestEntityTooLarge},
		"trailing data":       {`{"credentials": []} {}`, http.StatusBadRequest},
		"an empty credential": {`{"credentials": [""]}`, http.StatusAccepted},
	} {
		rec := reportRaw(r, "192.0.2.1:1", tc.body)
		assert.Equal(t, tc.status, rec.Code, "%s: %s", name, rec.Body.String())
		assert.NotContains(t, rec.Body.String(), token, name)
	}
	require.NoError(t, r.Close(context.Background()))
	assert.Equal(t, calls, spy.calls.Load(), "nothing was looked up")
	_, err := m.Verify(context.Background(), token)
	assert.NoError(t, err)

	get := httptest.NewRecorder()
	r.ServeHTTP(get, httptest.NewRequest(http.MethodGet, "/", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, get.Code)
}

// When the queue is full, reports are answered 503 (whatever they hold),
// and those accepted are all handled.
func TestReportsQueueFull(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{})
	tokens := make([]string, 3)
	for i := range tokens {
		tokens[i], _ = issue(t, m, "ann")
	}
	r := newReports(t, m, leak.ReportsOptions{Queue: 1, Requests: 100})
	release := spy.hold()
	calls := spy.calls.Load()
	codes := []int{report(r, "192.0.2.1:1", tokens[0]).Code}
	require.Eventually(t, func() bool { return spy.calls.Load() > calls }, 5*time.Second, time.Millisecond,
		"the worker took the first report and waits for the store")
	for _, tok := range tokens[1:] {
		codes = append(codes, report(r, "192.0.2.1:1", tok).Code)
	}
	assert.Equal(t, []int{http.StatusAccepted, http.StatusAccepted, http.StatusServiceUnavailable}, codes)
	release()
	require.NoError(t, r.Close(context.Background()))
	for i, tok := range tokens {
		_, err := m.Verify(context.Background(), tok)
		if i < 2 {
			assert.ErrorIs(t, err, apikey.ErrRevoked, i)
		} else {
			assert.NoError(t, err, i)
		}
	}
}

// A store that fails is retried; a report still fails only after the
// retries, and is logged without its token.
func TestReportsRetryAFailingStore(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{})
	token, _ := issue(t, m, "ann")
	r := newReports(t, m, leak.ReportsOptions{})
	spy.fail.Store(true)
	calls := spy.calls.Load()
	require.Equal(t, http.StatusAccepted, report(r, "192.0.2.1:1", token).Code)
	require.Eventually(t, func() bool { return spy.calls.Load() >= calls+2 }, 5*time.Second, time.Millisecond,
		"the first try and a retry failed")
	spy.fail.Store(false)
	require.NoError(t, r.Close(context.Background()))
	_, err := m.Verify(context.Background(), token)
	assert.ErrorIs(t, err, apikey.ErrRevoked)
}

func TestNewReportsRefusesBadOptions(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	for name, opts := range map[string]leak.ReportsOptions{
		"unknown action": {Action: "ignore"},
		"negative rate":  {Requests: -1},
		"negative queue": {Queue: -1},
	} {
		_, err := leak.NewReports(m, opts)
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions, name)
	}
	_, err := leak.NewReports(nil, leak.ReportsOptions{})
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
}
