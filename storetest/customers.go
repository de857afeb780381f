package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
)

func customerStore(t *testing.T, s apikey.Store) apikey.CustomerStore {
	t.Helper()
	cs, ok := s.(apikey.CustomerStore)
	if !ok {
		t.Skip("store does not implement apikey.CustomerStore")
	}
	return cs
}

// NewCustomer returns a customer record with every field set.
func NewCustomer(id string) *apikey.Customer {
	return &apikey.Customer{
		ID: id, Plan: "pro", Scopes: []string{"read", "write"}, MaxKeys: 5,
		Limits:  []limits.Limit{limits.Rate("per-second", 10, time.Second, 20), limits.Quota("monthly", 100_000, limits.Month)},
		Credits: 1_000_000, Suspended: true, Metadata: map[string]string{"billing": "cus_123", "tier": "gold"},
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")},
		CreatedAt:  base, UpdatedAt: base.Add(time.Minute),
	}
}

// assertSameCustomer compares two records field by field, times with
// Equal after truncation to the microsecond.
func assertSameCustomer(t *testing.T, want, got *apikey.Customer) {
	t.Helper()
	require.NotNil(t, got)
	assert.Equal(t, want.ID, got.ID, "ID")
	assert.Equal(t, want.Plan, got.Plan, "Plan")
	assert.Equal(t, want.Scopes == nil, got.Scopes == nil, "Scopes: nil (no ceiling) and empty (no scope) differ: want %#v, got %#v", want.Scopes, got.Scopes)
	assert.Equal(t, slices.Clone(want.Scopes), slices.Clone(got.Scopes), "Scopes")
	assert.Equal(t, want.MaxKeys, got.MaxKeys, "MaxKeys")
	assert.Equal(t, len(want.Limits), len(got.Limits), "Limits")
	if len(want.Limits) > 0 {
		assert.Equal(t, want.Limits, got.Limits, "Limits")
	}
	assert.Equal(t, want.Credits, got.Credits, "Credits")
	assert.Equal(t, want.Suspended, got.Suspended, "Suspended")
	assert.Equal(t, len(want.Metadata), len(got.Metadata), "Metadata")
	for k, v := range want.Metadata {
		assert.Equal(t, v, got.Metadata[k], "Metadata[%q]", k)
	}
	for name, pair := range map[string][2]time.Time{"CreatedAt": {want.CreatedAt, got.CreatedAt}, "UpdatedAt": {want.UpdatedAt, got.UpdatedAt}} {
		assert.True(t, apikey.UTCMicro(pair[0]).Equal(pair[1]), "%s: want %v, got %v", name, pair[0], pair[1])
		if !pair[1].IsZero() {
			assert.Equal(t, time.UTC, pair[1].Location(), "%s not in UTC", name)
		}
	}
	assert.Equal(t, len(want.AllowedIPs), len(got.AllowedIPs), "AllowedIPs")
	if len(want.AllowedIPs) > 0 {
		assert.Equal(t, want.AllowedIPs, got.AllowedIPs, "AllowedIPs")
	}
	assert.Equal(t, want.Revision, got.Revision, "Revision")
}

func mustPutCustomer(t *testing.T, cs apikey.CustomerStore, c *apikey.Customer) {
	t.Helper()
	require.NoError(t, cs.PutCustomer(ctx(t), c))
}

func mustGetCustomer(t *testing.T, cs apikey.CustomerStore, id string) *apikey.Customer {
	t.Helper()
	c, err := cs.GetCustomer(ctx(t), id)
	require.NoError(t, err)
	require.NotNil(t, c)
	return c
}

// limitsCustomer returns a record whose fields are at the Manager's input
// limits, with characters that need escaping in JSON and SQL.
func limitsCustomer(id string) *apikey.Customer {
	k := LimitsKey(id)
	c := NewCustomer(id)
	c.Plan, c.Scopes, c.Metadata, c.Limits, c.AllowedIPs = k.Plan, k.Scopes, k.Metadata, k.Limits, k.AllowedIPs
	c.MaxKeys, c.Credits = apikey.MaxCustomerKeys, 1<<53
	return c
}

func testCustomerRoundTrip(t *testing.T, s apikey.Store) {
	cs := customerStore(t, s)
	_, err := cs.GetCustomer(ctx(t), "nobody")
	assert.ErrorIs(t, err, apikey.ErrNotFound)

	for _, c := range []*apikey.Customer{
		NewCustomer("acme"),
		{ID: "no ceiling"}, // nil Scopes: unrestricted
		{ID: "no scope", Scopes: []string{}, Suspended: true}, // empty Scopes: none allowed
		{ID: "empty", Scopes: []string{}, Limits: []limits.Limit{}, Metadata: map[string]string{}},
		limitsCustomer(strings.Repeat("o", apikey.MaxOwnerLength)),
		limitsCustomer(strings.Repeat("é", apikey.MaxOwnerLength/2)),
	} {
		c.Revision = 0
		want := c.Clone()
		mustPutCustomer(t, cs, c)
		assert.Equal(t, int64(1), c.Revision, "PutCustomer sets the Revision it stored")
		want.Revision = 1
		assertSameCustomer(t, want, mustGetCustomer(t, cs, c.ID))
	}
	assert.Nil(t, mustGetCustomer(t, cs, "no ceiling").Scopes, "nil Scopes stay nil")
	assert.NotNil(t, mustGetCustomer(t, cs, "no scope").Scopes, "empty Scopes stay empty")

	t.Run("ValuesAreCopies", func(t *testing.T) {
		c := NewCustomer("copies")
		want := c.Clone()
		mustPutCustomer(t, cs, c)
		want.Revision = 1
		c.Scopes[0], c.Metadata["tier"], c.Limits[0].Name = "changed", "changed", "changed"
		got := mustGetCustomer(t, cs, "copies")
		assertSameCustomer(t, want, got)
		got.Scopes[0], got.Metadata["tier"], got.Limits[0].Name = "changed", "changed", "changed"
		assertSameCustomer(t, want, mustGetCustomer(t, cs, "copies"))
		list, err := cs.ListCustomers(ctx(t), "", 0)
		require.NoError(t, err)
		for _, c := range list {
			if c.ID == "copies" {
				c.Scopes[0] = "changed"
			}
		}
		assertSameCustomer(t, want, mustGetCustomer(t, cs, "copies"))
	})
	t.Run("IDsAreCaseSensitive", func(t *testing.T) {
		lower, upper := &apikey.Customer{ID: "acme-co", Plan: "lower"}, &apikey.Customer{ID: "ACME-CO", Plan: "upper"}
		mustPutCustomer(t, cs, lower)
		mustPutCustomer(t, cs, upper)
		assert.Equal(t, "lower", mustGetCustomer(t, cs, "acme-co").Plan)
		assert.Equal(t, "upper", mustGetCustomer(t, cs, "ACME-CO").Plan)
		_, err := cs.GetCustomer(ctx(t), "acme-co ")
		assert.ErrorIs(t, err, apikey.ErrNotFound, "trailing spaces matter")
	})
}

func testCustomerConditional(t *testing.T, s apikey.Store) {
	cs := customerStore(t, s)
	c := NewCustomer("acme")
	mustPutCustomer(t, cs, c)
	again := NewCustomer("acme")
	again.Plan = "again"
	assert.ErrorIs(t, cs.PutCustomer(ctx(t), again), apikey.ErrConflict, "creating an existing record")
	assert.Equal(t, "pro", mustGetCustomer(t, cs, "acme").Plan)

	a, b := mustGetCustomer(t, cs, "acme"), mustGetCustomer(t, cs, "acme")
	a.Plan, a.Scopes, a.Suspended, a.AllowedIPs = "enterprise", nil, false, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	mustPutCustomer(t, cs, a)
	assert.Equal(t, int64(2), a.Revision)
	got := mustGetCustomer(t, cs, "acme")
	assertSameCustomer(t, a, got)

	b.Plan = "stale"
	err := cs.PutCustomer(ctx(t), b)
	require.ErrorIs(t, err, apikey.ErrConflict, "a write at a stale Revision")
	assert.NotErrorIs(t, err, apikey.ErrNotFound)
	assert.Equal(t, int64(1), b.Revision, "a failed write leaves the given Revision")
	assertSameCustomer(t, a, mustGetCustomer(t, cs, "acme"))
	b.Revision = 7 // ahead of the store is stale too
	assert.ErrorIs(t, cs.PutCustomer(ctx(t), b), apikey.ErrConflict)

	unknown := NewCustomer("unknown")
	unknown.Revision = 3
	assert.ErrorIs(t, cs.PutCustomer(ctx(t), unknown), apikey.ErrNotFound, "updating a record that is not stored")
	_, err = cs.GetCustomer(ctx(t), "unknown")
	assert.ErrorIs(t, err, apikey.ErrNotFound)
}

func testCustomerList(t *testing.T, s apikey.Store) {
	cs := customerStore(t, s)
	idsIn := []string{"m", "B", "a", "Z", "b", "0", "mm", "é", "a "}
	for _, id := range idsIn {
		mustPutCustomer(t, cs, &apikey.Customer{ID: id})
	}
	want := slices.Clone(idsIn)
	slices.Sort(want) // byte order
	var got []string
	for after := ""; ; {
		page, err := cs.ListCustomers(ctx(t), after, 4)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), 4)
		for _, c := range page {
			got = append(got, c.ID)
		}
		if len(page) < 4 {
			break
		}
		after = page[len(page)-1].ID
		require.Less(t, len(got), 100, "paging does not end")
	}
	assert.Equal(t, want, got, "ascending byte order, after the given id")
	all, err := cs.ListCustomers(ctx(t), "", 0)
	require.NoError(t, err)
	assert.Len(t, all, len(want), "a limit of 0 lists up to 100")
	none, err := cs.ListCustomers(ctx(t), want[len(want)-1], 10)
	require.NoError(t, err)
	assert.Empty(t, none)
}

func testCustomerCancelled(t *testing.T, s apikey.Store) {
	cs := customerStore(t, s)
	mustPutCustomer(t, cs, NewCustomer("acme"))
	c, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := cs.GetCustomer(c, "acme")
	assert.ErrorIs(t, err, context.Canceled, "GetCustomer")
	stored := mustGetCustomer(t, cs, "acme")
	stored.Plan = "changed"
	assert.ErrorIs(t, cs.PutCustomer(c, stored), context.Canceled, "PutCustomer")
	assert.ErrorIs(t, cs.PutCustomer(c, NewCustomer("new")), context.Canceled, "PutCustomer")
	_, err = cs.ListCustomers(c, "", 10)
	assert.ErrorIs(t, err, context.Canceled, "ListCustomers")
	assert.Equal(t, "pro", mustGetCustomer(t, cs, "acme").Plan, "a cancelled write writes nothing")
	_, err = cs.GetCustomer(ctx(t), "new")
	assert.ErrorIs(t, err, apikey.ErrNotFound, "a cancelled write writes nothing")
}

// raceCustomerPuts races writers of one customer record at one Revision.
// Exactly one succeeds, the others get ErrConflict, and the record holds
// the winner's write.
func raceCustomerPuts(t *testing.T, e raceEnv, n int) string {
	cs := e.store.(apikey.CustomerStore)
	c := context.Background()
	id := fmt.Sprintf("race-%d", n)
	if err := cs.PutCustomer(c, &apikey.Customer{ID: id}); err != nil {
		return fmt.Sprintf("create: %v", err)
	}
	const writers = 6
	errs := make([]error, writers)
	fns := make([]func(), writers)
	for i := range fns {
		fns[i] = func() {
			errs[i] = cs.PutCustomer(c, &apikey.Customer{ID: id, Plan: fmt.Sprintf("writer-%d", i), Revision: 1})
		}
	}
	if n%2 == 1 { // creations of one new record race too
		id += "-new"
		for i := range fns {
			fns[i] = func() {
				errs[i] = cs.PutCustomer(c, &apikey.Customer{ID: id, Plan: fmt.Sprintf("writer-%d", i)})
			}
		}
	}
	together(fns...)
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			return fmt.Sprintf("writers %d and %d both succeeded at one Revision", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, apikey.ErrConflict):
			return fmt.Sprintf("writer %d: want ErrConflict, got %v", i, err)
		}
	}
	if winner < 0 {
		return "no writer succeeded"
	}
	got, err := cs.GetCustomer(c, id)
	if err != nil {
		return fmt.Sprintf("get: %v", err)
	}
	if want := fmt.Sprintf("writer-%d", winner); got.Plan != want || got.Revision != int64(2-n%2) {
		return fmt.Sprintf("stored plan %q at revision %d, the winner wrote %q", got.Plan, got.Revision, want)
	}
	return ""
}

// raceKeyCap races Issues for one customer whose cap is 3 keys. Exactly 3
// succeed, the others get ErrTooManyKeys, no other usable key is left in
// the store, and a revocation makes room for exactly one more.
func raceKeyCap(t *testing.T, e raceEnv, n int) string {
	m := e.m
	c := context.Background()
	owner := fmt.Sprintf("cap-%d", n)
	const limit, issuers = 3, 16
	if _, err := m.SetCustomer(c, owner, func(c *apikey.Customer) error { c.MaxKeys = limit; return nil }); err != nil {
		return fmt.Sprintf("SetCustomer: %v", err)
	}
	keys := make([]*apikey.Key, issuers)
	errs := make([]error, issuers)
	fns := make([]func(), issuers)
	for i := range fns {
		fns[i] = func() { _, keys[i], errs[i] = m.Issue(c, apikey.IssueParams{Owner: owner, Name: "cap"}) }
	}
	together(fns...)
	var issued []string
	for i, err := range errs {
		switch {
		case err == nil:
			issued = append(issued, keys[i].ID)
		case !errors.Is(err, apikey.ErrTooManyKeys):
			return fmt.Sprintf("Issue %d: want ErrTooManyKeys, got %v", i, err)
		}
	}
	if len(issued) != limit {
		return fmt.Sprintf("%d of %d concurrent Issues succeeded under a cap of %d", len(issued), issuers, limit)
	}
	usable, err := m.List(c, owner, apikey.ListOptions{Size: apikey.MaxPageSize, UsableAt: m.Now()})
	if err != nil {
		return fmt.Sprintf("List: %v", err)
	}
	if got := ids(usable); !sameSet(got, issued) {
		return fmt.Sprintf("usable keys %v, the Issues that succeeded returned %v", got, issued)
	}
	if err := m.Revoke(c, issued[0]); err != nil {
		return fmt.Sprintf("Revoke: %v", err)
	}
	if _, _, err := m.Issue(c, apikey.IssueParams{Owner: owner}); err != nil {
		return fmt.Sprintf("an Issue after a revocation under the cap: %v", err)
	}
	if _, _, err := m.Issue(c, apikey.IssueParams{Owner: owner}); !errors.Is(err, apikey.ErrTooManyKeys) {
		return fmt.Sprintf("an Issue over the cap again: want ErrTooManyKeys, got %v", err)
	}
	return ""
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
