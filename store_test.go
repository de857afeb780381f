package apikey_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// Manager.List pages newest first with a Cursor: every key exactly once,
// also while keys are created during the paging (they sort before the
// cursor), and UsableAt leaves dead keys out.
func TestListNewestFirstByCursor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: c.Now})
	var want []string
	for i := range 7 {
		if i%3 != 0 {
			c.Add(time.Second) // some keys share a CreatedAt: the ID decides
		}
		_, k := issue(t, m, apikey.IssueParams{Owner: "ann", TTL: time.Duration(i+1) * time.Hour})
		want = append([]string{k.ID}, want...)
	}
	var got []string
	for opts := (apikey.ListOptions{Size: 2}); ; {
		page, err := m.List(ctx, "ann", opts)
		require.NoError(t, err)
		for _, k := range page {
			got = append(got, k.ID)
		}
		if len(page) < 2 {
			break
		}
		opts.After = page[len(page)-1].Cursor()
		c.Add(time.Second)
		issue(t, m, apikey.IssueParams{Owner: "ann"}) // newer than every cursor
	}
	require.Len(t, got, len(want))
	for i := 1; i < len(got); i++ {
		a, b := find(t, m, got[i-1]), find(t, m, got[i])
		ok := a.CreatedAt.After(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID > b.ID
		assert.True(t, ok, "not newest first at %d", i)
	}
	assert.ElementsMatch(t, want, got)

	c.Add(2 * time.Hour) // the two oldest keys expired
	usable, err := m.List(ctx, "ann", apikey.ListOptions{UsableAt: c.Now(), Size: apikey.MaxPageSize})
	require.NoError(t, err)
	for _, k := range usable {
		assert.True(t, k.Usable(c.Now()))
	}
	all, err := m.List(ctx, "ann", apikey.ListOptions{Size: apikey.MaxPageSize})
	require.NoError(t, err)
	assert.Len(t, usable, len(all)-2)
}

func find(t *testing.T, m *apikey.Manager, id string) *apikey.Key {
	t.Helper()
	k, err := m.Get(context.Background(), id)
	require.NoError(t, err)
	return k
}

// TestNoKeyAndNoErrorFromTheStoreIsAFailure: no management call returns
// (nil, nil) or panics on a store that answers neither; each reports
// ErrUnavailable.
func TestNoKeyAndNoErrorFromTheStoreIsAFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A store whose Get answers neither a key nor an error, breaking the
	// Store contract.
	s := spyGet(func(context.Context, string, func(context.Context, string) (*apikey.Key, error)) (*apikey.Key, error) {
		return nil, nil
	})
	m := newManager(t, s, apikey.Options{})
	_, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
	for name, call := range map[string]func() (*apikey.Key, error){
		"Get": func() (*apikey.Key, error) { return m.Get(ctx, k.ID) },
		"Update": func() (*apikey.Key, error) {
			return m.Update(ctx, k.ID, func(k *apikey.Key) error { k.Name = "x"; return nil })
		},
		"Disable": func() (*apikey.Key, error) { return m.Disable(ctx, k.ID) },
		"Enable":  func() (*apikey.Key, error) { return m.Enable(ctx, k.ID) },
		"Rotate": func() (*apikey.Key, error) {
			r, err := m.Rotate(ctx, k.ID, 0)
			if r != nil {
				return r.Key, err
			}
			return nil, err
		},
		"Revoke": func() (*apikey.Key, error) { return nil, m.Revoke(ctx, k.ID) },
	} {
		got, err := call()
		assert.Nil(t, got, name)
		assert.ErrorIs(t, err, apikey.ErrUnavailable, name)
	}
}
