package selfservice_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
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

func newPolicy(t *testing.T, opts selfservice.Options) (*selfservice.Policy, *apikey.Manager, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	m, err := apikey.New(memstore.New(), apikey.Options{Now: c.Now, CacheTTL: -1})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	p, err := selfservice.New(m, opts)
	require.NoError(t, err)
	return p, m, c
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	m, err := apikey.New(memstore.New(), apikey.Options{})
	require.NoError(t, err)
	for name, c := range map[string]struct {
		m    *apikey.Manager
		opts selfservice.Options
	}{
		"nil manager":                 {nil, selfservice.Options{}},
		"bad scope":                   {m, selfservice.Options{Scopes: []string{"a b"}}},
		"empty scope":                 {m, selfservice.Options{Scopes: []string{""}}},
		"scope twice":                 {m, selfservice.Options{Scopes: []string{"a", "a"}}},
		"negative lifetime":           {m, selfservice.Options{MaxLifetime: -1}},
		"negative grace":              {m, selfservice.Options{MaxGrace: -1}},
		"default beyond the max":      {m, selfservice.Options{MaxLifetime: time.Hour, DefaultLifetime: 2 * time.Hour}},
		"default beyond the 366 days": {m, selfservice.Options{DefaultLifetime: 367 * 24 * time.Hour}},
		"negative default lifetime":   {m, selfservice.Options{DefaultLifetime: -1}},
	} {
		_, err := selfservice.New(c.m, c.opts)
		assert.ErrorIs(t, err, apikey.ErrInvalidOptions, name)
	}
	p, err := selfservice.New(m, selfservice.Options{})
	require.NoError(t, err)
	assert.Equal(t, 366*24*time.Hour, p.MaxLifetime())
	assert.Equal(t, p.MaxLifetime(), p.DefaultLifetime())
	assert.Equal(t, 30*24*time.Hour, p.MaxGrace())
}

// Every field but name, scopes and expires_at is refused with a
// *FieldError that matches ErrForbidden and names it.
func TestCheckFields(t *testing.T) {
	t.Parallel()
	assert.NoError(t, selfservice.CheckFields("name", "scopes", "expires_at"))
	for _, f := range []string{"plan", "credits", "limits", "metadata", "disabled", "paused", "owner", "revoked_at", "", "Name"} {
		err := selfservice.CheckFields("name", f)
		var fe *selfservice.FieldError
		require.ErrorAs(t, err, &fe, f)
		assert.Equal(t, f, fe.Field)
		assert.ErrorIs(t, err, selfservice.ErrForbidden)
	}
}

func TestCursor(t *testing.T) {
	t.Parallel()
	for _, c := range []apikey.Cursor{
		{},
		{CreatedAt: time.Date(2026, 11, 27, 12, 0, 0, 123456000, time.UTC), ID: "AbC123dEf456GhI7"},
		{CreatedAt: time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC), ID: "a_b-c"},
	} {
		s := selfservice.FormatCursor(c)
		got, err := selfservice.ParseCursor(s)
		require.NoError(t, err)
		assert.Equal(t, c, got)
	}
	for _, s := range []string{"!", "AAAA", "AAAAAAAAAAAA", selfservice.FormatCursor(apikey.Cursor{CreatedAt: time.Now(), ID: "a b"}), string(make([]byte, 300))} {
		_, err := selfservice.ParseCursor(s)
		var ie *apikey.InputError
		require.ErrorAs(t, err, &ie, s)
		assert.Equal(t, "after", ie.Field)
	}
}

// A key always expires within MaxLifetime of its creation.
func TestLifetime(t *testing.T) {
	t.Parallel()
	p, _, c := newPolicy(t, selfservice.Options{MaxLifetime: 30 * 24 * time.Hour, DefaultLifetime: 7 * 24 * time.Hour})
	ctx := context.Background()
	now := c.Now()
	_, k, err := p.Create(ctx, "alice", selfservice.Create{})
	require.NoError(t, err)
	assert.Equal(t, now.Add(7*24*time.Hour), k.ExpiresAt, "DefaultLifetime")
	for name, create := range map[string]selfservice.Create{
		"TTL beyond":       {TTL: 31 * 24 * time.Hour},
		"ExpiresAt beyond": {ExpiresAt: now.Add(30*24*time.Hour + time.Second)},
		"in the past":      {ExpiresAt: now.Add(-time.Second)},
		"negative TTL":     {TTL: -time.Second},
	} {
		_, _, err := p.Create(ctx, "alice", create)
		var ie *apikey.InputError
		require.ErrorAs(t, err, &ie, name)
		assert.Equal(t, "expires_at", ie.Field, name)
	}
	c.Add(5 * 24 * time.Hour)
	change := func(at time.Time) error {
		_, err := p.Update(ctx, "alice", k.ID, selfservice.Change{Fields: []string{"expires_at"}, ExpiresAt: at})
		return err
	}
	assert.NoError(t, change(now.Add(30*24*time.Hour)), "up to MaxLifetime from its creation")
	assert.ErrorIs(t, change(now.Add(30*24*time.Hour+time.Second)), apikey.ErrInvalidInput)
	assert.ErrorIs(t, change(time.Time{}), apikey.ErrInvalidInput, "never expiring")
	c.Add(26 * 24 * time.Hour)
	assert.ErrorIs(t, change(c.Now().Add(time.Hour)), apikey.ErrExpired, "no revival")
}

// The owner's resume never lifts the operator's Disable, however the two
// race.
func TestResumeNeverLiftsDisable(t *testing.T) {
	t.Parallel()
	p, m, _ := newPolicy(t, selfservice.Options{})
	ctx := context.Background()
	_, k, err := p.Create(ctx, "alice", selfservice.Create{})
	require.NoError(t, err)
	for range 100 {
		_, err := p.Pause(ctx, "alice", k.ID)
		require.NoError(t, err)
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := m.Disable(ctx, k.ID); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			_, err := p.Resume(ctx, "alice", k.ID)
			var fe *selfservice.FieldError
			if err != nil && !(errors.As(err, &fe) && fe.Field == "disabled") && !errors.Is(err, apikey.ErrConflict) {
				t.Error(err)
			}
		})
		wg.Wait()
		got, err := m.Get(ctx, k.ID)
		require.NoError(t, err)
		require.True(t, got.Disabled, "the operator's Disable stands")
		_, err = p.Resume(ctx, "alice", k.ID)
		var fe *selfservice.FieldError
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, "disabled", fe.Field)
		_, err = m.Enable(ctx, k.ID)
		require.NoError(t, err)
	}
}

// A suspended customer may list, read and revoke, nothing else; the
// refusal matches ErrForbidden and apikey.ErrSuspended.
func TestSuspended(t *testing.T) {
	t.Parallel()
	p, m, _ := newPolicy(t, selfservice.Options{})
	ctx := context.Background()
	_, a, err := p.Create(ctx, "alice", selfservice.Create{})
	require.NoError(t, err)
	_, b, err := p.Create(ctx, "alice", selfservice.Create{})
	require.NoError(t, err)
	_, err = m.SetCustomer(ctx, "alice", func(c *apikey.Customer) error { c.Suspended = true; return nil })
	require.NoError(t, err)
	al, err := p.Allowance(ctx, "alice")
	require.NoError(t, err)
	assert.True(t, al.Suspended)
	for name, op := range map[string]func() error{
		"create": func() error { _, _, err := p.Create(ctx, "alice", selfservice.Create{}); return err },
		"update": func() error {
			_, err := p.Update(ctx, "alice", a.ID, selfservice.Change{Fields: []string{"name"}, Name: "x"})
			return err
		},
		"rotate": func() error { _, err := p.Rotate(ctx, "alice", a.ID, 0); return err },
		"pause":  func() error { _, err := p.Pause(ctx, "alice", a.ID); return err },
		"resume": func() error { _, err := p.Resume(ctx, "alice", a.ID); return err },
	} {
		err := op()
		assert.ErrorIs(t, err, selfservice.ErrForbidden, name)
		assert.ErrorIs(t, err, apikey.ErrSuspended, name)
	}
	keys, err := p.List(ctx, "alice", apikey.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, keys, 2)
	_, err = p.Get(ctx, "alice", a.ID)
	require.NoError(t, err)
	require.NoError(t, p.Revoke(ctx, "alice", a.ID))
	_, err = p.RevokeChain(ctx, "alice", b.ID)
	require.NoError(t, err)
}

// Another owner's key is not found, whatever the operation.
func TestAnotherOwnersKey(t *testing.T) {
	t.Parallel()
	p, m, _ := newPolicy(t, selfservice.Options{})
	ctx := context.Background()
	_, k, err := p.Create(ctx, "bob", selfservice.Create{})
	require.NoError(t, err)
	for name, op := range map[string]func(owner string) error{
		"get":    func(o string) error { _, err := p.Get(ctx, o, k.ID); return err },
		"update": func(o string) error { _, err := p.Update(ctx, o, k.ID, selfservice.Change{}); return err },
		"rotate": func(o string) error { _, err := p.Rotate(ctx, o, k.ID, 0); return err },
		"pause":  func(o string) error { _, err := p.Pause(ctx, o, k.ID); return err },
		"resume": func(o string) error { _, err := p.Resume(ctx, o, k.ID); return err },
		"revoke": func(o string) error { return p.Revoke(ctx, o, k.ID) },
		"chain":  func(o string) error { _, err := p.RevokeChain(ctx, o, k.ID); return err },
		"usage": func(o string) error {
			_, err := p.Usage(ctx, o, usage.Query{Customer: "bob", KeyID: k.ID, From: k.CreatedAt, To: k.CreatedAt.Add(time.Hour), Step: usage.Hour})
			return err
		},
	} {
		for _, owner := range []string{"alice", ""} {
			assert.ErrorIs(t, op(owner), apikey.ErrNotFound, "%s as %q", name, owner)
		}
	}
	got, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	assert.Equal(t, k.Revision, got.Revision, "nothing changed")
}

// An owner reads the usage of all his keys, or of one of them, even while
// suspended; q.Customer cannot reach another customer's usage.
func TestUsage(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	s := memstore.New()
	m, err := apikey.New(s, apikey.Options{Now: func() time.Time { return now }, CacheTTL: -1})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	p, err := selfservice.New(m, selfservice.Options{})
	require.NoError(t, err)
	ctx := context.Background()
	_, a, err := p.Create(ctx, "alice", selfservice.Create{})
	require.NoError(t, err)
	_, b, err := p.Create(ctx, "alice", selfservice.Create{})
	require.NoError(t, err)
	_, c, err := p.Create(ctx, "bob", selfservice.Create{})
	require.NoError(t, err)
	hour := now.Truncate(time.Hour)
	require.NoError(t, s.AddUsage(ctx, []usage.Record{
		{Customer: "alice", KeyID: a.ID, Start: hour, Allowed: 3, Limited: 1, Cost: 5},
		{Customer: "alice", KeyID: b.ID, Start: hour, Allowed: 2, Refused: 4, Cost: 2},
		{Customer: "bob", KeyID: c.ID, Start: hour, Allowed: 100},
	}))
	_, err = m.SetCustomer(ctx, "alice", func(c *apikey.Customer) error { c.Suspended = true; return nil })
	require.NoError(t, err)
	q := usage.Query{Customer: "bob", From: hour, To: hour.Add(2 * time.Hour), Step: usage.Hour}
	all, err := p.Usage(ctx, "alice", q)
	require.NoError(t, err)
	require.Len(t, all, 2)
	assert.Equal(t, hour, all[0].Start)
	assert.Equal(t, [4]int64{5, 1, 4, 7}, [4]int64{all[0].Allowed, all[0].Limited, all[0].Refused, all[0].Cost})
	assert.Equal(t, [4]int64{}, [4]int64{all[1].Allowed, all[1].Limited, all[1].Refused, all[1].Cost})
	q.KeyID = b.ID
	one, err := p.Usage(ctx, "alice", q)
	require.NoError(t, err)
	assert.Equal(t, [4]int64{2, 0, 4, 2}, [4]int64{one[0].Allowed, one[0].Limited, one[0].Refused, one[0].Cost})
	var ie *apikey.InputError
	_, err = p.Usage(ctx, "", usage.Query{From: hour, To: hour.Add(time.Hour), Step: usage.Hour})
	require.ErrorAs(t, err, &ie)
}
