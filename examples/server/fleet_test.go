package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/internal/testserver"
)

// The two-process tests run the example server as it is deployed: built
// with go build, two processes over one database, a key revoked through
// A's DELETE /api-keys/{id} and presented to B until B refuses it.

const (
	trials = 100
	bound  = time.Second
)

// buildServer builds the example server once per test binary.
var buildServer = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "apikey-example-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "server")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// process is one running example server.
type process struct {
	t    *testing.T
	name string
	url  string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   *sync.Mutex
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// start runs the server with args on a spare port and waits for /healthz.
func start(t *testing.T, name string, args ...string) *process {
	t.Helper()
	bin, err := buildServer()
	require.NoError(t, err)
	addr := "127.0.0.1:" + strconv.Itoa(testserver.SparePort(t))
	p := &process{t: t, name: name, url: "http://" + addr, log: &bytes.Buffer{}, mu: &sync.Mutex{}}
	p.cmd = exec.Command(bin, append([]string{"-addr", addr, "-cache-ttl", "1h"}, args...)...)
	p.cmd.Env = append(os.Environ(), "APIKEY_PEPPER=example-fleet-pepper-0123456789abcdef")
	p.cmd.Stdout = lockedWriter{p.mu, p.log}
	p.cmd.Stderr = lockedWriter{p.mu, p.log}
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("log of %s:\n%s", p.name, p.log.String())
			p.mu.Unlock()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Fatalf("%s did not become healthy: %v\n%s", name, err, p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var fleetClient = &http.Client{Timeout: 5 * time.Second}

// create issues a key of demo through p's management API.
func (p *process) create(t *testing.T) (id, token string) { return p.createAs(t, "demo") }

// createAs issues a key of user (whose password is his name) through p's
// management API.
func (p *process) createAs(t *testing.T, user string) (id, token string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.url+"/api-keys", strings.NewReader(`{"name":"fleet"}`))
	require.NoError(t, err)
	req.SetBasicAuth(user, user)
	req.Header.Set("Content-Type", "application/json")
	resp, err := fleetClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "%s", body)
	var v struct{ ID, Key string }
	require.NoError(t, json.Unmarshal(body, &v))
	return v.ID, v.Key
}

// revoke is DELETE /api-keys/{id} on p; it returns the status.
func (p *process) revoke(id string) (int, error) {
	req, err := http.NewRequest(http.MethodDelete, p.url+"/api-keys/"+id, nil)
	if err != nil {
		return 0, err
	}
	req.SetBasicAuth("demo", "demo")
	resp, err := fleetClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// protected is GET /protected on p with token; it returns the status.
func (p *process) protected(token string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, p.url+"/protected", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := fleetClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// refusedWithin presents token to p until it is refused, for at most d;
// it returns how long that took from since, or false.
func (p *process) refusedWithin(token string, since time.Time, d time.Duration) (time.Duration, bool) {
	for {
		code, err := p.protected(token)
		if err == nil && code == http.StatusUnauthorized {
			return time.Since(since), true
		}
		if time.Since(since) > d {
			return time.Since(since), false
		}
		time.Sleep(500 * time.Microsecond)
	}
}

// propagation runs n trials: a key created on A, accepted (and cached) by
// B, revoked through A's DELETE, presented to B until refused. The delay
// runs from the DELETE request to B's first refusal.
func propagation(t *testing.T, a, b *process, n int, label string) []time.Duration {
	t.Helper()
	var delays []time.Duration
	late := 0
	for i := range n {
		id, token := a.create(t)
		code, err := b.protected(token)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code, "trial %d: B accepts a fresh key", i)
		start := time.Now()
		code, err = a.revoke(id)
		require.NoError(t, err)
		require.Equal(t, http.StatusNoContent, code)
		d, ok := b.refusedWithin(token, start, 5*bound)
		if !ok || d > bound {
			late++
		}
		delays = append(delays, d)
	}
	s := slices.Clone(delays)
	slices.Sort(s)
	rank := func(q float64) time.Duration { return s[max(0, int(math.Ceil(q*float64(len(s))))-1)] }
	t.Logf("%s: %d/%d refused by B within %v; p50 %v, p99 %v, max %v", label, n-late, n, bound,
		rank(0.5).Round(time.Microsecond), rank(0.99).Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond))
	assert.Zero(t, late, "%s: revocations not refused by B within %v", label, bound)
	return delays
}

// ready waits until a revocation on A is refused by B within the bound
// again (both notifiers reconnected after a restart), and returns how
// long that took.
func ready(t *testing.T, a, b *process, since time.Time) time.Duration {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		id, token := a.create(t)
		if code, err := b.protected(token); err != nil || code != http.StatusOK {
			continue
		}
		start := time.Now()
		if code, err := a.revoke(id); err != nil || code != http.StatusNoContent {
			continue
		}
		if _, ok := b.refusedWithin(token, start, bound); ok {
			return time.Since(since)
		}
	}
	t.Fatal("propagation did not recover within 30 s of the restart")
	return 0
}

// waitHealthy waits until p answers a management request (its database is
// back).
func (p *process) waitHealthy(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, p.url+"/api-keys", nil)
		req.SetBasicAuth("demo", "demo")
		if resp, err := fleetClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not reach its database again", p.name)
}

// Redis: two processes over one SQLite file, revocations through Redis
// pub/sub; then Redis crashes and restarts. A revocation made while it is
// down is refused by B once B has subscribed again (its cache dropped),
// and propagation is as fast as before.
func TestTwoProcessesRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	srv := testserver.StartRedis(t)
	db := filepath.Join(t.TempDir(), "keys.db")
	a := start(t, "A", "-db", db, "-redis", srv.Addr)
	b := start(t, "B", "-db", db, "-redis", srv.Addr)
	propagation(t, a, b, trials, "redis")

	id, token := a.create(t)
	code, err := b.protected(token)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	srv.Stop()
	code, err = a.revoke(id)
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, code, "the revocation stands while Redis is down")
	code, err = b.protected(token)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code, "while Redis is down, B serves its cache (bounded by the TTL)")
	restart := time.Now()
	srv.Start()
	d, ok := b.refusedWithin(token, restart, 10*time.Second)
	require.True(t, ok, "B drops its cache once subscribed again")
	t.Logf("redis: the key revoked during the outage was refused by B %v after the restart began", d.Round(time.Millisecond))
	t.Logf("redis: propagation within %v again %v after the restart began", bound, ready(t, a, b, restart).Round(time.Millisecond))
	propagation(t, a, b, trials, "redis after a restart")
}

// PostgreSQL: two processes over one private cluster holding the keys,
// revocations through LISTEN/NOTIFY; then the cluster crashes and
// restarts, and propagation is as fast as before.
func TestTwoProcessesPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	srv := testserver.StartPostgres(t)
	a := start(t, "A", "-postgres", srv.DSN)
	b := start(t, "B", "-postgres", srv.DSN)
	propagation(t, a, b, trials, "postgres")

	srv.Stop()
	restart := time.Now()
	srv.Start()
	a.waitHealthy(t)
	b.waitHealthy(t)
	t.Logf("postgres: propagation within %v again %v after the restart began", bound, ready(t, a, b, restart).Round(time.Millisecond))
	propagation(t, a, b, trials, "postgres after a restart")
}

// -metrics serves the library's metrics in Prometheus form.
func TestMetricsEndpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	a := start(t, "A", "-db", filepath.Join(t.TempDir(), "keys.db"), "-metrics")
	_, token := a.create(t)
	for range 3 {
		code, err := a.protected(token)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
	}
	code, err := a.protected("sk_live_garbage")
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, code)
	resp, err := fleetClient.Get(a.url + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	text := string(body)
	assert.Contains(t, text, `apikey_verification_duration_seconds_count{apikey_cache="hit",apikey_outcome="ok"`)
	assert.Contains(t, text, `apikey_outcome="malformed"`)
	assert.NotContains(t, text, token[:20], "no key material in metrics")
}

// operate sends an operator API request to p; it returns the status.
func (p *process) operate(method, path, body string) (int, error) {
	req, err := http.NewRequest(method, p.url+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.SetBasicAuth("ops", "secret")
	req.Header.Set("Content-Type", "application/json")
	resp, err := fleetClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// policy is the RateLimit-Policy of GET /data on p with token: the
// limits of the customer's plan, whether or not the request was allowed.
func (p *process) policy(token string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, p.url+"/data", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := fleetClient.Do(req)
	if err != nil {
		return "", err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("RateLimit-Policy"), nil
}

// within polls cond until it holds, for at most d; it returns how long
// that took from since, or false.
func within(since time.Time, d time.Duration, cond func() bool) (time.Duration, bool) {
	for {
		if cond() {
			return time.Since(since), true
		}
		if time.Since(since) > d {
			return time.Since(since), false
		}
		time.Sleep(500 * time.Microsecond)
	}
}

// customerPropagation runs n trials of operator changes made through A's
// operator API and watched on B, which has cached the customer record
// (its cache TTL is an hour): demo suspended and resumed, bob lowered to
// free and raised to pro again. Each delay runs from the PUT to B's first
// answer that honours it.
func customerPropagation(t *testing.T, a, b *process, n int, label string) {
	t.Helper()
	_, demo := a.createAs(t, "demo")
	_, bob := a.createAs(t, "bob")
	put := func(id, body string) time.Time {
		t.Helper()
		start := time.Now()
		code, err := a.operate("PUT", "/admin/customers/"+id, body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code, "PUT %s %s", id, body)
		return start
	}
	status := func(want int) func() bool {
		return func() bool { code, err := b.protected(demo); return err == nil && code == want }
	}
	plan := func(want string) func() bool {
		return func() bool { got, err := b.policy(bob); return err == nil && got == want }
	}
	delays := map[string][]time.Duration{}
	late := 0
	for i := range n {
		require.True(t, status(http.StatusOK)(), "trial %d: B accepts demo's key", i)
		require.True(t, plan(proPolicy)(), "trial %d: B spends bob's pro plan", i)
		for _, step := range []struct {
			name, id, body string
			honoured       func() bool
		}{
			{"suspend", "demo", `{"suspended":true}`, status(http.StatusUnauthorized)},
			{"resume", "demo", `{"suspended":false}`, status(http.StatusOK)},
			{"plan", "bob", `{"plan":"free"}`, plan(freePolicy)},
			{"plan", "bob", `{"plan":"pro"}`, plan(proPolicy)},
		} {
			d, ok := within(put(step.id, step.body), 5*bound, step.honoured)
			if !ok || d > bound {
				late++
			}
			delays[step.name] = append(delays[step.name], d)
		}
	}
	for _, name := range []string{"suspend", "resume", "plan"} {
		s := slices.Clone(delays[name])
		slices.Sort(s)
		rank := func(q float64) time.Duration { return s[max(0, int(math.Ceil(q*float64(len(s))))-1)] }
		t.Logf("%s: %s on A seen by B: %d changes, p50 %v, p99 %v, max %v", label, name, len(s),
			rank(0.5).Round(time.Microsecond), rank(0.99).Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond))
	}
	assert.Zero(t, late, "%s: operator changes not honoured by B within %v", label, bound)
}

// Redis: a suspension or a plan change made through A's operator API is
// honoured by B within the bound, through Redis pub/sub ("customer:"+id).
func TestOperatorChangesReachTheFleetRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	srv := testserver.StartRedis(t)
	db := filepath.Join(t.TempDir(), "keys.db")
	a := start(t, "A", "-db", db, "-redis", srv.Addr, "-admin", "ops:secret")
	b := start(t, "B", "-db", db, "-redis", srv.Addr, "-admin", "ops:secret")
	customerPropagation(t, a, b, 25, "redis")
}

// PostgreSQL: the same through LISTEN/NOTIFY.
func TestOperatorChangesReachTheFleetPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	srv := testserver.StartPostgres(t)
	a := start(t, "A", "-postgres", srv.DSN, "-admin", "ops:secret")
	b := start(t, "B", "-postgres", srv.DSN, "-admin", "ops:secret")
	customerPropagation(t, a, b, 25, "postgres")
}
