package keyspage_test

import (
	"context"
	"errors"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyspage"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/selfservice"
	"github.com/gokeys/apikey/usage"
)

// spy counts the pages of keys and the usage series read from the
// store.
type spy struct {
	*memstore.Store
	lists, usages atomic.Int64
}

func (s *spy) Usage(ctx context.Context, q usage.Query) ([]usage.Record, error) {
	s.usages.Add(1)
	return s.Store.Usage(ctx, q)
}

func (s *spy) List(ctx context.Context, owner string, opts apikey.ListOptions) ([]*apikey.Key, error) {
	s.lists.Add(1)
	return s.Store.List(ctx, owner, opts)
}

// crowd is a page over a store where alice has n keys, created a second
// apart, the newest last; every tenth is revoked. Each key made requests
// in the last hour, and the newest 100 every day of the last 30.
type crowd struct {
	store *spy
	m     *apikey.Manager
	h     http.Handler
	ids   []string // newest first
}

func newCrowd(tb testing.TB, n int) *crowd {
	tb.Helper()
	c := &crowd{store: &spy{Store: memstore.New()}}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start.Add(time.Duration(n) * time.Second)
	var err error
	c.m, err = apikey.New(c.store, apikey.Options{Prefix: "sk_live", Now: func() time.Time { return now }, LastUsedInterval: -1})
	require.NoError(tb, err)
	tb.Cleanup(func() { c.m.Close(context.Background()) })
	ctx := context.Background()
	for i := range n {
		k := &apikey.Key{
			ID: apikey.NewID(), Prefix: "sk_live", Hint: "sk_live_...abcd", Hash: make([]byte, 32), HashVersion: "sha256",
			Name: "key", Owner: "alice", Scopes: []string{"read"}, CreatedAt: start.Add(time.Duration(i) * time.Second),
			ExpiresAt: now.Add(90 * 24 * time.Hour),
		}
		if i%10 == 0 {
			k.RevokedAt = k.CreatedAt
		}
		require.NoError(tb, c.store.Create(ctx, k))
		c.ids = append(c.ids, k.ID)
	}
	for i, j := 0, len(c.ids)-1; i < j; i, j = i+1, j-1 {
		c.ids[i], c.ids[j] = c.ids[j], c.ids[i]
	}
	var records []usage.Record
	for i, id := range c.ids {
		records = append(records, usage.Record{Customer: "alice", KeyID: id, Start: now.Truncate(time.Hour), Allowed: 3, Limited: 1, Cost: 3})
		for d := 1; i < 100 && d < 30; d++ {
			records = append(records, usage.Record{Customer: "alice", KeyID: id, Start: now.Truncate(time.Hour).AddDate(0, 0, -d), Allowed: int64(i + d), Cost: int64(i + d)})
		}
	}
	require.NoError(tb, c.store.AddUsage(ctx, records))
	policy, err := selfservice.New(c.m, selfservice.Options{Scopes: []string{"read", "write"}})
	require.NoError(tb, err)
	page, err := keyspage.New(c.m, keyspage.Options{Policy: policy, Owner: func(r *http.Request) (string, error) {
		if u := r.Header.Get("X-Test-User"); u != "" {
			return u, nil
		}
		return "", errors.New("not signed in")
	}})
	require.NoError(tb, err)
	mux := http.NewServeMux()
	mux.Handle("/keys/", page)
	c.h = mux
	return c
}

// do requests path as alice, and returns the recorder and the number of
// pages of keys read from the store meanwhile.
func (c *crowd) do(method, path string, form url.Values) (*httptest.ResponseRecorder, int64) {
	var r *http.Request
	if form != nil {
		r = httptest.NewRequest(method, "http://app.example"+path, strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Sec-Fetch-Site", "same-origin")
	} else {
		r = httptest.NewRequest(method, "http://app.example"+path, nil)
	}
	r.Header.Set("X-Test-User", "alice")
	w := httptest.NewRecorder()
	before := c.store.lists.Load()
	c.h.ServeHTTP(w, r)
	return w, c.store.lists.Load() - before
}

var (
	rowIDRE   = regexp.MustCompile(`<tr id="key-([^"]+)"`)
	olderRE   = regexp.MustCompile(`<a href="([^"]+)" rel="next">Older keys</a>`)
	newestRE  = regexp.MustCompile(`<a href="([^"]+)">Newest keys</a>`)
	maxPageHT = 1 << 20
)

// The page shows 50 keys at a time, newest first, with a link to older
// ones; revoked keys only when asked for.
func TestPagesOfKeys(t *testing.T) {
	t.Parallel()
	c := newCrowd(t, 130)
	var usable []string
	all := c.ids
	for i, id := range c.ids {
		if (len(c.ids)-1-i)%10 != 0 {
			usable = append(usable, id)
		}
	}
	for _, tt := range []struct {
		name, path string
		want       []string
	}{
		{"usable keys", "/keys/", usable},
		{"every key", "/keys/?all=1", all},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			path, pages := tt.path, 0
			for {
				w, lists := c.do(http.MethodGet, path, nil)
				require.Equal(t, http.StatusOK, w.Code, w.Body.String())
				assert.EqualValues(t, 1, lists, "one page read from the store")
				body := w.Body.String()
				ids := rowIDRE.FindAllStringSubmatch(body, -1)
				assert.LessOrEqual(t, len(ids), 50)
				for _, m := range ids {
					got = append(got, m[1])
				}
				if pages > 0 {
					assert.Regexp(t, newestRE, body)
				} else {
					assert.NotRegexp(t, newestRE, body)
				}
				pages++
				older := olderRE.FindStringSubmatch(body)
				if older == nil {
					break
				}
				next, err := url.Parse(html.UnescapeString(older[1]))
				require.NoError(t, err)
				path = "/keys/" + strings.TrimPrefix(next.String(), "./")
			}
			assert.Equal(t, tt.want, got, "newest first, each key once")
			assert.Equal(t, (len(tt.want)+49)/50, pages)
		})
	}
	w, _ := c.do(http.MethodGet, "/keys/?after=garbage", nil)
	assert.Equal(t, http.StatusBadRequest, w.Code)
	assert.Contains(t, w.Body.String(), "here are your newest keys")
}

// With 20,000 keys, each request reads one page from the store, one
// usage series for the customer and one per key shown, and answers at
// most 1 MB of HTML.
func TestTwentyThousandKeys(t *testing.T) {
	t.Parallel()
	c := newCrowd(t, 20_000)
	usages := c.store.usages.Load()
	w, lists := c.do(http.MethodGet, "/keys/", nil)
	require.Equal(t, http.StatusOK, w.Code)
	assert.EqualValues(t, 1, lists)
	assert.LessOrEqual(t, w.Body.Len(), maxPageHT)
	assert.Len(t, rowIDRE.FindAllString(w.Body.String(), -1), 50)
	assert.EqualValues(t, 1+50, c.store.usages.Load()-usages, "usage: the customer's and each key's shown")
	assert.Len(t, sparkRe.FindAllString(w.Body.String(), -1), 50)
	// 3 a key today, and i+d on day d for the newest 100 (i from 0).
	assert.True(t, strings.Contains(w.Body.String(), "Last 30 days: 247,050 requests allowed, 20,000 limited (429)."), "the customer's total")
	t.Logf("GET /keys/: %d bytes", w.Body.Len())

	older := olderRE.FindStringSubmatch(w.Body.String())
	require.NotNil(t, older)
	w, lists = c.do(http.MethodGet, "/keys/"+strings.TrimPrefix(html.UnescapeString(older[1]), "./"), nil)
	require.Equal(t, http.StatusOK, w.Code)
	assert.EqualValues(t, 1, lists)
	assert.LessOrEqual(t, w.Body.Len(), maxPageHT)

	w, lists = c.do(http.MethodGet, "/keys/?all=1", nil)
	require.Equal(t, http.StatusOK, w.Code)
	assert.EqualValues(t, 1, lists)
	assert.LessOrEqual(t, w.Body.Len(), maxPageHT)

	w, lists = c.do(http.MethodPost, "/keys/create", createForm("one more"))
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	assert.EqualValues(t, 1, lists, "the page beside the new token")
	assert.LessOrEqual(t, w.Body.Len(), maxPageHT)

	w, lists = c.do(http.MethodPost, "/keys/rename", url.Values{"id": {c.ids[0]}, "name": {"renamed"}})
	require.Equal(t, http.StatusSeeOther, w.Code, w.Body.String())
	assert.EqualValues(t, 0, lists)
}

// BenchmarkKeysPage is GET /keys/ for a user with 20,000 keys, beside the
// one page the store reads for it and the customer's usage series it
// reads (the references).
func BenchmarkKeysPage(b *testing.B) {
	c := newCrowd(b, 20_000)
	b.Run("GET /keys/", func(b *testing.B) {
		b.ReportAllocs()
		var size int
		for b.Loop() {
			w, _ := c.do(http.MethodGet, "/keys/", nil)
			if w.Code != http.StatusOK {
				b.Fatal(w.Code)
			}
			size = w.Body.Len()
		}
		b.ReportMetric(float64(size), "html-bytes")
	})
	b.Run("customer usage", func(b *testing.B) {
		b.ReportAllocs()
		ctx := context.Background()
		now := c.m.Now()
		for b.Loop() {
			if _, err := c.m.Usage(ctx, usage.Query{Customer: "alice", From: now.AddDate(0, 0, -29), To: now, Step: usage.Day}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("store page", func(b *testing.B) {
		b.ReportAllocs()
		ctx := context.Background()
		for b.Loop() {
			if _, err := c.store.List(ctx, "alice", apikey.ListOptions{Size: 51, UsableAt: c.m.Now()}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
