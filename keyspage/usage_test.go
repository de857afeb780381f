package keyspage_test

import (
	"bytes"
	"context"
	"html"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyspage"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/usage"
)

var (
	// usageRowRe is a row of the table of daily usage: date, allowed,
	// limited.
	usageRowRe = regexp.MustCompile(`<tr><th scope="row"><time datetime="([0-9-]+)">[^<]*</time></th><td>([0-9,]+)</td><td>([0-9,]+)</td></tr>`)
	totalRe    = regexp.MustCompile(`<tfoot><tr><th scope="row">Total</th><td>([0-9,]+)</td><td>([0-9,]+)</td></tr></tfoot>`)
	// barRe is a bar of the chart: its kind, y and height.
	barRe      = regexp.MustCompile(`<rect class="(allowed|limited)" x="[0-9.]+%" width="[0-9.]+%" y="([0-9.]+)" height="([0-9.]+)"`)
	quotaRe    = regexp.MustCompile(`<line class="quota" x1="0" x2="100%" y1="([0-9.]+)" y2="([0-9.]+)"`)
	sparkRe    = regexp.MustCompile(`<tr id="key-([^"]+)"(?s:.*?)<svg width="100" height="24" viewBox="0 0 100 24" role="img" aria-label="([^"]*)">`)
	chartSVGRe = regexp.MustCompile(`<svg width="100%" height="200" role="img" aria-labelledby="usage-chart-title usage-chart-desc">`)
)

// The chart's plot: bars stand on y=176 and the top of the scale is at
// y=22.
const (
	base = 176.0
	plot = 176.0 - 22.0
)

// barHeight is the height of a bar of n on a scale topped at top: at
// least a pixel when n is not 0, so that it shows.
func barHeight(n int64, top float64) float64 {
	if n == 0 {
		return 0
	}
	return max(1, float64(n)/top*plot)
}

func number(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.ReplaceAll(s, ",", ""), 10, 64)
	require.NoError(t, err, s)
	return n
}

func float(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err, s)
	return f
}

// day is the start of the UTC day n days before the fixture's today
// (2026-11-27).
func day(n int) time.Time {
	return time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -n)
}

// addUsage stores counts of key k (of alice) in hour h of day n days ago.
func (f *fixture) addUsage(t *testing.T, k *apikey.Key, n, h int, allowed, limited int64) {
	t.Helper()
	require.NoError(t, f.store.AddUsage(context.Background(), []usage.Record{{
		Customer: k.Customer(), KeyID: k.ID, Start: day(n).Add(time.Duration(h) * time.Hour),
		Allowed: allowed, Limited: limited, Cost: allowed,
	}}))
}

// usageTable parses the table of daily usage: date → allowed, limited.
func usageTable(t *testing.T, body string) (days []string, allowed, limited map[string]int64) {
	t.Helper()
	allowed, limited = map[string]int64{}, map[string]int64{}
	for _, m := range usageRowRe.FindAllStringSubmatch(body, -1) {
		days = append(days, m[1])
		allowed[m[1]], limited[m[1]] = number(t, m[2]), number(t, m[3])
	}
	return days, allowed, limited
}

// TestUsageChart draws alice's requests of the last 30 days: a bar per
// day scaled to the busiest, limited requests stacked on the allowed
// ones, the same numbers in the table, and a sparkline per key.
func TestUsageChart(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	_, prod := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Prod"})
	_, ci := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "CI"})
	_, idle := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Idle"})
	_, bob := f.issue(t, apikey.IssueParams{Owner: "bob", Name: "Bob's"})
	f.addUsage(t, prod, 0, 1, 300, 0) // today, in two hours
	f.addUsage(t, prod, 0, 9, 100, 0)
	f.addUsage(t, ci, 0, 9, 50, 10)
	f.addUsage(t, prod, 3, 23, 1200, 300) // the busiest day: 1,500
	f.addUsage(t, ci, 29, 0, 7, 0)        // the first day shown
	f.addUsage(t, ci, 30, 23, 999, 999)   // the day before: not shown
	f.addUsage(t, bob, 0, 9, 5000, 5000)  // another customer's

	res := f.do(t, http.MethodGet, "/keys/", "alice", nil, nil)
	require.Equal(t, http.StatusOK, res.status)
	body := res.body

	days, allowed, limited := usageTable(t, body)
	require.Len(t, days, 30, "one row a day")
	assert.Equal(t, "2026-10-29", days[0])
	assert.Equal(t, "2026-11-27", days[29])
	for _, d := range days {
		want := map[string][2]int64{"2026-11-27": {450, 10}, "2026-11-24": {1200, 300}, "2026-10-29": {7, 0}}[d]
		assert.Equal(t, want[0], allowed[d], d)
		assert.Equal(t, want[1], limited[d], d)
	}
	total := totalRe.FindStringSubmatch(body)
	require.NotNil(t, total)
	assert.Equal(t, []string{"1,657", "310"}, total[1:])
	assert.Contains(t, body, "Last 30 days: 1,657 requests allowed, 310 limited (429).")
	assert.Contains(t, body, `<td>1,200</td><td>300</td>`, "thousands are separated")

	// Bars: 30 of each kind, in day order, scaled so that the busiest day
	// (1,500) fills the scale, whose top is 1,500 (steps of 500).
	require.Regexp(t, chartSVGRe, body)
	bars := barRe.FindAllStringSubmatch(body, -1)
	require.Len(t, bars, 60)
	for i, d := range days {
		a, l := bars[2*i], bars[2*i+1]
		require.Equal(t, "allowed", a[1])
		require.Equal(t, "limited", l[1])
		ah, lh := float(t, a[3]), float(t, l[3])
		assert.InDelta(t, barHeight(allowed[d], 1500), ah, 0.06, d)
		assert.InDelta(t, barHeight(limited[d], 1500), lh, 0.06, d)
		assert.InDelta(t, base-ah, float(t, a[2]), 0.06, "allowed stands on the baseline")
		assert.InDelta(t, base-ah-lh, float(t, l[2]), 0.11, "limited is stacked on allowed")
	}
	assert.InDelta(t, 22.0, float(t, bars[2*26+1][2]), 0.06, "the busiest day reaches the top")
	ticks := regexp.MustCompile(`<text class="tick" x="-8" y="([0-9.]+)" text-anchor="end" font-size="12" fill="#57606a">([^<]+)</text>`).FindAllStringSubmatch(body, -1)
	require.Len(t, ticks, 4)
	for i, want := range []struct {
		y     float64
		label string
	}{{base, "0"}, {base - plot/3, "500"}, {base - 2*plot/3, "1k"}, {22, "1.5k"}} {
		assert.InDelta(t, want.y+4, float(t, ticks[i][1]), 0.06, want.label)
		assert.Equal(t, want.label, ticks[i][2])
	}
	assert.NotRegexp(t, quotaRe, body, "no quota without DailyQuota")
	assert.Contains(t, body, `<desc id="usage-chart-desc">Requests per day from Oct 29 to Nov 27 (UTC): 1,657 allowed, at most 1,500 in a day; 310 limited.</desc>`)

	// A sparkline per key, labelled with its totals.
	sparks := map[string]string{}
	for _, m := range sparkRe.FindAllStringSubmatch(body, -1) {
		sparks[m[1]] = html.UnescapeString(m[2])
	}
	assert.Equal(t, map[string]string{
		prod.ID: "“Prod”, last 30 days: 1,600 requests allowed, 300 limited",
		ci.ID:   "“CI”, last 30 days: 57 requests allowed, 10 limited",
		idle.ID: "“Idle”, last 30 days: 0 requests allowed",
	}, sparks)
	assert.Contains(t, body, `<th scope="col">Last 30 days</th>`)
}

// TestUsageChartEmpty draws a customer without usage: 30 empty bars, a
// table of zeros and no scale.
func TestUsageChartEmpty(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Prod"})
	res := f.do(t, http.MethodGet, "/keys/", "alice", nil, nil)
	require.Equal(t, http.StatusOK, res.status)
	days, allowed, limited := usageTable(t, res.body)
	require.Len(t, days, 30)
	for _, d := range days {
		assert.Zero(t, allowed[d])
		assert.Zero(t, limited[d])
	}
	bars := barRe.FindAllStringSubmatch(res.body, -1)
	require.Len(t, bars, 60)
	for _, b := range bars {
		assert.Equal(t, "0", b[3])
		assert.Equal(t, "176", b[2])
	}
	assert.NotContains(t, res.body, `class="grid"`, "no scale for nothing")
	assert.NotContains(t, res.body, "NaN")
	assert.NotContains(t, res.body, "Inf")
	assert.Contains(t, res.body, "No requests in the last 30 days.")
	assert.Contains(t, res.body, "(UTC): none.</desc>")
	assert.Contains(t, res.body, `aria-label="“Prod”, last 30 days: 0 requests allowed"`)
	assert.Regexp(t, `points="0,22 3.4,22 `, res.body, "a flat sparkline on the bottom")
	_ = k

	// A user without keys sees the section too.
	res = f.do(t, http.MethodGet, "/keys/", "nobody", nil, nil)
	require.Equal(t, http.StatusOK, res.status)
	assert.Contains(t, res.body, "No requests in the last 30 days.")
	days, _, _ = usageTable(t, res.body)
	assert.Len(t, days, 30)
}

// TestUsageQuotaLine draws the daily quota DailyQuota returns for the
// signed-in customer as a line on the same scale as the bars.
func TestUsageQuotaLine(t *testing.T) {
	t.Parallel()
	var asked sync.Map
	quotas := map[string]int64{"alice": 2000, "bob": 0, "carol": 100}
	f := newFixture(t, keyspage.Options{DailyQuota: func(ctx context.Context, customer string) (int64, bool) {
		require.NotNil(t, ctx)
		asked.Store(customer, true)
		q, ok := quotas[customer]
		return q, ok
	}})
	_, a := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "A"})
	_, c := f.issue(t, apikey.IssueParams{Owner: "carol", Name: "C"})
	f.addUsage(t, a, 0, 0, 700, 0)
	f.addUsage(t, c, 1, 0, 150, 50) // beyond the quota: the scale holds both

	tests := []struct {
		name, user string
		top        float64 // the top of the scale
		quota      float64 // 0: no line
		label      string
	}{
		{"quota above usage", "alice", 2000, 2000, "2,000"},
		{"usage above quota", "carol", 200, 100, "100"},
		{"a quota of 0 draws nothing", "bob", 0, 0, ""},
		{"no quota", "dave", 0, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := f.do(t, http.MethodGet, "/keys/", tt.user, nil, nil)
			require.Equal(t, http.StatusOK, res.status)
			_, ok := asked.Load(tt.user)
			assert.True(t, ok, "asked for the signed-in customer")
			line := quotaRe.FindStringSubmatch(res.body)
			if tt.quota == 0 {
				assert.Nil(t, line)
				assert.NotContains(t, res.body, "Daily quota")
				return
			}
			require.NotNil(t, line)
			assert.InDelta(t, base-tt.quota/tt.top*plot, float(t, line[1]), 0.06)
			assert.Equal(t, line[1], line[2], "horizontal")
			assert.Contains(t, res.body, `<span class="swatch quota"></span>Daily quota: `+tt.label+`</span>`, "named in the legend")
			assert.Contains(t, res.body, " Daily quota: "+tt.label+".</desc>")
		})
	}
	res := f.do(t, http.MethodGet, "/keys/", "alice", nil, nil)
	assert.Contains(t, res.body, "Today: 700 of your daily quota of 2,000.")
	bars := barRe.FindAllStringSubmatch(res.body, -1)
	require.Len(t, bars, 60)
	assert.InDelta(t, 700.0/2000*plot, float(t, bars[58][3]), 0.06, "today's bar on the quota's scale")
}

// TestUsageIsEscaped shows a key whose name is markup beside its
// sparkline.
func TestUsageIsEscaped(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	name := `"><script>alert(1)</script><svg onload=alert(2)>`
	_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: name})
	f.addUsage(t, k, 0, 0, 3, 1)
	res := f.do(t, http.MethodGet, "/keys/", "alice", nil, nil)
	require.Equal(t, http.StatusOK, res.status)
	assert.NotContains(t, res.body, "<script>alert")
	assert.NotContains(t, res.body, "<svg onload")
	m := sparkRe.FindStringSubmatch(res.body)
	require.NotNil(t, m)
	assert.Equal(t, "“"+name+"”, last 30 days: 3 requests allowed, 1 limited", html.UnescapeString(m[2]))
	assert.Equal(t, 1, strings.Count(res.body, "<svg width=\"100%\""), "one chart")
}

// TestUsageKeepsTheCSP checks that the page with its chart and
// sparklines is served under the same policy as before: nothing but the
// page's own style and script, by hash, and no inline style attribute.
func TestUsageKeepsTheCSP(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{DailyQuota: func(context.Context, string) (int64, bool) { return 100, true }})
	_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Prod"})
	f.addUsage(t, k, 0, 0, 80, 30)
	res := f.do(t, http.MethodGet, "/keys/", "alice", nil, nil)
	require.Equal(t, http.StatusOK, res.status)
	require.Regexp(t, chartSVGRe, res.body)
	style, script := styleRe.FindStringSubmatch(res.body), scriptRe.FindStringSubmatch(res.body)
	require.NotNil(t, style)
	require.NotNil(t, script)
	assert.Equal(t, "default-src 'none'; style-src "+cspHash(style[1])+"; script-src "+cspHash(script[1])+
		"; form-action 'self'; frame-ancestors 'none'; base-uri 'none'", res.header.Get("Content-Security-Policy"))
	assert.NotContains(t, res.body, " style=")
	assert.Equal(t, 1, strings.Count(res.body, "<script"), "no script but the page's")
	assert.Equal(t, 1, strings.Count(res.body, "<style"), "no style element but the page's")
	assert.NotContains(t, res.body, "<image")
	assert.NotContains(t, res.body, "href=\"data:")
}

// countingUsage counts the usage reads of a memory store.
type countingUsage struct {
	*memstore.Store
	reads atomic.Int64
}

func (s *countingUsage) Usage(ctx context.Context, q usage.Query) ([]usage.Record, error) {
	s.reads.Add(1)
	return s.Store.Usage(ctx, q)
}

// TestUsageReadsAreBounded checks that a page reads usage once for the
// customer and once per key it lists, whatever the owner holds.
func TestUsageReadsAreBounded(t *testing.T) {
	t.Parallel()
	store := &countingUsage{Store: memstore.New()}
	m, err := apikey.New(store, apikey.Options{Prefix: "sk_live", LastUsedInterval: -1})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	for range 12 {
		_, _, err := m.Issue(context.Background(), apikey.IssueParams{Owner: "alice", Name: "k"})
		require.NoError(t, err)
	}
	page, err := keyspage.New(m, keyspage.Options{PageSize: 5, Owner: func(*http.Request) (string, error) { return "alice", nil }})
	require.NoError(t, err)
	for _, path := range []string{"/", "/?all=1"} {
		before := store.reads.Load()
		res := serve(page, path)
		require.Equal(t, http.StatusOK, res.Code)
		assert.EqualValues(t, 1+5, store.reads.Load()-before, path)
		assert.Len(t, rowIDRE.FindAllString(res.Body.String(), -1), 5)
		assert.Len(t, sparkRe.FindAllString(res.Body.String(), -1), 5)
	}
}

// serve GETs path from h.
func serve(h http.Handler, path string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://app.example"+path, nil))
	return w
}

// bareStore is a Store without usage.Store (nor any other capability).
type bareStore struct{ apikey.Store }

// TestUsageWithoutUsageStore leaves the section and the sparklines out
// when the store keeps no usage.
func TestUsageWithoutUsageStore(t *testing.T) {
	t.Parallel()
	m, err := apikey.New(bareStore{memstore.New()}, apikey.Options{Prefix: "sk_live", LastUsedInterval: -1})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	_, _, err = m.Issue(context.Background(), apikey.IssueParams{Owner: "alice", Name: "Prod"})
	require.NoError(t, err)
	var logs bytes.Buffer
	page, err := keyspage.New(m, keyspage.Options{
		Owner:  func(*http.Request) (string, error) { return "alice", nil },
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	res := serve(page, "/")
	require.Equal(t, http.StatusOK, res.Code)
	body := res.Body.String()
	assert.Contains(t, body, "Prod")
	assert.NotContains(t, body, `id="usage-title"`)
	assert.NotContains(t, body, "Last 30 days")
	assert.NotContains(t, body, "<svg")
	assert.Empty(t, logs.String(), "no usage store is no failure")
}

// TestUsageStoreFailure shows the keys when usage cannot be read, with a
// note in place of the chart and the failure logged.
func TestUsageStoreFailure(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	f := newFixture(t, keyspage.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	_, k := f.issue(t, apikey.IssueParams{Owner: "alice", Name: "Prod"})
	f.addUsage(t, k, 0, 0, 3, 0)
	f.store.usageFails.Store(true)
	res := f.do(t, http.MethodGet, "/keys/", "alice", nil, nil)
	require.Equal(t, http.StatusOK, res.status)
	assert.Contains(t, res.body, "Prod")
	assert.Contains(t, res.body, "Your usage cannot be shown right now")
	assert.NotContains(t, res.body, "db.internal")
	assert.NotContains(t, res.body, "<svg")
	assert.Contains(t, logs.String(), "keyspage: usage store failed")
	assert.Contains(t, logs.String(), "db.internal")
}
