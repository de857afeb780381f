package keyspage_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyspage"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/selfservice"
	"github.com/gokeys/apikey/usage"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// failing is a Store that fails every call while fail is set (its usage
// reads while usageFails is), and whose Update loses every race while
// conflict is set. It keeps customer
// records, so that tests set customers with Manager.SetCustomer.
type failing struct {
	*memstore.Store
	fail, conflict, usageFails atomic.Bool
}

// Usage fails while usageFails is set.
func (s *failing) Usage(ctx context.Context, q usage.Query) ([]usage.Record, error) {
	if s.usageFails.Load() {
		return nil, errDown
	}
	return s.Store.Usage(ctx, q)
}

func (s *failing) Update(ctx context.Context, k *apikey.Key) error {
	if s.conflict.Load() {
		return apikey.ErrConflict
	}
	return s.Store.Update(ctx, k)
}

var errDown = errors.New("connection refused by db.internal:5432")

func (s *failing) Get(ctx context.Context, id string) (*apikey.Key, error) {
	if s.fail.Load() {
		return nil, errDown
	}
	return s.Store.Get(ctx, id)
}

func (s *failing) List(ctx context.Context, owner string, opts apikey.ListOptions) ([]*apikey.Key, error) {
	if s.fail.Load() {
		return nil, errDown
	}
	return s.Store.List(ctx, owner, opts)
}

func (s *failing) Create(ctx context.Context, k *apikey.Key) error {
	if s.fail.Load() {
		return errDown
	}
	return s.Store.Create(ctx, k)
}

func (s *failing) GetCustomer(ctx context.Context, id string) (*apikey.Customer, error) {
	if s.fail.Load() {
		return nil, errDown
	}
	return s.Store.GetCustomer(ctx, id)
}

// fixture is a Manager over a memory store and the page mounted at /keys/
// of a mux; the signed-in user is the X-Test-User header.
type fixture struct {
	clock *clock
	store *failing
	m     *apikey.Manager
	h     http.Handler
}

// newFixture builds the page with opts; without a Policy, one that offers
// the scopes read and write.
func newFixture(t *testing.T, opts keyspage.Options) *fixture {
	t.Helper()
	return newFixtureWith(t, nil, opts)
}

// newFixtureWith builds the page with opts, and a Policy of policy when
// set.
func newFixtureWith(t *testing.T, policy *selfservice.Options, opts keyspage.Options) *fixture {
	t.Helper()
	f := &fixture{clock: &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}, store: &failing{Store: memstore.New()}}
	var err error
	f.m, err = apikey.New(f.store, apikey.Options{Prefix: "sk_live", Now: f.clock.Now, LastUsedInterval: -1, CacheTTL: -1})
	require.NoError(t, err)
	t.Cleanup(func() { f.m.Close(context.Background()) })
	if opts.Owner == nil {
		opts.Owner = func(r *http.Request) (string, error) {
			if u := r.Header.Get("X-Test-User"); u != "" {
				return u, nil
			}
			return "", errors.New("not signed in")
		}
	}
	if policy == nil {
		policy = &selfservice.Options{Scopes: []string{"read", "write"}}
	}
	if opts.Policy == nil {
		opts.Policy, err = selfservice.New(f.m, *policy)
		require.NoError(t, err)
	}
	page, err := keyspage.New(f.m, opts)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/keys/", page)
	f.h = mux
	return f
}

type response struct {
	status int
	header http.Header
	body   string
}

// do sends a request as user ("" for nobody); POSTs carry
// Sec-Fetch-Site: same-origin unless hdr sets Sec-Fetch-Site or Origin
// (an empty value removes the header).
func (f *fixture) do(t *testing.T, method, path, user string, form url.Values, hdr map[string]string) response {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, "http://app.example"+path, body)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method == http.MethodPost {
		r.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	if user != "" {
		r.Header.Set("X-Test-User", user)
	}
	for k, v := range hdr {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return response{status: w.Code, header: w.Header(), body: w.Body.String()}
}

func (f *fixture) issue(t *testing.T, p apikey.IssueParams) (string, *apikey.Key) {
	t.Helper()
	token, k, err := f.m.Issue(context.Background(), p)
	require.NoError(t, err)
	return token, k
}

func (f *fixture) get(t *testing.T, id string) *apikey.Key {
	t.Helper()
	k, err := f.m.Get(context.Background(), id)
	require.NoError(t, err)
	return k
}

func (f *fixture) keys(t *testing.T, owner string) []*apikey.Key {
	t.Helper()
	ks, err := f.m.List(context.Background(), owner, apikey.ListOptions{})
	require.NoError(t, err)
	return ks
}

// customer sets the operator's record of customer id.
func (f *fixture) customer(t *testing.T, id string, change func(c *apikey.Customer)) {
	t.Helper()
	_, err := f.m.SetCustomer(context.Background(), id, func(c *apikey.Customer) error { change(c); return nil })
	require.NoError(t, err)
}

// createForm is a valid create form named name.
func createForm(name string) url.Values {
	return url.Values{"name": {name}, "expires": {"7776000"}}
}

func TestNewValidatesOptions(t *testing.T) {
	t.Parallel()
	m, err := apikey.New(memstore.New(), apikey.Options{})
	require.NoError(t, err)
	other, err := apikey.New(memstore.New(), apikey.Options{})
	require.NoError(t, err)
	otherPolicy, err := selfservice.New(other, selfservice.Options{})
	require.NoError(t, err)
	short, err := selfservice.New(m, selfservice.Options{MaxLifetime: 30 * 24 * time.Hour, MaxGrace: time.Hour})
	require.NoError(t, err)
	owner := func(*http.Request) (string, error) { return "alice", nil }
	tests := []struct {
		name string
		m    *apikey.Manager
		opts keyspage.Options
	}{
		{"nil manager", nil, keyspage.Options{Owner: owner}},
		{"nil owner", m, keyspage.Options{}},
		{"policy of another manager", m, keyspage.Options{Owner: owner, Policy: otherPolicy}},
		{"a key that never expires", m, keyspage.Options{Owner: owner, Lifetimes: []time.Duration{0}}},
		{"negative lifetime", m, keyspage.Options{Owner: owner, Lifetimes: []time.Duration{-time.Hour}}},
		{"lifetime beyond the policy's", m, keyspage.Options{Owner: owner, Policy: short, Lifetimes: []time.Duration{31 * 24 * time.Hour}}},
		{"negative grace", m, keyspage.Options{Owner: owner, Graces: []time.Duration{-time.Hour}}},
		{"grace beyond the policy's", m, keyspage.Options{Owner: owner, Policy: short, Graces: []time.Duration{2 * time.Hour}}},
		{"negative page size", m, keyspage.Options{Owner: owner, PageSize: -1}},
		{"page size too large", m, keyspage.Options{Owner: owner, PageSize: 501}},
		{"bad trusted origin", m, keyspage.Options{Owner: owner, TrustedOrigins: []string{"not an origin"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := keyspage.New(tt.m, tt.opts)
			assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
			assert.Nil(t, p)
		})
	}
	p, err := keyspage.New(m, keyspage.Options{Owner: owner})
	require.NoError(t, err)
	assert.NotNil(t, p)
	p, err = keyspage.New(m, keyspage.Options{Owner: owner, Policy: short})
	require.NoError(t, err, "the default lifetimes and graces are cut to the policy's")
	assert.NotNil(t, p)
}

var (
	styleRe  = regexp.MustCompile(`(?s)<style>(.*?)</style>`)
	scriptRe = regexp.MustCompile(`(?s)<script>(.*?)</script>`)
)

func cspHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// TestSecurityHeaders checks the headers of every kind of response: the
// page, an error page, a refused post and a redirect.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "ci"})
	tests := []struct {
		name   string
		method string
		path   string
		user   string
		form   url.Values
		hdr    map[string]string
		status int
	}{
		{"page", http.MethodGet, "/keys/", "alice", nil, nil, http.StatusOK},
		{"signed out", http.MethodGet, "/keys/", "", nil, nil, http.StatusUnauthorized},
		{"unknown page", http.MethodGet, "/keys/nope", "alice", nil, nil, http.StatusNotFound},
		{"cross-site post", http.MethodPost, "/keys/revoke", "alice", url.Values{"id": {k.ID}, "confirm": {"yes"}}, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"created", http.MethodPost, "/keys/create", "alice", createForm("x"), nil, http.StatusCreated},
		{"redirect", http.MethodPost, "/keys/revoke", "alice", url.Values{"id": {k.ID}, "confirm": {"yes"}}, nil, http.StatusSeeOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := f.do(t, tt.method, tt.path, tt.user, tt.form, tt.hdr)
			require.Equal(t, tt.status, res.status, res.body)
			csp := res.header.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"} {
				assert.Contains(t, csp, want)
			}
			assert.NotContains(t, csp, "unsafe-inline")
			assert.NotContains(t, csp, "unsafe-eval")
			assert.Equal(t, "DENY", res.header.Get("X-Frame-Options"))
			assert.Equal(t, "nosniff", res.header.Get("X-Content-Type-Options"))
			assert.Equal(t, "no-store", res.header.Get("Cache-Control"))
			if res.status == http.StatusSeeOther {
				return
			}
			assert.Equal(t, "text/html; charset=utf-8", res.header.Get("Content-Type"))
			// The inline style and script are exactly those the CSP allows.
			style, script := styleRe.FindStringSubmatch(res.body), scriptRe.FindStringSubmatch(res.body)
			require.NotNil(t, style)
			require.NotNil(t, script)
			assert.Contains(t, csp, "style-src "+cspHash(style[1])+";")
			assert.Contains(t, csp, "script-src "+cspHash(script[1])+";")
			assert.NotContains(t, res.body, " style=", "inline style attributes would need 'unsafe-inline'")
			assert.NotRegexp(t, `(?i) on[a-z]+=`, res.body, "inline event handlers would need 'unsafe-inline'")
		})
	}
}

// TestListShowsTheOwnersKeys checks the table: each column, each state, and
// that another owner's keys are not shown; revoked and expired keys only
// when asked for.
func TestListShowsTheOwnersKeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	ctx := context.Background()
	_, active := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Production", Scopes: []string{"read", "write"}, Plan: "pro", TTL: 30 * 24 * time.Hour})
	_, disabled := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Staging"})
	_, paused := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Batch"})
	_, revoked := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Old laptop", TTL: 2 * time.Hour})
	_, expired := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Short-lived", TTL: time.Minute})
	_, rotated := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Worker"})
	_, bobs := f.issue(t, apikey.IssueParams{Owner: "bob", Name: "Bob's key"})
	_, err := f.m.Disable(ctx, disabled.ID)
	require.NoError(t, err)
	_, err = f.m.Pause(ctx, paused.ID)
	require.NoError(t, err)
	require.NoError(t, f.m.Revoke(ctx, revoked.ID))
	require.NoError(t, f.store.MarkUsed(ctx, map[string]time.Time{active.ID: f.clock.Now()}))
	f.clock.Add(3 * time.Minute)
	rot, err := f.m.Rotate(ctx, rotated.ID, 24*time.Hour)
	require.NoError(t, err)

	res := f.do(t, http.MethodGet, "/keys/?all=1", "alice", nil, nil)
	require.Equal(t, http.StatusOK, res.status)
	row := func(id string) string {
		t.Helper()
		m := regexp.MustCompile(`(?s)<tr id="key-` + id + `"[^>]*>.*?</tr>`).FindString(res.body)
		require.NotEmpty(t, m, "no row for %s", id)
		return m
	}
	r := row(active.ID)
	assert.Contains(t, r, `class="active"`)
	assert.Contains(t, r, "Production")
	assert.Contains(t, r, "<code>"+active.Hint+"</code>")
	assert.Contains(t, r, `<span class="tag">read</span>`)
	assert.Contains(t, r, `<span class="tag">write</span>`)
	assert.Contains(t, r, `<td data-label="Plan">pro</td>`)
	assert.Contains(t, r, `<time datetime="2026-11-27T12:00:00Z" title="2026-11-27 12:00:00 UTC">3 minutes ago</time>`, "last used")
	assert.Contains(t, r, `title="2026-12-27 12:00:00 UTC">in 30 days</time>`, "expiry")
	for _, action := range []string{"rename", "rotate", "pause", "revoke"} {
		assert.Contains(t, r, `action="`+action+`"`)
	}
	assert.NotContains(t, r, `action="resume"`)
	assert.NotContains(t, r, `action="revoke-chain"`, "not part of a chain")

	r = row(disabled.ID)
	assert.Contains(t, r, `<span class="state disabled">disabled by the service</span>`)
	assert.NotContains(t, r, `action="resume"`, "only the service lifts it")
	assert.NotContains(t, r, `action="rotate"`)
	assert.Contains(t, r, `action="revoke"`)

	r = row(paused.ID)
	assert.Contains(t, r, `<span class="state paused">paused</span>`)
	assert.Contains(t, r, `action="resume"`)
	assert.NotContains(t, r, `action="pause"`)

	r = row(revoked.ID)
	assert.Contains(t, r, `<span class="state revoked">revoked <time datetime="2026-11-27T12:00:00Z"`)
	assert.NotContains(t, r, "in 2 hours", "a revoked key shows no expiry")
	assert.Contains(t, r, `<td data-label="Expires">—</td>`)
	assert.NotContains(t, r, "<form", "no action on a revoked key")

	r = row(expired.ID)
	assert.Contains(t, r, `<span class="state expired">expired</span>`)
	assert.NotContains(t, r, "<form")

	r = row(rotated.ID)
	assert.Contains(t, r, `<span class="state grace">in grace until <time datetime="2026-11-28T12:03:00Z"`)
	assert.NotContains(t, r, `action="rotate"`, "a rotated key cannot be rotated again")
	assert.Contains(t, r, `action="revoke-chain"`)
	assert.Contains(t, row(rot.Key.ID), `action="revoke-chain"`)

	assert.NotContains(t, res.body, bobs.ID)
	assert.NotContains(t, res.body, "Bob&#39;s key")
	assert.Equal(t, 7, strings.Count(res.body, "<tr id="), "six keys and the successor")
	assert.Contains(t, res.body, `<a href="./">Hide revoked and expired keys</a>`)

	// By default, only the keys that can still work.
	res = f.do(t, http.MethodGet, "/keys/", "alice", nil, nil)
	require.Equal(t, http.StatusOK, res.status)
	assert.Equal(t, 5, strings.Count(res.body, "<tr id="), "neither the revoked nor the expired key")
	assert.NotContains(t, res.body, revoked.ID)
	assert.NotContains(t, res.body, expired.ID)
	assert.Contains(t, res.body, `<a href="./?all=1">Show revoked and expired keys</a>`)
}

func TestCreate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		form    url.Values
		status  int
		errText string
	}{
		{"name only", url.Values{"name": {"CI"}, "expires": {"7776000"}}, http.StatusCreated, ""},
		{"scopes and expiry", url.Values{"name": {"Prod"}, "scope": {"read", "write", "read"}, "expires": {"2592000"}}, http.StatusCreated, ""},
		{"no name", url.Values{"name": {"  "}, "expires": {"7776000"}}, http.StatusBadRequest, "Give the key a name."},
		{"control character", url.Values{"name": {"a\x00b"}, "expires": {"7776000"}}, http.StatusBadRequest, "control characters"},
		{"name too long", url.Values{"name": {strings.Repeat("é", 101)}, "expires": {"7776000"}}, http.StatusBadRequest, "too long"},
		{"a scope not granted", url.Values{"name": {"x"}, "scope": {"admin"}, "expires": {"7776000"}}, http.StatusForbidden, "You may not set scopes"},
		{"a plan", url.Values{"name": {"x"}, "plan": {"enterprise"}, "expires": {"7776000"}}, http.StatusForbidden, "You may not set plan: the form has no such field."},
		{"never expires", url.Values{"name": {"x"}, "expires": {"0"}}, http.StatusBadRequest, "Choose an expiry from the list."},
		{"unknown expiry", url.Values{"name": {"x"}, "expires": {"60"}}, http.StatusBadRequest, "Choose an expiry from the list."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, keyspage.Options{})
			res := f.do(t, http.MethodPost, "/keys/create", "alice", tt.form, nil)
			require.Equal(t, tt.status, res.status, res.body)
			keys := f.keys(t, "alice")
			if tt.errText != "" {
				assert.Contains(t, res.body, tt.errText)
				assert.Contains(t, res.body, `role="alert"`)
				assert.Empty(t, keys)
				return
			}
			require.Len(t, keys, 1)
			k := keys[0]
			assert.Equal(t, tt.form.Get("name"), k.Name)
			assert.Empty(t, k.Plan)
			if tt.form["scope"] != nil {
				assert.Equal(t, []string{"read", "write"}, k.Scopes)
			} else {
				assert.Empty(t, k.Scopes)
			}
			secs, err := strconv.Atoi(tt.form.Get("expires"))
			require.NoError(t, err)
			assert.Equal(t, f.clock.Now().Add(time.Duration(secs)*time.Second), k.ExpiresAt)
			// The token is in the response, once, and works.
			token := regexp.MustCompile(`id="token"[^>]*>([^<]+)</textarea>`).FindStringSubmatch(res.body)
			require.NotNil(t, token, res.body)
			assert.Equal(t, 1, strings.Count(res.body, token[1]))
			vk, err := f.m.Verify(context.Background(), token[1])
			require.NoError(t, err)
			assert.Equal(t, k.ID, vk.ID)
			assert.Equal(t, "no-store", res.header.Get("Cache-Control"))
			assert.Contains(t, res.body, "Copy your new key now")
			// The page never shows it again.
			again := f.do(t, http.MethodGet, "/keys/", "alice", nil, nil)
			require.Equal(t, http.StatusOK, again.status)
			assert.NotContains(t, again.body, token[1])
			assert.NotContains(t, again.body, `id="token"`)
			assert.Contains(t, again.body, k.Hint)
		})
	}
}

// TestCreateKeepsTheFormAfterAnError checks that a refused form is shown
// again with what the user chose.
func TestCreateKeepsTheFormAfterAnError(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	res := f.do(t, http.MethodPost, "/keys/create", "alice", url.Values{"name": {"Prod"}, "scope": {"write"}, "expires": {"60"}}, nil)
	require.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.body, `value="Prod"`)
	assert.Contains(t, res.body, `value="write" checked`)
	assert.NotContains(t, res.body, `value="read" checked`)
	assert.NotContains(t, res.body, `name="plan"`, "no plan to choose")
}

// TestOutputIsEscaped creates a key whose name is markup.
func TestOutputIsEscaped(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	name := `<script>alert(1)</script>"><img src=x>`
	res := f.do(t, http.MethodPost, "/keys/create", "alice", createForm(name), nil)
	require.Equal(t, http.StatusCreated, res.status)
	for _, r := range []response{res, f.do(t, http.MethodGet, "/keys/", "alice", nil, nil)} {
		assert.NotContains(t, r.body, "<script>alert")
		assert.NotContains(t, r.body, "<img")
		assert.Contains(t, r.body, "&lt;script&gt;alert(1)&lt;/script&gt;")
	}
}

// TestActions posts each management form for the owner's key.
func TestActions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		path     string
		form     func(id string) url.Values
		before   func(f *fixture, id string)
		status   int
		location string
		check    func(t *testing.T, f *fixture, k *apikey.Key, res response)
	}{
		{
			name: "rename", path: "/keys/rename",
			form:   func(id string) url.Values { return url.Values{"id": {id}, "name": {"  Renamed  "}} },
			status: http.StatusSeeOther, location: "./?done=renamed",
			check: func(t *testing.T, f *fixture, k *apikey.Key, _ response) { assert.Equal(t, "Renamed", k.Name) },
		},
		{
			name: "rename to nothing", path: "/keys/rename",
			form:   func(id string) url.Values { return url.Values{"id": {id}, "name": {""}} },
			status: http.StatusBadRequest,
			check:  func(t *testing.T, f *fixture, k *apikey.Key, _ response) { assert.Equal(t, "Original", k.Name) },
		},
		{
			name: "pause", path: "/keys/pause",
			form:   func(id string) url.Values { return url.Values{"id": {id}} },
			status: http.StatusSeeOther, location: "./?done=paused",
			check: func(t *testing.T, f *fixture, k *apikey.Key, _ response) { assert.True(t, k.Paused) },
		},
		{
			name: "resume", path: "/keys/resume",
			form: func(id string) url.Values { return url.Values{"id": {id}} },
			before: func(f *fixture, id string) {
				_, err := f.m.Pause(context.Background(), id)
				require.NoError(t, err)
			},
			status: http.StatusSeeOther, location: "./?done=resumed",
			check: func(t *testing.T, f *fixture, k *apikey.Key, _ response) { assert.False(t, k.Paused) },
		},
		{
			name: "resume a key the service disabled", path: "/keys/resume",
			form: func(id string) url.Values { return url.Values{"id": {id}} },
			before: func(f *fixture, id string) {
				_, err := f.m.Pause(context.Background(), id)
				require.NoError(t, err)
				_, err = f.m.Disable(context.Background(), id)
				require.NoError(t, err)
			},
			status: http.StatusForbidden,
			check: func(t *testing.T, f *fixture, k *apikey.Key, res response) {
				assert.True(t, k.Disabled)
				assert.True(t, k.Paused)
				assert.Contains(t, res.body, "You may not set disabled: the service disabled the key")
			},
		},
		{
			name: "rotate with grace", path: "/keys/rotate",
			form:   func(id string) url.Values { return url.Values{"id": {id}, "grace": {"3600"}} },
			status: http.StatusOK,
			check: func(t *testing.T, f *fixture, k *apikey.Key, res response) {
				assert.Equal(t, f.clock.Now().Add(time.Hour), k.ExpiresAt)
				require.NotEmpty(t, k.RotatedTo)
				token := regexp.MustCompile(`id="token"[^>]*>([^<]+)</textarea>`).FindStringSubmatch(res.body)
				require.NotNil(t, token)
				succ, err := f.m.Verify(context.Background(), token[1])
				require.NoError(t, err)
				assert.Equal(t, k.RotatedTo, succ.ID)
				assert.Equal(t, "Original", succ.Name)
				assert.Contains(t, res.body, "keeps working until 2026-11-27 13:00 UTC")
				assert.Equal(t, "no-store", res.header.Get("Cache-Control"))
			},
		},
		{
			name: "rotate without grace", path: "/keys/rotate",
			form:   func(id string) url.Values { return url.Values{"id": {id}, "grace": {"0"}} },
			status: http.StatusOK,
			check: func(t *testing.T, f *fixture, k *apikey.Key, res response) {
				assert.True(t, k.Expired(f.clock.Now()))
				assert.Contains(t, res.body, "stopped working")
			},
		},
		{
			name: "rotate with an unknown grace", path: "/keys/rotate",
			form:   func(id string) url.Values { return url.Values{"id": {id}, "grace": {"5"}} },
			status: http.StatusBadRequest,
			check:  func(t *testing.T, f *fixture, k *apikey.Key, _ response) { assert.Empty(t, k.RotatedTo) },
		},
		{
			name: "rotate a revoked key", path: "/keys/rotate",
			form: func(id string) url.Values { return url.Values{"id": {id}, "grace": {"0"}} },
			before: func(f *fixture, id string) {
				require.NoError(t, f.m.Revoke(context.Background(), id))
			},
			status: http.StatusConflict,
			check:  func(t *testing.T, f *fixture, k *apikey.Key, _ response) { assert.Empty(t, k.RotatedTo) },
		},
		{
			name: "revoke asks first", path: "/keys/revoke",
			form:   func(id string) url.Values { return url.Values{"id": {id}} },
			status: http.StatusOK,
			check: func(t *testing.T, f *fixture, k *apikey.Key, res response) {
				assert.True(t, k.RevokedAt.IsZero())
				assert.Contains(t, res.body, "Revoke “Original”?")
				assert.Contains(t, res.body, `name="confirm" value="yes"`)
			},
		},
		{
			name: "revoke confirmed", path: "/keys/revoke",
			form:   func(id string) url.Values { return url.Values{"id": {id}, "confirm": {"yes"}} },
			status: http.StatusSeeOther, location: "./?done=revoked",
			check: func(t *testing.T, f *fixture, k *apikey.Key, _ response) { assert.False(t, k.RevokedAt.IsZero()) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, keyspage.Options{Graces: []time.Duration{time.Hour, 0}})
			_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Original"})
			if tt.before != nil {
				tt.before(f, k.ID)
			}
			res := f.do(t, http.MethodPost, tt.path, "alice", tt.form(k.ID), nil)
			require.Equal(t, tt.status, res.status, res.body)
			if tt.location != "" {
				assert.Equal(t, tt.location, res.header.Get("Location"))
			}
			tt.check(t, f, f.get(t, k.ID), res)
		})
	}
}

// TestRevokeConfirmationPage opens the confirmation step with GET.
func TestRevokeConfirmationPage(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Prod"})
	_, bobs := f.issue(t, apikey.IssueParams{Owner: "bob", Name: "Bob's"})
	res := f.do(t, http.MethodGet, "/keys/revoke?id="+k.ID, "alice", nil, nil)
	require.Equal(t, http.StatusOK, res.status)
	assert.Contains(t, res.body, "Revoke “Prod”?")
	assert.Contains(t, res.body, k.Hint)
	assert.Contains(t, res.body, `<form method="post" action="revoke"`)
	assert.True(t, f.get(t, k.ID).RevokedAt.IsZero(), "GET changes nothing")
	res = f.do(t, http.MethodGet, "/keys/revoke?id="+bobs.ID, "alice", nil, nil)
	assert.Equal(t, http.StatusNotFound, res.status)
	assert.NotContains(t, res.body, bobs.Hint)
}

// TestOwnerScoping posts every form with another owner's key id, an
// unknown id and no id: each answers 404 and changes nothing.
func TestOwnerScoping(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	_, bobs := f.issue(t, apikey.IssueParams{Owner: "bob", Name: "Bob's"})
	forms := map[string]url.Values{
		"rename":       {"name": {"mine now"}},
		"rotate":       {"grace": {"0"}},
		"pause":        {},
		"resume":       {},
		"revoke":       {"confirm": {"yes"}},
		"revoke-chain": {"confirm": {"yes"}},
	}
	for action, form := range forms {
		for _, id := range []string{bobs.ID, "AAAAAAAAAAAAAAAA", ""} {
			t.Run(action+"/"+id, func(t *testing.T) {
				v := url.Values{"id": {id}}
				for k, vs := range form {
					v[k] = vs
				}
				res := f.do(t, http.MethodPost, "/keys/"+action, "alice", v, nil)
				assert.Equal(t, http.StatusNotFound, res.status)
				assert.Contains(t, res.body, "There is no such key.")
				assert.NotContains(t, res.body, bobs.Hint)
			})
		}
	}
	k := f.get(t, bobs.ID)
	assert.Equal(t, "Bob's", k.Name)
	assert.False(t, k.Paused)
	assert.Empty(t, k.RotatedTo)
	assert.True(t, k.RevokedAt.IsZero())
}

// TestCrossSitePostsAreRefused checks every state-changing form against
// requests from another origin, and against requests whose origin cannot be
// told.
func TestCrossSitePostsAreRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{TrustedOrigins: []string{"https://console.example"}})
	tests := []struct {
		name    string
		hdr     map[string]string
		allowed bool
	}{
		{"same origin by Sec-Fetch-Site", map[string]string{"Sec-Fetch-Site": "same-origin"}, true},
		{"same origin by Origin", map[string]string{"Sec-Fetch-Site": "", "Origin": "http://app.example"}, true},
		{"trusted origin", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://console.example"}, true},
		{"cross-site", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, false},
		{"same-site, other origin", map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://sub.app.example"}, false},
		{"other Origin without Sec-Fetch-Site", map[string]string{"Sec-Fetch-Site": "", "Origin": "https://evil.example"}, false},
		{"null Origin", map[string]string{"Sec-Fetch-Site": "", "Origin": "null"}, false},
		{"neither header", map[string]string{"Sec-Fetch-Site": ""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for action, form := range map[string]url.Values{
				"create": createForm("New"), "rename": {"name": {"Changed"}}, "rotate": {"grace": {"0"}},
				"pause": {}, "resume": {}, "revoke": {"confirm": {"yes"}}, "revoke-chain": {"confirm": {"yes"}},
			} {
				_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Original"})
				before := len(f.keys(t, "alice"))
				if action != "create" {
					form.Set("id", k.ID)
				}
				res := f.do(t, http.MethodPost, "/keys/"+action, "alice", form, tt.hdr)
				after := f.get(t, k.ID)
				if tt.allowed {
					assert.Less(t, res.status, 400, "%s: %s", action, res.body)
					continue
				}
				assert.Equal(t, http.StatusForbidden, res.status, action)
				assert.Contains(t, res.body, "was not sent from this site")
				assert.Equal(t, before, len(f.keys(t, "alice")), "%s created a key", action)
				assert.Equal(t, "Original", after.Name, action)
				assert.False(t, after.Paused, action)
				assert.Empty(t, after.RotatedTo, action)
				assert.True(t, after.RevokedAt.IsZero(), action)
			}
		})
	}
}

func TestSignedOut(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		owner func(*http.Request) (string, error)
	}{
		{"owner error", func(*http.Request) (string, error) { return "", errors.New("no session") }},
		{"empty owner", func(*http.Request) (string, error) { return "", nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, keyspage.Options{Owner: tt.owner, Challenge: `Basic realm="keys"`})
			f.issue(t, apikey.IssueParams{Name: "ownerless"})
			for _, r := range []struct{ method, path string }{{"GET", "/keys/"}, {"POST", "/keys/create"}, {"GET", "/keys/revoke"}} {
				res := f.do(t, r.method, r.path, "", createForm("x"), nil)
				assert.Equal(t, http.StatusUnauthorized, res.status)
				assert.Equal(t, `Basic realm="keys"`, res.header.Get("WWW-Authenticate"))
				assert.NotContains(t, res.body, "ownerless")
			}
			assert.Len(t, f.keys(t, ""), 1)
		})
	}
}

// TestStoreFailure checks that a failing store answers 503 with a fixed
// message, never the store's error.
func TestStoreFailure(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Prod"})
	f.store.fail.Store(true)
	for _, r := range []struct {
		method, path string
		form         url.Values
	}{
		{"GET", "/keys/", nil},
		{"POST", "/keys/create", createForm("x")},
		{"POST", "/keys/pause", url.Values{"id": {k.ID}}},
	} {
		res := f.do(t, r.method, r.path, "alice", r.form, nil)
		assert.Equal(t, http.StatusServiceUnavailable, res.status, r.path)
		assert.Equal(t, "5", res.header.Get("Retry-After"))
		assert.Contains(t, res.body, "The key store is unavailable.")
		assert.NotContains(t, res.body, "db.internal")
	}
}

// TestLostRaceIsAConflict checks that an update that keeps losing to
// concurrent writes answers 409, not 503.
func TestLostRaceIsAConflict(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Prod"})
	f.store.conflict.Store(true)
	res := f.do(t, http.MethodPost, "/keys/rename", "alice", url.Values{"id": {k.ID}, "name": {"New"}}, nil)
	assert.Equal(t, http.StatusConflict, res.status)
	assert.Contains(t, res.body, "Try again.")
	f.store.conflict.Store(false)
	assert.Equal(t, "Prod", f.get(t, k.ID).Name)
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	tests := []struct {
		name, method, path string
		status             int
		location           string
	}{
		{"page", "GET", "/keys/", http.StatusOK, ""},
		{"done note", "GET", "/keys/?done=revoked", http.StatusOK, ""},
		{"a form's URL opened", "GET", "/keys/create", http.StatusSeeOther, "./"},
		{"unknown page", "GET", "/keys/admin", http.StatusNotFound, ""},
		{"post to the page", "POST", "/keys/", http.StatusMethodNotAllowed, ""},
		{"put", "PUT", "/keys/create", http.StatusMethodNotAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := f.do(t, tt.method, tt.path, "alice", url.Values{}, nil)
			assert.Equal(t, tt.status, res.status)
			assert.Equal(t, tt.location, res.header.Get("Location"))
		})
	}
	assert.Contains(t, f.do(t, "GET", "/keys/?done=revoked", "alice", nil, nil).body, "The key was revoked")
	assert.NotContains(t, f.do(t, "GET", "/keys/?done=%3Cb%3E", "alice", nil, nil).body, "<b>")
}

// TestMountedWithStripPrefix serves the page under http.StripPrefix.
func TestMountedWithStripPrefix(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	page, err := keyspage.New(f.m, keyspage.Options{Owner: func(*http.Request) (string, error) { return "alice", nil }})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/account/keys/", http.StripPrefix("/account/keys", page))
	f.h = mux
	res := f.do(t, "GET", "/account/keys/", "", nil, nil)
	require.Equal(t, http.StatusOK, res.status)
	assert.Contains(t, res.body, `action="create"`)
	res = f.do(t, "POST", "/account/keys/create", "", createForm("x"), nil)
	assert.Equal(t, http.StatusCreated, res.status)
}

// TestAccessible checks that every input of the page has a label.
func TestAccessible(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Prod"})
	_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Stage"})
	_, err := f.m.Pause(context.Background(), k.ID)
	require.NoError(t, err)
	res := f.do(t, http.MethodPost, "/keys/create", "alice", createForm("New"), nil)
	require.Equal(t, http.StatusCreated, res.status)
	body := res.body
	assert.Contains(t, body, `<html lang="en">`)
	assert.Contains(t, body, `name="viewport" content="width=device-width, initial-scale=1"`)
	inputs := regexp.MustCompile(`<(input|select|textarea)\b[^>]*>`).FindAllString(body, -1)
	require.NotEmpty(t, inputs)
	labelled := 0
	for _, in := range inputs {
		if strings.Contains(in, `type="hidden"`) {
			continue
		}
		if strings.Contains(in, `type="checkbox"`) {
			assert.Regexp(t, `<label class="check">`+regexp.QuoteMeta(in), body, "checkbox not in a label")
			labelled++
			continue
		}
		id := regexp.MustCompile(`\bid="([^"]+)"`).FindStringSubmatch(in)
		require.NotNil(t, id, "input without id: %s", in)
		assert.Contains(t, body, `<label for="`+id[1]+`"`, "no label for %s", in)
		labelled++
	}
	assert.Greater(t, labelled, 8)
}
