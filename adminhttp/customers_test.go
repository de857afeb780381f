package adminhttp_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/adminhttp"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memstore"
)

// PUT merges the members it is sent into the record and answers it; GET
// answers the same record.
func TestPutMergesIntoTheRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.do("PUT", "/admin/customers/bob", `{"plan":"pro","scopes":["read","write"],"max_keys":3}`)
	require.Equal(t, 200, a.status, a.raw)
	assert.Equal(t, "bob", a.body["id"])
	assert.Equal(t, "pro", a.body["plan"])
	assert.Equal(t, []any{"read", "write"}, a.body["scopes"])
	assert.EqualValues(t, 3, a.body["max_keys"])
	assert.EqualValues(t, 1, a.body["revision"])
	assert.Equal(t, `"1"`, a.header.Get("ETag"))
	assert.Equal(t, "no-store", a.header.Get("Cache-Control"))
	assert.NotNil(t, a.body["created_at"])
	assert.NotContains(t, a.body, "balance", "a change answers the record only")

	a = e.do("PUT", "/admin/customers/bob", `{"credits":500,"suspended":true,"metadata":{"crm":"42"},
		"limits":[{"name":"burst","kind":"rate","count":10,"period_seconds":1,"burst":20},{"name":"monthly","kind":"quota","count":9000,"window":"month"}]}`)
	require.Equal(t, 200, a.status, a.raw)
	assert.Equal(t, "pro", a.body["plan"], "members not sent keep their value")
	assert.Equal(t, []any{"read", "write"}, a.body["scopes"])
	assert.EqualValues(t, 3, a.body["max_keys"])
	assert.EqualValues(t, 500, a.body["credits"])
	assert.Equal(t, true, a.body["suspended"])
	assert.Equal(t, map[string]any{"crm": "42"}, a.body["metadata"])
	assert.Equal(t, []any{
		map[string]any{"name": "burst", "kind": "rate", "count": 10.0, "period_seconds": 1.0, "burst": 20.0},
		map[string]any{"name": "monthly", "kind": "quota", "count": 9000.0, "window": "month"},
	}, a.body["limits"])
	assert.EqualValues(t, 2, a.body["revision"])

	c, err := e.m.Customer(context.Background(), "bob")
	require.NoError(t, err)
	assert.Equal(t, &apikey.Customer{ID: "bob", Plan: "pro", Scopes: []string{"read", "write"}, MaxKeys: 3,
		Limits:  []limits.Limit{limits.Rate("burst", 10, time.Second, 20), limits.Quota("monthly", 9000, limits.Month)},
		Credits: 500, Suspended: true, Metadata: map[string]string{"crm": "42"},
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, Revision: 2}, c)

	got := e.do("GET", "/admin/customers/bob", "")
	require.Equal(t, 200, got.status)
	assert.Equal(t, `"2"`, got.header.Get("ETag"))
	for k, v := range a.body {
		assert.Equal(t, v, got.body[k], k)
	}

	// null sets a field to its zero value: no ceiling, no cap, no grants,
	// the default plan.
	a = e.do("PUT", "/admin/customers/bob", `{"plan":null,"scopes":null,"max_keys":null,"limits":null,"credits":null,"metadata":null,"suspended":false}`)
	require.Equal(t, 200, a.status, a.raw)
	assert.Equal(t, "", a.body["plan"])
	assert.Nil(t, a.body["scopes"], "null: unrestricted")
	assert.Contains(t, a.body, "scopes")
	assert.EqualValues(t, 0, a.body["max_keys"])
	assert.Equal(t, []any{}, a.body["limits"])
	assert.EqualValues(t, 0, a.body["credits"])
	assert.Equal(t, map[string]any{}, a.body["metadata"])
	assert.Equal(t, false, a.body["suspended"])

	a = e.do("PUT", "/admin/customers/bob", `{"scopes":[]}`)
	require.Equal(t, 200, a.status, a.raw)
	assert.Equal(t, []any{}, a.body["scopes"], "[]: no scope at all, unlike null")
	c, err = e.m.Customer(context.Background(), "bob")
	require.NoError(t, err)
	assert.NotNil(t, c.Scopes)
	assert.Empty(t, c.Scopes)
}

// A customer without a stored record is answered with the zero record,
// revision 0; an id is any text, percent-encoded in the path.
func TestGetUnknownCustomerIsTheZeroRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.do("GET", "/admin/customers/nobody", "")
	require.Equal(t, 200, a.status, a.raw)
	assert.EqualValues(t, 0, a.body["revision"])
	assert.Equal(t, "", a.body["plan"])
	assert.Nil(t, a.body["created_at"])
	assert.Equal(t, `"0"`, a.header.Get("ETag"))

	a = e.do("PUT", "/admin/customers/acme%2Fteam%20one", `{"plan":"pro"}`)
	require.Equal(t, 200, a.status, a.raw)
	assert.Equal(t, "acme/team one", a.body["id"])
	c, err := e.m.Customer(context.Background(), "acme/team one")
	require.NoError(t, err)
	assert.Equal(t, "pro", c.Plan)
}

// Bad input is a 400 problem naming the field; nothing is written.
func TestBadInputNamesTheField(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	long := strings.Repeat("a", 256)
	for _, tc := range []struct {
		name, method, path, body, field string
		headers                         []string
	}{
		{"unknown plan", "PUT", "/admin/customers/bob", `{"plan":"gold"}`, "plan", nil},
		{"plan with a control character", "PUT", "/admin/customers/bob", `{"plan":"pro\u0001"}`, "plan", nil},
		{"plan not a string", "PUT", "/admin/customers/bob", `{"plan":1}`, "plan", nil},
		{"scopes not an array", "PUT", "/admin/customers/bob", `{"scopes":"read"}`, "scopes", nil},
		{"scope listed twice", "PUT", "/admin/customers/bob", `{"scopes":["read","read"]}`, "scopes", nil},
		{"scope with a space", "PUT", "/admin/customers/bob", `{"scopes":["read all"]}`, "scopes", nil},
		{"empty scope", "PUT", "/admin/customers/bob", `{"scopes":[""]}`, "scopes", nil},
		{"negative max_keys", "PUT", "/admin/customers/bob", `{"max_keys":-1}`, "max_keys", nil},
		{"max_keys too large", "PUT", "/admin/customers/bob", `{"max_keys":100001}`, "max_keys", nil},
		{"max_keys not an integer", "PUT", "/admin/customers/bob", `{"max_keys":1.5}`, "max_keys", nil},
		{"negative credits", "PUT", "/admin/customers/bob", `{"credits":-5}`, "credits", nil},
		{"credits too large", "PUT", "/admin/customers/bob", `{"credits":100000000000000}`, "credits", nil},
		{"credits a string", "PUT", "/admin/customers/bob", `{"credits":"10"}`, "credits", nil},
		{"suspended null", "PUT", "/admin/customers/bob", `{"suspended":null}`, "suspended", nil},
		{"suspended a string", "PUT", "/admin/customers/bob", `{"suspended":"yes"}`, "suspended", nil},
		{"metadata null value", "PUT", "/admin/customers/bob", `{"metadata":{"a":null}}`, "metadata", nil},
		{"metadata number value", "PUT", "/admin/customers/bob", `{"metadata":{"a":1}}`, "metadata", nil},
		{"metadata empty key", "PUT", "/admin/customers/bob", `{"metadata":{"":"x"}}`, "metadata", nil},
		{"limit of unknown kind", "PUT", "/admin/customers/bob", `{"limits":[{"name":"x","kind":"bucket","count":1}]}`, "limits", nil},
		{"limit with a bad name", "PUT", "/admin/customers/bob", `{"limits":[{"name":"1 x","kind":"quota","count":1,"window":"day"}]}`, "limits", nil},
		{"limit with zero count", "PUT", "/admin/customers/bob", `{"limits":[{"name":"x","kind":"quota","count":0,"window":"day"}]}`, "limits", nil},
		{"limit with an unknown member", "PUT", "/admin/customers/bob", `{"limits":[{"name":"x","kind":"quota","count":1,"window":"day","every":2}]}`, "limits", nil},
		{"rate without a period", "PUT", "/admin/customers/bob", `{"limits":[{"name":"x","kind":"rate","count":1}]}`, "limits", nil},
		{"quota without a window", "PUT", "/admin/customers/bob", `{"limits":[{"name":"x","kind":"quota","count":1}]}`, "limits", nil},
		{"a limit twice", "PUT", "/admin/customers/bob", `{"limits":[{"name":"x","kind":"quota","count":1,"window":"day"},{"name":"x","kind":"quota","count":2,"window":"day"}]}`, "limits", nil},
		{"a credits limit beside credits", "PUT", "/admin/customers/bob", `{"credits":5,"limits":[{"name":"credits","kind":"credits","count":1}]}`, "limits", nil},
		{"allowed_ips not an array", "PUT", "/admin/customers/bob", `{"allowed_ips":"203.0.113.0/24"}`, "allowed_ips", nil},
		{"allowed_ips with host bits", "PUT", "/admin/customers/bob", `{"allowed_ips":["203.0.113.7/24"]}`, "allowed_ips", nil},
		{"allowed_ips not ranges", "PUT", "/admin/customers/bob", `{"allowed_ips":["example.com"]}`, "allowed_ips", nil},
		{"allowed_ips with a zone", "PUT", "/admin/customers/bob", `{"allowed_ips":["fe80::1%eth0"]}`, "allowed_ips", nil},
		{"unknown member", "PUT", "/admin/customers/bob", `{"plan":"pro","tier":"gold"}`, "tier", nil},
		{"empty body", "PUT", "/admin/customers/bob", ``, "body", nil},
		{"body not an object", "PUT", "/admin/customers/bob", `["plan"]`, "body", nil},
		{"two objects", "PUT", "/admin/customers/bob", `{} {}`, "body", nil},
		{"body too large", "PUT", "/admin/customers/bob", `{"metadata":{"a":"` + strings.Repeat("x", 70<<10) + `"}}`, "body", nil},
		{"id too long", "PUT", "/admin/customers/" + long, `{}`, "id", nil},
		{"id with a control character", "GET", "/admin/customers/a%01b", ``, "id", nil},
		{"id not UTF-8", "GET", "/admin/customers/a%ffb", ``, "id", nil},
		{"If-Match not an entity tag", "PUT", "/admin/customers/bob", `{}`, "If-Match", []string{"If-Match", "1"}},
		{"list limit 0", "GET", "/admin/customers?limit=0", ``, "limit", nil},
		{"list limit too large", "GET", "/admin/customers?limit=1001", ``, "limit", nil},
		{"list after too long", "GET", "/admin/customers?after=" + long, ``, "after", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do(tc.method, tc.path, tc.body, tc.headers...)
			assert.Equal(t, http.StatusBadRequest, a.status, a.raw)
			assert.Equal(t, "application/problem+json", a.header.Get("Content-Type"))
			assert.Equal(t, tc.field, a.body["field"], a.raw)
			assert.Contains(t, a.body["detail"], tc.field, "the sentence names the field too")
		})
	}
	c, err := e.m.Customer(context.Background(), "bob")
	require.NoError(t, err)
	assert.Zero(t, c.Revision, "no bad request wrote anything")
}

// The operator's change applies to the customer's next request: a
// suspension refuses his keys at once, lifting it lets them through, and
// a new plan's limits are the ones the next request spends.
func TestChangesTakeEffectAtTheNextRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	token, _, err := e.m.Issue(ctx, apikey.IssueParams{Owner: "demo"})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, e.call(token))
	assert.Equal(t, plans()["free"], e.lim.last(), "the default plan")

	require.Equal(t, 200, e.do("PUT", "/admin/customers/demo", `{"suspended":true}`).status)
	assert.Equal(t, http.StatusUnauthorized, e.call(token), "a suspended customer's key is refused")
	_, err = e.m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrSuspended)
	require.Equal(t, 200, e.do("PUT", "/admin/customers/demo", `{"suspended":false}`).status)
	assert.Equal(t, http.StatusNoContent, e.call(token))

	require.Equal(t, 200, e.do("PUT", "/admin/customers/demo", `{"plan":"pro"}`).status)
	require.Equal(t, http.StatusNoContent, e.call(token))
	assert.Equal(t, plans()["pro"], e.lim.last(), "the next request spends the new plan")

	require.Equal(t, 200, e.do("PUT", "/admin/customers/demo", `{"credits":7}`).status)
	require.Equal(t, http.StatusNoContent, e.call(token))
	assert.Equal(t, append(plans()["pro"], limits.Credits(apikey.CreditsLimit, 7, limits.Never)), e.lim.last())

	// Lowering the scope ceiling narrows his keys at once.
	scoped, _, err := e.m.Issue(ctx, apikey.IssueParams{Owner: "demo", Scopes: []string{"read", "write"}})
	require.NoError(t, err)
	require.Equal(t, 200, e.do("PUT", "/admin/customers/demo", `{"scopes":["read"]}`).status)
	k, err := e.m.Verify(ctx, scoped)
	require.NoError(t, err)
	assert.Equal(t, []string{"read"}, k.Scopes)
}

// GET answers the balance of the customer's limits from the Middleware's
// Limiter: what each admits now, one more than a request would leave when
// it would be allowed. credits is the state of his credits grant,
// whatever the position of that limit among the others.
func TestGetAnswersTheBalance(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.lim.remaining = map[string]int64{"daily": 70, "burst": 3, apikey.CreditsLimit: 42}
	require.Equal(t, 200, e.do("PUT", "/admin/customers/bob",
		`{"credits":50,"limits":[{"name":"burst","kind":"rate","count":5,"period_seconds":1}]}`).status)
	a := e.do("GET", "/admin/customers/bob", "")
	require.Equal(t, 200, a.status, a.raw)
	assert.Equal(t, map[string]any{"allowed": true, "limit": "burst", "remaining": 4.0, "reset_seconds": 0.0, "credits": 43.0}, a.body["balance"])
	assert.Contains(t, e.lim.last(), limits.Credits(apikey.CreditsLimit, 50, limits.Never), "the Limiter was asked about the grant")

	// Credits alone: a single limit.
	e2 := newEnv(t)
	e2.lim.remaining = map[string]int64{apikey.CreditsLimit: 9}
	m2, err := apikey.New(e2.store, apikey.Options{}) // no plans
	require.NoError(t, err)
	t.Cleanup(func() { m2.Close(context.Background()) })
	mw2, err := apikey.NewMiddleware(m2, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: e2.lim}})
	require.NoError(t, err)
	h2, err := adminhttp.New(m2, adminhttp.Options{Middleware: mw2})
	require.NoError(t, err)
	require.Equal(t, 200, do(t, h2, "PUT", "/admin/customers/solo", `{"credits":10}`).status)
	a = do(t, h2, "GET", "/admin/customers/solo", "")
	require.Equal(t, 200, a.status, a.raw)
	assert.Equal(t, 10.0, a.body["balance"].(map[string]any)["credits"])

	// Without a credits grant, credits is null.
	a = e.do("GET", "/admin/customers/nobody", "")
	assert.Equal(t, map[string]any{"allowed": true, "limit": "daily", "remaining": 71.0, "reset_seconds": 0.0, "credits": nil}, a.body["balance"])

	// A denied request leaves every limit as it is: nothing is added back.
	e.lim.deny.Store(true)
	a = e.do("GET", "/admin/customers/bob", "")
	assert.Equal(t, map[string]any{"allowed": false, "limit": "burst", "remaining": 3.0, "reset_seconds": 0.0, "credits": 42.0}, a.body["balance"])
	e.lim.deny.Store(false)

	// A failing Limiter leaves the balance unknown, not the record.
	e.lim.fail.Store(true)
	a = e.do("GET", "/admin/customers/bob", "")
	require.Equal(t, 200, a.status)
	assert.Contains(t, a.body, "balance")
	assert.Nil(t, a.body["balance"])
}

// Without a Middleware, or with a Limiter that cannot peek, balance is
// null.
func TestBalanceIsNullWhenUnknown(t *testing.T) {
	t.Parallel()
	m, err := apikey.New(newCustomerStore(), apikey.Options{Plans: plans(), DefaultPlan: "free"})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	blind, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: allowAll{}}})
	require.NoError(t, err)
	for name, mw := range map[string]*apikey.Middleware{"no middleware": nil, "no LimitPeeker": blind} {
		h, err := adminhttp.New(m, adminhttp.Options{Middleware: mw})
		require.NoError(t, err)
		a := do(t, h, "GET", "/admin/customers/bob", "")
		require.Equal(t, 200, a.status, name)
		assert.Contains(t, a.body, "balance", name)
		assert.Nil(t, a.body["balance"], name)
	}
}

// allowAll is a Limiter that cannot peek.
type allowAll struct{}

func (allowAll) Allow(context.Context, string, []limits.Limit, int64) (limits.Result, error) {
	return limits.Result{Allowed: true}, nil
}

func TestListPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := range 5 {
		require.Equal(t, 200, e.do("PUT", fmt.Sprintf("/admin/customers/c%d", i), `{"plan":"pro"}`).status)
	}
	var ids []any
	after := ""
	for range 4 {
		a := e.do("GET", "/admin/customers?limit=2&after="+after, "")
		require.Equal(t, 200, a.status, a.raw)
		assert.Equal(t, "no-store", a.header.Get("Cache-Control"))
		for _, c := range a.body["customers"].([]any) {
			assert.Equal(t, "pro", c.(map[string]any)["plan"])
			assert.NotContains(t, c, "balance")
			ids = append(ids, c.(map[string]any)["id"])
		}
		if a.body["next"] == nil {
			break
		}
		after = a.body["next"].(string)
	}
	assert.Equal(t, []any{"c0", "c1", "c2", "c3", "c4"}, ids)
	a := e.do("GET", "/admin/customers", "")
	assert.Len(t, a.body["customers"], 5)
	assert.Nil(t, a.body["next"])
	a = e.do("GET", "/admin/customers?limit=5", "")
	assert.Len(t, a.body["customers"], 5)
	assert.Nil(t, a.body["next"], "a full last page has no next")
}

// If-Match makes a change conditional on the revision read.
func TestIfMatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.do("PUT", "/admin/customers/bob", `{"plan":"pro"}`, "If-Match", "*")
	assert.Equal(t, http.StatusPreconditionFailed, a.status, "* needs a stored record")
	a = e.do("PUT", "/admin/customers/bob", `{"plan":"pro"}`, "If-Match", `"0"`)
	require.Equal(t, 200, a.status, `"0": no record yet`)
	tag := a.header.Get("ETag")
	require.Equal(t, 200, e.do("PUT", "/admin/customers/bob", `{"max_keys":2}`, "If-Match", tag).status)
	a = e.do("PUT", "/admin/customers/bob", `{"plan":"free"}`, "If-Match", tag)
	assert.Equal(t, http.StatusPreconditionFailed, a.status, "a stale revision")
	assert.Equal(t, 200, e.do("PUT", "/admin/customers/bob", `{}`, "If-Match", `"7", "2"`).status, "one of a list")
	assert.Equal(t, http.StatusPreconditionFailed, e.do("PUT", "/admin/customers/bob", `{}`, "If-Match", `W/"3"`).status, "weak tags never match")
	c, err := e.m.Customer(context.Background(), "bob")
	require.NoError(t, err)
	assert.Equal(t, "pro", c.Plan)
}

// Operators who read, change and write back with If-Match never lose an
// update: of concurrent writes at one revision exactly one succeeds, so
// the counter equals the successful writes.
func TestIfMatchLosesNoUpdateUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.Equal(t, 200, e.do("PUT", "/admin/customers/bob", `{"metadata":{"n":"0"}}`).status)
	var wins atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				a := e.do("GET", "/admin/customers/bob", "")
				n, _ := strconv.Atoi(a.body["metadata"].(map[string]any)["n"].(string))
				put := e.do("PUT", "/admin/customers/bob", fmt.Sprintf(`{"metadata":{"n":"%d"}}`, n+1), "If-Match", a.header.Get("ETag"))
				switch put.status {
				case 200:
					wins.Add(1)
				case http.StatusPreconditionFailed:
				default:
					t.Errorf("PUT answered %d: %s", put.status, put.raw)
				}
			}
		})
	}
	wg.Wait()
	c, err := e.m.Customer(context.Background(), "bob")
	require.NoError(t, err)
	assert.Equal(t, strconv.FormatInt(wins.Load(), 10), c.Metadata["n"])
	assert.Positive(t, wins.Load())
}

// Concurrent changes of different fields all land: each PUT merges into
// the record as stored, not as another PUT read it.
func TestConcurrentChangesOfDifferentFieldsAllLand(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bodies := []string{`{"plan":"pro"}`, `{"scopes":["read"]}`, `{"max_keys":4}`, `{"credits":9}`,
		`{"suspended":true}`, `{"metadata":{"a":"b"}}`, `{"limits":[{"name":"m","kind":"quota","count":5,"window":"month"}]}`}
	var wg sync.WaitGroup
	for _, b := range bodies {
		wg.Go(func() {
			for range 20 {
				if a := e.do("PUT", "/admin/customers/bob", b); a.status != 200 {
					t.Errorf("PUT %s answered %d: %s", b, a.status, a.raw)
				}
			}
		})
	}
	wg.Wait()
	c, err := e.m.Customer(context.Background(), "bob")
	require.NoError(t, err)
	assert.Equal(t, "pro", c.Plan)
	assert.Equal(t, []string{"read"}, c.Scopes)
	assert.Equal(t, 4, c.MaxKeys)
	assert.EqualValues(t, 9, c.Credits)
	assert.True(t, c.Suspended)
	assert.Equal(t, map[string]string{"a": "b"}, c.Metadata)
	assert.Equal(t, []limits.Limit{limits.Quota("m", 5, limits.Month)}, c.Limits)
	assert.EqualValues(t, 7*20, c.Revision)
}

// A failing store is a 503 with Retry-After and no detail of the
// failure; changes that keep losing races are a 409; a store that keeps
// no customers is a 501.
func TestStoreFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.store.down.Store(true)
	for _, r := range [][2]string{{"GET", "/admin/customers/bob"}, {"PUT", "/admin/customers/bob"}, {"GET", "/admin/customers"}} {
		a := e.do(r[0], r[1], `{"plan":"pro"}`)
		assert.Equal(t, http.StatusServiceUnavailable, a.status, r)
		assert.Equal(t, "5", a.header.Get("Retry-After"), r)
		assert.NotContains(t, a.raw, errDown.Error(), r)
	}
	e.store.down.Store(false)
	e.store.conflict.Store(true)
	assert.Equal(t, http.StatusConflict, e.do("PUT", "/admin/customers/bob", `{"plan":"pro"}`).status)
	e.store.conflict.Store(false)

	// A Store and nothing more: no CustomerStore.
	m, err := apikey.New(struct{ apikey.Store }{memstore.New()}, apikey.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	h, err := adminhttp.New(m, adminhttp.Options{RetryAfter: 1500 * time.Millisecond})
	require.NoError(t, err)
	assert.Equal(t, http.StatusNotImplemented, do(t, h, "PUT", "/admin/customers/bob", `{"plan":"pro"}`).status)
	assert.Equal(t, http.StatusNotImplemented, do(t, h, "GET", "/admin/customers", "").status)
	assert.Equal(t, 200, do(t, h, "GET", "/admin/customers/bob", "").status, "reads answer the zero record")
}

// The operator restricts a customer to IP ranges: shown in the record,
// in force for his keys at the next request (403 from elsewhere), and
// lifted with null.
func TestCustomerIPRanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	token, _, err := e.m.Issue(context.Background(), apikey.IssueParams{Owner: "demo"})
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, e.call(token), "from httptest's 192.0.2.1")

	a := e.do("PUT", "/admin/customers/demo", `{"allowed_ips":["2001:db8::/32","203.0.113.0/24","198.51.100.9"]}`)
	require.Equal(t, 200, a.status, a.raw)
	assert.Equal(t, []any{"198.51.100.9/32", "203.0.113.0/24", "2001:db8::/32"}, a.body["allowed_ips"], "canonical and sorted")
	assert.Equal(t, http.StatusForbidden, e.call(token), "192.0.2.1 is outside the customer's ranges")
	a = e.do("GET", "/admin/customers/demo", "")
	assert.Equal(t, []any{"198.51.100.9/32", "203.0.113.0/24", "2001:db8::/32"}, a.body["allowed_ips"])

	a = e.do("PUT", "/admin/customers/demo", `{"allowed_ips":["192.0.2.0/24"]}`)
	require.Equal(t, 200, a.status, a.raw)
	assert.Equal(t, http.StatusNoContent, e.call(token))
	a = e.do("PUT", "/admin/customers/demo", `{"allowed_ips":null}`)
	require.Equal(t, 200, a.status, a.raw)
	assert.Equal(t, []any{}, a.body["allowed_ips"])
	c, err := e.m.Customer(context.Background(), "demo")
	require.NoError(t, err)
	assert.Empty(t, c.AllowedIPs)
}
