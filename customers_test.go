package apikey_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memstore"
)

// Options.Customers answers the customer records: its answers are used
// (plan, ceiling, suspension) and cached, ErrNotFound means the zero
// record, a failure or a panic is ErrUnavailable (503), never a verdict
// on the key, and CustomerChanged makes a change effective at once.
func TestCustomersHook(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := &customerHook{recs: map[string]*apikey.Customer{}, fail: map[string]bool{}}
	h.set("ann", &apikey.Customer{ID: "ann", Plan: "pro", Scopes: []string{"read"}, Revision: 7}, false)
	h.set("sus", &apikey.Customer{ID: "sus", Suspended: true, Revision: 1}, false)
	e := newLimitEnvOver(t, memstore.New(), apikey.Options{Customers: h.get}, apikey.MiddlewareOptions{})
	m := e.m
	var ran bool
	handler := e.handler(&ran)

	_, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "ann", Scopes: []string{"write"}})
	assertInputError(t, err, "scopes")
	ann, _ := issue(t, m, apikey.IssueParams{Owner: "ann", Scopes: []string{"read"}, Plan: "free"})
	rec := hit(handler, bearer(ann))
	require.Equal(t, 200, rec.Code)
	assert.Equal(t, `"daily";q=1000;w=86400, "per-second";q=2;w=1`, rec.Header().Get("RateLimit-Policy"), "the hook's plan")
	calls := h.calls.Load()
	for range 3 {
		e.c.Add(time.Second)
		require.Equal(t, 200, hit(handler, bearer(ann)).Code)
	}
	assert.Equal(t, calls, h.calls.Load(), "answers are cached for CacheTTL")

	bob, _ := issue(t, m, apikey.IssueParams{Owner: "bob", Plan: "free"})
	rec = hit(handler, bearer(bob))
	require.Equal(t, 200, rec.Code, "ErrNotFound: the zero record")
	assert.Equal(t, `"daily";q=3;w=86400`, rec.Header().Get("RateLimit-Policy"), "the zero record keeps the key's plan")
	zero, err := m.Customer(ctx, "bob")
	require.NoError(t, err)
	assert.Equal(t, &apikey.Customer{ID: "bob"}, zero)
	got, err := m.Customer(ctx, "ann")
	require.NoError(t, err)
	assert.Equal(t, "pro", got.Plan)

	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "sus"})
	assert.ErrorIs(t, err, apikey.ErrSuspended)

	// A failing hook: 503, never a verdict on the key.
	broken, _ := issue(t, m, apikey.IssueParams{Owner: "broken"})
	h.set("broken", nil, true)
	_, err = m.Verify(ctx, broken)
	require.ErrorIs(t, err, apikey.ErrUnavailable)
	for _, verdict := range []error{apikey.ErrInvalid, apikey.ErrSuspended, apikey.ErrRevoked, apikey.ErrDisabled} {
		assert.NotErrorIs(t, err, verdict)
	}
	ran = false
	rec = hit(handler, bearer(broken))
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.NotEmpty(t, rec.Header().Get("Retry-After"))
	assert.NotContains(t, rec.Body.String(), "connection refused")
	assert.False(t, ran)
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "broken"})
	assert.ErrorIs(t, err, apikey.ErrUnavailable)
	_, err = m.Customer(ctx, "broken")
	assert.ErrorIs(t, err, apikey.ErrUnavailable)

	e.c.Add(time.Hour) // past every cache entry
	h.panic.Store(true)
	_, err = m.Verify(ctx, ann)
	assert.ErrorIs(t, err, apikey.ErrUnavailable, "a panicking hook")
	assert.Equal(t, http.StatusServiceUnavailable, hit(handler, bearer(ann)).Code)
	h.panic.Store(false)
	require.Equal(t, 200, hit(handler, bearer(ann)).Code)

	// A change is served from the cache until CustomerChanged.
	h.set("ann", &apikey.Customer{ID: "ann", Plan: "pro", Suspended: true, Revision: 8}, false)
	calls = h.calls.Load()
	_, err = m.Verify(ctx, ann)
	require.NoError(t, err, "cached for CacheTTL")
	assert.Equal(t, calls, h.calls.Load())
	m.CustomerChanged(ctx, "ann")
	_, err = m.Verify(ctx, ann)
	assert.ErrorIs(t, err, apikey.ErrSuspended, "CustomerChanged did not invalidate")
	h.set("ann", &apikey.Customer{ID: "ann", Plan: "pro", Revision: 9}, false)
	m.InvalidateAll()
	_, err = m.Verify(ctx, ann)
	assert.NoError(t, err, "InvalidateAll kept a customer record")

	_, err = m.SetCustomer(ctx, "ann", func(*apikey.Customer) error { return nil })
	assert.ErrorIs(t, err, errors.ErrUnsupported, "the application keeps its records")
	_, err = m.Customers(ctx, "", 0)
	assert.ErrorIs(t, err, errors.ErrUnsupported)
}

// SetCustomer validates what it writes, keeps what the Manager owns
// (ID, CreatedAt, Revision), retries lost races so that concurrent
// changes all land, and Customers pages through the records.
func TestSetCustomer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	log := &eventLog{}
	m := newManager(t, newCustomerStore(), apikey.Options{Now: c.Now, Plans: testPlans, Logger: slog.New(log)})

	zero, err := m.Customer(ctx, "ann")
	require.NoError(t, err)
	assert.Equal(t, &apikey.Customer{ID: "ann"}, zero)

	for field, change := range map[string]func(*apikey.Customer){
		"plan":     func(c *apikey.Customer) { c.Plan = "gold" },
		"scopes":   func(c *apikey.Customer) { c.Scopes = []string{""} },
		"max_keys": func(c *apikey.Customer) { c.MaxKeys = -1 },
		"credits":  func(c *apikey.Customer) { c.Credits = -1 },
		"limits":   func(c *apikey.Customer) { c.Limits = []limits.Limit{{Name: "x"}} },
		"metadata": func(c *apikey.Customer) { c.Metadata = map[string]string{"": "v"} },
	} {
		_, err := m.SetCustomer(ctx, "ann", func(c *apikey.Customer) error { change(c); return nil })
		assertInputError(t, err, field)
	}
	_, err = m.SetCustomer(ctx, "ann", func(c *apikey.Customer) error {
		c.Credits, c.Limits = 5, []limits.Limit{limits.Credits(apikey.CreditsLimit, 1, limits.Never)}
		return nil
	})
	assertInputError(t, err, "limits", "a limit named like the credits grant")
	_, err = m.SetCustomer(ctx, "a\x00b", func(*apikey.Customer) error { return nil })
	assertInputError(t, err, "id")
	mine := errors.New("mine")
	_, err = m.SetCustomer(ctx, "ann", func(*apikey.Customer) error { return mine })
	assert.Same(t, mine, err)
	_, err = m.Customer(ctx, "ann")
	require.NoError(t, err)
	assert.Empty(t, types(log.take(), false), "refused changes are not recorded")

	created := c.Now()
	got := setCustomer(t, m, "ann", func(c *apikey.Customer) {
		c.Plan, c.ID, c.Revision, c.CreatedAt = "pro", "mallory", 42, time.Time{}.Add(time.Hour)
	})
	assert.Equal(t, "ann", got.ID)
	assert.Equal(t, int64(1), got.Revision)
	assert.True(t, created.Equal(got.CreatedAt))
	c.Add(time.Minute)
	got = setCustomer(t, m, "ann", func(c *apikey.Customer) { c.MaxKeys = 3 })
	assert.Equal(t, "pro", got.Plan)
	assert.Equal(t, int64(2), got.Revision)
	assert.True(t, created.Equal(got.CreatedAt))
	assert.True(t, c.Now().Equal(got.UpdatedAt))
	assert.Equal(t, []loggedEvent{{Type: "customer", Owner: "ann"}, {Type: "customer", Owner: "ann"}}, log.take())

	// Concurrent changes are all applied, none lost.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := m.SetCustomer(ctx, "ann", func(c *apikey.Customer) error {
				if c.Metadata == nil {
					c.Metadata = map[string]string{}
				}
				c.Metadata[fmt.Sprint(i)] = "x"
				return nil
			})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	got, err = m.Customer(ctx, "ann")
	require.NoError(t, err)
	assert.Len(t, got.Metadata, 8, "a concurrent change was lost")
	assert.Equal(t, int64(10), got.Revision)

	for _, id := range []string{"bob", "cid", "dan"} {
		setCustomer(t, m, id, func(*apikey.Customer) {})
	}
	page, err := m.Customers(ctx, "", 2)
	require.NoError(t, err)
	require.Len(t, page, 2)
	assert.Equal(t, []string{"ann", "bob"}, []string{page[0].ID, page[1].ID})
	page, err = m.Customers(ctx, "bob", 0)
	require.NoError(t, err)
	require.Len(t, page, 2)
	assert.Equal(t, []string{"cid", "dan"}, []string{page[0].ID, page[1].ID})

	plain := newManager(t, newSpy(), apikey.Options{}) // a Store without CustomerStore
	_, err = plain.SetCustomer(ctx, "ann", func(*apikey.Customer) error { return nil })
	assert.ErrorIs(t, err, errors.ErrUnsupported)
	got, err = plain.Customer(ctx, "ann")
	require.NoError(t, err)
	assert.Equal(t, &apikey.Customer{ID: "ann"}, got, "without customer records, the zero record")
}
