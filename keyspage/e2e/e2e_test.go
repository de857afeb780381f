// Package e2e drives the keys page in headless Chromium. It is a module of
// its own so that chromedp never enters the library's go.mod.
//
// The tests skip when no browser is installed, except under CI=true, where
// they fail. Set UPDATE_SCREENSHOTS=1 to write the screenshots to
// docs/keyspage-*.png.
package e2e

import (
	"cmp"
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdlog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyspage"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/selfservice"
	"github.com/gokeys/apikey/usage"
)

// server is the example server's wiring: the keys page at /keys/ behind
// HTTP Basic users, a route protected by API keys, and a metered route
// that spends from the customer's daily quota. Its clock follows the
// wall clock until a test sets it.
type server struct {
	*httptest.Server
	m     *apikey.Manager
	store *memstore.Store
	clock *clock
}

var users = map[string]string{"demo": "demo", "eve": "secret"}

// dailyQuota is the free plan's quota: requests a customer may make per
// UTC day.
const dailyQuota = 40

var plans = limits.Plans{"free": {limits.Quota("daily", dailyQuota, limits.Day)}}

// clock is the wall clock, or the time set last.
type clock struct{ at atomic.Pointer[time.Time] }

func (c *clock) Now() time.Time {
	if t := c.at.Load(); t != nil {
		return *t
	}
	return time.Now()
}

func (c *clock) Set(t time.Time) { c.at.Store(&t) }

func newServer(t *testing.T) *server {
	t.Helper()
	store := memstore.New()
	clk := &clock{}
	m, err := apikey.New(store, apikey.Options{
		Prefix: "sk_live", Now: clk.Now, LastUsedInterval: 50 * time.Millisecond, UsageInterval: 50 * time.Millisecond, CacheTTL: -1,
		Plans: plans, DefaultPlan: "free", LastUsedGranularity: -1, // each use shown as it happens
	})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	limiter, err := memlimit.New(memlimit.Options{Now: clk.Now})
	require.NoError(t, err)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Realm: "example", Limits: apikey.LimitOptions{Limiter: limiter}})
	require.NoError(t, err)
	owner := func(r *http.Request) (string, error) {
		name, pw, ok := r.BasicAuth()
		want, known := users[name]
		if !ok || !known || subtle.ConstantTimeCompare([]byte(pw), []byte(want)) != 1 {
			return "", fmt.Errorf("not signed in")
		}
		return name, nil
	}
	policy, err := selfservice.New(m, selfservice.Options{Scopes: []string{"read", "write"}})
	require.NoError(t, err)
	page, err := keyspage.New(m, keyspage.Options{
		Owner: owner, Challenge: `Basic realm="api-keys", charset="UTF-8"`, Policy: policy,
		Graces: []time.Duration{24 * time.Hour, time.Hour, 7 * 24 * time.Hour, 0},
		// The daily quota of the customer's plan, or of the default plan.
		DailyQuota: func(ctx context.Context, customer string) (int64, bool) {
			c, err := m.Customer(ctx, customer)
			if err != nil {
				return 0, false
			}
			for _, l := range plans[cmp.Or(c.Plan, "free")] {
				if l.Kind == limits.KindQuota && l.Window == limits.Day {
					return l.Count, true
				}
			}
			return 0, false
		},
	})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/keys/", page)
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello %s\n", apikey.FromContext(r.Context()).Owner)
	})
	mux.Handle("GET /protected", mw.Handler(hello))
	mux.Handle("GET /metered", mw.Handler(mw.Limit(hello)))
	srv := &server{Server: httptest.NewServer(mux), m: m, store: store, clock: clk}
	t.Cleanup(srv.Close)
	return srv
}

// seed gives demo a few older keys, so that the table shows each state.
func (s *server) seed(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	back := func(d time.Duration) *apikey.Manager {
		m, err := apikey.New(s.store, apikey.Options{Prefix: "sk_live", Now: func() time.Time { return time.Now().Add(-d) }, LastUsedInterval: -1})
		require.NoError(t, err)
		return m
	}
	_, staging, err := back(40*24*time.Hour).Issue(ctx, apikey.IssueParams{Owner: "demo", Name: "Staging", Scopes: []string{"read"}, Plan: "free", TTL: 90 * 24 * time.Hour})
	require.NoError(t, err)
	require.NoError(t, s.store.MarkUsed(ctx, map[string]time.Time{staging.ID: time.Now().Add(-3 * time.Minute)}))
	_, laptop, err := back(200*24*time.Hour).Issue(ctx, apikey.IssueParams{Owner: "demo", Name: "Old laptop", Scopes: []string{"read", "write"}, Plan: "free", TTL: 365 * 24 * time.Hour})
	require.NoError(t, err)
	require.NoError(t, s.m.Revoke(ctx, laptop.ID))
	_, _, err = s.m.Issue(ctx, apikey.IssueParams{Owner: "eve", Name: "Eve's key"})
	require.NoError(t, err)
}

// call requests the protected route with token and returns the status.
func (s *server) call(t *testing.T, token string) int {
	t.Helper()
	return s.get(t, "/protected", token)
}

// get requests path with token and returns the status.
func (s *server) get(t *testing.T, path, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	return res.StatusCode
}

// id returns the id of the key of token.
func (s *server) id(t *testing.T, token string) string {
	t.Helper()
	k, err := s.m.Verify(context.Background(), token)
	require.NoError(t, err)
	return k.ID
}

// findBrowser returns the path of Chromium or Chrome; without one the test
// is skipped, or fails under CI=true.
func findBrowser(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROME_PATH"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium found: install it (apt-get install -y chromium) or set CHROME_PATH")
	}
	t.Skip("no Chromium found; install it (apt-get install -y chromium) or set CHROME_PATH to run the browser tests")
	return ""
}

// browser starts a headless browser tab, signed in as user with HTTP Basic.
func browser(t *testing.T, user string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(findBrowser(t)), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	require.NoError(t, chromedp.Do(ctx)) // start the browser
	ctx, cancel = context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel)
	if user != "" {
		_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Authorization": "Basic " + basic(user, users[user])},
		})
		require.NoError(t, err)
	}
	return ctx
}

func basic(user, pw string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth(user, pw)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// submit clicks a submit button and returns the status of the page it
// leads to (after redirects).
func submit(t *testing.T, ctx context.Context, sel string) int64 {
	t.Helper()
	res, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	require.NoError(t, err, sel)
	return res.Status
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	require.NoError(t, err, sel)
	return s
}

func present(t *testing.T, ctx context.Context, sel string) bool {
	t.Helper()
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf("document.querySelector(%q) !== null", sel)))
	require.NoError(t, err)
	return ok
}

func html(t *testing.T, ctx context.Context) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	require.NoError(t, err)
	return s
}

// screenshot takes a full-page PNG at the given width and, with
// UPDATE_SCREENSHOTS=1, writes it to docs/keyspage-<name>.png.
func screenshot(t *testing.T, ctx context.Context, name string, width int64) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(width, 800)))
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)))
	require.Greater(t, len(png), 1000)
	writeShot(t, name, png)
}

// writeShot writes png to docs/keyspage-<name>.png with
// UPDATE_SCREENSHOTS=1.
func writeShot(t *testing.T, name string, png []byte) {
	t.Helper()
	if os.Getenv("UPDATE_SCREENSHOTS") != "1" {
		return
	}
	path := filepath.Join("..", "..", "docs", "keyspage-"+name+".png")
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("wrote %s", path)
}

// TestKeysPageInBrowser is the whole life of a key through the page: sign
// in, create, read the token once, use it, reload, rotate with grace,
// pause, resume, a refused cross-site post, revoke, and the revoked key
// behind the link that shows revoked keys.
func TestKeysPageInBrowser(t *testing.T) {
	srv := newServer(t)
	srv.seed(t)
	ctx := browser(t, "demo")
	keys := srv.URL + "/keys/"

	// Signed out, the page asks for credentials.
	res, err := http.Get(keys)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, res.StatusCode)

	// Sign in and open the page.
	resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(keys))
	require.NoError(t, err)
	require.EqualValues(t, http.StatusOK, resp.Status)
	assert.Equal(t, "API keys", text(t, ctx, "h1"))
	assert.Contains(t, text(t, ctx, "table"), "Staging")
	assert.NotContains(t, html(t, ctx), "Eve's key", "another owner's keys are not shown")
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options"} {
		assert.NotEmpty(t, resp.Headers[h], h)
	}

	// Create a key.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("new-name"), "Production server"),
		chromedp.Click(chromedp.CSS(`input[name=scope][value=read]`)),
		chromedp.Click(chromedp.CSS(`input[name=scope][value=write]`)),
	))
	require.EqualValues(t, http.StatusCreated, submit(t, ctx, "form.create button[type=submit]"))

	// Read the token from the page, once.
	token, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("token")))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(token, "sk_live_"), token)
	assert.Contains(t, text(t, ctx, ".once h2"), "Copy your new key now")
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("[data-copy]"))), "the script shows the copy button")
	screenshot(t, ctx, "token", 1280)
	screenshot(t, ctx, "token-375", 375)

	// Use it against a protected route.
	assert.Equal(t, http.StatusOK, srv.call(t, token))
	id := srv.id(t, token)
	row := "#key-" + id

	// Reload: the token is gone.
	resp, err = chromedp.RunResponse(ctx, chromedp.Reload())
	require.NoError(t, err)
	assert.EqualValues(t, http.StatusOK, resp.Status)
	assert.True(t, strings.HasSuffix(resp.URL, "/keys/"), resp.URL)
	assert.False(t, present(t, ctx, "#token"))
	assert.NotContains(t, html(t, ctx), token)
	assert.Contains(t, text(t, ctx, row+" .state"), "active")

	// Rotate with a one-hour grace period, using the keyboard to open the
	// key's actions.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Focus(chromedp.CSS(row+" summary")),
		chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(chromedp.CSS(row+" form[action=rotate] select")),
		chromedp.SetValue(chromedp.CSS(row+" form[action=rotate] select"), "3600"),
	))
	require.EqualValues(t, http.StatusOK, submit(t, ctx, row+" form[action=rotate] button"))
	rotated, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("token")))
	require.NoError(t, err)
	require.NotEqual(t, token, rotated)
	assert.Contains(t, text(t, ctx, ".once"), "keeps working until")
	assert.Contains(t, text(t, ctx, row+" .state"), "in grace until")
	assert.Equal(t, http.StatusOK, srv.call(t, token), "the old key works during the grace period")
	assert.Equal(t, http.StatusOK, srv.call(t, rotated))
	id = srv.id(t, rotated)
	row = "#key-" + id

	// Pause: refused.
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(row+" summary"))))
	require.EqualValues(t, http.StatusOK, submit(t, ctx, row+" form[action=pause] button"))
	assert.Contains(t, text(t, ctx, "[role=status]"), "The key was paused")
	assert.Contains(t, text(t, ctx, row+" .state"), "paused")
	assert.Equal(t, http.StatusUnauthorized, srv.call(t, rotated))

	// Resume: works again.
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(row+" summary"))))
	require.EqualValues(t, http.StatusOK, submit(t, ctx, row+" form[action=resume] button"))
	assert.Contains(t, text(t, ctx, row+" .state"), "active")
	used := time.Now().Truncate(time.Millisecond)
	assert.Equal(t, http.StatusOK, srv.call(t, rotated))
	require.Eventually(t, func() bool { // the last use reaches the store
		k, err := srv.store.Get(context.Background(), id)
		return err == nil && !k.LastUsedAt.Before(used)
	}, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(keys)))
	screenshot(t, ctx, "list", 1280)
	screenshot(t, ctx, "list-375", 375)

	// A form posted from another site (with the user's credentials, as
	// a browser sends them) is refused.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<form id="f" method="post" action="%srevoke"><input name="id" value="%s"><input name="confirm" value="yes"></form>
<script>document.getElementById("f").submit()</script>`, keys, id)
	}))
	t.Cleanup(evil.Close)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)),
		chromedp.WaitVisible(chromedp.CSS("[role=alert]")),
	))
	assert.Contains(t, text(t, ctx, "[role=alert]"), "was not sent from this site")
	assert.Equal(t, http.StatusOK, srv.call(t, rotated), "the cross-site post revoked nothing")

	// Revoke, after the confirmation step.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(keys), chromedp.Click(chromedp.CSS(row+" summary"))))
	require.EqualValues(t, http.StatusOK, submit(t, ctx, row+" form[action=revoke] button"))
	assert.Contains(t, text(t, ctx, ".confirm h2"), "Revoke “Production server”?")
	assert.Equal(t, http.StatusOK, srv.call(t, rotated), "asking revokes nothing")
	require.EqualValues(t, http.StatusOK, submit(t, ctx, ".confirm button[type=submit]"))
	assert.Contains(t, text(t, ctx, "[role=status]"), "The key was revoked")
	assert.False(t, present(t, ctx, row), "revoked keys are hidden by default")
	assert.Equal(t, http.StatusUnauthorized, srv.call(t, rotated))
	require.EqualValues(t, http.StatusOK, submit(t, ctx, `a[href="./?all=1"]`))
	assert.Contains(t, text(t, ctx, row+" .state"), "revoked")
	assert.Contains(t, text(t, ctx, "table"), "Old laptop")
}

// TestKeysPageWithoutJavaScript manages a key with scripts disabled: every
// action is a plain form.
func TestKeysPageWithoutJavaScript(t *testing.T) {
	srv := newServer(t)
	ctx := browser(t, "eve")
	keys := srv.URL + "/keys/"
	_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
	require.NoError(t, err)

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(keys)))
	assert.Contains(t, text(t, ctx, "main"), "You have no usable API keys.")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("new-name"), "Cron job"),
		chromedp.Click(chromedp.CSS(`input[name=scope][value=read]`)),
	))
	require.EqualValues(t, http.StatusCreated, submit(t, ctx, "form.create button[type=submit]"))
	token, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("token")))
	require.NoError(t, err)
	copyButton, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("[data-copy]"), "hidden"))
	require.NoError(t, err)
	assert.True(t, copyButton.Exists, "without scripts the copy button stays hidden; the token is selectable in its field")
	assert.Equal(t, http.StatusOK, srv.call(t, token))
	row := "#key-" + srv.id(t, token)

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(keys)))
	assert.False(t, present(t, ctx, "#token"))
	assert.NotContains(t, html(t, ctx), token)

	steps := []struct {
		name, sel string
		status    int
		state     string
		api       int
	}{
		{"pause", row + " form[action=pause] button", http.StatusOK, "paused", http.StatusUnauthorized},
		{"resume", row + " form[action=resume] button", http.StatusOK, "active", http.StatusOK},
	}
	for _, s := range steps {
		require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(row+" summary"))), s.name)
		require.EqualValues(t, s.status, submit(t, ctx, s.sel), s.name)
		assert.Contains(t, text(t, ctx, row+" .state"), s.state, s.name)
		assert.Equal(t, s.api, srv.call(t, token), s.name)
	}

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(row+" summary")),
		chromedp.SetValue(chromedp.CSS(row+" form[action=rename] input[name=name]"), "Nightly cron"),
	))
	require.EqualValues(t, http.StatusOK, submit(t, ctx, row+" form[action=rename] button"))
	assert.Contains(t, text(t, ctx, row+" th"), "Nightly cron")

	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(row+" summary"))))
	require.EqualValues(t, http.StatusOK, submit(t, ctx, row+" form[action=rotate] button"))
	rotated, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("token")))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, srv.call(t, rotated))
	assert.Equal(t, http.StatusOK, srv.call(t, token), "one day of grace by default")

	// Revoke the whole chain: the successor and the old key in its grace.
	row = "#key-" + srv.id(t, rotated)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(row+" summary"))))
	require.EqualValues(t, http.StatusOK, submit(t, ctx, row+" form[action=revoke-chain] button"))
	assert.Contains(t, text(t, ctx, ".confirm h2"), "its whole rotation chain")
	require.EqualValues(t, http.StatusOK, submit(t, ctx, ".confirm button[type=submit]"))
	assert.Contains(t, text(t, ctx, "[role=status]"), "every key of its rotation chain")
	assert.Equal(t, http.StatusUnauthorized, srv.call(t, rotated))
	assert.Equal(t, http.StatusUnauthorized, srv.call(t, token))
}

// traffic is what one day's requests of the metered route answered.
type traffic struct{ allowed, limited int64 }

// sendTraffic makes requests to the metered route with tokens on each of
// the last 30 UTC days before today, with the server's clock at that day,
// and then on today, at today; it returns the answers counted by day
// (2006-01-02). The customer's plan admits dailyQuota requests a day: the
// busier days are partly refused with 429.
func (s *server) sendTraffic(t *testing.T, today time.Time, tokens []string) map[string]traffic {
	t.Helper()
	sent := map[string]traffic{}
	midnight := today.Truncate(24 * time.Hour)
	for d := 29; d >= 0; d-- {
		start := midnight.AddDate(0, 0, -d).Add(9 * time.Hour)
		n := 28 + (d*13)%20 // a working day: 28 to 47 requests
		if wd := start.Weekday(); wd == time.Saturday || wd == time.Sunday {
			n = 4 + d%7
		}
		if d == 0 {
			start, n = today.Add(-time.Duration(n)*time.Second), 45
		}
		date := start.Format(time.DateOnly)
		for i := range n {
			s.clock.Set(start.Add(time.Duration(i) * time.Second))
			tr := sent[date]
			switch status := s.get(t, "/metered", tokens[i%len(tokens)]); status {
			case http.StatusOK:
				tr.allowed++
			case http.StatusTooManyRequests:
				tr.limited++
			default:
				t.Fatalf("GET /metered answered %d", status)
			}
			sent[date] = tr
		}
	}
	s.clock.Set(today)
	return sent
}

// TestUsageInBrowser sends real traffic through the middleware, with a
// daily quota that refuses some of it, over 30 days, and checks the usage
// chart Chromium renders: 30 bars of each kind, the quota line, the table
// of the numbers the traffic got, and a sparkline per key with its total.
func TestUsageInBrowser(t *testing.T) {
	srv := newServer(t)
	srv.seed(t)
	ctx := context.Background()
	today := time.Now().UTC().Truncate(time.Second)
	srv.clock.Set(today.AddDate(0, 0, -31))
	tokens := map[string]string{}
	var ids []string
	for _, name := range []string{"Batch jobs", "Production server"} {
		token, k, err := srv.m.Issue(ctx, apikey.IssueParams{Owner: "demo", Name: name, Scopes: []string{"read"}, TTL: 90 * 24 * time.Hour})
		require.NoError(t, err)
		tokens[k.ID] = token
		ids = append(ids, k.ID)
	}
	sent := srv.sendTraffic(t, today, []string{tokens[ids[1]], tokens[ids[1]], tokens[ids[1]], tokens[ids[0]]})
	var allowed, limited int64
	for _, tr := range sent {
		allowed += tr.allowed
		limited += tr.limited
	}
	require.Len(t, sent, 30)
	require.Positive(t, limited, "some days went beyond the quota")

	// Wait for the counts to reach the store.
	from := today.Truncate(24*time.Hour).AddDate(0, 0, -29)
	require.Eventually(t, func() bool {
		series, err := srv.m.Usage(ctx, usage.Query{Customer: "demo", From: from, To: today, Step: usage.Day})
		require.NoError(t, err)
		var a, l int64
		for _, r := range series {
			a, l = a+r.Allowed, l+r.Limited
		}
		return a == allowed && l == limited
	}, 10*time.Second, 20*time.Millisecond)

	bctx := browser(t, "demo")
	var violations atomic.Int64
	require.NoError(t, chromedp.Listen(bctx, func(ev any) {
		if e, ok := ev.(*cdlog.EventEntryAdded); ok && strings.Contains(e.Entry.Text, "Content Security Policy") {
			violations.Add(1)
		}
	}))
	_, err := chromedp.Call(bctx, cdlog.Enable, cdp.Empty{})
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(srv.URL+"/keys/")))

	// The chart: an SVG image with a title and a description, 30 bars of
	// each kind, the quota line, drawn by the page's own style.
	assert.Equal(t, "Requests per day, last 30 days", textContent(t, bctx, "figure.chart svg[role=img] > title"))
	assert.Contains(t, textContent(t, bctx, "figure.chart svg[role=img] > desc"), fmt.Sprintf("Daily quota: %d.", dailyQuota))
	type chartFacts struct {
		Allowed, Limited, Quota int
		Width, Tallest          float64
		Fill                    string
	}
	chart, err := chromedp.Run(bctx, chromedp.Evaluate[chartFacts](`(() => {
		const svg = document.querySelector("figure.chart svg[role=img]");
		const bars = [...svg.querySelectorAll("rect.allowed")];
		return {
			Allowed: bars.length,
			Limited: svg.querySelectorAll("rect.limited").length,
			Quota: svg.querySelectorAll("line.quota").length,
			Width: svg.getBoundingClientRect().width,
			Tallest: Math.max(...bars.map(b => b.getBoundingClientRect().height)),
			Fill: getComputedStyle(bars[0]).fill,
		};
	})()`))
	require.NoError(t, err)
	assert.Equal(t, 30, chart.Allowed)
	assert.Equal(t, 30, chart.Limited)
	assert.Equal(t, 1, chart.Quota)
	assert.Greater(t, chart.Width, 600.0, "the chart spans the page")
	assert.Greater(t, chart.Tallest, 50.0, "the bars are drawn")
	assert.Equal(t, "rgb(10, 88, 202)", chart.Fill, "the stylesheet, allowed by its hash, colours the bars")
	assert.Contains(t, text(t, bctx, "section.usage"), fmt.Sprintf("of your daily quota of %d", dailyQuota))

	// The table holds the numbers the traffic got, day by day.
	rows, err := chromedp.Run(bctx, chromedp.Evaluate[[][]string](`[...document.querySelectorAll("table.numbers tbody tr")].map(tr =>
		[tr.querySelector("th[scope=row] time").getAttribute("datetime"), ...[...tr.querySelectorAll("td")].map(td => td.textContent)])`))
	require.NoError(t, err)
	require.Len(t, rows, 30)
	got := map[string]traffic{}
	for _, r := range rows {
		require.Len(t, r, 3)
		got[r[0]] = traffic{num(t, r[1]), num(t, r[2])}
	}
	assert.Equal(t, sent, got)
	assert.Equal(t, fmt.Sprintf("Total%s%s", commas(allowed), commas(limited)), textContent(t, bctx, "table.numbers tfoot tr"))

	// A sparkline per key, labelled with the key's total.
	perKey := map[string]int64{}
	for _, id := range ids {
		series, err := srv.m.Usage(ctx, usage.Query{KeyID: id, From: from, To: today, Step: usage.Day})
		require.NoError(t, err)
		for _, r := range series {
			perKey[id] += r.Allowed
		}
	}
	assert.Equal(t, allowed, perKey[ids[0]]+perKey[ids[1]])
	for _, id := range ids {
		label, err := chromedp.Run(bctx, chromedp.AttributeValue(chromedp.CSS("#key-"+id+" .spark svg[role=img]"), "aria-label"))
		require.NoError(t, err)
		assert.Contains(t, label.Value, "last 30 days: "+commas(perKey[id])+" requests allowed", id)
	}
	assert.Zero(t, violations.Load(), "no Content-Security-Policy violation")

	// The page fits a phone: nothing wider than the screen.
	require.NoError(t, chromedp.Do(bctx, chromedp.EmulateViewport(375, 800)))
	overflow, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > 375`))
	require.NoError(t, err)
	assert.False(t, overflow, "no horizontal scroll at 375 px")
	require.NoError(t, chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900)))

	screenshot(t, bctx, "usage", 1280)
	elementShot(t, bctx, "section.usage", "usage-375", 375)
}

// textContent is the text of sel, shown or not (in a closed details, or
// an SVG title).
func textContent(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf("document.querySelector(%q).textContent", sel)))
	require.NoError(t, err, sel)
	return s
}

func num(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.ReplaceAll(s, ",", ""), 10, 64)
	require.NoError(t, err, s)
	return n
}

// commas formats n as the page does: 12,345.
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// elementShot takes a PNG of the element sel at the given width and, with
// UPDATE_SCREENSHOTS=1, writes it to docs/keyspage-<name>.png.
func elementShot(t *testing.T, ctx context.Context, sel, name string, width int64) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(width, 800)))
	png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(sel)))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)))
	require.Greater(t, len(png), 1000)
	writeShot(t, name, png)
}
