package apikey_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
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

// pepper is a test pepper of the minimum length.
var testPepper = []apikey.Pepper{{Version: "1", Secret: []byte("0123456789abcdef0123456789abcdef")}}

// clock is an injectable, settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// spyStore is the one configurable test Store: it wraps a Store (a
// memstore, keeping none of its optional capabilities), counts the calls
// made to it, can be made to fail, and can replace what Get does.
type spyStore struct {
	apikey.Store
	calls atomic.Int64 // every call
	gets  atomic.Int64 // calls of Get
	fail  atomic.Pointer[error]
	hook  func(method string) // called before each method, if set
	// get, if set, answers Get in place of the wrapped store, whose Get
	// it receives as next.
	get func(ctx context.Context, id string, next func(context.Context, string) (*apikey.Key, error)) (*apikey.Key, error)
}

func newSpy() *spyStore { return &spyStore{Store: memstore.New()} }

// spyGet returns a spy over a memstore whose Get is get.
func spyGet(get func(ctx context.Context, id string, next func(context.Context, string) (*apikey.Key, error)) (*apikey.Key, error)) *spyStore {
	return &spyStore{Store: memstore.New(), get: get}
}

// slowSpy returns a spy whose Get takes delay (in a synctest bubble, the
// delay passes in the bubble's time once every goroutine waits).
func slowSpy(delay time.Duration) *spyStore {
	return spyGet(func(ctx context.Context, id string, next func(context.Context, string) (*apikey.Key, error)) (*apikey.Key, error) {
		time.Sleep(delay)
		return next(ctx, id)
	})
}

func (s *spyStore) before(method string) error {
	s.calls.Add(1)
	if s.hook != nil {
		s.hook(method)
	}
	if p := s.fail.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *spyStore) failWith(err error) {
	if err == nil {
		s.fail.Store(nil)
		return
	}
	s.fail.Store(&err)
}

func (s *spyStore) Create(ctx context.Context, k *apikey.Key) error {
	if err := s.before("Create"); err != nil {
		return err
	}
	return s.Store.Create(ctx, k)
}

func (s *spyStore) Get(ctx context.Context, id string) (*apikey.Key, error) {
	s.gets.Add(1)
	if err := s.before("Get"); err != nil {
		return nil, err
	}
	if s.get != nil {
		return s.get(ctx, id, s.Store.Get)
	}
	return s.Store.Get(ctx, id)
}

func (s *spyStore) Update(ctx context.Context, k *apikey.Key) error {
	if err := s.before("Update"); err != nil {
		return err
	}
	return s.Store.Update(ctx, k)
}

func (s *spyStore) Delete(ctx context.Context, id string) error {
	if err := s.before("Delete"); err != nil {
		return err
	}
	return s.Store.Delete(ctx, id)
}

func (s *spyStore) List(ctx context.Context, owner string, o apikey.ListOptions) ([]*apikey.Key, error) {
	if err := s.before("List"); err != nil {
		return nil, err
	}
	return s.Store.List(ctx, owner, o)
}

func (s *spyStore) MarkUsed(ctx context.Context, uses map[string]time.Time) error {
	if err := s.before("MarkUsed"); err != nil {
		return err
	}
	return s.Store.MarkUsed(ctx, uses)
}

// newManager returns a Manager over store with a test clock, no cache and
// last-used tracking off unless opts says otherwise.
func newManager(t testing.TB, store apikey.Store, opts apikey.Options) *apikey.Manager {
	t.Helper()
	if opts.Peppers == nil && opts.Hasher == nil {
		opts.Peppers = testPepper
	}
	m, err := apikey.New(store, opts)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

func issue(t testing.TB, m *apikey.Manager, p apikey.IssueParams) (string, *apikey.Key) {
	t.Helper()
	token, k, err := m.Issue(context.Background(), p)
	require.NoError(t, err)
	return token, k
}

// eventLog is a slog.Handler that keeps the events a Manager logs (the
// "apikey" group of each record), at every level.
type eventLog struct {
	mu     sync.Mutex
	events []loggedEvent
}

// loggedEvent is one logged event.
type loggedEvent struct {
	Type, KeyID, Owner, Outcome string
}

func (l *eventLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *eventLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *eventLog) WithGroup(string) slog.Handler            { return l }

func (l *eventLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "apikey" {
			return true
		}
		var e loggedEvent
		for _, f := range a.Value.Resolve().Group() {
			switch f.Key {
			case "event":
				e.Type = f.Value.String()
			case "key_id":
				e.KeyID = f.Value.String()
			case "owner":
				e.Owner = f.Value.String()
			case "outcome":
				e.Outcome = f.Value.String()
			}
		}
		l.mu.Lock()
		l.events = append(l.events, e)
		l.mu.Unlock()
		return false
	})
	return nil
}

// take returns the events logged since the last take.
func (l *eventLog) take() []loggedEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.events
	l.events = nil
	return e
}

// types returns the types of events, leaving out verifications unless
// verify is set.
func types(events []loggedEvent, verify bool) []string {
	var out []string
	for _, e := range events {
		if verify || e.Type != "verify" {
			out = append(out, e.Type)
		}
	}
	return out
}

// assertInputError asserts that err is an *apikey.InputError naming field,
// which matches ErrInvalidInput and not ErrInvalidOptions (a bad input is
// not a bad configuration) nor ErrUnavailable.
func assertInputError(t testing.TB, err error, field string, msgAndArgs ...any) bool {
	t.Helper()
	var ie *apikey.InputError
	if !assert.ErrorAs(t, err, &ie, msgAndArgs...) {
		return false
	}
	ok := assert.Equal(t, field, ie.Field, msgAndArgs...)
	ok = assert.ErrorIs(t, err, apikey.ErrInvalidInput, msgAndArgs...) && ok
	ok = assert.NotErrorIs(t, err, apikey.ErrInvalidOptions, msgAndArgs...) && ok
	return assert.NotErrorIs(t, err, apikey.ErrUnavailable, msgAndArgs...) && ok
}

// custStore is a memstore that keeps customer records (CustomerStore)
// and Key.Paused. The memstore of this tree does neither yet: once it
// does both, newCustomerStore returns a plain memstore and the tests run
// against it unchanged.
type custStore struct {
	*memstore.Store
	mu     sync.RWMutex // orders key writes with the paused flags
	paused map[string]bool
	cmu    sync.Mutex
	custs  map[string]*apikey.Customer
	gets   atomic.Int64 // GetCustomer calls
}

var _ apikey.CustomerStore = (*custStore)(nil)

// newCustomerStore returns a store with CustomerStore that keeps Paused.
func newCustomerStore() apikey.Store {
	ms := memstore.New()
	if _, ok := any(ms).(apikey.CustomerStore); ok && keepsPaused(ms) {
		return ms
	}
	return &custStore{Store: ms, paused: map[string]bool{}, custs: map[string]*apikey.Customer{}}
}

// keepsPaused reports whether s round-trips Key.Paused.
func keepsPaused(s apikey.Store) bool {
	ctx := context.Background()
	k := &apikey.Key{ID: apikey.NewID(), Prefix: "sk", Hash: []byte("x"), CreatedAt: time.Now(), Paused: true}
	if s.Create(ctx, k) != nil {
		return false
	}
	defer s.Delete(ctx, k.ID)
	got, err := s.Get(ctx, k.ID)
	return err == nil && got.Paused
}

func (s *custStore) withPaused(k *apikey.Key) *apikey.Key {
	if k != nil {
		k.Paused = s.paused[k.ID]
	}
	return k
}

func (s *custStore) Create(ctx context.Context, k *apikey.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Store.Create(ctx, k); err != nil {
		return err
	}
	s.paused[k.ID] = k.Paused
	return nil
}

func (s *custStore) Get(ctx context.Context, id string) (*apikey.Key, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, err := s.Store.Get(ctx, id)
	return s.withPaused(k), err
}

func (s *custStore) Update(ctx context.Context, k *apikey.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Store.Update(ctx, k); err != nil {
		return err
	}
	s.paused[k.ID] = k.Paused
	return nil
}

func (s *custStore) Delete(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Store.Delete(ctx, id); err != nil {
		return err
	}
	delete(s.paused, id)
	return nil
}

func (s *custStore) List(ctx context.Context, owner string, o apikey.ListOptions) ([]*apikey.Key, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ks, err := s.Store.List(ctx, owner, o)
	for _, k := range ks {
		s.withPaused(k)
	}
	return ks, err
}

func (s *custStore) Rotate(ctx context.Context, old *apikey.Key, until time.Time, succ *apikey.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Store.Rotate(ctx, old, until, succ); err != nil {
		return err
	}
	s.paused[succ.ID] = succ.Paused
	return nil
}

func (s *custStore) GetCustomer(ctx context.Context, id string) (*apikey.Customer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.gets.Add(1)
	s.cmu.Lock()
	defer s.cmu.Unlock()
	c, ok := s.custs[id]
	if !ok {
		return nil, apikey.ErrNotFound
	}
	return c.Clone(), nil
}

func (s *custStore) PutCustomer(ctx context.Context, c *apikey.Customer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	old, ok := s.custs[c.ID]
	switch {
	case c.Revision == 0 && ok:
		return apikey.ErrConflict
	case c.Revision != 0 && !ok:
		return apikey.ErrNotFound
	case c.Revision != 0 && old.Revision != c.Revision:
		return apikey.ErrConflict
	}
	n := c.Clone()
	n.Revision++
	s.custs[c.ID] = n
	c.Revision = n.Revision
	return nil
}

func (s *custStore) ListCustomers(ctx context.Context, after string, limit int) ([]*apikey.Customer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	out := []*apikey.Customer{}
	for _, id := range slices.Sorted(maps.Keys(s.custs)) {
		if id > after && len(out) < limit {
			out = append(out, s.custs[id].Clone())
		}
	}
	return out, nil
}

// setCustomer changes the record of customer id through m.
func setCustomer(t testing.TB, m *apikey.Manager, id string, change func(*apikey.Customer)) *apikey.Customer {
	t.Helper()
	c, err := m.SetCustomer(context.Background(), id, func(c *apikey.Customer) error { change(c); return nil })
	require.NoError(t, err)
	return c
}

// customerHook answers Options.Customers from a map, and fails or panics
// for the ids told to.
type customerHook struct {
	mu    sync.Mutex
	recs  map[string]*apikey.Customer
	fail  map[string]bool
	panic atomic.Bool
	calls atomic.Int64
}

func (h *customerHook) get(ctx context.Context, id string) (*apikey.Customer, error) {
	h.calls.Add(1)
	if h.panic.Load() {
		panic("billing database on fire")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail[id] {
		return nil, errors.New("billing: connection refused")
	}
	c, ok := h.recs[id]
	if !ok {
		return nil, fmt.Errorf("billing: customer %q: %w", id, apikey.ErrNotFound)
	}
	return c.Clone(), nil
}

func (h *customerHook) set(id string, c *apikey.Customer, fail bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c != nil {
		h.recs[id] = c
	}
	h.fail[id] = fail
}

// yield lets other goroutines run a number of times that varies with
// trial, so that the two sides of a race win in turn.
func yield(trial int) {
	for range trial % 8 {
		runtime.Gosched()
	}
}

func mustBcrypt(t testing.TB) apikey.Hasher {
	h, err := apikey.NewBcryptHasher(4)
	require.NoError(t, err)
	return h
}

// rebuild returns a well-formed token of format with the given id and a
// random secret (or the given one).
func rebuild(t testing.TB, f apikey.Format, id, secret string) string {
	t.Helper()
	if secret == "" {
		_, fresh := f.New()
		secret = fresh.Secret
	}
	token, err := f.Compose(id, secret)
	require.NoError(t, err)
	return token
}

// okHandler answers 200 with the key id it saw, and records that it ran.
func okHandler(ran *bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*ran = true
		w.Header().Set("Content-Type", "text/plain; charset=utf-8") // not sniffed: a key id may start like a BMP file
		k := apikey.FromContext(r.Context())
		if k == nil {
			io.WriteString(w, "anonymous")
			return
		}
		io.WriteString(w, k.ID)
	})
}

func get(target string, header ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	return r
}

func bearer(token string) *http.Request { return get("/", "Authorization", "Bearer "+token) }

var testPlans = limits.Plans{
	"free": {limits.Quota("daily", 3, limits.Day)},
	"pro":  {limits.Quota("daily", 1000, limits.Day), limits.Rate("per-second", 2, time.Second, 0)},
}

// limitEnv is a Manager with testPlans, a memlimit on the same clock, and
// a Middleware over them.
type limitEnv struct {
	c  *clock
	s  apikey.Store
	m  *apikey.Manager
	l  *memlimit.Limiter
	mw *apikey.Middleware
}

// handler is the usual chain: authenticate, then scopes, then spend.
func (e *limitEnv) handler(ran *bool, scopes ...string) http.Handler {
	h := e.mw.Limit(okHandler(ran))
	if len(scopes) > 0 {
		h = e.mw.RequireScopes(scopes...)(h)
	}
	return e.mw.Handler(h)
}

func newLimitEnv(t *testing.T, opts apikey.Options, mwOpts apikey.MiddlewareOptions) *limitEnv {
	t.Helper()
	return newLimitEnvOver(t, memstore.New(), opts, mwOpts)
}

// newLimitEnvOver is newLimitEnv over store.
func newLimitEnvOver(t *testing.T, store apikey.Store, opts apikey.Options, mwOpts apikey.MiddlewareOptions) *limitEnv {
	t.Helper()
	e := &limitEnv{c: newClock()} // 12:00 UTC
	opts.Now = e.c.Now
	if opts.Plans == nil {
		opts.Plans = testPlans
	}
	e.s = store
	e.m = newManager(t, e.s, opts)
	var err error
	e.l, err = memlimit.New(memlimit.Options{Now: e.c.Now})
	require.NoError(t, err)
	if mwOpts.Limits.Limiter == nil {
		mwOpts.Limits.Limiter = e.l
	}
	e.mw, err = apikey.NewMiddleware(e.m, mwOpts)
	require.NoError(t, err)
	return e
}

func hit(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// limiterSpy records calls, allows them, and fails while fail is set.
type limiterSpy struct {
	mu    sync.Mutex
	calls atomic.Int64
	log   []spyCall
	fail  atomic.Bool
	block atomic.Bool // wait for ctx to end
	hook  atomic.Pointer[func()]
}

func (l *limiterSpy) Allow(ctx context.Context, subject string, lims []limits.Limit, cost int64) (limits.Result, error) {
	l.calls.Add(1)
	if f := l.hook.Load(); f != nil {
		(*f)()
	}
	c := spyCall{subject: subject, lims: append([]limits.Limit(nil), lims...)}
	if d, ok := ctx.Deadline(); ok {
		c.deadline = time.Until(d)
	}
	l.mu.Lock()
	l.log = append(l.log, c)
	l.mu.Unlock()
	if l.block.Load() {
		<-ctx.Done()
		return limits.Result{}, errors.Join(apikey.ErrUnavailable, ctx.Err())
	}
	if l.fail.Load() {
		return limits.Result{}, errors.Join(apikey.ErrUnavailable, errors.New("connection refused"))
	}
	return limits.Result{Allowed: true, Limit: lims[0], Remaining: 1}, nil
}

func (l *limiterSpy) last() spyCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.log[len(l.log)-1]
}

type spyCall struct {
	subject  string
	lims     []limits.Limit
	deadline time.Duration // until ctx's deadline at the call; 0 without
}

// rotate rotates key id and returns the successor's token and record.
func rotate(t *testing.T, m *apikey.Manager, id string, grace time.Duration) (string, *apikey.Key) {
	t.Helper()
	rot, err := m.Rotate(context.Background(), id, grace)
	require.NoError(t, err)
	return rot.Token, rot.Key
}

// rotationStores are a store with the transactional Rotator (memstore) and
// one without (the spy hides it), so both code paths are tested.
func rotationStores() map[string]func() apikey.Store {
	return map[string]func() apikey.Store{
		"Rotator":   func() apikey.Store { return memstore.New() },
		"GetUpdate": func() apikey.Store { return newSpy() },
	}
}

// recMetrics records what a Manager reports.
type recMetrics struct {
	mu       sync.Mutex
	verified []string // outcome/cache
	flushed  []int
	flushErr []error
	queued   []int
	dropped  int
	limited  []string // outcome/limit
	failed   []string // policy/breakerOpen
}

func (r *recMetrics) Verified(outcome, cache string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d < 0 {
		panic("negative duration")
	}
	r.verified = append(r.verified, outcome+"/"+cache)
}

func (r *recMetrics) Limited(outcome, limit string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.limited = append(r.limited, outcome+"/"+limit)
}

func (r *recMetrics) LimiterFailed(policy string, breakerOpen bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = append(r.failed, fmt.Sprintf("%s/%t", policy, breakerOpen))
}

func (r *recMetrics) Flushed(keys int, _ time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushed = append(r.flushed, keys)
	r.flushErr = append(r.flushErr, err)
}

func (r *recMetrics) UsesQueued(queued, dropped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queued = append(r.queued, queued)
	r.dropped += dropped
}
