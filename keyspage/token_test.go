package keyspage_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyspage"
	"github.com/gokeys/apikey/selfservice"
)

// listFails is a Store whose List fails while down is set; every other
// call works.
type listFails struct {
	apikey.Store
	down atomic.Bool
}

func (s *listFails) List(ctx context.Context, owner string, opts apikey.ListOptions) ([]*apikey.Key, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.Store.List(ctx, owner, opts)
}

var tokenRE = regexp.MustCompile(`id="token"[^>]*>([^<]+)</textarea>`)

// TestTokenSurvivesAFailingList: a key that was created, or rotated, is
// shown with its token even when the list of keys that the page shows
// beside it cannot be read; a 503 there would lose a token that exists
// (or the only token of a rotation's successor).
func TestTokenSurvivesAFailingList(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	s := &listFails{Store: f.store}
	m, err := apikey.New(s, apikey.Options{Prefix: "sk_live", Now: f.clock.Now, LastUsedInterval: -1})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	policy, err := selfservice.New(m, selfservice.Options{Scopes: []string{"read"}})
	require.NoError(t, err)
	page, err := keyspage.New(m, keyspage.Options{
		Owner:  func(r *http.Request) (string, error) { return r.Header.Get("X-Test-User"), nil },
		Policy: policy,
	})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/keys/", page)
	f.h = mux

	s.down.Store(true)
	res := f.do(t, http.MethodPost, "/keys/create", "alice", createForm("CI"), nil)
	assert.Equal(t, http.StatusCreated, res.status, res.body)
	assert.Equal(t, "no-store", res.header.Get("Cache-Control"))
	got := tokenRE.FindStringSubmatch(res.body)
	require.NotNil(t, got, res.body)
	k, err := m.Verify(context.Background(), got[1])
	require.NoError(t, err)
	assert.Contains(t, res.body, `role="alert"`, "the missing list is explained")
	assert.NotContains(t, res.body, "db.internal")

	res = f.do(t, http.MethodPost, "/keys/rotate", "alice", url.Values{"id": {k.ID}, "grace": {"86400"}}, nil)
	assert.Equal(t, http.StatusOK, res.status, res.body)
	got = tokenRE.FindStringSubmatch(res.body)
	require.NotNil(t, got, res.body)
	succ, err := m.Verify(context.Background(), got[1])
	require.NoError(t, err)
	assert.Equal(t, k.ID, succ.RotatedFrom)

	s.down.Store(false)
	again := f.do(t, http.MethodGet, "/keys/", "alice", nil, nil)
	require.Equal(t, http.StatusOK, again.status)
	assert.NotContains(t, again.body, got[1])
}

// TestNameBeyondTheManagersLimit: a name of at most 100 characters but
// more than apikey.MaxNameLength bytes is refused with the page's own
// explanation, on create and on rename.
func TestNameBeyondTheManagersLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	name := strings.Repeat("😀", 100) // 100 characters, 400 bytes
	require.Greater(t, len(name), apikey.MaxNameLength)
	res := f.do(t, http.MethodPost, "/keys/create", "alice", createForm(name), nil)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.body, "The name is too long")
	assert.Empty(t, f.keys(t, "alice"))

	_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Prod"})
	res = f.do(t, http.MethodPost, "/keys/rename", "alice", url.Values{"id": {k.ID}, "name": {name}}, nil)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.body, "The name is too long")
	assert.Equal(t, "Prod", f.get(t, k.ID).Name)
}

// TestConcurrentRotationsShowOneToken: rotate forms of one key posted
// together (a double click, two tabs) show exactly one new token; the
// others are told the key is already rotated, and only that token works.
func TestConcurrentRotationsShowOneToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	for range 20 {
		_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Prod"})
		const posts = 5
		res := make([]response, posts)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range posts {
			wg.Go(func() {
				<-start
				res[i] = f.do(t, http.MethodPost, "/keys/rotate", "alice", url.Values{"id": {k.ID}, "grace": {"3600"}}, nil)
			})
		}
		close(start)
		wg.Wait()
		var tokens []string
		for _, r := range res {
			if got := tokenRE.FindStringSubmatch(r.body); got != nil {
				assert.Equal(t, http.StatusOK, r.status)
				tokens = append(tokens, got[1])
				continue
			}
			assert.Equal(t, http.StatusConflict, r.status, r.body)
		}
		require.Len(t, tokens, 1)
		succ, err := f.m.Verify(context.Background(), tokens[0])
		require.NoError(t, err)
		assert.Equal(t, succ.ID, f.get(t, k.ID).RotatedTo)
	}
}
