package apikey_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
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

// spyStore wraps a Store, counts its calls and can be made to fail.
type spyStore struct {
	apikey.Store
	calls atomic.Int64
	fail  atomic.Pointer[error]
	hook  func(method string) // called before each method, if set
}

func newSpy() *spyStore { return &spyStore{Store: memstore.New()} }

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
	if err := s.before("Get"); err != nil {
		return nil, err
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
