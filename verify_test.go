package apikey_test

import (
	"bytes"
	"context"
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
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
)

// A known id with a wrong secret costs the store exactly what an unknown
// id costs (both bounded by the negative cache), and both get the same
// error and the same HTTP response.
func TestWrongSecretCostsLikeUnknownID(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cache apikey.Options // its cache settings
		per   int64          // store calls per round of n attempts
	}{
		{"cache", apikey.Options{}, 1},
		{"no negative cache", apikey.Options{CacheNegativeTTL: -1}, 10},
		{"no cache", apikey.Options{CacheTTL: -1}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 10
			c := newClock()
			store := newSpy()
			m := newManager(t, store, apikey.Options{Now: c.Now, CacheTTL: tc.cache.CacheTTL, CacheNegativeTTL: tc.cache.CacheNegativeTTL})
			token, _ := issue(t, m, apikey.IssueParams{})
			tok, err := m.Format().Parse(token)
			require.NoError(t, err)
			unknown, _ := m.Format().New()

			attempts := func(token func() string) int64 {
				before := store.gets.Load()
				for range n {
					_, err := m.Verify(context.Background(), token())
					require.Equal(t, apikey.ErrInvalid, err)
				}
				return store.gets.Load() - before
			}
			for round := range 3 {
				u := attempts(func() string { return unknown })
				w := attempts(func() string { return rebuild(t, m.Format(), tok.ID, "") })
				assert.Equal(t, u, w, "round %d: unknown id and wrong secret cost the same store calls", round)
				assert.Equal(t, tc.per, u, "round %d", round)
				c.Add(apikey.DefaultNegativeTTL)
			}

			// The right secret still works at once after wrong ones.
			_, err = m.Verify(context.Background(), rebuild(t, m.Format(), tok.ID, ""))
			require.Equal(t, apikey.ErrInvalid, err)
			k, err := m.Verify(context.Background(), token)
			require.NoError(t, err)
			assert.Equal(t, tok.ID, k.ID)

			mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
			require.NoError(t, err)
			var bodies []string
			for _, token := range []string{unknown, rebuild(t, m.Format(), tok.ID, "")} {
				rec := httptest.NewRecorder()
				mw.Handler(okHandler(new(bool))).ServeHTTP(rec, bearer(token))
				assert.Equal(t, 401, rec.Code)
				bodies = append(bodies, rec.Header().Get("WWW-Authenticate")+"\n"+rec.Body.String())
			}
			assert.Equal(t, bodies[0], bodies[1], "byte-identical responses")
		})
	}
}

// acceptAll is a Hasher that accepts any material: the extreme of a custom
// hasher that accepts another secret than the one first verified.
type acceptAll struct{}

func (acceptAll) Hash([]byte) ([]byte, string, error) { return []byte("x"), "any", nil }

func (acceptAll) Compare([]byte, []byte, string) (bool, error) { return true, nil }

// No path returns neither a key nor an error, in particular a cache hit
// whose hasher accepts another secret than the cached one.
func TestVerifyNeverReturnsNilWithoutError(t *testing.T) {
	for _, ttl := range []time.Duration{0, -1} {
		m := newManager(t, memstore.New(), apikey.Options{Hasher: acceptAll{}, CacheTTL: ttl})
		token, _ := issue(t, m, apikey.IssueParams{Owner: "alice"})
		tok, err := m.Format().Parse(token)
		require.NoError(t, err)
		for _, tk := range []string{token, rebuild(t, m.Format(), tok.ID, ""), rebuild(t, m.Format(), tok.ID, "")} {
			k, err := m.Verify(context.Background(), tk)
			require.NoError(t, err)
			require.NotNil(t, k)
			assert.Equal(t, "alice", k.Owner)
		}
	}
}

// InvalidateAll drops every entry: a change made behind the Manager's
// back (another instance) is seen by the next verification.
func TestInvalidateAll(t *testing.T) {
	store := memstore.New()
	m := newManager(t, store, apikey.Options{})
	tokens := make([]string, 5)
	ids := make([]string, 5)
	for i := range tokens {
		var k *apikey.Key
		tokens[i], k = issue(t, m, apikey.IssueParams{})
		ids[i] = k.ID
		_, err := m.Verify(context.Background(), tokens[i])
		require.NoError(t, err)
	}
	for _, id := range ids {
		require.NoError(t, store.Revoke(context.Background(), id, time.Now().Add(-time.Second)))
	}
	_, err := m.Verify(context.Background(), tokens[0])
	require.NoError(t, err, "still cached")
	m.InvalidateAll()
	for _, token := range tokens {
		_, err := m.Verify(context.Background(), token)
		assert.Equal(t, apikey.ErrRevoked, err)
	}
}

// No verification that starts after InvalidateAll returns may succeed with
// a record read before it, whatever runs concurrently.
func TestInvalidateAllIsImmediateUnderConcurrency(t *testing.T) {
	for trial := range 50 {
		store := spinSpy(trial % 5 * 20_000)
		m := newManager(t, store, apikey.Options{})
		token, k := issue(t, m, apikey.IssueParams{})
		var stop atomic.Bool
		var wg sync.WaitGroup
		calls := newCounter()
		for range 4 {
			wg.Go(func() {
				for !stop.Load() {
					_, _ = m.Verify(context.Background(), token)
					calls.add()
				}
			})
		}
		calls.await(16) // verifications in flight
		require.NoError(t, store.Store.(*memstore.Store).Revoke(context.Background(), k.ID, time.Now().Add(-time.Hour)))
		m.InvalidateAll()
		_, err := m.Verify(context.Background(), token)
		stop.Store(true)
		wg.Wait()
		require.Equal(t, apikey.ErrRevoked, err, "trial %d", trial)
	}
}

// A flood of garbage and invalid tokens logs at most one line per second
// per kind, which counts the failures it stands for.
func TestFailedVerificationsAreSampledInLogs(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now, Logger: log})
	token, _ := issue(t, m, apikey.IssueParams{})
	unknown, _ := m.Format().New()
	ctx := context.Background()
	lines := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if strings.Contains(l, "verify") {
				out = append(out, l)
			}
		}
		buf.Reset()
		return out
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 250 {
				_, _ = m.Verify(ctx, "sk_garbage")
				_, _ = m.Verify(ctx, unknown)
			}
		})
	}
	wg.Wait()
	got := lines()
	require.Len(t, got, 2, "one line per kind: %q", got)
	assert.NotContains(t, strings.Join(got, ""), "suppressed")

	_, err := m.Verify(ctx, token)
	require.NoError(t, err)
	assert.Len(t, lines(), 1, "successes are logged at Debug level")

	c.Add(time.Second)
	_, _ = m.Verify(ctx, "sk_garbage")
	got = lines()
	require.Len(t, got, 1)
	assert.Contains(t, got[0], "suppressed=999")
	assert.NotContains(t, got[0], "sk_garbage")
}

// Paused keys and suspended customers are sampled as kinds of their own:
// a flood of them never hides the line of a failing dependency.
func TestPausedAndSuspendedAreSampledApart(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	c := newClock()
	h := &customerHook{recs: map[string]*apikey.Customer{}, fail: map[string]bool{}}
	m := newManager(t, newCustomerStore(), apikey.Options{Now: c.Now, Logger: log, Customers: h.get})
	ctx := context.Background()
	paused, pk := issue(t, m, apikey.IssueParams{Owner: "ann"})
	_, err := m.Pause(ctx, pk.ID)
	require.NoError(t, err)
	suspended, _ := issue(t, m, apikey.IssueParams{Owner: "sus"})
	h.set("sus", &apikey.Customer{ID: "sus", Suspended: true, Revision: 1}, false)
	broken, _ := issue(t, m, apikey.IssueParams{Owner: "broken"})
	h.set("broken", nil, true)
	mu.Lock()
	buf.Reset()
	mu.Unlock()
	for range 100 {
		_, _ = m.Verify(ctx, paused)
		_, _ = m.Verify(ctx, suspended)
	}
	_, err = m.Verify(ctx, broken)
	require.ErrorIs(t, err, apikey.ErrUnavailable)
	mu.Lock()
	defer mu.Unlock()
	out := buf.String()
	assert.Equal(t, 3, strings.Count(out, "apikey: verify"), out)
	for _, outcome := range []string{"paused", "suspended", "unavailable"} { // as Metrics.Verified names them
		assert.Contains(t, out, "outcome="+outcome)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// The hot path allocates nothing: a cache hit, and a malformed token even
// with a Logger and Metrics set.
func TestHotPathAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	for _, opts := range []apikey.Options{{}, {Logger: log, Metrics: nopMetrics{}}} {
		m := newManager(t, memstore.New(), opts)
		token, _ := issue(t, m, apikey.IssueParams{Scopes: []string{"read"}})
		_, err := m.Verify(ctx, token)
		require.NoError(t, err)
		assert.Zero(t, testing.AllocsPerRun(1000, func() {
			if _, err := m.Verify(ctx, token); err != nil {
				panic(err)
			}
		}), "cache hit")
		bad := token[:len(token)-1] + "x"
		assert.Zero(t, testing.AllocsPerRun(1000, func() { _, _ = m.Verify(ctx, bad) }), "malformed")
		assert.Zero(t, testing.AllocsPerRun(1000, func() { _, _ = m.Verify(ctx, "sk_garbage") }), "garbage")
	}
}

// Counting a request for usage allocates nothing: a cache hit through
// Handler, and through Handler, RequireScopes and Limit, allocates as much
// with usage recording on as off (the request's context and the
// RateLimit header, nothing more); and so does Spend.
func TestUsageAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, chain := range []bool{false, true} {
		var allocs [2]float64
		for i, on := range []bool{false, true} {
			h, req, w := usagePath(t, on, chain)
			allocs[i] = testing.AllocsPerRun(1000, func() { h.ServeHTTP(w, req) })
		}
		assert.Equal(t, allocs[0], allocs[1], "chain %t: usage off, on", chain)
	}
	ctx := context.Background()
	var allocs [2]float64
	for i, interval := range []time.Duration{-1, time.Hour} {
		m := newManager(t, memstore.New(), apikey.Options{UsageInterval: interval, Plans: limits.Plans{"big": {limits.Quota("daily", 1e13, limits.Day)}}})
		lim, err := memlimit.New(memlimit.Options{})
		require.NoError(t, err)
		mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: lim}})
		require.NoError(t, err)
		_, k := issue(t, m, apikey.IssueParams{Owner: "ann", Plan: "big"})
		h := http.Header{}
		require.NoError(t, mw.Spend(ctx, k, 1, h))
		allocs[i] = testing.AllocsPerRun(1000, func() {
			if err := mw.Spend(ctx, k, 1, h); err != nil {
				panic(err)
			}
		})
	}
	assert.Equal(t, allocs[0], allocs[1], "Spend: usage off, on")
}

type nopMetrics struct{}

func (nopMetrics) Verified(string, string, time.Duration) {}
func (nopMetrics) Limited(string, string)                 {}
func (nopMetrics) LimiterFailed(string, bool)             {}
func (nopMetrics) Flushed(int, time.Duration, error)      {}
func (nopMetrics) UsesQueued(int, int)                    {}

// A cached id does not make a token pass: the same id and secret with
// another checksum, or under another prefix, are refused as they would be
// uncached.
func TestCachedIDStillChecksTheToken(t *testing.T) {
	ctx := context.Background()
	m := newManager(t, memstore.New(), apikey.Options{Prefix: "sk_live", Prefixes: []string{"sk_test"}})
	token, k, err := m.Issue(ctx, apikey.IssueParams{Prefix: "sk_test"})
	require.NoError(t, err)
	require.Equal(t, "sk_test", k.Prefix)
	for range 2 {
		_, err = m.Verify(ctx, token)
		require.NoError(t, err)
	}

	last := byte('0')
	if token[len(token)-1] == last {
		last = '1'
	}
	_, err = m.Verify(ctx, token[:len(token)-1]+string(last))
	assert.Equal(t, apikey.ErrMalformed, err, "same id and secret, another checksum")

	moved := "sk_live" + strings.TrimPrefix(token, "sk_test")
	_, err = m.Verify(ctx, moved)
	assert.Equal(t, apikey.ErrMalformed, err, "another prefix, checksum of the old one")

	tok, err := m.Format().Parse(token)
	require.NoError(t, err)
	live, err := m.Format().Compose(tok.ID, tok.Secret) // the checksum recomputed for sk_live
	require.NoError(t, err)
	_, err = m.Verify(ctx, live)
	assert.Equal(t, apikey.ErrInvalid, err, "a key verifies only under its own prefix")

	got, err := m.Verify(ctx, token)
	require.NoError(t, err)
	assert.Equal(t, k.ID, got.ID)
}

// Hits are served without a lock from a table that keys share by hash;
// with many keys some share a slot, and every change still shows at once.
func TestManyKeysHitsAndChanges(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	m := newManager(t, store, apikey.Options{CacheMaxEntries: 3000})
	const n = 4000 // more than MaxEntries: evictions too
	tokens := make([]string, n)
	ids := make([]string, n)
	for i := range tokens {
		var k *apikey.Key
		tokens[i], k = issue(t, m, apikey.IssueParams{})
		ids[i] = k.ID
	}
	for range 2 {
		for i, token := range tokens {
			k, err := m.Verify(ctx, token)
			require.NoError(t, err)
			require.Equal(t, ids[i], k.ID)
		}
	}
	for i := 0; i < n; i += 2 {
		require.NoError(t, m.Revoke(ctx, ids[i]))
	}
	for i, token := range tokens {
		_, err := m.Verify(ctx, token)
		if i%2 == 0 {
			require.Equal(t, apikey.ErrRevoked, err, "key %d", i)
		} else {
			require.NoError(t, err, "key %d", i)
		}
	}
	for i := 1; i < n; i += 2 { // behind the Manager's back, then dropped
		require.NoError(t, store.Revoke(ctx, ids[i], time.Now().Add(-time.Second)))
	}
	m.InvalidateAll()
	for i, token := range tokens {
		_, err := m.Verify(ctx, token)
		require.Equal(t, apikey.ErrRevoked, err, "key %d", i)
	}
}

// A cross-prefix forgery is refused. A token issued under sk_test, recomposed with
// sk_live's checksum, is refused by a Manager accepting both prefixes and
// by a live-only Manager over the same store and pepper.
func TestTestKeyNeverVerifiesAsLive(t *testing.T) {
	t.Parallel()
	store := memstore.New()
	both := newManager(t, store, apikey.Options{Prefix: "sk_live", Prefixes: []string{"sk_test"}})
	liveOnly := newManager(t, store, apikey.Options{Prefix: "sk_live"})
	ctx := context.Background()

	testToken, testKey, err := both.Issue(ctx, apikey.IssueParams{Owner: "alice", Prefix: "sk_test"})
	require.NoError(t, err)
	assert.Equal(t, "sk_test", testKey.Prefix)
	liveToken, liveKey, err := both.Issue(ctx, apikey.IssueParams{Owner: "alice"})
	require.NoError(t, err)
	assert.Equal(t, "sk_live", liveKey.Prefix, "Issue defaults to Options.Prefix")

	parsed, err := both.Format().Parse(testToken)
	require.NoError(t, err)
	assert.Equal(t, "sk_test", parsed.Prefix, "Parse reports the prefix")
	live, err := apikey.NewFormat("sk_live", 0)
	require.NoError(t, err)
	forged, err := live.Compose(parsed.ID, parsed.Secret)
	require.NoError(t, err)
	_, err = live.Parse(forged)
	require.NoError(t, err, "the forged token is well-formed")

	for name, m := range map[string]*apikey.Manager{"BothPrefixes": both, "LiveOnly": liveOnly} {
		t.Run(name, func(t *testing.T) {
			for range 2 { // the second time from the cache
				_, err := m.Verify(ctx, forged)
				assert.ErrorIs(t, err, apikey.ErrInvalid, "a test key verified as live")
			}
			k, err := m.Verify(ctx, liveToken)
			require.NoError(t, err)
			assert.Equal(t, "sk_live", k.Prefix, "handlers see the prefix to route test traffic")
		})
	}
	k, err := both.Verify(ctx, testToken)
	require.NoError(t, err, "the test key works under its own prefix")
	assert.Equal(t, "sk_test", k.Prefix)
	_, err = liveOnly.Verify(ctx, testToken)
	assert.ErrorIs(t, err, apikey.ErrMalformed, "a live-only Manager does not parse test tokens")

	_, _, err = both.Issue(ctx, apikey.IssueParams{Prefix: "sk_other"})
	assertInputError(t, err, "prefix", "an unknown prefix")

	rot, err := both.Rotate(ctx, testKey.ID, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, "sk_test", rot.Key.Prefix, "a test key rotates into a test key")
	_, err = both.Verify(ctx, rot.Token)
	require.NoError(t, err)
}

func TestFlippedCharacterNeedsNoStore(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{})
	token, _ := issue(t, m, apikey.IssueParams{})
	before := spy.calls.Load()
	for i := len("sk_"); i < len(token); i++ {
		b := []byte(token)
		b[i] = map[bool]byte{true: 'B', false: 'A'}[b[i] == 'A']
		_, err := m.Verify(context.Background(), string(b))
		assert.ErrorIs(t, err, apikey.ErrMalformed, "position %d", i)
	}
	_, err := m.Verify(context.Background(), strings.Repeat("x", 10_000))
	assert.ErrorIs(t, err, apikey.ErrMalformed)
	assert.Equal(t, before, spy.calls.Load(), "a malformed token reached the store")
}

func TestUnknownIDAndWrongSecretAreAlike(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts apikey.Options
	}{
		{"hmac", apikey.Options{}},
		{"bcrypt", apikey.Options{Hasher: mustBcrypt(t)}},
		{"hmac without cache", apikey.Options{CacheTTL: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, memstore.New(), tc.opts)
			token, _ := issue(t, m, apikey.IssueParams{})
			_, err := m.Verify(context.Background(), token) // warm the cache
			require.NoError(t, err)
			tok, err := m.Format().Parse(token)
			require.NoError(t, err)

			unknown, _ := m.Format().New()
			wrongSecret := rebuild(t, m.Format(), tok.ID, "")
			_, errUnknown := m.Verify(context.Background(), unknown)
			_, errWrong := m.Verify(context.Background(), wrongSecret)
			assert.Equal(t, apikey.ErrInvalid, errUnknown)
			assert.Equal(t, errUnknown, errWrong)
		})
	}
}

func TestExpiredAndRevoked(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now, DefaultTTL: time.Hour})
	token, _ := issue(t, m, apikey.IssueParams{})
	_, err := m.Verify(context.Background(), token)
	require.NoError(t, err)
	c.Add(time.Hour - time.Nanosecond)
	_, err = m.Verify(context.Background(), token)
	require.NoError(t, err)
	c.Add(time.Nanosecond)
	_, err = m.Verify(context.Background(), token)
	assert.ErrorIs(t, err, apikey.ErrExpired)

	token2, k2 := issue(t, m, apikey.IssueParams{})
	_, err = m.Verify(context.Background(), token2)
	require.NoError(t, err)
	require.NoError(t, m.Revoke(context.Background(), k2.ID))
	_, err = m.Verify(context.Background(), token2)
	assert.ErrorIs(t, err, apikey.ErrRevoked)
	require.NoError(t, m.Revoke(context.Background(), k2.ID), "revoking twice is fine")
	assert.ErrorIs(t, m.Revoke(context.Background(), "unknown"), apikey.ErrNotFound)
}

// BenchmarkVerify measures one verification of a valid key over memstore.
// "HMAC" is the default configuration (HMAC-SHA-256, cache on); "NoCache"
// reaches the store every time; the bcrypt variants show a cache hit and a
// miss (a miss pays one bcrypt comparison, cost 10).
func BenchmarkVerify(b *testing.B) {
	bc, err := apikey.NewBcryptHasher(10)
	if err != nil {
		b.Fatal(err)
	}
	for _, bm := range []struct {
		name string
		opts apikey.Options
	}{
		{"HMAC", apikey.Options{Peppers: testPepper}},
		{"HMAC/NoCache", apikey.Options{Peppers: testPepper, CacheTTL: -1}},
		{"SHA256/NoCache", apikey.Options{CacheTTL: -1}},
		{"Bcrypt/CacheHit", apikey.Options{Hasher: bc}},
		{"Bcrypt/CacheMiss", apikey.Options{Hasher: bc, CacheTTL: -1}},
	} {
		b.Run(bm.name, func(b *testing.B) {
			m := newManager(b, memstore.New(), bm.opts)
			token, _ := issue(b, m, apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}, Plan: "free"})
			ctx := context.Background()
			if _, err := m.Verify(ctx, token); err != nil { // warm the cache outside the timing
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Verify(ctx, token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("HMAC/Parallel", func(b *testing.B) {
		m := newManager(b, memstore.New(), apikey.Options{Peppers: testPepper})
		token, _ := issue(b, m, apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := m.Verify(context.Background(), token); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkVerifyMalformed measures the rejection of a token with a bad
// checksum: no hashing, no store access.
func BenchmarkVerifyMalformed(b *testing.B) {
	m := newManager(b, memstore.New(), apikey.Options{})
	token, _ := issue(b, m, apikey.IssueParams{})
	bad := token[:len(token)-1] + string(rune('A'+(token[len(token)-1]+1)%26))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Verify(ctx, bad); err == nil {
			b.Fatal("accepted")
		}
	}
}
