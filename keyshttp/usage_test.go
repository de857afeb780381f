package keyshttp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/usage"
)

// counts are the counts of one bucket: allowed, limited, refused, cost.
type counts [4]int64

func (c *counts) add(o counts) {
	for i := range c {
		c[i] += o[i]
	}
}

// series reads the buckets of a usage answer, by start.
func series(t *testing.T, r response) ([]string, map[string]counts) {
	t.Helper()
	require.Equal(t, 200, r.status, r.raw)
	var starts []string
	out := map[string]counts{}
	for _, b := range r.body["series"].([]any) {
		m := b.(map[string]any)
		start := m["start"].(string)
		starts = append(starts, start)
		out[start] = counts{int64(m["allowed"].(float64)), int64(m["limited"].(float64)), int64(m["refused"].(float64)), int64(m["cost"].(float64))}
	}
	return starts, out
}

// total sums a series.
func total(s map[string]counts) counts {
	var c counts
	for _, b := range s {
		c.add(b)
	}
	return c
}

// usageless serves a Handler over a Manager whose store keeps no usage,
// through the checker s, with a key of alice's; it returns the server and
// the key's id.
func usageless(t *testing.T, s *spec) (*httptest.Server, string) {
	t.Helper()
	m, err := apikey.New(struct{ apikey.Store }{memstore.New()}, apikey.Options{CacheTTL: -1})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	h, err := keyshttp.New(m, keyshttp.Options{Owner: ownerFromHeader})
	require.NoError(t, err)
	_, k, err := m.Issue(context.Background(), apikey.IssueParams{Owner: "alice"})
	require.NoError(t, err)
	srv := httptest.NewServer(s.checked(t, h))
	t.Cleanup(srv.Close)
	return srv, k.ID
}

// usageRoutes drives GET /usage and GET /api-keys/{id}/usage through every
// documented status, over counts added to the store; TestRoutes runs it
// under the OpenAPI checker.
func usageRoutes(t *testing.T, e *env) {
	ctx := context.Background()
	hour := e.clock.Now().Truncate(time.Hour) // 2026-11-27T12:00:00Z
	a, _ := e.create("meter", "")
	b, _ := e.create("meter", "")
	other, _ := e.create("meter-other", "")
	require.NoError(t, e.store.AddUsage(ctx, []usage.Record{
		{Customer: "meter", KeyID: a, Start: hour, Allowed: 3, Limited: 1, Refused: 2, Cost: 7},
		{Customer: "meter", KeyID: a, Start: hour.Add(-2 * time.Hour), Allowed: 1, Cost: 1},
		{Customer: "meter", KeyID: b, Start: hour.Add(-24 * time.Hour), Allowed: 5, Cost: 5},
		{Customer: "meter-other", KeyID: other, Start: hour, Allowed: 100, Cost: 100},
	}))
	srv501, id501 := usageless(t, e.spec)
	get501 := func(path string) response {
		req, err := http.NewRequest("GET", srv501.URL+path, nil)
		require.NoError(t, err)
		req.Header.Set("X-User", "alice")
		res, err := srv501.Client().Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		return response{status: res.StatusCode, header: res.Header}
	}

	t.Run("GET /usage", func(t *testing.T) {
		// Defaults: by day, the last 30 days and today.
		r := e.do("meter", "GET", "/usage", "")
		starts, s := series(t, r)
		assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
		require.Len(t, starts, 31)
		assert.Equal(t, "2026-10-28T00:00:00Z", starts[0])
		assert.Equal(t, "2026-11-27T00:00:00Z", starts[30])
		assert.Equal(t, []any{"2026-10-28T00:00:00Z", "2026-11-28T00:00:00Z", "day"}, []any{r.body["from"], r.body["to"], r.body["step"]})
		assert.Equal(t, counts{4, 1, 2, 8}, s["2026-11-27T00:00:00Z"], "both of a's hours, summed")
		assert.Equal(t, counts{5, 0, 0, 5}, s["2026-11-26T00:00:00Z"], "b's")
		assert.Equal(t, counts{9, 1, 2, 13}, total(s), "never another customer's")

		want := []string{"2026-11-27T10:00:00Z", "2026-11-27T11:00:00Z", "2026-11-27T12:00:00Z"}
		for _, q := range []string{
			"step=hour&from=2026-11-27T10:00:00Z&to=2026-11-27T13:00:00Z",
			"step=hour&from=2026-11-27T10:30:00Z&to=2026-11-27T12:00:01Z",           // rounded to whole hours
			"step=hour&from=2026-11-27T11:00:00+01:00&to=2026-11-27T14:00:00+01:00", // an unescaped '+'
			"step=hour&from=" + url.QueryEscape("2026-11-27T11:00:00+01:00") + "&to=2026-11-27T08:00:00-05:00",
		} {
			r := e.do("meter", "GET", "/usage?"+q, "")
			starts, s := series(t, r)
			assert.Equal(t, want, starts, q)
			assert.Equal(t, counts{1, 0, 0, 1}, s[want[0]], q)
			assert.Equal(t, counts{}, s[want[1]], q)
			assert.Equal(t, counts{3, 1, 2, 7}, s[want[2]], q)
			assert.Equal(t, "2026-11-27T13:00:00Z", r.body["to"], q)
		}
		starts, _ = series(t, e.do("meter", "GET", "/usage?step=hour", ""))
		assert.Len(t, starts, 25, "the last 24 hours and this one")
		starts, s = series(t, e.do("meter", "GET", "/usage?step=month", ""))
		require.Len(t, starts, 13, "the last 12 months and this one")
		assert.Equal(t, "2025-11-01T00:00:00Z", starts[0])
		assert.Equal(t, counts{9, 1, 2, 13}, s["2026-11-01T00:00:00Z"])
		end := hour.Add(time.Hour)
		q := fmt.Sprintf("step=hour&from=%s&to=%s", end.Add(-1000*time.Hour).Format(time.RFC3339), end.Format(time.RFC3339))
		starts, _ = series(t, e.do("meter", "GET", "/usage?"+q, ""))
		assert.Len(t, starts, 1000, "1,000 points at most")
		starts, _ = series(t, e.do("meter", "GET", "/usage?step=month&from=0000-01-01T00:00:00Z&to=0000-12-31T23:00:00Z", ""))
		assert.Len(t, starts, 12, "the year 0")

		for _, c := range []struct{ name, query, field string }{
			{"unknown step", "step=week", "step"},
			{"empty step", "step=", "step"},
			{"bad from", "from=yesterday", "from"},
			{"from without a zone", "from=2026-11-01T00:00:00", "from"},
			{"empty to", "to=", "to"},
			{"bad to", "to=2026-13-01T00:00:00Z", "to"},
			{"to before from", "from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", "to"},
			{"to at from", "from=2026-11-01T00:00:00Z&to=2026-11-01T00:00:00Z", "to"},
			{"1,001 points", fmt.Sprintf("step=hour&from=%s&to=%s", end.Add(-1001*time.Hour).Format(time.RFC3339), end.Format(time.RFC3339)), "to"},
			{"from after now, to absent", "from=2026-12-01T00:00:00Z", "from"},
			{"from too far back, to absent", "from=1900-01-01T00:00:00Z", "from"},
			{"years by the hour", "step=hour&from=0001-01-01T00:00:00Z&to=9998-12-31T23:59:59Z", "to"},
			{"from at the zero time", "step=hour&from=0001-01-01T00:00:00Z", "from"},
			{"to in the year 9999", "step=month&from=9998-12-01T00:00:00Z&to=9999-12-31T23:59:59Z", "to"},
		} {
			assertProblem(t, e.do("meter", "GET", "/usage?"+c.query, ""), 400, c.field, c.name)
		}
		for _, user := range []string{"", "bad"} {
			assertProblem(t, e.do(user, "GET", "/usage", ""), 401, "", "owner %q", user)
		}
		e.customer("meter", func(c *apikey.Customer) { c.Suspended = true })
		_, s = series(t, e.do("meter", "GET", "/usage", ""))
		assert.Equal(t, counts{9, 1, 2, 13}, total(s), "a suspended customer reads his usage")
		e.customer("meter", func(c *apikey.Customer) { c.Suspended = false })
		r = e.do("meter", "HEAD", "/usage", "")
		assert.Equal(t, 200, r.status)
		assert.Empty(t, r.raw)
		_, s = series(t, e.do("nobody", "GET", "/usage", ""))
		assert.Equal(t, counts{}, total(s), "a customer without usage")

		e.store.down.Store(true)
		r = e.do("meter", "GET", "/usage", "")
		e.store.down.Store(false)
		assertProblem(t, r, 503, "")
		assert.NotContains(t, r.raw, errDown.Error())
		assert.Equal(t, 501, get501("/usage").status)
	})

	t.Run("GET /api-keys/{id}/usage", func(t *testing.T) {
		starts, s := series(t, e.do("meter", "GET", "/api-keys/"+a+"/usage?step=hour&from=2026-11-27T10:00:00Z&to=2026-11-27T13:00:00Z", ""))
		assert.Len(t, starts, 3)
		assert.Equal(t, counts{1, 0, 0, 1}, s["2026-11-27T10:00:00Z"])
		assert.Equal(t, counts{3, 1, 2, 7}, s["2026-11-27T12:00:00Z"])
		r := e.do("meter", "GET", "/api-keys/"+b+"/usage", "")
		starts, s = series(t, r)
		assert.Len(t, starts, 31)
		assert.Equal(t, counts{5, 0, 0, 5}, total(s), "only b's")
		assert.Equal(t, "no-store", r.header.Get("Cache-Control"))

		assertProblem(t, e.do("meter", "GET", "/api-keys/"+other+"/usage", ""), 404, "", "another owner's key")
		assertProblem(t, e.do("meter-other", "GET", "/api-keys/"+a+"/usage", ""), 404, "", "another owner's key")
		assertProblem(t, e.do("meter", "GET", "/api-keys/nosuchkey/usage", ""), 404, "", "an unknown key")
		assertProblem(t, e.do("meter", "GET", "/api-keys/a.b/usage", ""), 404, "", "not a key id")
		assertProblem(t, e.do("meter", "GET", "/api-keys/"+a+"/usage?step=minute", ""), 400, "step")
		assertProblem(t, e.do("meter", "GET", "/api-keys/"+a+"/usage?from=x", ""), 400, "from")
		assertProblem(t, e.do("bad", "GET", "/api-keys/"+a+"/usage", ""), 401, "")
		e.store.down.Store(true)
		r = e.do("meter", "GET", "/api-keys/"+a+"/usage", "")
		e.store.down.Store(false)
		assertProblem(t, r, 503, "")
		assert.Equal(t, 501, get501("/api-keys/"+id501+"/usage").status)

		require.Equal(t, 204, e.do("meter", "DELETE", "/api-keys/"+b, "").status)
		_, s = series(t, e.do("meter", "GET", "/api-keys/"+b+"/usage", ""))
		assert.Equal(t, counts{5, 0, 0, 5}, total(s), "a revoked key's usage stays readable")
	})
}

// Real requests through the middleware, from concurrent clients, some
// allowed, some refused by the quota (429), some for a scope (403), some
// with a wrong secret (401, not counted), while the Manager flushes every
// few milliseconds: after Close, GET /usage and GET
// /api-keys/{id}/usage answer exactly what the clients saw.
func TestUsageCountsRealRequests(t *testing.T) {
	t.Parallel()
	m, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_live", CacheTTL: -1, UsageInterval: 5 * time.Millisecond,
		Plans: limits.Plans{"small": {limits.Quota("daily", 40, limits.Day)}}, DefaultPlan: "small"})
	require.NoError(t, err)
	lim, err := memlimit.New(memlimit.Options{})
	require.NoError(t, err)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: lim}})
	require.NoError(t, err)
	h, err := keyshttp.New(m, keyshttp.Options{Owner: ownerFromHeader})
	require.NoError(t, err)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux := http.NewServeMux()
	mux.Handle("/api-keys/", h)
	mux.Handle("GET /usage", h)
	mux.Handle("GET /data", mw.Handler(mw.Limit(ok)))
	mux.Handle("POST /data", mw.Handler(mw.RequireScopes("write")(mw.Limit(ok))))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx := context.Background()
	tokens := map[string]string{}
	for _, scopes := range [][]string{{"read"}, {"read", "write"}, {"write"}} {
		tok, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "acme", Scopes: scopes})
		require.NoError(t, err)
		tokens[k.ID] = tok
	}
	tok, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "rival"})
	require.NoError(t, err)
	tokens["rival"] = tok

	// seen counts, per key, the answers the clients got.
	var mu sync.Mutex
	seen := map[string]*counts{}
	send := func(id, method, token string) {
		req, _ := http.NewRequest(method, srv.URL+"/data", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		res.Body.Close()
		mu.Lock()
		defer mu.Unlock()
		c := seen[id]
		if c == nil {
			c = &counts{}
			seen[id] = c
		}
		switch res.StatusCode {
		case http.StatusNoContent:
			c.add(counts{1, 0, 0, 1})
		case http.StatusTooManyRequests:
			c.add(counts{0, 1, 0, 0})
		case http.StatusForbidden:
			c.add(counts{0, 0, 1, 0})
		case http.StatusUnauthorized: // a wrong secret: not counted
		default:
			t.Errorf("%s /data: %d", method, res.StatusCode)
		}
	}
	var wg sync.WaitGroup
	for id, token := range tokens {
		for w := range 3 {
			wg.Go(func() {
				for i := range 12 {
					method := "GET"
					if (i+w)%3 == 0 {
						method = "POST"
					}
					send(id, method, token)
					if i%4 == 0 {
						send(id, "GET", token[:len(token)-2]+"xx") // a wrong secret
					}
				}
			})
		}
	}
	wg.Wait()
	require.NoError(t, m.Close(ctx))

	var acme counts
	for id, c := range seen {
		if id != "rival" {
			acme.add(*c)
		}
	}
	require.NotZero(t, acme[0], "some allowed")
	require.NotZero(t, acme[1], "some limited: 40 a day for the customer")
	require.NotZero(t, acme[2], "some refused for the scope")

	get := func(user, path string) response {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("X-User", user)
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		raw, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
		require.NoError(t, json.Unmarshal(raw, &r.body), r.raw)
		return r
	}
	q := "?step=hour&from=" + url.QueryEscape(time.Now().Add(-2*time.Hour).Format(time.RFC3339)) + "&to=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339))
	_, s := series(t, get("acme", "/usage"+q))
	assert.Equal(t, acme, total(s), "the customer's usage is what his clients saw")
	for id, c := range seen {
		if id == "rival" {
			_, s = series(t, get("rival", "/usage"+q))
		} else {
			_, s = series(t, get("acme", "/api-keys/"+id+"/usage"+q))
		}
		assert.Equal(t, *c, total(s), id)
	}
}
