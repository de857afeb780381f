package openapicheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/adminhttp"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memstore"
)

func newValidator(t *testing.T) validator.Validator {
	t.Helper()
	doc, err := libopenapi.NewDocument(adminhttp.OpenAPI())
	require.NoError(t, err)
	v, errs := validator.NewValidator(doc)
	require.Empty(t, errs)
	return v
}

// The document is valid OpenAPI 3.1 by the specification's own schema.
func TestDocumentIsValidOpenAPI31(t *testing.T) {
	t.Parallel()
	ok, errs := newValidator(t).ValidateDocument()
	for _, e := range errs {
		t.Errorf("%s: %s", e.Message, e.Reason)
		for _, f := range e.SchemaValidationErrors {
			t.Errorf("  %s", f.Reason)
		}
	}
	assert.True(t, ok)
}

// Real answers of the handler, for every documented status of every
// route, validate against the document as libopenapi reads it; the
// requests it accepts validate too. A status the document lists but the
// handler never gave fails the test, and so does one it gave but the
// document does not list.
func TestAnswersMatchDocument(t *testing.T) {
	t.Parallel()
	v := newValidator(t)
	store := &customerStore{Store: memstore.New(), customers: map[string]*apikey.Customer{}}
	m, err := apikey.New(store, apikey.Options{Prefix: "sk_live", DefaultPlan: "free", Plans: limits.Plans{
		"free": {limits.Quota("daily", 100, limits.Day)},
		"pro":  {limits.Quota("daily", 10_000, limits.Day), limits.Rate("per-second", 100, time.Second, 0)},
	}})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: peeker{}}})
	require.NoError(t, err)
	h, err := adminhttp.New(m, adminhttp.Options{Middleware: mw})
	require.NoError(t, err)
	bare, err := apikey.New(struct{ apikey.Store }{memstore.New()}, apikey.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { bare.Close(context.Background()) })
	noCustomers, err := adminhttp.New(bare, adminhttp.Options{})
	require.NoError(t, err)

	seen := map[string]bool{}
	do := func(h http.Handler, method, path, body string, wantStatus int, headers ...string) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req := httptest.NewRequest(method, "http://example.com"+path, rd)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		res := rec.Result()
		require.Equal(t, wantStatus, res.StatusCode, "%s %s: %s", method, path, rec.Body.String())
		// Validate a fresh copy of the request (the handler read its body).
		check := httptest.NewRequest(method, "http://example.com"+path, strings.NewReader(body))
		check.Header = req.Header.Clone()
		var ok bool
		var errs []*liberrors.ValidationError
		if wantStatus < 300 {
			ok, errs = v.ValidateHttpRequestResponse(check, res)
		} else {
			ok, errs = v.ValidateHttpResponse(check, res)
		}
		for _, e := range errs {
			t.Errorf("%s %s %d: %s: %s", method, path, wantStatus, e.Message, e.Reason)
			for _, f := range e.SchemaValidationErrors {
				t.Errorf("  %s", f.Reason)
			}
		}
		assert.True(t, ok, "%s %s %d", method, path, wantStatus)
		seen[method+" "+template(path)+" "+strconv.Itoa(wantStatus)] = true
	}

	do(h, "GET", "/admin/openapi.json", "", 200)
	do(h, "GET", "/admin/customers/bob", "", 200)
	do(h, "PUT", "/admin/customers/bob", `{"plan":"pro","scopes":["read"],"max_keys":3,"credits":10,"suspended":false,"metadata":{"crm":"42"},
		"limits":[{"name":"burst","kind":"rate","count":5,"period_seconds":1,"burst":10},{"name":"monthly","kind":"quota","count":9,"window":"month"},{"name":"extra","kind":"credits","count":3,"window":"day"}]}`, 200)
	do(h, "PUT", "/admin/customers/bob", `{"scopes":null,"limits":null}`, 200, "If-Match", `"1"`)
	do(h, "GET", "/admin/customers/bob", "", 200)
	do(h, "PUT", "/admin/customers/alice", `{"plan":null}`, 200)
	do(h, "GET", "/admin/customers?limit=1", "", 200)
	do(h, "GET", "/admin/customers", "", 200)
	do(h, "PUT", "/admin/customers/bob", `{"plan":"gold"}`, 400)
	do(h, "PUT", "/admin/customers/bob", `{"tier":"gold"}`, 400)
	do(h, "GET", "/admin/customers/a%01b", "", 400)
	do(h, "GET", "/admin/customers?limit=0", "", 400)
	do(h, "PUT", "/admin/customers/bob", `{"plan":"pro"}`, 403, "Sec-Fetch-Site", "cross-site")
	do(h, "PUT", "/admin/customers/bob", `{"plan":"pro"}`, 412, "If-Match", `"1"`)
	store.conflict.Store(true)
	do(h, "PUT", "/admin/customers/bob", `{"plan":"pro"}`, 409)
	store.conflict.Store(false)
	store.down.Store(true)
	do(h, "GET", "/admin/customers/bob", "", 503)
	do(h, "PUT", "/admin/customers/bob", `{"plan":"pro"}`, 503)
	do(h, "GET", "/admin/customers", "", 503)
	store.down.Store(false)
	do(noCustomers, "PUT", "/admin/customers/bob", `{"plan":"pro"}`, 501)
	do(noCustomers, "GET", "/admin/customers", "", 501)

	for _, op := range operations(t) {
		assert.True(t, seen[op], "%s documented but never answered", op)
	}
	for op := range seen {
		assert.Contains(t, operations(t), op, "answered but not documented")
	}
}

// operations lists "METHOD /template STATUS" for every documented answer.
func operations(t *testing.T) []string {
	doc, err := libopenapi.NewDocument(adminhttp.OpenAPI())
	require.NoError(t, err)
	model, err := doc.BuildV3Model()
	require.NoError(t, err)
	var out []string
	for path, item := range model.Model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			for status := range op.Responses.Codes.KeysFromOldest() {
				out = append(out, strings.ToUpper(method)+" "+path+" "+status)
			}
		}
	}
	slices.Sort(out)
	return out
}

var customerPath = regexp.MustCompile(`^/admin/customers/[^/?]+`)

// template is the documented path of a request path.
func template(path string) string {
	path, _, _ = strings.Cut(path, "?")
	return customerPath.ReplaceAllString(path, "/admin/customers/{id}")
}

// customerStore is a memstore that keeps customer records and fails on
// demand, as adminhttp's own tests use it.
type customerStore struct {
	*memstore.Store
	down, conflict atomic.Bool

	mu        sync.Mutex
	customers map[string]*apikey.Customer
}

var errDown = errors.New("connection refused")

func (s *customerStore) GetCustomer(ctx context.Context, id string) (*apikey.Customer, error) {
	if s.down.Load() {
		return nil, errDown
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.customers[id]
	if !ok {
		return nil, fmt.Errorf("customer %q: %w", id, apikey.ErrNotFound)
	}
	return c.Clone(), nil
}

func (s *customerStore) PutCustomer(ctx context.Context, c *apikey.Customer) error {
	if s.down.Load() {
		return errDown
	}
	if s.conflict.Load() {
		return apikey.ErrConflict
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.customers[c.ID]
	switch {
	case c.Revision == 0 && ok, c.Revision != 0 && ok && cur.Revision != c.Revision:
		return apikey.ErrConflict
	case c.Revision != 0 && !ok:
		return apikey.ErrNotFound
	}
	c.Revision++
	s.customers[c.ID] = c.Clone()
	return nil
}

func (s *customerStore) ListCustomers(ctx context.Context, after string, limit int) ([]*apikey.Customer, error) {
	if s.down.Load() {
		return nil, errDown
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*apikey.Customer
	for _, c := range s.customers {
		if c.ID > after {
			out = append(out, c.Clone())
		}
	}
	slices.SortFunc(out, func(a, b *apikey.Customer) int { return strings.Compare(a.ID, b.ID) })
	return out[:min(limit, len(out))], nil
}

// peeker allows everything and peeks every limit whole.
type peeker struct{}

func (peeker) Allow(context.Context, string, []limits.Limit, int64) (limits.Result, error) {
	return limits.Result{Allowed: true}, nil
}

func (peeker) Peek(_ context.Context, _ string, ls []limits.Limit) (limits.Result, error) {
	res := limits.Result{Allowed: true}
	for i, l := range ls {
		if i == 0 {
			res.Limit, res.Remaining = l, l.Count
		}
		res.States = append(res.States, limits.State{Remaining: l.Count, Reset: time.Hour})
	}
	return res, nil
}
