package apikey_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// The key cap holds under concurrent Issues: of 16 at once, exactly
// MaxKeys succeed, the others get ErrTooManyKeys, and no refused key is
// left in the store.
func TestMaxKeysUnderConcurrentIssues(t *testing.T) {
	t.Parallel()
	const maxKeys, n = 5, 16
	store := newCustomerStore()
	m := newManager(t, store, apikey.Options{})
	ctx := context.Background()
	for trial := range 20 {
		owner := fmt.Sprintf("c%d", trial)
		setCustomer(t, m, owner, func(c *apikey.Customer) { c.MaxKeys = maxKeys })
		var ok, tooMany atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range n {
			wg.Go(func() {
				<-start
				token, _, err := m.Issue(ctx, apikey.IssueParams{Owner: owner})
				switch {
				case err == nil:
					ok.Add(1)
					_, err := m.Verify(ctx, token)
					assert.NoError(t, err, "an issued token does not work")
				case errors.Is(err, apikey.ErrTooManyKeys):
					tooMany.Add(1)
				default:
					t.Errorf("issue: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		require.Equal(t, int64(maxKeys), ok.Load(), "trial %d", trial)
		require.Equal(t, int64(n-maxKeys), tooMany.Load(), "trial %d", trial)
		keys, err := m.List(ctx, owner, apikey.ListOptions{})
		require.NoError(t, err)
		assert.Len(t, keys, maxKeys, "trial %d: keys over the cap were left in the store", trial)
	}
}

// Rotations never bypass the key cap (a chain counts once, before and
// after), keys revoked or expired free their place, and repeated
// rotations leave one predecessor in grace: the others are expired.
func TestMaxKeysAndRotations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	m := newManager(t, newCustomerStore(), apikey.Options{Now: c.Now})
	setCustomer(t, m, "ann", func(c *apikey.Customer) { c.MaxKeys = 2 })
	a, ka := issue(t, m, apikey.IssueParams{Owner: "ann"})
	_, kx := issue(t, m, apikey.IssueParams{Owner: "ann"})
	_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
	require.ErrorIs(t, err, apikey.ErrTooManyKeys)

	tokens, ids := []string{a}, []string{ka.ID}
	for range 3 { // A -> B -> C -> D
		c.Add(time.Minute)
		token, k := rotate(t, m, ids[len(ids)-1], time.Hour)
		tokens, ids = append(tokens, token), append(ids, k.ID)
		_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
		require.ErrorIs(t, err, apikey.ErrTooManyKeys, "a rotation freed a place")
	}
	for i, want := range []error{apikey.ErrExpired, apikey.ErrExpired, nil, nil} {
		_, err := m.Verify(ctx, tokens[i])
		if want == nil {
			assert.NoError(t, err, "key %c", 'A'+i)
		} else {
			assert.ErrorIs(t, err, want, "key %c: more than one predecessor in grace", 'A'+i)
		}
	}
	c.Add(time.Hour) // C's grace ends: still one usable chain
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
	require.ErrorIs(t, err, apikey.ErrTooManyKeys)

	require.NoError(t, m.Revoke(ctx, kx.ID))
	issue(t, m, apikey.IssueParams{Owner: "ann"}) // a revoked key frees its place
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
	require.ErrorIs(t, err, apikey.ErrTooManyKeys)

	// Under concurrency: rotations of a full customer's keys, with and
	// without the store's Rotator, never let an Issue through.
	for name, store := range map[string]func() apikey.Store{
		"Rotator": newCustomerStore,
		"GetUpdate": func() apikey.Store {
			s := newCustomerStore()
			return &customersOnly{Store: struct{ apikey.Store }{s}, CustomerStore: s.(apikey.CustomerStore)}
		},
	} {
		t.Run(name, func(t *testing.T) {
			m := newManager(t, store(), apikey.Options{CacheTTL: -1})
			setCustomer(t, m, "bob", func(c *apikey.Customer) { c.MaxKeys = 3 })
			var ids [3]atomic.Pointer[string]
			for i := range ids {
				_, k := issue(t, m, apikey.IssueParams{Owner: "bob"})
				ids[i].Store(&k.ID)
			}
			var wg sync.WaitGroup
			for g := range 3 {
				wg.Go(func() {
					for range 10 {
						r, err := m.Rotate(ctx, *ids[g].Load(), time.Hour)
						if assert.NoError(t, err) {
							ids[g].Store(&r.Key.ID)
						}
					}
				})
			}
			for range 4 {
				wg.Go(func() {
					for range 10 {
						_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "bob"})
						assert.ErrorIs(t, err, apikey.ErrTooManyKeys, "an Issue beyond the cap during rotations")
					}
				})
			}
			wg.Wait()
		})
	}
}

// customersOnly is a store with CustomerStore and none of the optional
// key capabilities (Revoker, Rotator).
type customersOnly struct {
	apikey.Store
	apikey.CustomerStore
}

// hookedCustomers is a memstore whose GetCustomer runs before, when set,
// ahead of answering: a change that lands between two reads.
type hookedCustomers struct {
	*memstore.Store
	before atomic.Pointer[func()]
	create atomic.Pointer[func()] // runs once before the next Create
}

func (s *hookedCustomers) Create(ctx context.Context, k *apikey.Key) error {
	if f := s.create.Swap(nil); f != nil {
		(*f)()
	}
	return s.Store.Create(ctx, k)
}

func (s *hookedCustomers) GetCustomer(ctx context.Context, id string) (*apikey.Customer, error) {
	if f := s.before.Swap(nil); f != nil {
		(*f)()
	}
	return s.Store.GetCustomer(ctx, id)
}

// An Issue never counts against a key cap it read before a SetCustomer
// that returned: once the operator lowered the cap (or suspended the
// customer) while an Issue was under way, that Issue is decided by the
// new record, and the customer never holds more keys than it allows.
func TestMaxKeysLoweredDuringIssue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, change := range map[string]func(*apikey.Customer){
		"cap":     func(c *apikey.Customer) { c.MaxKeys = 1 },
		"suspend": func(c *apikey.Customer) { c.Suspended = true },
	} {
		t.Run(name, func(t *testing.T) {
			store := &hookedCustomers{Store: memstore.New()}
			m := newManager(t, store, apikey.Options{})
			setCustomer(t, m, "ann", func(c *apikey.Customer) { c.MaxKeys = 5 })
			issue(t, m, apikey.IssueParams{Owner: "ann"})
			issue(t, m, apikey.IssueParams{Owner: "ann"})
			// The Issue reads the record (cap 5), then the operator's
			// change lands before the Issue's next read of it.
			var reads atomic.Int64
			var hook func()
			hook = func() {
				if reads.Add(1) == 2 {
					setCustomer(t, m, "ann", change)
					return
				}
				store.before.Store(&hook)
			}
			store.before.Store(&hook)
			_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann"})
			require.Error(t, err, "an Issue passed on a record changed before it decided")
			keys, err := m.List(ctx, "ann", apikey.ListOptions{})
			require.NoError(t, err)
			assert.Len(t, keys, 2)
		})
	}
}

// A suspension, a narrower ceiling or a key cap set by a SetCustomer that
// returned before an Issue stored its key decides that Issue, also for a
// customer without a cap: the customer is not handed a key created after
// the operator's change.
func TestIssueDecidedByAChangeThatLandsBeforeTheKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, tc := range map[string]struct {
		change func(*apikey.Customer)
		want   error
	}{
		"suspend": {func(c *apikey.Customer) { c.Suspended = true }, apikey.ErrSuspended},
		"ceiling": {func(c *apikey.Customer) { c.Scopes = []string{"read"} }, apikey.ErrInvalidInput},
		"cap":     {func(c *apikey.Customer) { c.MaxKeys = 1 }, apikey.ErrTooManyKeys},
	} {
		t.Run(name, func(t *testing.T) {
			store := &hookedCustomers{Store: memstore.New()}
			m := newManager(t, store, apikey.Options{})
			setCustomer(t, m, "ann", func(c *apikey.Customer) { c.Metadata = map[string]string{"tier": "a"} })
			issue(t, m, apikey.IssueParams{Owner: "ann"})
			hook := func() { setCustomer(t, m, "ann", tc.change) }
			store.create.Store(&hook)
			_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann", Scopes: []string{"write"}})
			require.ErrorIs(t, err, tc.want)
			keys, err := m.List(ctx, "ann", apikey.ListOptions{})
			require.NoError(t, err)
			assert.Len(t, keys, 1, "a key issued after the change was left in the store")
		})
	}
}

// A key without owner is its own customer, named by its lineage: nobody
// can share it by choosing that id as an Owner.
func TestOwnerCannotNameAKeysOwnCustomer(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	_, k := issue(t, m, apikey.IssueParams{})
	_, _, err := m.Issue(context.Background(), apikey.IssueParams{Owner: k.ID})
	var ie *apikey.InputError
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, "owner", ie.Field)
	_, _, err = m.Issue(context.Background(), apikey.IssueParams{Owner: k.ID[:apikey.IDLength-1]})
	assert.NoError(t, err, "other owners are fine")
}

func TestIssueAndVerify(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Prefix: "sk_live", Now: c.Now})
	token, k, err := m.Issue(context.Background(), apikey.IssueParams{
		Name: "ci", Owner: "alice", Scopes: []string{"read", "write"}, Plan: "pro",
		Metadata: map[string]string{"env": "prod"}, TTL: time.Hour,
	})
	require.NoError(t, err)
	tok, err := m.Format().Parse(token)
	require.NoError(t, err)
	assert.Equal(t, tok.ID, k.ID)
	assert.Equal(t, "sk_live_..."+token[len(token)-4:], k.Hint)
	assert.Equal(t, "hmac-sha256:1", k.HashVersion)
	assert.Equal(t, c.Now().Add(time.Hour), k.ExpiresAt)

	got, err := m.Verify(context.Background(), token)
	require.NoError(t, err)
	assert.Equal(t, k.ID, got.ID)
	assert.Equal(t, "alice", got.Owner)
	assert.Equal(t, []string{"read", "write"}, got.Scopes)
	assert.Equal(t, "pro", got.Plan)
	assert.Equal(t, "prod", got.Metadata["env"])
}

func TestIssueValidates(t *testing.T) {
	t.Parallel()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now})
	for name, tc := range map[string]struct {
		field string
		p     apikey.IssueParams
	}{
		"past expiry":      {"expires_at", apikey.IssueParams{ExpiresAt: c.Now().Add(-time.Second)}},
		"expiry now":       {"expires_at", apikey.IssueParams{ExpiresAt: c.Now()}},
		"negative TTL":     {"ttl", apikey.IssueParams{TTL: -time.Second}},
		"empty scope":      {"scopes", apikey.IssueParams{Scopes: []string{""}}},
		"scope with space": {"scopes", apikey.IssueParams{Scopes: []string{"a b"}}},
		"scope with quote": {"scopes", apikey.IssueParams{Scopes: []string{`a"`}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := m.Issue(context.Background(), tc.p)
			assertInputError(t, err, tc.field)
		})
	}
}
