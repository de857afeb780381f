package rpctest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/rpc/internal/rpcauth"
)

// Now is the bench's fixed clock at noon UTC, so that a day's quota has 12
// hours left whenever the tests run.
var Now = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

// The plans are free, with a large daily quota, and tiny, with two calls a
// day.
const (
	FreeQuota = 1000
	TinyQuota = 2
)

// Secret is a dependency's error text that must never reach a client.
const Secret = "password=hunter2"

// Variants of an Env's configuration.
const (
	Default = ""        // limits through a memlimit, the Methods below
	Hide    = "hide"    // Default with HideCredentials
	Deny    = "deny"    // Default.Deny: only listed methods
	Failing = "failing" // a Limiter that fails, fail closed
	CostFn  = "cost"    // Config.Cost reads "cost" from the request
	NoLimit = "nolimit" // no Limiter
)

// Env is a Manager, a Middleware over a memlimit.Limiter and the Config
// of an interceptor with the same LimitOptions, with keys to issue in every state.
type Env struct {
	M       *apikey.Manager
	MW      *apikey.Middleware
	Limiter *memlimit.Limiter
	Store   *store
	Config  rpcauth.Config

	other  *apikey.Manager // issues well-formed tokens M does not know
	owners atomic.Int64
	mu     sync.Mutex
	custs  map[string]*apikey.Customer
	broken map[string]bool
}

// Methods are the rules of the test services.
func Methods() map[string]rpcauth.Rule {
	return map[string]rpcauth.Rule{
		Write:         {Scopes: []string{"write"}},
		Either:        {Scopes: []string{"a", "b"}, AnyScope: true},
		Free:          {Unmetered: true},
		Costly:        {Cost: 5},
		ChatMetered:   {PerMessage: true},
		AdminService:  {Scopes: []string{"admin"}},
		AdminStatus:   {},
		PublicService: {Open: true},
	}
}

// NewEnv returns the Env of a variant.
func NewEnv(t testing.TB, variant string) *Env {
	t.Helper()
	e := &Env{Store: &store{Store: memstore.New(), paused: map[string]bool{}}, custs: map[string]*apikey.Customer{}, broken: map[string]bool{}}
	now := func() time.Time { return Now }
	plans := limits.Plans{
		"free": {limits.Quota("daily", FreeQuota, limits.Day)},
		"tiny": {limits.Quota("daily", TinyQuota, limits.Day)},
	}
	var err error
	e.M, err = apikey.New(e.Store, apikey.Options{Prefix: "sk_test", Now: now, Plans: plans, Customers: e.customer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.M.Close(context.Background()) })
	e.other, err = apikey.New(memstore.New(), apikey.Options{Prefix: "sk_test", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.other.Close(context.Background()) })
	if e.Limiter, err = memlimit.New(memlimit.Options{Now: now}); err != nil {
		t.Fatal(err)
	}
	opts := apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: e.Limiter}}
	if variant == Failing {
		opts.Limits.Limiter = failing{}
	}
	if variant != NoLimit {
		if e.MW, err = apikey.NewMiddleware(e.M, opts); err != nil {
			t.Fatal(err)
		}
	}
	e.Config = rpcauth.Config{Methods: Methods()}
	if e.MW != nil {
		e.Config.Limits = opts.Limits
	}
	switch variant {
	case Hide:
		e.Config.HideCredentials = true
	case Deny:
		e.Config.Methods = map[string]rpcauth.Rule{Echo: {}, PublicService: {Open: true}}
		e.Config.Default = rpcauth.Rule{Deny: true}
	case CostFn:
		e.Config.Cost = func(_ context.Context, _ string, req any, _ *apikey.Key) int64 {
			if s, ok := req.(interface{ AsMap() map[string]any }); ok {
				if c, ok := s.AsMap()["cost"].(float64); ok {
					return int64(c)
				}
			}
			return 1
		}
	}
	return e
}

// PlainManager returns a Manager over a memstore with the defaults. It has
// no customer records and no plans.
func PlainManager(t testing.TB) *apikey.Manager {
	m, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

// customer is the Manager's Options.Customers.
func (e *Env) customer(_ context.Context, id string) (*apikey.Customer, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.broken[id] {
		return nil, errors.New("customers: dial tcp 10.9.9.9:5432: " + Secret)
	}
	if c := e.custs[id]; c != nil {
		return c.Clone(), nil
	}
	return nil, apikey.ErrNotFound
}

// failing is a Limiter whose backend is down.
type failing struct{}

func (failing) Allow(context.Context, string, []limits.Limit, int64) (limits.Result, error) {
	return limits.Result{}, fmt.Errorf("%w: redis: %s", apikey.ErrUnavailable, Secret)
}

// Key describes a key to issue.
type Key struct {
	// Scopes of the key.
	Scopes []string
	// Plan is the key's plan, "free" when empty.
	Plan string
	// State is the key's state. It is one of "" (valid), "revoked",
	// "expired", "disabled", "paused", "suspended" (its customer) and
	// "grace" (rotated, the old token). It may also be "unknown-plan" (its
	// customer's plan is not configured), "broken" (its customer's record
	// cannot be read) or "ceiling" (its customer's scope ceiling is
	// "read"). Or it is a token that is none, one of "malformed", "invalid"
	// (well formed, unknown) and "long".
	State string
	// AllowedIPs restrict the key to IP ranges.
	AllowedIPs []netip.Prefix
}

// NewCustomer returns the id of a new customer whose record is c (its ID
// set), or of no record when c is nil.
func (e *Env) NewCustomer(c *apikey.Customer) string {
	id := fmt.Sprintf("customer-%d", e.owners.Add(1))
	if c != nil {
		c = c.Clone()
		c.ID = id
		e.mu.Lock()
		e.custs[id] = c
		e.mu.Unlock()
	}
	return id
}

// IssueTo returns a token of a valid key of customer owner.
func (e *Env) IssueTo(t testing.TB, owner string, scopes ...string) (token string, key *apikey.Key) {
	t.Helper()
	token, key, err := e.M.Issue(context.Background(), apikey.IssueParams{Owner: owner, Scopes: scopes, Plan: "free"})
	if err != nil {
		t.Fatal(err)
	}
	return token, key
}

// Issue returns a token of a key as k describes, of a customer of its own.
func (e *Env) Issue(t testing.TB, k Key) (token string, key *apikey.Key) {
	t.Helper()
	ctx := context.Background()
	switch k.State {
	case "malformed":
		return "sk_test_not-a-token", nil
	case "long":
		return strings.Repeat("a", apikey.MaxTokenLength+1), nil
	case "invalid":
		token, key, err := e.other.Issue(ctx, apikey.IssueParams{Owner: "nobody"})
		if err != nil {
			t.Fatal(err)
		}
		return token, key
	}
	owner := e.NewCustomer(nil)
	plan := k.Plan
	if plan == "" {
		plan = "free"
	}
	token, key, err := e.M.Issue(ctx, apikey.IssueParams{Owner: owner, Scopes: k.Scopes, Plan: plan, AllowedIPs: k.AllowedIPs})
	if err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	switch k.State { // after Issue, which refuses keys these records forbid
	case "suspended":
		e.custs[owner] = &apikey.Customer{ID: owner, Suspended: true}
	case "unknown-plan":
		e.custs[owner] = &apikey.Customer{ID: owner, Plan: "gold", Revision: 1}
	case "ceiling":
		e.custs[owner] = &apikey.Customer{ID: owner, Scopes: []string{"read"}}
	}
	e.mu.Unlock()
	e.M.CustomerChanged(ctx, owner)
	switch k.State {
	case "revoked":
		err = e.M.Revoke(ctx, key.ID)
	case "disabled":
		_, err = e.M.Disable(ctx, key.ID)
	case "paused":
		_, err = e.M.Pause(ctx, key.ID)
	case "grace":
		_, err = e.M.Rotate(ctx, key.ID, time.Hour)
	case "broken":
		e.mu.Lock()
		e.broken[owner] = true
		e.mu.Unlock()
	case "expired": // as if issued long ago
		var stored *apikey.Key
		if stored, err = e.Store.Get(ctx, key.ID); err == nil {
			stored.ExpiresAt = Now.Add(-time.Minute)
			err = e.Store.Update(ctx, stored)
			e.M.Invalidate(key.ID)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return token, key
}

// store is a memstore.Store that keeps Key.Paused, which memstore's
// compact records drop.
type store struct {
	*memstore.Store
	mu     sync.Mutex
	paused map[string]bool
}

func (s *store) Get(ctx context.Context, id string) (*apikey.Key, error) {
	k, err := s.Store.Get(ctx, id)
	if err == nil {
		s.mu.Lock()
		k.Paused = s.paused[id]
		s.mu.Unlock()
	}
	return k, err
}

func (s *store) Update(ctx context.Context, k *apikey.Key) error {
	err := s.Store.Update(ctx, k)
	if err == nil {
		s.mu.Lock()
		s.paused[k.ID] = k.Paused
		s.mu.Unlock()
	}
	return err
}
