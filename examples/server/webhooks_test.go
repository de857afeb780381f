package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/internal/testserver"
	"github.com/gokeys/apikey/outbox"
	"github.com/gokeys/apikey/webhook"
)

// hookReceiver is a webhook endpoint that can go down and come back on
// its address. It verifies every request and records, per webhook id, the
// event's type and the acknowledgements (2xx answers that went out).
type hookReceiver struct {
	t    *testing.T
	v    *webhook.Verifier
	addr string

	mu    sync.Mutex
	srv   *httptest.Server
	types map[string]string // webhook id -> event type
	keys  map[string]string // webhook id -> key id
	acks  map[string]int
	bad   int
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	v, err := webhook.NewVerifier([]string{secret}, webhook.VerifierOptions{})
	require.NoError(t, err)
	r := &hookReceiver{t: t, v: v, types: map[string]string{}, keys: map[string]string{}, acks: map[string]int{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r.addr = l.Addr().String()
	r.up(l)
	t.Cleanup(r.down)
	return r
}

func (r *hookReceiver) url() string { return "http://" + r.addr + "/hooks" }

func (r *hookReceiver) up(l net.Listener) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
}

// down stops the receiver: connections are refused until restart.
func (r *hookReceiver) down() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (r *hookReceiver) restart() {
	var l net.Listener
	var err error
	for range 100 {
		if l, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(r.t, err)
	r.up(l)
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, outbox.MaxPayload))
	if err != nil {
		return
	}
	if err := r.v.Verify(req.Header, body); err != nil {
		r.mu.Lock()
		r.bad++
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var p outbox.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
	if http.NewResponseController(w).Flush() != nil || req.Context().Err() != nil {
		return // not acknowledged
	}
	id := req.Header.Get(webhook.HeaderID)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.types[id] = p.Type
	if p.Data.Key != nil {
		r.keys[id] = p.Data.Key.ID
	}
	r.acks[id]++
}

// acked returns the ids of the events of type typ about key id that were
// acknowledged, with how many times each was.
func (r *hookReceiver) acked(typ, key string) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for id, n := range r.acks {
		if r.types[id] == typ && r.keys[id] == key {
			out[id] = n
		}
	}
	return out
}

// waitFor waits until an event of type typ about key was acknowledged.
func (r *hookReceiver) waitFor(t *testing.T, typ, key string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for len(r.acked(typ, key)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no %s of key %s acknowledged within %v", typ, key, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLeakedKeyReachesTheWebhookOnce is the "Done when": a test
// plays GitHub (a local P-256 key served by a local metadata endpoint) and
// posts a signed alert for a live token to instance A. The key is refused
// by instance B within a second, the answer labels it true_positive, and
// the webhook receiver gets key.leaked once per webhook id across
// restarts: the receiver is down when the alert comes, A is killed right
// after answering and started again, GitHub sends the alert again, and the
// receiver comes back.
func TestLeakedKeyReachesTheWebhookOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	gh := newGitHub(t)
	redis := testserver.StartRedis(t)
	secret := webhook.NewSecret()
	rcv := newHookReceiver(t, secret)
	db := filepath.Join(t.TempDir(), "keys.db")
	args := []string{"-db", db, "-redis", redis.Addr, "-github-keys-url", gh.meta.URL,
		"-webhook-url", rcv.url(), "-webhook-secret", secret}
	a := start(t, "A", args...)
	b := start(t, "B", args...)

	id, token := a.create(t)
	rcv.waitFor(t, "key.created", id, 10*time.Second)
	code, err := b.protected(token)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code, "B accepts (and caches) the fresh key")

	rcv.down()
	sent := time.Now()
	status, answer := gh.alert(t, a.url, token)
	require.Equal(t, http.StatusOK, status, answer)
	assert.Contains(t, answer, `"label":"true_positive"`)
	d, ok := b.refusedWithin(token, sent, time.Second)
	require.True(t, ok, "B refuses the leaked key within a second")
	t.Logf("refused by B %v after the alert was sent to A", d.Round(time.Microsecond))

	require.NoError(t, a.cmd.Process.Kill()) // A dies, whatever it was sending
	_ = a.cmd.Wait()
	a2 := start(t, "A2", args...)
	status, answer = gh.alert(t, a2.url, token) // GitHub sends the alert again
	require.Equal(t, http.StatusOK, status, answer)
	assert.Contains(t, answer, `"label":"true_positive"`, "a repeated alert is labelled the same")
	rcv.restart()

	rcv.waitFor(t, "key.leaked", id, 90*time.Second) // at most one lease of the killed instance
	rcv.waitFor(t, "key.revoked", id, 10*time.Second)
	time.Sleep(2 * time.Second) // room for a duplicate to show
	leaked := rcv.acked("key.leaked", id)
	assert.Len(t, leaked, 1, "one key.leaked for one key and url, however many alerts")
	for wid, n := range leaked {
		assert.Equal(t, 1, n, "key.leaked %s acknowledged %d times", wid, n)
	}
	for _, typ := range []string{"key.created", "key.revoked"} {
		for wid, n := range rcv.acked(typ, id) {
			assert.Equal(t, 1, n, "%s %s acknowledged %d times", typ, wid, n)
		}
	}
	rcv.mu.Lock()
	assert.Zero(t, rcv.bad, "every webhook verifies")
	rcv.mu.Unlock()
}

// TestWebhookFlags checks the flags' pairing.
func TestWebhookFlags(t *testing.T) {
	_, err := startWebhooks(nil, flags{webhookURL: "http://127.0.0.1:1/hooks"}, nil)
	assert.ErrorContains(t, err, "-webhook-url needs -webhook-secret")
	_, err = startWebhooks(nil, flags{webhookSecret: webhook.NewSecret()}, nil)
	assert.ErrorContains(t, err, "-webhook-secret needs -webhook-url")
	w, err := startWebhooks(nil, flags{}, nil)
	assert.NoError(t, err)
	assert.Nil(t, w, "off without -webhook-url")
	assert.Nil(t, outboxPolicy(flags{}))
}
