package main

import (
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/sqlstore"
	"github.com/gokeys/apikey/usage"
)

// counts are allowed, limited, refused and cost.
type counts [4]int64

func (c *counts) add(o counts) {
	for i := range c {
		c[i] += o[i]
	}
}

// store opens the harness's database as a service would, without a
// Manager.
func (h *harness) store() *sqlstore.Store {
	h.t.Helper()
	db, err := sql.Open("sqlite", "file:"+h.db+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	require.NoError(h.t, err)
	h.t.Cleanup(func() { db.Close() })
	s, err := sqlstore.New(db, sqlstore.SQLite, sqlstore.Options{})
	require.NoError(h.t, err)
	return s
}

// csvRows runs apikey usage with --format csv and returns its rows after
// the header, which must be the billing header.
func (h *harness) csvRows(args ...string) [][]string {
	h.t.Helper()
	r := h.run("", append([]string{"usage", "--format", "csv"}, args...)...)
	require.Equal(h.t, exitOK, r.code, r.stderr)
	rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	require.NoError(h.t, err, r.stdout)
	require.NotEmpty(h.t, rows)
	require.Equal(h.t, []string{"customer", "key_id", "period_start", "period_end", "allowed", "limited", "refused", "cost"}, rows[0])
	return rows[1:]
}

// rowCounts reads the counts of a CSV row.
func rowCounts(t *testing.T, row []string) counts {
	t.Helper()
	var c counts
	for i := range c {
		n, err := strconv.ParseInt(row[4+i], 10, 64)
		require.NoError(t, err, row)
		c[i] = n
	}
	return c
}

// The export of stored hours: per key and period, customer totals,
// one key, every format, the rounding of the range and its defaults.
func TestUsageExport(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	m := h.manager()
	ctx := context.Background()
	_, a, err := m.Issue(ctx, apikey.IssueParams{Owner: "acme, inc."})
	require.NoError(t, err)
	_, b, err := m.Issue(ctx, apikey.IssueParams{Owner: "acme, inc."})
	require.NoError(t, err)
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "acme, inc."}) // idle: no rows
	require.NoError(t, err)
	d := func(s string) time.Time { t, err := time.Parse(time.RFC3339, s); require.NoError(h.t, err); return t }
	now := time.Now().UTC().Truncate(time.Hour)
	require.NoError(t, h.store().AddUsage(ctx, []usage.Record{
		{Customer: "acme, inc.", KeyID: a.ID, Start: d("2026-01-01T10:00:00Z"), Allowed: 3, Limited: 1, Refused: 2, Cost: 7},
		{Customer: "acme, inc.", KeyID: a.ID, Start: d("2026-01-01T23:00:00Z"), Allowed: 1, Cost: 1},
		{Customer: "acme, inc.", KeyID: b.ID, Start: d("2026-01-02T00:00:00Z"), Allowed: 5, Cost: 50},
		{Customer: "acme, inc.", KeyID: b.ID, Start: d("2026-02-01T00:00:00Z"), Allowed: 9, Cost: 9},
		{Customer: "acme, inc.", KeyID: a.ID, Start: now, Allowed: 2, Cost: 2},
		{Customer: "rival", KeyID: "rival-key", Start: d("2026-01-01T10:00:00Z"), Allowed: 100, Cost: 100},
	}))

	// By day: a row per key and day, every day of the range for a key
	// with usage, none for the idle key; ordered by day, then key.
	rows := h.csvRows("--customer", "acme, inc.", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-03T00:00:00Z")
	first, second := min(a.ID, b.ID), max(a.ID, b.ID)
	want := map[string]counts{
		a.ID + " 2026-01-01T00:00:00Z": {4, 1, 2, 8}, b.ID + " 2026-01-01T00:00:00Z": {},
		a.ID + " 2026-01-02T00:00:00Z": {}, b.ID + " 2026-01-02T00:00:00Z": {5, 0, 0, 50},
	}
	require.Len(t, rows, 4)
	for i, row := range rows {
		assert.Equal(t, "acme, inc.", row[0])
		assert.Equal(t, []string{first, second}[i%2], row[1], "by period, then key")
		assert.Equal(t, want[row[1]+" "+row[2]], rowCounts(t, row), row)
		start := d(row[2])
		assert.Equal(t, start.AddDate(0, 0, 1).Format(time.RFC3339), row[3])
	}
	assert.Equal(t, "2026-01-01T00:00:00Z", rows[0][2])
	assert.Equal(t, "2026-01-02T00:00:00Z", rows[3][2])

	// Unaligned bounds are rounded to whole periods, as Manager.Usage
	// rounds them: from down, to up.
	assert.Equal(t, rows, h.csvRows("--customer", "acme, inc.", "--from", "2026-01-01T09:30:00Z", "--to", "2026-01-02T00:00:01Z"))
	assert.Equal(t, rows, h.csvRows("--customer", "acme, inc.", "--from", "2026-01-01T01:00:00+01:00", "--to", "2026-01-02T19:00:00-05:00"))

	// --total: one row per period, key_id empty, the sums of the per-key
	// rows and of Manager.Usage.
	total := h.csvRows("--customer", "acme, inc.", "--total", "--step", "month", "--from", "2026-01-01T00:00:00Z", "--to", "2026-03-01T00:00:00Z")
	require.Len(t, total, 2)
	assert.Equal(t, []string{"acme, inc.", "", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "9", "1", "2", "58"}, total[0])
	assert.Equal(t, []string{"acme, inc.", "", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "9", "0", "0", "9"}, total[1])
	perKey := h.csvRows("--customer", "acme, inc.", "--step", "month", "--from", "2026-01-01T00:00:00Z", "--to", "2026-03-01T00:00:00Z")
	require.Len(t, perKey, 4)
	for p := range total {
		var sum counts
		sum.add(rowCounts(t, perKey[2*p]))
		sum.add(rowCounts(t, perKey[2*p+1]))
		assert.Equal(t, rowCounts(t, total[p]), sum, "period %d", p)
	}

	// --key: that key's periods only, with its customer.
	keyRows := h.csvRows("--key", b.ID, "--step", "hour", "--from", "2026-01-01T23:00:00Z", "--to", "2026-01-02T02:00:00Z")
	require.Len(t, keyRows, 3)
	assert.Equal(t, []string{"acme, inc.", b.ID, "2026-01-01T23:00:00Z", "2026-01-02T00:00:00Z", "0", "0", "0", "0"}, keyRows[0])
	assert.Equal(t, []string{"acme, inc.", b.ID, "2026-01-02T00:00:00Z", "2026-01-02T01:00:00Z", "5", "0", "0", "50"}, keyRows[1])

	// Defaults: by day, the last 30 days and today; the key used now is
	// there, today.
	rows = h.csvRows("--customer", "acme, inc.")
	require.Len(t, rows, 31, "a's 31 days; b has no usage in the range")
	today := map[string]counts{}
	for _, row := range rows {
		assert.Equal(t, a.ID, row[1])
		today[row[2]] = rowCounts(t, row)
	}
	assert.Equal(t, counts{2, 0, 0, 2}, today[now.Format("2006-01-02")+"T00:00:00Z"])
	assert.Len(t, h.csvRows("--key", a.ID, "--step", "hour"), 25)
	assert.Len(t, h.csvRows("--key", a.ID, "--step", "month"), 13)
	assert.Empty(t, h.csvRows("--customer", "nobody"), "no usage: the header alone")

	// JSON lines and the table say the same.
	r := h.run("", "usage", "--key", b.ID, "--step", "month", "--from", "2026-01-01T00:00:00Z", "--to", "2026-03-01T00:00:00Z", "--format", "jsonl")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2)
	var line map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &line))
	assert.Equal(t, map[string]any{"customer": "acme, inc.", "key_id": b.ID, "period_start": "2026-01-01T00:00:00Z",
		"period_end": "2026-02-01T00:00:00Z", "allowed": 5.0, "limited": 0.0, "refused": 0.0, "cost": 50.0}, line)
	assert.Equal(t, r.stdout, h.run("", "usage", "--key", b.ID, "--step", "month", "--from", "2026-01-01T00:00:00Z", "--to", "2026-03-01T00:00:00Z", "--json").stdout)
	r = h.run("", "usage", "--customer", "acme, inc.", "--step", "month", "--from", "2026-01-01T00:00:00Z", "--to", "2026-03-01T00:00:00Z")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "PERIOD START")
	assert.Contains(t, r.stdout, "total: 18 allowed, 1 limited, 2 refused, cost 67 in 4 rows")
}

// Bad flags are usage errors (2), a range the Manager refuses is refused
// (4), an unknown key is 3; each says so in one line.
func TestUsageCommandErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	_, k, err := h.manager().Issue(context.Background(), apikey.IssueParams{Owner: "acme"})
	require.NoError(t, err)
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{}, exitUsage, "--customer or --key"},
		{[]string{"--customer", "a", "--key", k.ID}, exitUsage, "not both"},
		{[]string{"--key", k.ID, "--total"}, exitUsage, "--total"},
		{[]string{"--customer", "acme", "extra"}, exitUsage, "no arguments"},
		{[]string{"--customer", "acme", "--step", "week"}, exitUsage, "--step"},
		{[]string{"--customer", "acme", "--from", "yesterday"}, exitUsage, "--from"},
		{[]string{"--customer", "acme", "--to", "2026-13-01T00:00:00Z"}, exitUsage, "--to"},
		{[]string{"--customer", "acme", "--format", "xml"}, exitUsage, "--format"},
		{[]string{"--customer", "acme", "--format", "csv", "--json"}, exitUsage, "--json"},
		{[]string{"--customer", "acme", "--bogus"}, exitUsage, "bogus"},
		{[]string{"--customer", "acme", "--step", "hour", "--from", "2026-01-01T00:00:00Z", "--to", "2026-03-01T00:00:00Z"}, exitRefused, "more than 1000"},
		{[]string{"--customer", "acme", "--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z"}, exitRefused, "after from"},
		{[]string{"--key", "nosuchkey"}, exitNotFound, "not found"},
	} {
		r := h.run("", append([]string{"usage"}, c.args...)...)
		assert.Equal(t, c.code, r.code, "%v: %s", c.args, r.stderr)
		assert.Contains(t, r.stderr, c.says, c.args)
		assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
		assert.Empty(t, r.stdout, c.args)
	}
	r := h.run("", "usage", "--customer", "acme", "--sqlite", "/nonexistent/dir/keys.db")
	assert.Equal(t, exitFailure, r.code, r.stderr)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
}

// Real requests through the middleware, from concurrent clients, over the
// SQLite database: some allowed, some over the customer's quota (429),
// some without the scope (403), some with a wrong secret (401, not
// counted), while the service flushes usage every few milliseconds. After
// the service closes, its GET /usage, GET /api-keys/{id}/usage and the
// CSV export (per key and --total) agree exactly with what the clients
// saw.
func TestUsageExportAgreesWithRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	m, err := apikey.New(h.store(), apikey.Options{Prefix: "sk_live", Prefixes: []string{"sk_test"}, CacheTTL: -1,
		Peppers:       []apikey.Pepper{{Version: "1", Secret: []byte(testPepper)}},
		UsageInterval: 5 * time.Millisecond,
		Plans:         limits.Plans{"small": {limits.Quota("daily", 40, limits.Day)}}, DefaultPlan: "small"})
	require.NoError(t, err)
	lim, err := memlimit.New(memlimit.Options{})
	require.NoError(t, err)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: lim}})
	require.NoError(t, err)
	api, err := keyshttp.New(m, keyshttp.Options{Owner: func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil }})
	require.NoError(t, err)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux := http.NewServeMux()
	mux.Handle("/api-keys/", api)
	mux.Handle("GET /usage", api)
	mux.Handle("GET /data", mw.Handler(mw.Limit(ok)))
	mux.Handle("POST /data", mw.Handler(mw.RequireScopes("write")(mw.Limit(ok))))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx := context.Background()
	tokens := map[string]string{}
	for _, scopes := range [][]string{{"read"}, {"read", "write"}} {
		tok, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "acme", Scopes: scopes})
		require.NoError(t, err)
		tokens[k.ID] = tok
	}
	tok, rival, err := m.Issue(ctx, apikey.IssueParams{Owner: "rival", Scopes: []string{"write"}})
	require.NoError(t, err)
	tokens[rival.ID] = tok

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
		if seen[id] == nil {
			seen[id] = &counts{}
		}
		switch res.StatusCode {
		case http.StatusNoContent:
			seen[id].add(counts{1, 0, 0, 1})
		case http.StatusTooManyRequests:
			seen[id].add(counts{0, 1, 0, 0})
		case http.StatusForbidden:
			seen[id].add(counts{0, 0, 1, 0})
		case http.StatusUnauthorized:
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
						send(id, "GET", token[:len(token)-2]+"xx")
					}
				}
			})
		}
	}
	wg.Wait()
	require.NoError(t, m.Close(ctx), "flushes what is pending")

	var acme counts
	for id, c := range seen {
		if id != rival.ID {
			acme.add(*c)
		}
	}
	require.NotZero(t, acme[0], "some allowed")
	require.NotZero(t, acme[1], "some over the quota")
	require.NotZero(t, acme[2], "some without the scope")

	from, to := time.Now().Add(-2*time.Hour).UTC().Format(time.RFC3339), time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	get := func(user, path string) counts {
		req, _ := http.NewRequest("GET", srv.URL+path+"?step=hour&from="+url.QueryEscape(from)+"&to="+url.QueryEscape(to), nil)
		req.Header.Set("X-User", user)
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		require.Equal(t, 200, res.StatusCode, string(raw))
		var body struct {
			Series []struct{ Allowed, Limited, Refused, Cost int64 }
		}
		require.NoError(t, json.Unmarshal(raw, &body))
		var c counts
		for _, b := range body.Series {
			c.add(counts{b.Allowed, b.Limited, b.Refused, b.Cost})
		}
		return c
	}
	assert.Equal(t, acme, get("acme", "/usage"), "GET /usage")
	assert.Equal(t, *seen[rival.ID], get("rival", "/usage"), "GET /usage of the other customer")

	perKey := map[string]counts{}
	var csvTotal counts
	for _, row := range h.csvRows("--customer", "acme", "--step", "hour", "--from", from, "--to", to) {
		c := perKey[row[1]]
		c.add(rowCounts(t, row))
		perKey[row[1]] = c
		csvTotal.add(rowCounts(t, row))
	}
	assert.Equal(t, acme, csvTotal, "the CSV export")
	var totalRows counts
	for _, row := range h.csvRows("--customer", "acme", "--total", "--step", "day", "--from", from, "--to", to) {
		assert.Empty(t, row[1])
		totalRows.add(rowCounts(t, row))
	}
	assert.Equal(t, acme, totalRows, "the CSV export's totals")
	for id, c := range seen {
		if id == rival.ID {
			continue
		}
		assert.Equal(t, *c, perKey[id], "key %s in the CSV export", id)
		assert.Equal(t, *c, get("acme", "/api-keys/"+id+"/usage"), "GET /api-keys/%s/usage", id)
		var keyRows counts
		for _, row := range h.csvRows("--key", id, "--step", "hour", "--from", from, "--to", to) {
			keyRows.add(rowCounts(t, row))
		}
		assert.Equal(t, *c, keyRows, "apikey usage --key %s", id)
	}
	assert.Len(t, perKey, 2, "only acme's keys")
}
