package apikey_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/usage"
)

func ranges(t testing.TB, s ...string) []netip.Prefix {
	t.Helper()
	ps, err := ipallow.Parse(s...)
	require.NoError(t, err)
	return ps
}

// countingLimiter counts the calls of the Limiter it wraps.
type countingLimiter struct {
	limits.Limiter
	calls atomic.Int64
}

func (l *countingLimiter) Allow(ctx context.Context, subject string, ls []limits.Limit, cost int64) (limits.Result, error) {
	l.calls.Add(1)
	return l.Limiter.Allow(ctx, subject, ls, cost)
}

// from returns a request of token from the peer remote, with header
// lines name: value (pairs).
func from(token, remote string, headers ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/data", nil)
	r.RemoteAddr = remote
	r.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	return r
}

// A request from outside the key's ranges is refused with a 403
// problem+json naming the restriction (not the ranges, not the address),
// and spends nothing: no Limiter call, no usage, no last-used time.
func TestIPRestrictionRefusesAndSpendsNothing(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	store := memstore.New()
	m := newManager(t, store, apikey.Options{
		Now: clk.Now, Plans: limits.Plans{"pro": {limits.Quota("daily", 100, limits.Day)}}, DefaultPlan: "pro",
		LastUsedInterval: time.Hour, UsageInterval: time.Hour,
	})
	mem, err := memlimit.New(memlimit.Options{Now: clk.Now})
	require.NoError(t, err)
	lim := &countingLimiter{Limiter: mem}
	var handled []error
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: lim}})
	require.NoError(t, err)
	h := mw.Handler(mw.Limit(statusHandler))
	token, k := issue(t, m, apikey.IssueParams{Owner: "alice", AllowedIPs: ranges(t, "203.0.113.0/24", "2001:db8::/32")})

	for _, remote := range []string{"198.51.100.7:4000", "[2001:db9::1]:443", "[::ffff:198.51.100.7]:1"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, from(token, remote))
		require.Equal(t, http.StatusForbidden, rec.Code, remote)
		assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
		var p map[string]any
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
		assert.Equal(t, float64(403), p["status"])
		assert.Contains(t, p["detail"], "IP", "the answer names the restriction")
		for _, leak := range []string{"203.0.113", "2001:db8", "198.51.100", "alice", k.ID} {
			assert.NotContains(t, rec.Body.String(), leak, "the answer names no range, address or key")
		}
		assert.Empty(t, rec.Header().Get("WWW-Authenticate"), "a valid key needs no new credentials")
	}
	assert.Zero(t, lim.calls.Load(), "a refused request never reaches the Limiter")

	// The same key from inside its ranges, IPv4-mapped or not.
	for _, remote := range []string{"203.0.113.9:4000", "[::ffff:203.0.113.9]:4000", "[2001:db8::5]:443"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, from(token, remote))
		require.Equal(t, http.StatusOK, rec.Code, remote)
	}
	assert.Equal(t, int64(3), lim.calls.Load())
	peek, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: mem}})
	require.NoError(t, err)
	res, err := peek.Balance(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, int64(97), res.Remaining, "only the allowed requests spent")

	require.NoError(t, m.Close(ctx)) // flushes last-used times and usage
	got, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	assert.False(t, got.LastUsedAt.IsZero(), "the allowed requests recorded a use")
	recs, err := m.Usage(ctx, usage.Query{KeyID: k.ID, From: clk.Now().Add(-time.Hour), To: clk.Now().Add(time.Hour), Step: usage.Hour})
	require.NoError(t, err)
	var allowed, refused int64
	for _, r := range recs {
		allowed, refused = allowed+r.Allowed, refused+r.Refused
	}
	assert.Equal(t, int64(3), allowed, "usage counts the allowed requests")
	assert.Zero(t, refused, "usage counts nothing of the refused ones")

	// Only refused requests: no last-used time at all.
	m2 := newManager(t, memstore.New(), apikey.Options{Now: clk.Now, LastUsedInterval: time.Hour})
	mw2, err := apikey.NewMiddleware(m2, apikey.MiddlewareOptions{ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
		handled = append(handled, err)
		w.WriteHeader(http.StatusTeapot)
	}})
	require.NoError(t, err)
	token2, k2 := issue(t, m2, apikey.IssueParams{AllowedIPs: ranges(t, "203.0.113.0/24")})
	rec := httptest.NewRecorder()
	mw2.Handler(statusHandler).ServeHTTP(rec, from(token2, "198.51.100.7:1"))
	assert.Equal(t, http.StatusTeapot, rec.Code)
	require.Len(t, handled, 1)
	assert.Same(t, apikey.ErrIPNotAllowed, handled[0], "the ErrorHandler gets the sentinel")
	require.NoError(t, m2.Close(ctx))
	got2, err := m2.Get(ctx, k2.ID)
	require.NoError(t, err)
	assert.True(t, got2.LastUsedAt.IsZero(), "a refused request records no use")
}

// The client address is RemoteAddr unless the peer is a trusted proxy;
// forwarding headers forged by the client are ignored.
func TestIPRestrictionSpoofedForwardingHeaders(t *testing.T) {
	m := newManager(t, memstore.New(), apikey.Options{})
	token, _ := issue(t, m, apikey.IssueParams{AllowedIPs: ranges(t, "203.0.113.0/24")})
	direct, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	proxies, err := ipallow.NewProxies("", ranges(t, "10.0.0.0/8"))
	require.NoError(t, err)
	proxied, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{TrustedProxies: proxies})
	require.NoError(t, err)
	fwd, err := ipallow.NewProxies(ipallow.Forwarded, ranges(t, "10.0.0.0/8"))
	require.NoError(t, err)
	forwarded, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{TrustedProxies: fwd})
	require.NoError(t, err)
	const X, F = "X-Forwarded-For", "Forwarded"
	for _, tc := range []struct {
		name string
		mw   *apikey.Middleware
		r    *http.Request
		want int
	}{
		{"no proxies, forged XFF", direct, from(token, "198.51.100.7:1", X, "203.0.113.9"), 403},
		{"no proxies, forged Forwarded", direct, from(token, "198.51.100.7:1", F, "for=203.0.113.9"), 403},
		{"no proxies, from a would-be proxy", direct, from(token, "10.0.0.1:1", X, "203.0.113.9"), 403},
		{"untrusted peer, forged XFF", proxied, from(token, "198.51.100.7:1", X, "203.0.113.9"), 403},
		{"through the proxy", proxied, from(token, "10.0.0.1:1", X, "203.0.113.9"), 200},
		{"through the proxy, forged left entry", proxied, from(token, "10.0.0.1:1", X, "203.0.113.9, 198.51.100.7"), 403},
		{"through two proxies", proxied, from(token, "10.0.0.1:1", X, "198.51.100.7, 203.0.113.9", X, "10.0.0.2"), 200},
		{"forged second line", proxied, from(token, "10.0.0.1:1", X, "203.0.113.9", X, "198.51.100.7"), 403},
		{"mapped proxy and client", proxied, from(token, "[::ffff:10.0.0.1]:1", X, "::ffff:203.0.113.9"), 200},
		{"malformed", proxied, from(token, "10.0.0.1:1", X, "203.0.113.9, nonsense"), 403},
		{"Forwarded ignored when XFF is read", proxied, from(token, "10.0.0.1:1", F, "for=203.0.113.9"), 403},
		{"Forwarded", forwarded, from(token, "10.0.0.1:1", F, `for=198.51.100.7, for="203.0.113.9:1234"`), 200},
		{"XFF ignored when Forwarded is read", forwarded, from(token, "10.0.0.1:1", X, "203.0.113.9"), 403},
		{"unknown peer", proxied, from(token, "pipe", X, "203.0.113.9"), 403},
	} {
		rec := httptest.NewRecorder()
		tc.mw.Handler(statusHandler).ServeHTTP(rec, tc.r)
		assert.Equal(t, tc.want, rec.Code, tc.name)
	}
}

// Verify knows no address and refuses a restricted key; VerifyFrom and
// AuthorizeFrom check the address given; Authenticate the request's.
func TestVerifyFrom(t *testing.T) {
	ctx := context.Background()
	m := newManager(t, memstore.New(), apikey.Options{})
	token, _ := issue(t, m, apikey.IssueParams{Scopes: []string{"read"}, AllowedIPs: ranges(t, "203.0.113.0/24")})
	open, _ := issue(t, m, apikey.IssueParams{Scopes: []string{"read"}})

	_, err := m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrIPNotAllowed, "Verify fails closed")
	_, err = m.Verify(ctx, open)
	assert.NoError(t, err, "an unrestricted key needs no address")
	k, err := m.VerifyFrom(ctx, token, netip.MustParseAddr("203.0.113.1"))
	require.NoError(t, err)
	assert.Equal(t, ranges(t, "203.0.113.0/24"), k.AllowedIPs)
	_, err = m.VerifyFrom(ctx, token, netip.MustParseAddr("198.51.100.1"))
	assert.ErrorIs(t, err, apikey.ErrIPNotAllowed)
	_, err = m.VerifyFrom(ctx, token, netip.Addr{})
	assert.ErrorIs(t, err, apikey.ErrIPNotAllowed, "an unknown address is in no range")
	_, err = m.VerifyFrom(ctx, flip(token, 20), netip.MustParseAddr("198.51.100.1"))
	assert.ErrorIs(t, err, apikey.ErrMalformed, "a bad token is refused as such, whatever the address")

	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(t, err)
	_, err = mw.Authorize(ctx, token, []string{"read"}, false)
	assert.ErrorIs(t, err, apikey.ErrIPNotAllowed)
	_, err = mw.AuthorizeFrom(ctx, token, netip.MustParseAddr("203.0.113.1"), []string{"read"}, false)
	assert.NoError(t, err)
	_, err = mw.AuthorizeFrom(ctx, token, netip.MustParseAddr("198.51.100.1"), []string{"read"}, false)
	assert.ErrorIs(t, err, apikey.ErrIPNotAllowed)
	_, err = mw.Authenticate(from(token, "198.51.100.1:1"))
	assert.ErrorIs(t, err, apikey.ErrIPNotAllowed)
	_, err = mw.Authenticate(from(token, "203.0.113.1:1"))
	assert.NoError(t, err)

	// A revoked key is refused as revoked (401) from anywhere: the 403
	// is only for a key that is otherwise valid.
	revoked, rk := issue(t, m, apikey.IssueParams{AllowedIPs: ranges(t, "203.0.113.0/24")})
	require.NoError(t, m.Revoke(ctx, rk.ID))
	_, err = m.VerifyFrom(ctx, revoked, netip.MustParseAddr("198.51.100.1"))
	assert.ErrorIs(t, err, apikey.ErrRevoked)
}

// A key's ranges must lie within its customer's; narrowing the customer
// narrows every key at once, at verification; widening it again restores
// them.
func TestCustomerRangesBoundTheKeys(t *testing.T) {
	ctx := context.Background()
	m := newManager(t, memstore.New(), apikey.Options{})
	setIPs := func(s ...string) {
		t.Helper()
		_, err := m.SetCustomer(ctx, "alice", func(c *apikey.Customer) error { c.AllowedIPs = ranges(t, s...); return nil })
		require.NoError(t, err)
	}
	setIPs("203.0.113.0/24", "2001:db8::/32")

	_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice", AllowedIPs: ranges(t, "198.51.100.0/24")})
	assertInputError(t, err, "allowed_ips", "a range outside the customer's")
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "alice", AllowedIPs: ranges(t, "203.0.0.0/16")})
	assertInputError(t, err, "allowed_ips", "a range wider than the customer's")
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "alice", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.7/24")}})
	assertInputError(t, err, "allowed_ips", "host bits")
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "alice", AllowedIPs: make([]netip.Prefix, apikey.MaxAllowedIPs+1)})
	assertInputError(t, err, "allowed_ips", "too many")

	narrow, nk := issue(t, m, apikey.IssueParams{Owner: "alice", AllowedIPs: ranges(t, "203.0.113.128/25")})
	inherit, _ := issue(t, m, apikey.IssueParams{Owner: "alice"})
	at := func(token, addr string) error {
		_, err := m.VerifyFrom(ctx, token, netip.MustParseAddr(addr))
		return err
	}
	assert.NoError(t, at(narrow, "203.0.113.200"))
	assert.ErrorIs(t, at(narrow, "203.0.113.10"), apikey.ErrIPNotAllowed, "the key's own ranges")
	assert.ErrorIs(t, at(narrow, "2001:db8::1"), apikey.ErrIPNotAllowed)
	assert.NoError(t, at(inherit, "203.0.113.10"), "a key without ranges has its customer's")
	assert.NoError(t, at(inherit, "2001:db8::1"))
	assert.ErrorIs(t, at(inherit, "198.51.100.1"), apikey.ErrIPNotAllowed)

	// The operator narrows the customer: every key at once.
	setIPs("203.0.113.192/26")
	assert.NoError(t, at(narrow, "203.0.113.200"))
	assert.ErrorIs(t, at(narrow, "203.0.113.150"), apikey.ErrIPNotAllowed, "within the key's, outside the customer's")
	assert.ErrorIs(t, at(inherit, "203.0.113.10"), apikey.ErrIPNotAllowed)
	assert.ErrorIs(t, at(inherit, "2001:db8::1"), apikey.ErrIPNotAllowed)
	assert.NoError(t, at(inherit, "203.0.113.200"))

	// Narrowed past the key: refused from everywhere, stored ranges kept.
	setIPs("192.0.2.0/24")
	for _, addr := range []string{"192.0.2.1", "203.0.113.200", "198.51.100.1", "::1"} {
		assert.ErrorIs(t, at(narrow, addr), apikey.ErrIPNotAllowed, addr)
	}
	got, err := m.Get(ctx, nk.ID)
	require.NoError(t, err)
	assert.Equal(t, ranges(t, "203.0.113.128/25"), got.AllowedIPs, "the stored ranges stay")
	// Other changes of such a key are not refused; new ranges outside are.
	_, err = m.Update(ctx, nk.ID, func(k *apikey.Key) error { k.Name = "renamed"; return nil })
	require.NoError(t, err)
	_, err = m.Update(ctx, nk.ID, func(k *apikey.Key) error { k.AllowedIPs = ranges(t, "203.0.113.0/24"); return nil })
	assertInputError(t, err, "allowed_ips")
	_, err = m.Update(ctx, nk.ID, func(k *apikey.Key) error {
		k.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("192.0.2.64/26"), netip.MustParsePrefix("::ffff:192.0.2.0/122")}
		return nil
	})
	require.NoError(t, err)
	got, err = m.Get(ctx, nk.ID)
	require.NoError(t, err)
	assert.Equal(t, ranges(t, "192.0.2.0/26", "192.0.2.64/26"), got.AllowedIPs, "stored in canonical form")
	assert.NoError(t, at(narrow, "192.0.2.70"))

	// Widening the customer again restores what the keys had.
	setIPs()
	assert.NoError(t, at(inherit, "198.51.100.1"), "no customer ranges: a key without ranges goes anywhere")
	assert.ErrorIs(t, at(narrow, "198.51.100.1"), apikey.ErrIPNotAllowed)

	// A customer's ranges are validated too.
	_, err = m.SetCustomer(ctx, "alice", func(c *apikey.Customer) error {
		c.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}
		return nil
	})
	assertInputError(t, err, "allowed_ips")
}

// A rotation's successor inherits the ranges, and Update may set and
// clear them.
func TestRangesSurviveRotationAndUpdate(t *testing.T) {
	ctx := context.Background()
	m := newManager(t, memstore.New(), apikey.Options{})
	_, k := issue(t, m, apikey.IssueParams{Owner: "bob", AllowedIPs: ranges(t, "203.0.113.0/24")})
	rot, err := m.Rotate(ctx, k.ID, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, ranges(t, "203.0.113.0/24"), rot.Key.AllowedIPs)
	_, err = m.VerifyFrom(ctx, rot.Token, netip.MustParseAddr("198.51.100.1"))
	assert.ErrorIs(t, err, apikey.ErrIPNotAllowed, "the successor is restricted as its predecessor")
	_, err = m.Update(ctx, rot.Key.ID, func(k *apikey.Key) error { k.AllowedIPs = nil; return nil })
	require.NoError(t, err)
	_, err = m.VerifyFrom(ctx, rot.Token, netip.MustParseAddr("198.51.100.1"))
	assert.NoError(t, err)
}

// A narrowing that returned is in force for every verification that
// starts afterwards, on this Manager, with its cache on, while
// verifications run concurrently: of the customer's ranges and of the
// key's.
func TestNarrowingIsImmediateUnderConcurrency(t *testing.T) {
	ctx := context.Background()
	for _, what := range []string{"customer", "key"} {
		t.Run(what, func(t *testing.T) {
			m := newManager(t, memstore.New(), apikey.Options{CacheTTL: time.Hour})
			token, k := issue(t, m, apikey.IssueParams{Owner: "carol", AllowedIPs: ranges(t, "203.0.113.0/24")})
			outside := netip.MustParseAddr("203.0.113.200") // inside before, outside after
			var (
				narrowed  atomic.Bool
				violation atomic.Value
				wg        sync.WaitGroup
				verified  atomic.Int64
			)
			stop := make(chan struct{})
			for range 4 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						after := narrowed.Load()
						_, err := m.VerifyFrom(ctx, token, outside)
						verified.Add(1)
						if after && err == nil {
							violation.Store("a verification that began after the narrowing returned let the old range through")
						}
						if err != nil && !errors.Is(err, apikey.ErrIPNotAllowed) {
							violation.Store(err.Error())
						}
					}
				})
			}
			for verified.Load() < 1000 {
				time.Sleep(time.Millisecond)
			}
			var err error
			if what == "customer" {
				_, err = m.SetCustomer(ctx, "carol", func(c *apikey.Customer) error { c.AllowedIPs = ranges(t, "203.0.113.0/25"); return nil })
			} else {
				_, err = m.Update(ctx, k.ID, func(k *apikey.Key) error { k.AllowedIPs = ranges(t, "203.0.113.0/25"); return nil })
			}
			require.NoError(t, err)
			narrowed.Store(true)
			n := verified.Load()
			for verified.Load() < n+1000 {
				time.Sleep(time.Millisecond)
			}
			close(stop)
			wg.Wait()
			if v := violation.Load(); v != nil {
				t.Fatal(v)
			}
			_, err = m.VerifyFrom(ctx, token, netip.MustParseAddr("203.0.113.1"))
			assert.NoError(t, err, "still allowed inside the narrowed range")
		})
	}
}

// Metrics and the audit log name the refusal.
func TestIPRefusalOutcome(t *testing.T) {
	rm := &recMetrics{}
	m := newManager(t, memstore.New(), apikey.Options{Metrics: rm})
	token, _ := issue(t, m, apikey.IssueParams{AllowedIPs: ranges(t, "203.0.113.0/24")})
	_, err := m.VerifyFrom(context.Background(), token, netip.MustParseAddr("198.51.100.1"))
	require.ErrorIs(t, err, apikey.ErrIPNotAllowed)
	rm.mu.Lock()
	defer rm.mu.Unlock()
	assert.Contains(t, strings.Join(rm.verified, " "), "ip_not_allowed")
}

// With no restriction configured, the request path allocates as much as
// before; a restricted key allowed from its range allocates no more.
func TestIPCheckAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	ctx := context.Background()
	m := newManager(t, memstore.New(), apikey.Options{})
	token, _ := issue(t, m, apikey.IssueParams{AllowedIPs: ranges(t, "203.0.113.0/24")})
	open, _ := issue(t, m, apikey.IssueParams{})
	addr := netip.MustParseAddr("203.0.113.1")
	_, err := m.VerifyFrom(ctx, token, addr)
	require.NoError(t, err)
	assert.Zero(t, testing.AllocsPerRun(1000, func() {
		if _, err := m.VerifyFrom(ctx, token, addr); err != nil {
			panic(err)
		}
	}), "VerifyFrom, restricted key, cache hit")

	proxies, err := ipallow.NewProxies("", ranges(t, "10.0.0.0/8"))
	require.NoError(t, err)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{TrustedProxies: proxies})
	require.NoError(t, err)
	per := func(tok, remote string, headers ...string) float64 {
		r := from(tok, remote, headers...)
		_, err := mw.Authenticate(r)
		require.NoError(t, err)
		return testing.AllocsPerRun(1000, func() { _, _ = mw.Authenticate(r) })
	}
	assert.Zero(t, per(open, "198.51.100.1:1"), "unrestricted")
	assert.Zero(t, per(token, "203.0.113.1:1"), "restricted, direct")
	assert.Zero(t, per(token, "10.0.0.1:1", "X-Forwarded-For", "198.51.100.9, 203.0.113.1"), "restricted, through a proxy")
}
