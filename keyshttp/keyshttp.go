// Package keyshttp serves the management API of apikey over HTTP. A
// signed-in user creates, lists, renames, rotates, pauses, resumes and
// revokes their own keys and reads what they consumed. GET /openapi.json
// describes it all. What a
// user may do is decided by a selfservice.Policy, the same one the keys
// page (keyspage) uses.
//
//	policy, err := selfservice.New(manager, selfservice.Options{Scopes: []string{"read", "write"}})
//	if err != nil { ... }
//	h, err := keyshttp.New(manager, keyshttp.Options{
//		// Who is asking: your session or SSO check. An error gives 401.
//		Owner:  func(r *http.Request) (string, error) { return currentUser(r) },
//		Policy: policy,
//	})
//	if err != nil { ... }
//	mux.Handle("/api-keys", h)
//	mux.Handle("/api-keys/", h)
//	mux.Handle("GET /openapi.json", h)
//	mux.Handle("GET /usage", h)
//	// or under a prefix: mux.Handle("/v1/", http.StripPrefix("/v1", h))
//
// The routes below are relative to where the handler is mounted.
//
//	POST   /api-keys                    create; 201 with the token, its only appearance
//	GET    /api-keys                    the caller's keys, newest first: ?limit=, ?after=, ?usable=true
//	GET    /api-keys/{id}               one key
//	PATCH  /api-keys/{id}               change name, scopes, expires_at, allowed_ips
//	POST   /api-keys/{id}/rotate        {"grace_seconds": n}: 200 with the new token
//	POST   /api-keys/{id}/pause         the owner pauses the key (reversible)
//	POST   /api-keys/{id}/resume        lift the owner's pause, never the operator's Disabled
//	POST   /api-keys/{id}/disable       deprecated: pause
//	POST   /api-keys/{id}/enable        deprecated: resume
//	POST   /api-keys/{id}/revoke-chain  revoke the key and its whole rotation chain; 204
//	DELETE /api-keys/{id}               revoke; 204
//	GET    /api-keys/{id}/usage         what the key consumed: ?from=, ?to=, ?step=
//	GET    /usage                       what all the caller's keys consumed, summed: ?from=, ?to=, ?step=
//	GET    /openapi.json                the OpenAPI 3.1 document of these routes, for the mount point
//
// A request member the user may not set (plan, credits, limits, metadata,
// disabled, anything unknown) is refused with 403. Its "field" member
// names it, and this check comes before anything else is looked at. A
// creation beyond the customer's key cap is 409. IP ranges outside the
// customer's (allowed_ips, CIDR strings) are 403. A change to a revoked or
// expired key is 409. While the customer is suspended, only listing,
// revoking and reading usage are allowed (403). A browser may send a
// request that changes keys from another origin. That is cross-site
// request forgery, which an Owner hook reading a cookie or HTTP Basic
// credentials would otherwise let through. http.CrossOriginProtection
// refuses such a request with 403. Clients that are not browsers send
// neither Sec-Fetch-Site nor Origin and are not affected.
//
// The usage routes answer with this JSON shape.
//
//	{"from", "to", "step", "series": [{"start", "allowed", "limited", "refused", "cost"}, ...]}
//
// The series holds one bucket per hour, day or month (step, day when
// absent), in UTC, empty buckets included. It runs from from to to. The
// from parameter is RFC 3339, rounded down to the start of its bucket.
// When absent, it is 24 hours, 30 days or 12 months before to, by step.
// The to parameter is RFC 3339 and exclusive, rounded up to a bucket's
// end. When absent, it is now, so the current bucket is included. Counts
// are those of apikey.Options.UsageInterval. They are the requests
// allowed, limited (429) and refused (403 or 401 of a verified key), and
// the cost spent. They lag by up to one UsageInterval. More than 1,000
// buckets, or a to not after from, is a 400 naming the field. A Manager
// whose store keeps no usage answers 501. A suspended customer may read
// his usage.
//
// A caller only ever sees their own keys. Another owner's key is 404, like
// an unknown one. No response ever carries a digest, and a token appears
// only in the answers to create and rotate. Bad input is a 400
// application/problem+json response whose "field" member names the
// offending field. A failing store is 503 with Retry-After.
package keyshttp

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/selfservice"
)

// Defaults of Options.
const (
	defaultMaxBodyBytes = 64 << 10
	defaultRetryAfter   = 5 * time.Second
)

// Options configures a Handler. Only Owner is required. Every other zero
// value is a safe default.
type Options struct {
	// Owner returns the owner whose keys the request manages (the signed-in
	// user, a tenant, ...). An error or an empty owner answers 401. It is a
	// plain function type, so the same function fits keyspage's Options.
	Owner func(*http.Request) (string, error)

	// Policy decides what the owner may do. Pass the same one to keyspage.
	// When nil, it is selfservice.New(m, selfservice.Options{}), which offers
	// no scopes beyond a customer's ceiling and keys that live at most 366
	// days. It must act through the Handler's Manager.
	Policy *selfservice.Policy

	// Challenge, if set, is the WWW-Authenticate header of a 401, e.g.
	// `Basic realm="api-keys"`. None is sent when empty.
	Challenge string

	// MaxBodyBytes is the largest request body, 64 KiB when 0. A larger
	// body is a 400.
	MaxBodyBytes int64
	// RetryAfter is the Retry-After of a 503, 5 seconds when 0.
	RetryAfter time.Duration

	// TrustedOrigins are origins, besides the handler's own, whose
	// browsers may change keys (for example a console served from another
	// origin). See http.CrossOriginProtection.AddTrustedOrigin. None when
	// empty.
	TrustedOrigins []string

	// Document describes the API in GET /openapi.json, with its security
	// scheme and license.
	Document Document

	// Logger, if set, logs store failures (never a token). Nil logs
	// nothing.
	Logger *slog.Logger
}

// Handler serves the management API. Build it with New. It is safe for
// concurrent use.
type Handler struct {
	m          *apikey.Manager
	p          *selfservice.Policy
	owner      func(*http.Request) (string, error)
	challenge  string
	maxBody    int64
	retryAfter string
	log        *slog.Logger
	cop        *http.CrossOriginProtection
	doc        *document
}

// New returns a Handler over m. It returns an error wrapping
// apikey.ErrInvalidOptions for a nil Manager, a nil Owner, a Policy over
// another Manager, negative sizes or durations, a malformed trusted
// origin or an invalid Document.
func New(m *apikey.Manager, opts Options) (*Handler, error) {
	switch {
	case m == nil:
		return nil, fmt.Errorf("%w: keyshttp: nil Manager", apikey.ErrInvalidOptions)
	case opts.Owner == nil:
		return nil, fmt.Errorf("%w: keyshttp: Options.Owner is required", apikey.ErrInvalidOptions)
	case opts.Policy != nil && opts.Policy.Manager() != m:
		return nil, fmt.Errorf("%w: keyshttp: the Policy acts through another Manager", apikey.ErrInvalidOptions)
	case opts.MaxBodyBytes < 0, opts.RetryAfter < 0:
		return nil, fmt.Errorf("%w: keyshttp: negative MaxBodyBytes or RetryAfter", apikey.ErrInvalidOptions)
	case strings.ContainsAny(opts.Challenge, "\r\n"):
		return nil, fmt.Errorf("%w: keyshttp: Challenge has a line break", apikey.ErrInvalidOptions)
	}
	h := &Handler{
		m: m, p: opts.Policy, owner: opts.Owner, challenge: opts.Challenge,
		maxBody: opts.MaxBodyBytes, log: opts.Logger,
	}
	if h.p == nil {
		var err error
		if h.p, err = selfservice.New(m, selfservice.Options{}); err != nil {
			return nil, err
		}
	}
	h.cop = http.NewCrossOriginProtection()
	for _, o := range opts.TrustedOrigins {
		if err := h.cop.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("%w: keyshttp: %w", apikey.ErrInvalidOptions, err)
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
	var err error
	if h.doc, err = newDocument(opts.Document, opts.Challenge, h.p); err != nil {
		return nil, err
	}
	return h, nil
}

// ServeHTTP routes a request to its operation. Paths are taken relative to
// the mount point. Mount the Handler at "/" or strip the prefix.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path == "/openapi.json" {
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		h.openAPI(w, r)
		return
	}
	if err := h.cop.Check(r); err != nil { // only unsafe methods are checked
		writeProblem(w, http.StatusForbidden, "The request was sent from another origin, so it was refused.", "")
		return
	}
	if path == "/usage" {
		if allow(w, r, http.MethodGet, http.MethodHead) {
			h.withOwner(w, r, func(w http.ResponseWriter, r *http.Request, owner string) { h.usage(w, r, owner, "") })
		}
		return
	}
	rest, ok := strings.CutPrefix(path, "/api-keys")
	if !ok || (rest != "" && rest[0] != '/') {
		writeProblem(w, http.StatusNotFound, "No such resource.", "")
		return
	}
	if rest == "" || rest == "/" {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.withOwner(w, r, h.list)
		case http.MethodPost:
			h.withOwner(w, r, h.create)
		default:
			allow(w, r, http.MethodGet, http.MethodHead, http.MethodPost)
		}
		return
	}
	id, action, _ := strings.Cut(rest[1:], "/")
	if !validID(id) {
		writeProblem(w, http.StatusNotFound, "No such key.", "")
		return
	}
	var op func(http.ResponseWriter, *http.Request, string, string)
	switch action {
	case "":
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			op = h.get
		case http.MethodPatch:
			op = h.patch
		case http.MethodDelete:
			op = h.revoke
		default:
			allow(w, r, http.MethodGet, http.MethodHead, http.MethodPatch, http.MethodDelete)
			return
		}
	case "rotate":
		op = h.rotate
	case "pause", "disable":
		op = h.pause
	case "resume", "enable":
		op = h.resume
	case "revoke-chain":
		op = h.revokeChain
	case "usage":
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		op = h.usage
	default:
		writeProblem(w, http.StatusNotFound, "No such resource.", "")
		return
	}
	if action != "" && action != "usage" && !allow(w, r, http.MethodPost) {
		return
	}
	h.withOwner(w, r, func(w http.ResponseWriter, r *http.Request, owner string) { op(w, r, owner, id) })
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

// validID reports whether id can be a key id; anything else is answered
// like an unknown key without asking the store.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// withOwner runs fn with the caller's owner, or answers 401.
func (h *Handler) withOwner(w http.ResponseWriter, r *http.Request, fn func(http.ResponseWriter, *http.Request, string)) {
	owner, err := h.owner(r)
	if err != nil || owner == "" {
		if h.challenge != "" {
			w.Header().Set("WWW-Authenticate", h.challenge)
		}
		writeProblem(w, http.StatusUnauthorized, "Valid credentials are required to manage API keys.", "")
		return
	}
	fn(w, r, owner)
}
