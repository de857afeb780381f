// Package adminhttp serves the operator's API over HTTP. The API manages
// the customer records of apikey (plan, scope ceiling, key cap, grants,
// credits, suspension). They decide what every key of a customer may do.
//
// The Handler checks no credentials of its own. Whoever reaches it can
// give any customer any plan. So mount it only behind the operator's
// authentication, never where customers can reach it.
//
//	h, err := adminhttp.New(manager, adminhttp.Options{Middleware: mw})
//	if err != nil { ... }
//	mux.Handle("/admin/", requireOperator(h)) // your operator auth
//
// The routes below are relative to where the handler is mounted.
//
//	GET /admin/customers        the stored customers by id: ?limit= and ?after=, "next" cursor
//	GET /admin/customers/{id}   one customer, with the balance of his limits
//	PUT /admin/customers/{id}   merge plan, scopes, max_keys, limits, credits,
//	                            suspended, metadata and allowed_ips (CIDR
//	                            ranges) into the record; 200 with it
//	GET /admin/openapi.json     the OpenAPI 3.1 document of these routes
//
// A change reaches every verification of the Manager at once and the
// other instances through the Manager's Notifier (see
// apikey.Manager.SetCustomer). A customer without a stored record has the
// zero record (revision 0). That record has the default plan, no scope
// ceiling and no key cap, and is not suspended.
//
// Bad input is a 400 application/problem+json answer whose "field" member
// names the offending field, an unknown plan included. A failing store is
// 503 with Retry-After. A PUT that a browser sent from another origin is
// refused with 403 by http.CrossOriginProtection, so that an operator's
// browser session cannot be used by another site.
package adminhttp

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gokeys/apikey"
)

// Defaults of Options.
const (
	defaultMaxBodyBytes = 64 << 10
	defaultRetryAfter   = 5 * time.Second
)

// Options configures a Handler. The zero value is valid.
type Options struct {
	// Middleware, if set, answers the balance of a customer's limits in
	// GET /admin/customers/{id} (see apikey.Middleware.Balance), which
	// needs its Limiter to implement limits.Peeker. Without it, or
	// when the Limiter cannot peek or fails, "balance" is null.
	Middleware *apikey.Middleware

	// MaxBodyBytes is the largest request body, 64 KiB when 0. A larger
	// body is a 400.
	MaxBodyBytes int64
	// RetryAfter is the Retry-After of a 503, 5 seconds when 0.
	RetryAfter time.Duration

	// TrustedOrigins are origins, besides the handler's own, whose
	// browsers may change customers (for example an operator console
	// served from another origin). See
	// http.CrossOriginProtection.AddTrustedOrigin. None when empty.
	TrustedOrigins []string

	// Logger, if set, logs every change of a customer (its id and the
	// fields sent) at Info and store failures at Error. Nil logs nothing.
	Logger *slog.Logger
}

// Handler serves the operator's API. Build it with New. It is safe for
// concurrent use.
type Handler struct {
	m          *apikey.Manager
	mw         *apikey.Middleware
	maxBody    int64
	retryAfter string
	log        *slog.Logger
	cop        *http.CrossOriginProtection
}

// New returns a Handler over m. It returns an error wrapping
// apikey.ErrInvalidOptions for a nil Manager, a negative MaxBodyBytes or
// RetryAfter, or a malformed trusted origin. The Manager's store must
// keep customers (apikey.CustomerStore). Otherwise reads answer the zero
// record and changes answer 501.
func New(m *apikey.Manager, opts Options) (*Handler, error) {
	switch {
	case m == nil:
		return nil, fmt.Errorf("%w: adminhttp: nil Manager", apikey.ErrInvalidOptions)
	case opts.MaxBodyBytes < 0, opts.RetryAfter < 0:
		return nil, fmt.Errorf("%w: adminhttp: negative MaxBodyBytes or RetryAfter", apikey.ErrInvalidOptions)
	}
	h := &Handler{m: m, mw: opts.Middleware, maxBody: opts.MaxBodyBytes, log: opts.Logger}
	h.cop = http.NewCrossOriginProtection()
	for _, o := range opts.TrustedOrigins {
		if err := h.cop.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("%w: adminhttp: %w", apikey.ErrInvalidOptions, err)
		}
	}
	if h.maxBody == 0 {
		h.maxBody = defaultMaxBodyBytes
	}
	ra := opts.RetryAfter
	if ra == 0 {
		ra = defaultRetryAfter
	}
	h.retryAfter = strconv.FormatInt(int64((ra+time.Second-1)/time.Second), 10)
	return h, nil
}

// ServeHTTP routes a request to its operation. Paths are taken relative to
// the mount point. Mount the Handler at "/admin/" or strip a longer
// prefix down to it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.EscapedPath()
	if path == "/admin/openapi.json" {
		if allow(w, r, http.MethodGet, http.MethodHead) {
			h.openAPI(w, r)
		}
		return
	}
	if err := h.cop.Check(r); err != nil { // only unsafe methods are checked
		writeProblem(w, http.StatusForbidden, "The request was sent from another origin, so it was refused.", "")
		return
	}
	rest, ok := strings.CutPrefix(path, "/admin/customers")
	switch {
	case ok && (rest == "" || rest == "/"):
		if allow(w, r, http.MethodGet, http.MethodHead) {
			h.list(w, r)
		}
		return
	case !ok || rest[0] != '/' || strings.Contains(rest[1:], "/"):
		writeProblem(w, http.StatusNotFound, "No such resource.", "")
		return
	}
	id, err := customerID(rest[1:])
	if err != nil {
		h.fail(w, r, err)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.get(w, r, id)
	case http.MethodPut:
		h.put(w, r, id)
	default:
		allow(w, r, http.MethodGet, http.MethodHead, http.MethodPut)
	}
}

// allow reports whether r's method is one of methods, answering 405
// otherwise.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeProblem(w, http.StatusMethodNotAllowed, "The method is not allowed on this resource.", "")
	return false
}
