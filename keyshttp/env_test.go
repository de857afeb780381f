package keyshttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/selfservice"
	"github.com/gokeys/apikey/usage"
)

var pepper = []apikey.Pepper{{Version: "1", Secret: []byte("0123456789abcdef0123456789abcdef")}}

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

// flakyStore is a Store that fails every call while down is set, and
// loses every conditional update (as if another writer always won) while
// conflict is set. It hides the Revoker and Rotator capabilities of the
// store it wraps, so the Manager's own read-modify-write paths are the
// ones tested, and keeps its customer records (apikey.CustomerStore), so
// that tests set customers with Manager.SetCustomer, and its usage
// (usage.Store).
type flakyStore struct {
	apikey.Store
	customers      apikey.CustomerStore
	usage          usage.Store
	down, conflict atomic.Bool
}

var errDown = errors.New("connection refused")

func newFlakyStore() *flakyStore {
	s := memstore.New()
	return &flakyStore{Store: s, customers: s, usage: s}
}

func (s *flakyStore) AddUsage(ctx context.Context, records []usage.Record) error {
	if s.down.Load() {
		return errDown
	}
	return s.usage.AddUsage(ctx, records)
}

func (s *flakyStore) Usage(ctx context.Context, q usage.Query) ([]usage.Record, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.usage.Usage(ctx, q)
}

func (s *flakyStore) PurgeUsage(ctx context.Context, before time.Time) (int, error) {
	return s.usage.PurgeUsage(ctx, before)
}

func (s *flakyStore) Create(ctx context.Context, k *apikey.Key) error {
	if s.down.Load() {
		return errDown
	}
	return s.Store.Create(ctx, k)
}

func (s *flakyStore) Get(ctx context.Context, id string) (*apikey.Key, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.Store.Get(ctx, id)
}

func (s *flakyStore) Update(ctx context.Context, k *apikey.Key) error {
	if s.down.Load() {
		return errDown
	}
	if s.conflict.Load() {
		return fmt.Errorf("revision %d is stale: %w", k.Revision, apikey.ErrConflict)
	}
	return s.Store.Update(ctx, k)
}

func (s *flakyStore) List(ctx context.Context, owner string, o apikey.ListOptions) ([]*apikey.Key, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.Store.List(ctx, owner, o)
}

func (s *flakyStore) GetCustomer(ctx context.Context, id string) (*apikey.Customer, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.customers.GetCustomer(ctx, id)
}

func (s *flakyStore) PutCustomer(ctx context.Context, c *apikey.Customer) error {
	if s.down.Load() {
		return errDown
	}
	return s.customers.PutCustomer(ctx, c)
}

func (s *flakyStore) ListCustomers(ctx context.Context, after string, limit int) ([]*apikey.Customer, error) {
	return s.customers.ListCustomers(ctx, after, limit)
}

// events records the changes a Manager logs (every event but verify).
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) Enabled(context.Context, slog.Level) bool { return true }
func (e *events) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "apikey: verify" {
		e.mu.Lock()
		e.list = append(e.list, strings.TrimPrefix(r.Message, "apikey: "))
		e.mu.Unlock()
	}
	return nil
}
func (e *events) WithAttrs([]slog.Attr) slog.Handler { return e }
func (e *events) WithGroup(string) slog.Handler      { return e }

// count returns how many changes were logged.
func (e *events) count() int { e.mu.Lock(); defer e.mu.Unlock(); return len(e.list) }

// env is a Handler over a memory store, served through the OpenAPI
// checker when built with a spec. The caller is named by the X-User
// header.
type env struct {
	t      *testing.T
	m      *apikey.Manager
	h      *keyshttp.Handler
	store  *flakyStore
	clock  *clock
	events *events
	srv    *httptest.Server
	spec   *spec
}

func ownerFromHeader(r *http.Request) (string, error) {
	u := r.Header.Get("X-User")
	if u == "bad" {
		return "", errors.New("no session")
	}
	return u, nil
}

// newEnv builds an env; policy, if set, configures the Handler's policy;
// checked serves through the OpenAPI checker.
func newEnv(t *testing.T, checked bool, policy *selfservice.Options, opts keyshttp.Options) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}, store: newFlakyStore(), events: &events{}}
	var err error
	e.m, err = apikey.New(e.store, apikey.Options{Prefix: "sk_live", Prefixes: []string{"sk_test"}, Peppers: pepper, Now: e.clock.Now,
		CacheTTL: -1, Logger: slog.New(e.events)})
	require.NoError(t, err)
	t.Cleanup(func() { e.m.Close(context.Background()) })
	if opts.Owner == nil {
		opts.Owner = ownerFromHeader
	}
	if policy != nil {
		opts.Policy, err = selfservice.New(e.m, *policy)
		require.NoError(t, err)
	}
	e.h, err = keyshttp.New(e.m, opts)
	require.NoError(t, err)
	var handler http.Handler = e.h
	if checked {
		e.spec = loadSpec(t, e.h)
		handler = e.spec.checked(t, e.h)
	}
	e.srv = httptest.NewServer(handler)
	t.Cleanup(e.srv.Close)
	return e
}

type response struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

func (e *env) do(user, method, path, body string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	require.NoError(e.t, err)
	if user != "" {
		req.Header.Set("X-User", user)
	}
	res, err := e.srv.Client().Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &r.body)
	}
	return r
}

// create makes a key for user and returns its id and token.
func (e *env) create(user, body string) (string, string) {
	e.t.Helper()
	r := e.do(user, "POST", "/api-keys", body)
	require.Equal(e.t, 201, r.status, r.raw)
	return r.body["id"].(string), r.body["key"].(string)
}

// customer sets the operator's record of customer id.
func (e *env) customer(id string, change func(c *apikey.Customer)) {
	e.t.Helper()
	_, err := e.m.SetCustomer(context.Background(), id, func(c *apikey.Customer) error { change(c); return nil })
	require.NoError(e.t, err)
}

// key reads key id from the store.
func (e *env) key(id string) *apikey.Key {
	e.t.Helper()
	k, err := e.m.Get(context.Background(), id)
	require.NoError(e.t, err)
	return k
}

// verify reports whether token is accepted, and why not.
func (e *env) verify(token string) error {
	_, err := e.m.Verify(context.Background(), token)
	return err
}

func readAllLimited(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r.Body = io.NopCloser(bytes.NewReader(b))
	return b, err
}

func assertProblem(t *testing.T, r response, status int, field string, msgAndArgs ...any) {
	t.Helper()
	assert.Equal(t, status, r.status, append(msgAndArgs, r.raw)...)
	assert.Equal(t, "application/problem+json", r.header.Get("Content-Type"), msgAndArgs...)
	if field != "" {
		assert.Equal(t, field, r.body["field"], append(msgAndArgs, r.raw)...)
	}
}
