package webhook_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/outbox"
	"github.com/gokeys/apikey/webhook"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// fixed returns a clock that stays at *at.
func fixed(at *time.Time) func() time.Time { return func() time.Time { return *at } }

// appendEvents appends n events for endpoint, due at t0.
func appendEvents(t *testing.T, s outbox.Store, endpoint string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("msg_%s_%d", apikey.NewID(), i)
		require.NoError(t, s.Append(context.Background(), []outbox.Event{{ID: id, Endpoint: endpoint, Type: outbox.KeyCreated,
			Payload: []byte(`{"type":"key.created","n":` + strconv.Itoa(i) + `}`), CreatedAt: t0}}))
		ids = append(ids, id)
	}
	return ids
}

func event(t *testing.T, s outbox.Store, id string) outbox.Event {
	t.Helper()
	evs, err := s.Events(context.Background(), outbox.Query{ID: id})
	require.NoError(t, err)
	require.Len(t, evs, 1)
	return evs[0]
}

func TestNewValidates(t *testing.T) {
	s := memstore.New()
	ok := webhook.Endpoint{URL: "https://example.com/hooks", Secrets: []string{vectorSecret}}
	tests := []struct {
		name string
		opts webhook.Options
	}{
		{"NoEndpoint", webhook.Options{}},
		{"RelativeURL", webhook.Options{Endpoints: []webhook.Endpoint{{URL: "/hooks", Secrets: []string{vectorSecret}}}}},
		{"NotHTTP", webhook.Options{Endpoints: []webhook.Endpoint{{URL: "ftp://example.com", Secrets: []string{vectorSecret}}}}},
		{"NoSecret", webhook.Options{Endpoints: []webhook.Endpoint{{URL: ok.URL}}}},
		{"BadSecret", webhook.Options{Endpoints: []webhook.Endpoint{{URL: ok.URL, Secrets: []string{"secret"}}}}},
		{"SameName", webhook.Options{Endpoints: []webhook.Endpoint{ok, ok}}},
		{"NegativeConcurrency", webhook.Options{Endpoints: []webhook.Endpoint{{URL: ok.URL, Secrets: ok.Secrets, Concurrency: -1}}}},
		{"ZeroWait", webhook.Options{Endpoints: []webhook.Endpoint{ok}, Schedule: []time.Duration{time.Second, 0}}},
		{"EmptySchedule", webhook.Options{Endpoints: []webhook.Endpoint{ok}, Schedule: []time.Duration{}}},
		{"LeaseNotLongerThanTimeout", webhook.Options{Endpoints: []webhook.Endpoint{ok}, Timeout: time.Minute, Lease: time.Minute}},
		{"NegativeMaxAttempts", webhook.Options{Endpoints: []webhook.Endpoint{ok}, MaxAttempts: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := webhook.New(s, tc.opts)
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
		})
	}
	_, err := webhook.New(nil, webhook.Options{Endpoints: []webhook.Endpoint{ok}})
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions, "nil store")
	_, err = webhook.New(s, webhook.Options{Endpoints: []webhook.Endpoint{ok}})
	assert.NoError(t, err)
}

func TestAttemptIsAStandardWebhook(t *testing.T) {
	s := memstore.New()
	now := t0
	ids := appendEvents(t, s, outbox.DefaultEndpoint, 1)
	second := webhook.NewSecret()
	var got *http.Request
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, body = r.Clone(context.Background()), must(io.ReadAll(r.Body))
	}))
	defer srv.Close()
	d, err := webhook.New(s, webhook.Options{Now: fixed(&now),
		Endpoints: []webhook.Endpoint{{URL: srv.URL + "/hooks?x=1", Secrets: []string{vectorSecret, second}}}})
	require.NoError(t, err)
	n, err := d.Poll(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NotNil(t, got)
	assert.Equal(t, http.MethodPost, got.Method)
	assert.Equal(t, "/hooks?x=1", got.URL.RequestURI())
	assert.Equal(t, "application/json", got.Header.Get("Content-Type"))
	assert.Equal(t, ids[0], got.Header.Get("webhook-id"))
	assert.Equal(t, strconv.FormatInt(t0.Unix(), 10), got.Header.Get("webhook-timestamp"), "the attempt's time")
	assert.Equal(t, `{"type":"key.created","n":0}`, string(body), "the payload byte for byte")
	for _, secret := range []string{vectorSecret, second} {
		v, err := webhook.NewVerifier([]string{secret}, webhook.VerifierOptions{Now: fixed(&now)})
		require.NoError(t, err)
		assert.NoError(t, v.Verify(got.Header, body), "signed with each secret")
	}
	e := event(t, s, ids[0])
	assert.Equal(t, outbox.Delivered, e.State)
	assert.Equal(t, 1, e.Attempts)
	assert.Equal(t, webhook.Stats{Attempts: 1, Delivered: 1}, d.Stats())
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestAnswers(t *testing.T) {
	tests := []struct {
		name    string
		answer  func(w http.ResponseWriter)
		state   outbox.State
		err     string
		waitMin time.Duration
	}{
		{"204", func(w http.ResponseWriter) { w.WriteHeader(204) }, outbox.Delivered, "", 0},
		{"410GoneIsDeadAtOnce", func(w http.ResponseWriter) { w.WriteHeader(410) }, outbox.Dead, "410 Gone: the endpoint wants no more webhooks", 0},
		{"302IsNotFollowed", func(w http.ResponseWriter) {
			w.Header().Set("Location", "/elsewhere")
			w.WriteHeader(302)
		}, outbox.Pending, "302 Found", 800 * time.Millisecond},
		{"500", func(w http.ResponseWriter) { w.WriteHeader(500) }, outbox.Pending, "500 Internal Server Error", 800 * time.Millisecond},
		{"503WithRetryAfter", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(503)
		}, outbox.Pending, "503 Service Unavailable", 120 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := memstore.New()
			now := t0
			ids := appendEvents(t, s, outbox.DefaultEndpoint, 1)
			var redirected atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/elsewhere" {
					redirected.Store(true)
				}
				tc.answer(w)
			}))
			defer srv.Close()
			d, err := webhook.New(s, webhook.Options{Now: fixed(&now), Endpoints: []webhook.Endpoint{{URL: srv.URL, Secrets: []string{vectorSecret}}}})
			require.NoError(t, err)
			_, err = d.Poll(context.Background())
			require.NoError(t, err)
			e := event(t, s, ids[0])
			assert.Equal(t, tc.state, e.State)
			assert.Equal(t, tc.err, e.LastError)
			assert.False(t, redirected.Load(), "a redirect is never followed")
			if tc.state == outbox.Pending {
				assert.GreaterOrEqual(t, e.DueAt.Sub(t0), tc.waitMin, "due again at %v", e.DueAt)
			}
		})
	}
}

func TestDeadAfterMaxAttempts(t *testing.T) {
	s := memstore.New()
	now := t0
	ids := appendEvents(t, s, outbox.DefaultEndpoint, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer srv.Close()
	schedule := []time.Duration{time.Second, 10 * time.Second, time.Minute}
	d, err := webhook.New(s, webhook.Options{Now: fixed(&now), Schedule: schedule, MaxAttempts: 4,
		Endpoints: []webhook.Endpoint{{URL: srv.URL, Secrets: []string{vectorSecret}}}})
	require.NoError(t, err)
	var waits []time.Duration
	for range 4 {
		n, err := d.Poll(context.Background())
		require.NoError(t, err)
		require.Equal(t, 1, n)
		e := event(t, s, ids[0])
		if e.State == outbox.Pending {
			waits = append(waits, e.DueAt.Sub(now))
			now = e.DueAt
		}
	}
	e := event(t, s, ids[0])
	assert.Equal(t, outbox.Dead, e.State, "dead after MaxAttempts")
	assert.Equal(t, 4, e.Attempts)
	require.Len(t, waits, 3)
	for i, w := range waits {
		assert.InDelta(t, float64(schedule[i]), float64(w), float64(schedule[i])/5+float64(time.Microsecond),
			"wait %d within 20%% of the schedule", i)
	}
	assert.Equal(t, uint64(1), d.Stats().Dead)
	n, err := d.Poll(context.Background())
	require.NoError(t, err)
	assert.Zero(t, n, "a dead event is not attempted")
}

func TestJitterSpreadsRetries(t *testing.T) {
	s := memstore.New()
	now := t0
	ids := appendEvents(t, s, outbox.DefaultEndpoint, 40)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer srv.Close()
	d, err := webhook.New(s, webhook.Options{Now: fixed(&now), Endpoints: []webhook.Endpoint{{URL: srv.URL, Secrets: []string{vectorSecret}, Concurrency: 8}}})
	require.NoError(t, err)
	_, err = d.Poll(context.Background())
	require.NoError(t, err)
	distinct := map[time.Time]bool{}
	for _, id := range ids {
		e := event(t, s, id)
		wait := e.DueAt.Sub(t0)
		assert.True(t, wait >= 800*time.Millisecond && wait <= 1200*time.Millisecond, "the first retry within a second ±20%%: %v", wait)
		distinct[e.DueAt] = true
	}
	assert.Greater(t, len(distinct), 20, "retries are spread, not in step")
}

func TestErrorsNeverShowTheURL(t *testing.T) {
	s := memstore.New()
	now := t0
	ids := appendEvents(t, s, outbox.DefaultEndpoint, 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close() // nothing listens: connection refused
	d, err := webhook.New(s, webhook.Options{Now: fixed(&now),
		Endpoints: []webhook.Endpoint{{URL: "http://user:hunter2@" + addr + "/hooks?token=sk_live_secret", Secrets: []string{vectorSecret}}}})
	require.NoError(t, err)
	_, err = d.Poll(context.Background())
	require.NoError(t, err)
	e := event(t, s, ids[0])
	assert.Equal(t, outbox.Pending, e.State)
	assert.NotEmpty(t, e.LastError)
	assert.NotContains(t, e.LastError, "hunter2")
	assert.NotContains(t, e.LastError, "sk_live_secret")
}

func TestConcurrencyIsBoundedPerEndpoint(t *testing.T) {
	s := memstore.New()
	appendEvents(t, s, "a", 12)
	appendEvents(t, s, "b", 12)
	var mu sync.Mutex
	inflight, most := map[string]int{}, map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ep := r.URL.Path
		mu.Lock()
		inflight[ep]++
		most[ep] = max(most[ep], inflight[ep])
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		inflight[ep]--
		mu.Unlock()
	}))
	defer srv.Close()
	d, err := webhook.New(s, webhook.Options{Endpoints: []webhook.Endpoint{
		{Name: "a", URL: srv.URL + "/a", Secrets: []string{vectorSecret}, Concurrency: 2},
		{Name: "b", URL: srv.URL + "/b", Secrets: []string{vectorSecret}, Concurrency: 3},
	}})
	require.NoError(t, err)
	n, err := d.Poll(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 24, n, "every due event, in rounds")
	assert.Equal(t, map[string]int{"/a": 2, "/b": 3}, most, "at most Concurrency attempts at once per endpoint")
}

func TestOtherEndpointsAreLeftAlone(t *testing.T) {
	s := memstore.New()
	mine := appendEvents(t, s, "mine", 1)
	theirs := appendEvents(t, s, "theirs", 1)
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	d, err := webhook.New(s, webhook.Options{Endpoints: []webhook.Endpoint{{Name: "mine", URL: srv.URL, Secrets: []string{vectorSecret}}}})
	require.NoError(t, err)
	_, err = d.Poll(context.Background())
	require.NoError(t, err)
	assert.Equal(t, outbox.Delivered, event(t, s, mine[0]).State)
	assert.Equal(t, outbox.Pending, event(t, s, theirs[0]).State, "an endpoint of another dispatcher")
}

// TestRunReleasesItsAttemptsWhenStopped stops Run in the middle of an
// attempt: the event is released, due at once, for any instance.
func TestRunReleasesItsAttemptsWhenStopped(t *testing.T) {
	s := memstore.New()
	ids := appendEvents(t, s, outbox.DefaultEndpoint, 1)
	started := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // so that the server notices the client leave
		close(started)
		<-r.Context().Done()
	}))
	defer srv.Close()
	d, err := webhook.New(s, webhook.Options{Endpoints: []webhook.Endpoint{{URL: srv.URL, Secrets: []string{vectorSecret}}}})
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	<-started
	stop()
	assert.ErrorIs(t, <-done, context.Canceled)
	e := event(t, s, ids[0])
	assert.Equal(t, outbox.Pending, e.State)
	assert.Empty(t, e.Claim, "released")
	assert.False(t, e.DueAt.After(time.Now()), "due at once")
	assert.Equal(t, "abandoned: the dispatcher stopped", e.LastError)
}

// TestRunDeliversSoon delivers an event written while Run runs, and makes
// the first retry within about a second.
func TestRunDeliversSoon(t *testing.T) {
	s := memstore.New()
	var calls atomic.Int64
	delivered := make(chan time.Time, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(503)
			return
		}
		delivered <- time.Now()
	}))
	defer srv.Close()
	d, err := webhook.New(s, webhook.Options{Endpoints: []webhook.Endpoint{{URL: srv.URL, Secrets: []string{vectorSecret}}}})
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() { _ = d.Run(ctx) }()
	start := time.Now()
	appendEvents(t, s, outbox.DefaultEndpoint, 1)
	select {
	case at := <-delivered:
		assert.Less(t, at.Sub(start), 3*time.Second, "written, failed once, retried and delivered within seconds")
	case <-time.After(10 * time.Second):
		t.Fatal("not delivered")
	}
}
