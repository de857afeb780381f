package leak_test

import (
	"bytes"
	"context"
	"errors"
	"io"
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

// The test plays GitHub: it signs a real alert with a P-256 key it serves
// from a local metadata endpoint, over HTTP, for a live token; the key is
// refused by a second instance within a second, and the answer labels the
// token true_positive. (Not parallel: the bound is on the instances'
// goroutines, which the package's concurrency tests would starve.)
func TestGitHubAlertRevokesTheKeyOnEveryInstance(t *testing.T) {
	ctx := context.Background()
	gh := newSigner(t)
	keys := newKeysServer(t, newSigner(t), gh) // an older key and the current one

	store, fleet, audit := memstore.New(), newHub(), &events{}
	a := newManager(t, store, apikey.Options{Notifier: fleet.notifier(), CacheTTL: time.Hour, Logger: slog.New(audit)})
	b := newManager(t, store, apikey.Options{Notifier: fleet.notifier(), CacheTTL: time.Hour})
	require.Eventually(t, func() bool { return fleet.subscribers() == 2 }, 5*time.Second, time.Millisecond,
		"both instances listen")
	token, k := issue(t, a, "ann")
	_, err := b.Verify(ctx, token)
	require.NoError(t, err, "the second instance holds the key in its cache, for an hour")

	var told []leak.Leak
	h, err := leak.NewGitHub(a, leak.GitHubOptions{KeysURL: keys.URL,
		OnLeak: func(_ context.Context, l leak.Leak) { told = append(told, l) }})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	body := alertBody(t, token)
	req, err := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Github-Public-Key-Identifier", gh.id)
	req.Header.Set("Github-Public-Key-Signature", gh.sign(t, body))
	sent := time.Now()
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	answer, err := io.ReadAll(resp.Body)
	answered := time.Now()
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(answer))
	assert.JSONEq(t, `[{"token_hash":"`+hashOf(token)+`","token_type":"gokeys_api_key","label":"true_positive"}]`, string(answer))
	assert.NotContains(t, string(answer), token, "the answer names the token by its hash")

	// The revocation is published before the answer is written: from the
	// answer on, the second instance refuses the key within the Notifier's
	// latency. (The alert's own handling is on top: milliseconds, more
	// under -race on a loaded machine.)
	require.Eventually(t, func() bool {
		_, err := b.Verify(ctx, token)
		return errors.Is(err, apikey.ErrRevoked) || time.Since(answered) > time.Second
	}, 5*time.Second, 5*time.Millisecond)
	_, err = b.Verify(ctx, token)
	require.ErrorIs(t, err, apikey.ErrRevoked)
	require.Less(t, time.Since(answered), time.Second, "refused by the second instance within a second of the answer")
	t.Logf("refused by the second instance %v after the alert was sent (answered after %v)",
		time.Since(sent).Round(time.Microsecond), answered.Sub(sent).Round(time.Microsecond))

	leaks := audit.of("leak")
	require.Len(t, leaks, 1)
	assert.Equal(t, map[string]string{"event": "leak", "key_id": k.ID, "owner": "ann",
		"url": "https://github.com/octo/app/blob/5c1e/config/.env", "action": "revoke", "changed": "true"}, leaks[0])
	require.Len(t, told, 1)
	assert.Equal(t, k.ID, told[0].Key.ID)
	assert.Equal(t, "content", told[0].Source)
	assert.True(t, told[0].Changed())
	assert.EqualValues(t, 1, keys.requests.Load(), "the public keys are fetched once")
}

func TestGitHubLabelsEachToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	gh := newSigner(t)
	keys := newKeysServer(t, gh)
	m := newManager(t, memstore.New(), apikey.Options{})
	live, _ := issue(t, m, "ann")
	revoked, rk := issue(t, m, "bob")
	require.NoError(t, m.Revoke(ctx, rk.ID))
	disabled, dk := issue(t, m, "cy")
	_, err := m.Disable(ctx, dk.ID)
	require.NoError(t, err)
	unknown := unknownToken(t, m)
	garbage := "sk_live_" + strings.Repeat("x", 65)

	h, err := leak.NewGitHub(m, leak.GitHubOptions{KeysURL: keys.URL})
	require.NoError(t, err)
	body := alertBody(t, live, revoked, unknown, garbage, disabled)
	fb := feedback(t, postAlert(h, body, gh.id, gh.sign(t, body)))
	var labels []string
	for i, f := range fb {
		labels = append(labels, f.Label)
		assert.Equal(t, hashOf([]string{live, revoked, unknown, garbage, disabled}[i]), f.TokenHash)
		assert.Equal(t, "gokeys_api_key", f.TokenType)
	}
	assert.Equal(t, []string{"true_positive", "true_positive", "false_positive", "false_positive", "true_positive"}, labels)
	for _, tok := range []string{live, disabled} {
		_, err := m.Verify(ctx, tok)
		assert.ErrorIs(t, err, apikey.ErrRevoked)
	}
}

// The same alert twice labels the same and changes nothing: no write, no
// second revocation.
func TestGitHubRepeatedAlertChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	gh := newSigner(t)
	keys := newKeysServer(t, gh)
	spy, audit := newSpy(), &events{}
	m := newManager(t, spy, apikey.Options{Logger: slog.New(audit)})
	token, k := issue(t, m, "ann")
	h, err := leak.NewGitHub(m, leak.GitHubOptions{KeysURL: keys.URL})
	require.NoError(t, err)
	body := alertBody(t, token)
	sig := gh.sign(t, body)

	first := postAlert(h, body, gh.id, sig)
	revoked, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	writes := spy.writes.Load()
	second := postAlert(h, body, gh.id, sig)
	assert.Equal(t, first.Body.String(), second.Body.String())
	assert.Equal(t, writes, spy.writes.Load(), "the second alert writes nothing")
	again, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	assert.Equal(t, revoked.Revision, again.Revision)
	assert.Equal(t, revoked.RevokedAt, again.RevokedAt)
	assert.Len(t, audit.of("revoke"), 1)
	changed := []string{}
	for _, e := range audit.of("leak") {
		changed = append(changed, e["changed"])
	}
	assert.Equal(t, []string{"true", "false"}, changed, "both alerts are recorded")
}

// Alerts sent concurrently (GitHub retrying while the first is in
// flight) all succeed, and the key is revoked by one write.
func TestGitHubConcurrentAlertsRevokeOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	gh := newSigner(t)
	keys := newKeysServer(t, gh)
	for _, store := range []apikey.Store{memstore.New(), newSpy()} { // with and without the Revoker
		m := newManager(t, store, apikey.Options{})
		h, err := leak.NewGitHub(m, leak.GitHubOptions{KeysURL: keys.URL})
		require.NoError(t, err)
		for range 20 {
			token, k := issue(t, m, "ann")
			body := alertBody(t, token)
			sig := gh.sign(t, body)
			var wg sync.WaitGroup
			answers := make(chan *httptest.ResponseRecorder, 8)
			for range 8 {
				wg.Go(func() { answers <- postAlert(h, body, gh.id, sig) })
			}
			wg.Wait()
			close(answers)
			for rec := range answers {
				fb := feedback(t, rec)
				require.Len(t, fb, 1)
				assert.Equal(t, leak.TruePositive, fb[0].Label)
			}
			got, err := m.Get(ctx, k.ID)
			require.NoError(t, err)
			assert.False(t, got.RevokedAt.IsZero())
			assert.Equal(t, k.Revision+1, got.Revision, "revoked by one write")
		}
	}
}

// Unsigned, badly signed, oversized and malformed alerts are refused
// before the store is touched.
func TestGitHubRefusesWithoutTouchingTheStore(t *testing.T) {
	t.Parallel()
	gh, stranger := newSigner(t), newSigner(t)
	keys := newKeysServer(t, gh)
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{})
	token, _ := issue(t, m, "ann")
	h, err := leak.NewGitHub(m, leak.GitHubOptions{KeysURL: keys.URL, MaxBody: 4096, MaxTokens: 3})
	require.NoError(t, err)
	body := alertBody(t, token)

	signed := func(b string) (string, string, string) { return b, gh.id, gh.sign(t, []byte(b)) }
	type req struct{ body, id, sig string }
	cases := []struct {
		name   string
		req    req
		status int
	}{
		{"unsigned", req{string(body), "", ""}, http.StatusForbidden},
		{"no signature", req{string(body), gh.id, ""}, http.StatusForbidden},
		{"no key id", req{string(body), "", gh.sign(t, body)}, http.StatusForbidden},
		{"signed by a stranger", req{string(body), gh.id, stranger.sign(t, body)}, http.StatusForbidden},
		// A key not held, within the interval since the last fetch: it
		// may be new, try again later (after a fetch: 403, see below).
		{"a stranger's key id", req{string(body), stranger.id, stranger.sign(t, body)}, http.StatusServiceUnavailable},
		{"signature of another body", req{string(body), gh.id, gh.sign(t, alertBody(t, token, token))}, http.StatusForbidden},
		{"body changed after signing", req{strings.Replace(string(body), "content", "commit", 1), gh.id, gh.sign(t, body)}, http.StatusForbidden},
		{"signature not base64", req{string(body), gh.id, "not base64!"}, http.StatusForbidden},
		{"signature not ASN.1", req{string(body), gh.id, "AAAA"}, http.StatusForbidden},
		{"key id not an id", req{string(body), "../../etc", gh.sign(t, body)}, http.StatusForbidden},
		{"oversized", req(sig3(signed(`[` + strings.Repeat(`{"token":"x"},`, 400) + `{"token":"x"}]`))), http.StatusRequestEntityTooLarge},
		{"not JSON", req(sig3(signed(`[{"token":`))), http.StatusBadRequest},
		{"an object", req(sig3(signed(`{"token":"x"}`))), http.StatusBadRequest},
		{"null", req(sig3(signed(`null`))), http.StatusBadRequest},
		{"a match without token", req(sig3(signed(`[{"type":"gokeys_api_key"}]`))), http.StatusBadRequest},
		{"a token that is no string", req(sig3(signed(`[{"token":42}]`))), http.StatusBadRequest},
		{"trailing data", req(sig3(signed(`[] []`))), http.StatusBadRequest},
		{"too many tokens", req(sig3(signed(string(alertBody(t, token, token, token, token))))), http.StatusRequestEntityTooLarge},
	}
	for _, tc := range cases {
		before := spy.calls.Load()
		rec := postAlert(h, []byte(tc.req.body), tc.req.id, tc.req.sig)
		assert.Equal(t, tc.status, rec.Code, "%s: %s", tc.name, rec.Body.String())
		assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"), tc.name)
		assert.Equal(t, before, spy.calls.Load(), "%s: the store is not touched", tc.name)
		assert.NotContains(t, rec.Body.String(), token, tc.name)
	}

	// A body over the bound without a Content-Length (chunked) is cut off.
	big := bytes.Repeat([]byte(" "), 8192)
	chunked := httptest.NewRequest(http.MethodPost, "/", io.MultiReader(bytes.NewReader(big)))
	chunked.ContentLength = -1
	chunked.Header.Set(leak.HeaderKeyID, gh.id)
	chunked.Header.Set(leak.HeaderSignature, gh.sign(t, big))
	calls := spy.calls.Load()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, chunked)
	assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)

	get := httptest.NewRecorder()
	h.ServeHTTP(get, httptest.NewRequest(http.MethodGet, "/", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, get.Code)
	assert.Equal(t, calls, spy.calls.Load())
	_, err = m.Verify(context.Background(), token)
	assert.NoError(t, err, "no refused alert revoked the key")
}

// sig3 turns signed's three results into a request's fields.
func sig3(body, id, sig string) struct{ body, id, sig string } {
	return struct{ body, id, sig string }{body, id, sig}
}

// The public keys are fetched when an alert names a key not held, never
// more than once per interval however many alerts ask, and again when a
// new key appears after the interval.
func TestGitHubFetchesKeysAtMostOncePerInterval(t *testing.T) {
	t.Parallel()
	old, current, bogus := newSigner(t), newSigner(t), newSigner(t)
	keys := newKeysServer(t, old)
	var mu sync.Mutex
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var fetches atomic.Int64
	fetch := func(ctx context.Context, url string) ([]byte, error) {
		fetches.Add(1)
		resp, err := http.Get(url)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	m := newManager(t, memstore.New(), apikey.Options{})
	h, err := leak.NewGitHub(m, leak.GitHubOptions{KeysURL: keys.URL, Fetch: fetch, Now: clock, KeysInterval: time.Minute})
	require.NoError(t, err)
	body := alertBody(t, unknownToken(t, m))

	require.Equal(t, http.StatusOK, postAlert(h, body, old.id, old.sign(t, body)).Code)
	assert.EqualValues(t, 1, fetches.Load())

	// A flood of alerts naming a key GitHub never published.
	var wg sync.WaitGroup
	var unavailable atomic.Int64
	for range 50 {
		wg.Go(func() {
			rec := postAlert(h, body, bogus.id, bogus.sign(t, body))
			if rec.Code == http.StatusServiceUnavailable {
				unavailable.Add(1)
				assert.NotEmpty(t, rec.Header().Get("Retry-After"))
			} else {
				assert.Equal(t, http.StatusForbidden, rec.Code)
			}
		})
	}
	wg.Wait()
	assert.EqualValues(t, 1, fetches.Load(), "no fetch within the interval")
	assert.EqualValues(t, 50, unavailable.Load(), "an unknown key within the interval: try again later")

	// GitHub rotates its key; after the interval, an alert signed with
	// the new one fetches the keys once and is accepted.
	keys.serve(t, http.StatusOK, old, current)
	advance(time.Minute)
	assert.Equal(t, http.StatusOK, postAlert(h, body, current.id, current.sign(t, body)).Code)
	assert.EqualValues(t, 2, fetches.Load())
	assert.Equal(t, http.StatusOK, postAlert(h, body, old.id, old.sign(t, body)).Code, "older keys keep working")

	// After a fetch that did not list it, a key is refused as not GitHub's.
	advance(time.Minute)
	assert.Equal(t, http.StatusForbidden, postAlert(h, body, bogus.id, bogus.sign(t, body)).Code)
	assert.EqualValues(t, 3, fetches.Load())

	// A day later the copy is stale: fetched again at the next alert, and
	// a key GitHub withdrew is no longer trusted.
	keys.serve(t, http.StatusOK, current)
	advance(24 * time.Hour)
	assert.Equal(t, http.StatusOK, postAlert(h, body, current.id, current.sign(t, body)).Code)
	assert.EqualValues(t, 4, fetches.Load())
	advance(time.Minute)
	assert.Equal(t, http.StatusForbidden, postAlert(h, body, old.id, old.sign(t, body)).Code)
}

// A metadata endpoint that fails is a 503 (GitHub sends the alert again),
// never a verdict on the alert; the keys held are used meanwhile.
func TestGitHubKeysUnavailableIs503(t *testing.T) {
	t.Parallel()
	gh := newSigner(t)
	keys := newKeysServer(t, gh)
	keys.serve(t, http.StatusInternalServerError, gh)
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{})
	var mu sync.Mutex
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h, err := leak.NewGitHub(m, leak.GitHubOptions{KeysURL: keys.URL, Now: clock})
	require.NoError(t, err)
	body := alertBody(t, unknownToken(t, m))

	rec := postAlert(h, body, gh.id, gh.sign(t, body))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Equal(t, "60", rec.Header().Get("Retry-After"))
	assert.Zero(t, spy.calls.Load())

	keys.serve(t, http.StatusOK, gh)
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	assert.Equal(t, http.StatusOK, postAlert(h, body, gh.id, gh.sign(t, body)).Code)

	keys.serve(t, http.StatusBadGateway, gh)
	mu.Lock()
	now = now.Add(48 * time.Hour)
	mu.Unlock()
	assert.Equal(t, http.StatusOK, postAlert(h, body, gh.id, gh.sign(t, body)).Code, "a stale key is used while the fetch fails")
}

// A failing store is a 503, and the alert sent again completes the work.
func TestGitHubStoreFailureIs503(t *testing.T) {
	t.Parallel()
	gh := newSigner(t)
	keys := newKeysServer(t, gh)
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{})
	token, _ := issue(t, m, "ann")
	h, err := leak.NewGitHub(m, leak.GitHubOptions{KeysURL: keys.URL})
	require.NoError(t, err)
	body := alertBody(t, token)
	sig := gh.sign(t, body)

	spy.fail.Store(true)
	rec := postAlert(h, body, gh.id, sig)
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.NotEmpty(t, rec.Header().Get("Retry-After"))
	spy.fail.Store(false)
	fb := feedback(t, postAlert(h, body, gh.id, sig))
	assert.Equal(t, leak.TruePositive, fb[0].Label)
	_, err = m.Verify(context.Background(), token)
	assert.ErrorIs(t, err, apikey.ErrRevoked)
}

func TestGitHubActions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	gh := newSigner(t)
	keys := newKeysServer(t, gh)
	for _, tc := range []struct {
		action leak.Action
		want   error
	}{{leak.Disable, apikey.ErrDisabled}, {leak.Report, nil}} {
		m := newManager(t, memstore.New(), apikey.Options{})
		token, _ := issue(t, m, "ann")
		h, err := leak.NewGitHub(m, leak.GitHubOptions{KeysURL: keys.URL, Action: tc.action})
		require.NoError(t, err)
		body := alertBody(t, token)
		fb := feedback(t, postAlert(h, body, gh.id, gh.sign(t, body)))
		assert.Equal(t, leak.TruePositive, fb[0].Label, tc.action)
		_, err = m.Verify(ctx, token)
		if tc.want == nil {
			assert.NoError(t, err, tc.action)
		} else {
			assert.ErrorIs(t, err, tc.want, tc.action)
		}
	}
}

func TestNewGitHubRefusesBadOptions(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	for name, opts := range map[string]leak.GitHubOptions{
		"unknown action": {Action: "delete"},
		"negative body":  {MaxBody: -1},
		"negative cap":   {MaxTokens: -1},
	} {
		_, err := leak.NewGitHub(m, opts)
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions, name)
	}
	_, err := leak.NewGitHub(nil, leak.GitHubOptions{})
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
}
