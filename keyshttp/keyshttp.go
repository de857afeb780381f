// Package keyshttp serves the management API of apikey over HTTP: a
// signed-in user creates, lists, updates, rotates, disables, enables and
// revokes their own keys, and GET /openapi.json describes it all.
//
//	h, err := keyshttp.New(manager, keyshttp.Options{
//		// Who is asking: your session or SSO check. An error gives 401.
//		Owner: func(r *http.Request) (string, error) { return currentUser(r) },
//	})
//	if err != nil { ... }
//	mux.Handle("/api-keys", h)
//	mux.Handle("/api-keys/", h)
//	mux.Handle("GET /openapi.json", h)
//	// or under a prefix: mux.Handle("/v1/", http.StripPrefix("/v1", h))
//
// Routes, relative to where the handler is mounted:
//
//	POST   /api-keys               create; 201 with the token, its only appearance
//	GET    /api-keys               the caller's keys: ?limit= and ?after=, "next" cursor
//	GET    /api-keys/{id}          one key
//	PATCH  /api-keys/{id}          change name, scopes, plan, metadata, expires_at, credits
//	POST   /api-keys/{id}/rotate   {"grace_seconds": n}: 200 with the new token
//	POST   /api-keys/{id}/disable  suspend (reversible)
//	POST   /api-keys/{id}/enable   lift a suspension
//	DELETE /api-keys/{id}          revoke; 204
//	GET    /openapi.json           the OpenAPI 3.1 document of these routes
//
// A request that changes keys and that a browser sent from another origin
// (cross-site request forgery, which an Owner hook reading a cookie or
// HTTP Basic credentials would otherwise let through) is refused with 403
// by http.CrossOriginProtection; clients that are not browsers send
// neither Sec-Fetch-Site nor Origin and are not affected.
//
// A caller only ever sees their own keys: another owner's key is 404, like
// an unknown one. No response ever carries a digest, and a token appears
// only in the answers to create and rotate. Bad input is a 400
// application/problem+json response whose "field" member names the
// offending field; a failing store is 503 with Retry-After.
package keyshttp

import (
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gokeys/apikey"
)

// Defaults of Options.
const (
	defaultMaxBodyBytes = 64 << 10
	defaultMaxGrace     = 30 * 24 * time.Hour
	defaultRetryAfter   = 5 * time.Second
)

// Options configures a Handler. Only Owner is required; every other zero
// value is a safe default.
type Options struct {
	// Owner returns the owner whose keys the request manages (the signed-in
	// user, a tenant, ...). An error or an empty owner answers 401. It is a
	// plain function type, so the same function fits keyspage's Options.
	Owner func(*http.Request) (string, error)

	// Challenge, if set, is the WWW-Authenticate header of a 401, e.g.
	// `Basic realm="api-keys"`. None is sent when empty.
	Challenge string

	// Plans, if set, lists the plan names a key may have; any other plan is
	// a 400 naming "plan". Empty accepts any plan the Manager accepts.
	Plans []string
	// DefaultPlan is the plan of a key created without one; none when
	// empty.
	DefaultPlan string
	// DefaultTTL is the lifetime of a key created without expires_at,
	// ttl_seconds or expires_in_days; when 0 the Manager's DefaultTTL
	// applies.
	DefaultTTL time.Duration
	// MaxGrace is the longest grace period a rotation may ask for: 30
	// days when 0.
	MaxGrace time.Duration

	// AllowScope, if set, reports whether the caller may grant scope to a
	// key (on create and update); a refused scope is a 403 naming
	// "scopes". Nil allows every valid scope.
	AllowScope func(r *http.Request, owner, scope string) bool
	// AllowPlan, if set, reports whether the caller may choose plan (on
	// create and update); a refused plan is a 403 naming "plan". Nil
	// allows every valid plan.
	AllowPlan func(r *http.Request, owner, plan string) bool
	// MaxKeys, if set, returns how many usable keys (not revoked, not
	// expired) owner may hold; creating one more answers 409. A result
	// of 0 or less means no limit. Concurrent creations through one
	// Handler are serialized per owner; through several instances the
	// limit may be overshot by the number of instances.
	MaxKeys func(r *http.Request, owner string) int

	// MaxBodyBytes is the largest request body: 64 KiB when 0. A larger
	// body is a 400.
	MaxBodyBytes int64
	// RetryAfter is the Retry-After of a 503: 5 seconds when 0.
	RetryAfter time.Duration

	// TrustedOrigins are origins, besides the handler's own, whose
	// browsers may change keys (for example a console served from another
	// origin); see http.CrossOriginProtection.AddTrustedOrigin. None when
	// empty.
	TrustedOrigins []string

	// Logger, if set, logs store failures (never a token). Nil logs
	// nothing.
	Logger *slog.Logger
}

// Handler serves the management API. Build it with New; it is safe for
// concurrent use.
type Handler struct {
	m          *apikey.Manager
	owner      func(*http.Request) (string, error)
	challenge  string
	plans      map[string]bool
	plan       string
	ttl        time.Duration
	maxGrace   time.Duration
	allowScope func(*http.Request, string, string) bool
	allowPlan  func(*http.Request, string, string) bool
	maxKeys    func(*http.Request, string) int
	maxBody    int64
	retryAfter string
	log        *slog.Logger

	cop   *http.CrossOriginProtection
	seed  maphash.Seed
	locks [64]sync.Mutex // serialize creations per owner when maxKeys is set
}

// New returns a Handler over m. It returns an error wrapping
// apikey.ErrInvalidOptions for a nil Manager, a nil Owner, negative sizes
// or durations, a DefaultPlan outside Plans or a malformed trusted origin.
func New(m *apikey.Manager, opts Options) (*Handler, error) {
	switch {
	case m == nil:
		return nil, fmt.Errorf("%w: keyshttp: nil Manager", apikey.ErrInvalidOptions)
	case opts.Owner == nil:
		return nil, fmt.Errorf("%w: keyshttp: Options.Owner is required", apikey.ErrInvalidOptions)
	case opts.MaxBodyBytes < 0, opts.DefaultTTL < 0, opts.MaxGrace < 0, opts.RetryAfter < 0:
		return nil, fmt.Errorf("%w: keyshttp: negative MaxBodyBytes, DefaultTTL, MaxGrace or RetryAfter", apikey.ErrInvalidOptions)
	case strings.ContainsAny(opts.Challenge, "\r\n"):
		return nil, fmt.Errorf("%w: keyshttp: Challenge has a line break", apikey.ErrInvalidOptions)
	}
	h := &Handler{
		m: m, owner: opts.Owner, challenge: opts.Challenge, plan: opts.DefaultPlan, ttl: opts.DefaultTTL,
		maxGrace: opts.MaxGrace, allowScope: opts.AllowScope, allowPlan: opts.AllowPlan,
		maxKeys: opts.MaxKeys, maxBody: opts.MaxBodyBytes, log: opts.Logger, seed: maphash.MakeSeed(),
	}
	if len(opts.Plans) > 0 {
		h.plans = make(map[string]bool, len(opts.Plans))
		for _, p := range opts.Plans {
			if f := checkPlan(p); f != nil {
				return nil, fmt.Errorf("%w: keyshttp: Plans: %s", apikey.ErrInvalidOptions, f.detail)
			}
			h.plans[p] = true
		}
		if h.plan != "" && !h.plans[h.plan] {
			return nil, fmt.Errorf("%w: keyshttp: DefaultPlan %q is not in Plans", apikey.ErrInvalidOptions, h.plan)
		}
	}
	h.cop = http.NewCrossOriginProtection()
	for _, o := range opts.TrustedOrigins {
		if err := h.cop.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("%w: keyshttp: %w", apikey.ErrInvalidOptions, err)
		}
	}
	if h.maxGrace == 0 {
		h.maxGrace = defaultMaxGrace
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
// the mount point: mount the Handler at "/" or strip the prefix.
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
	switch action {
	case "":
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.withKey(w, r, id, h.get)
		case http.MethodPatch:
			h.withKey(w, r, id, h.patch)
		case http.MethodDelete:
			h.withKey(w, r, id, h.revoke)
		default:
			allow(w, r, http.MethodGet, http.MethodHead, http.MethodPatch, http.MethodDelete)
		}
	case "rotate", "disable", "enable":
		if !allow(w, r, http.MethodPost) {
			return
		}
		switch action {
		case "rotate":
			h.withKey(w, r, id, h.rotate)
		case "disable":
			h.withKey(w, r, id, h.disable)
		default:
			h.withKey(w, r, id, h.enable)
		}
	default:
		writeProblem(w, http.StatusNotFound, "No such resource.", "")
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

// withKey runs fn with the caller's key id, or answers 401 or 404. The key
// is read once to check its owner, which never changes.
func (h *Handler) withKey(w http.ResponseWriter, r *http.Request, id string, fn func(http.ResponseWriter, *http.Request, string, *apikey.Key)) {
	h.withOwner(w, r, func(w http.ResponseWriter, r *http.Request, owner string) {
		k, err := h.m.Get(r.Context(), id)
		if err == nil && k.Owner != owner {
			err = apikey.ErrNotFound
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		fn(w, r, owner, k)
	})
}

// errNotOwned is returned from inside an update of a key whose owner is
// not the caller; it is answered like an unknown key.
var errNotOwned = errors.New("keyshttp: key of another owner")
