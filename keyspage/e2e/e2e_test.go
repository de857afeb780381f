// Package e2e drives the keys page in headless Chromium. It is a module of
// its own so that chromedp never enters the library's go.mod.
//
// The tests skip when no browser is installed, except under CI=true, where
// they fail. Set UPDATE_SCREENSHOTS=1 to write the screenshots to
// docs/keyspage-*.png.
package e2e

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyspage"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/selfservice"
)

// server is the example server's wiring: the keys page at /keys/ behind
// HTTP Basic users, and a route protected by API keys.
type server struct {
	*httptest.Server
	m     *apikey.Manager
	store *memstore.Store
}

var users = map[string]string{"demo": "demo", "eve": "secret"}

func newServer(t *testing.T) *server {
	t.Helper()
	store := memstore.New()
	m, err := apikey.New(store, apikey.Options{Prefix: "sk_live", LastUsedInterval: 50 * time.Millisecond, CacheTTL: -1})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Realm: "example"})
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
	})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/keys/", page)
	mux.Handle("GET /protected", mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello %s\n", apikey.FromContext(r.Context()).Owner)
	})))
	srv := &server{Server: httptest.NewServer(mux), m: m, store: store}
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
	req, err := http.NewRequest(http.MethodGet, s.URL+"/protected", nil)
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
