package apikey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Header names and defaults used by the middleware.
const (
	// HeaderAuthorization carries "Bearer <token>" (RFC 6750 §2.1).
	HeaderAuthorization = "Authorization"
	// HeaderAPIKey carries the bare token.
	HeaderAPIKey = "X-API-Key"
	// DefaultQueryParam is the query parameter read by QuerySource when
	// query keys are enabled.
	DefaultQueryParam = "api_key"
	// DefaultRealm is the realm of WWW-Authenticate challenges.
	DefaultRealm = "api"
	// DefaultRetryAfter is the Retry-After of 503 responses.
	DefaultRetryAfter = 5 * time.Second
)

// A KeySource extracts a token from a request. It returns the token and a
// function that removes it from a request (used by
// MiddlewareOptions.HideCredentials; nil if it cannot), or "" when the
// request carries no token for this source. A request that carries a token
// in a malformed way (two of them, an empty one, one longer than
// MaxTokenLength) gives an error wrapping ErrBadRequest.
type KeySource func(r *http.Request) (token string, strip func(*http.Request), err error)

// BearerSource reads "Authorization: Bearer <token>", the scheme matched
// case-insensitively (RFC 6750 §2.1). Other schemes count as no token.
func BearerSource() KeySource { return bearerSource }

func bearerSource(r *http.Request) (string, func(*http.Request), error) {
	vs := r.Header.Values(HeaderAuthorization)
	if len(vs) == 0 {
		return "", nil, nil
	}
	if len(vs) > 1 {
		return "", nil, ErrBadRequest
	}
	scheme, token, _ := strings.Cut(strings.TrimLeft(vs[0], " "), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", nil, nil
	}
	return checkToken(strings.Trim(token, " "), stripAuthorization)
}

func stripAuthorization(r *http.Request) { r.Header.Del(HeaderAuthorization) }

// HeaderSource reads the bare token from the named header, e.g.
// HeaderAPIKey.
func HeaderSource(name string) KeySource {
	name = http.CanonicalHeaderKey(name)
	strip := func(r *http.Request) { r.Header.Del(name) }
	return func(r *http.Request) (string, func(*http.Request), error) {
		vs := r.Header.Values(name)
		switch len(vs) {
		case 0:
			return "", nil, nil
		case 1:
			return checkToken(strings.Trim(vs[0], " "), strip)
		}
		return "", nil, ErrBadRequest
	}
}

// QuerySource reads the token from the named query parameter
// (DefaultQueryParam when empty). Keys in URLs end up in access logs,
// proxies and Referer headers (RFC 6750 §2.3, RFC 9700 §4.3.2), so the
// middleware only uses it when MiddlewareOptions.AllowQuery is set.
func QuerySource(param string) KeySource {
	if param == "" {
		param = DefaultQueryParam
	}
	strip := func(r *http.Request) {
		q := r.URL.Query()
		q.Del(param)
		u := *r.URL
		u.RawQuery = q.Encode()
		r.URL = &u
		r.RequestURI = u.RequestURI()
	}
	return func(r *http.Request) (string, func(*http.Request), error) {
		if r.URL == nil || !strings.Contains(r.URL.RawQuery, param) {
			return "", nil, nil
		}
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return "", nil, ErrBadRequest
		}
		vs, ok := q[param]
		switch {
		case !ok:
			return "", nil, nil
		case len(vs) > 1:
			return "", nil, ErrBadRequest
		}
		return checkToken(vs[0], strip)
	}
}

// CookieSource reads the token from the named cookie.
func CookieSource(name string) KeySource {
	return func(r *http.Request) (string, func(*http.Request), error) {
		c, err := r.Cookie(name)
		if err != nil {
			return "", nil, nil
		}
		return checkToken(c.Value, nil)
	}
}

func checkToken(token string, strip func(*http.Request)) (string, func(*http.Request), error) {
	if token == "" || len(token) > MaxTokenLength {
		return "", nil, ErrBadRequest
	}
	return token, strip, nil
}

// LimiterFailurePolicy says what the middleware does when the Limiter's
// backend fails. It is never answered with 429.
type LimiterFailurePolicy uint8

const (
	// FailClosed answers 503 with Retry-After. It is the zero value.
	FailClosed LimiterFailurePolicy = iota
	// FailOpen lets the request through unlimited.
	FailOpen
	// FailFallback asks MiddlewareOptions.FallbackLimiter instead (for
	// example a memlimit.Limiter: limits then hold per process).
	FailFallback
)

// String names the policy.
func (p LimiterFailurePolicy) String() string {
	switch p {
	case FailOpen:
		return "fail-open"
	case FailFallback:
		return "fallback"
	}
	return "fail-closed"
}

// MiddlewareOptions configures a Middleware. The zero value is secure: keys
// from "Authorization: Bearer" and X-API-Key only, every request needs a
// valid key, and no rate limits.
type MiddlewareOptions struct {
	// Sources are tried in order; a request that carries keys from two of
	// them is refused with 400. Default: BearerSource, then
	// HeaderSource(HeaderAPIKey).
	Sources []KeySource
	// AllowQuery adds QuerySource(QueryParam) after Sources. It is off by
	// default because URLs leak into logs, proxies and Referer headers.
	AllowQuery bool
	// QueryParam names the query parameter; DefaultQueryParam when empty.
	QueryParam string
	// Realm is the realm of WWW-Authenticate challenges; DefaultRealm when
	// empty. It must not contain '"' or '\'.
	Realm string
	// Optional lets requests with no key at all through, anonymously
	// (FromContext returns nil). A present but invalid key is still
	// refused.
	Optional bool
	// HideCredentials removes the key (its header or query parameter) from
	// the request the next handler sees, so that downstream logging and
	// proxying cannot leak it.
	HideCredentials bool
	// RetryAfter is the Retry-After of 503 answers; DefaultRetryAfter when
	// 0. It is sent in whole seconds, rounded up.
	RetryAfter time.Duration
	// ErrorHandler, if set, writes every refusal instead of the built-in
	// problem+json responses. It receives a sentinel error (or a
	// *ScopeError or *RateLimitError, which match theirs with errors.Is),
	// never a dependency's error. A panic in it is recovered and the
	// built-in response is written instead.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)

	// Limiter, if set, applies each key's limits after authentication;
	// nil means no rate limits.
	Limiter Limiter
	// Plans gives each key's limits by its plan (see Plans.For).
	Plans Plans
	// LimitsFor, if set, gives a key's limits instead of Plans, e.g. for a
	// per-key override.
	LimitsFor func(*Key) []Limit
	// OnLimiterFailure is what happens when Limiter fails: FailClosed
	// (default), FailOpen or FailFallback.
	OnLimiterFailure LimiterFailurePolicy
	// FallbackLimiter serves FailFallback; required with it.
	FallbackLimiter Limiter
	// LimiterFailed, if set, is called each time the failure policy is
	// used, with the backend's error.
	LimiterFailed func(r *http.Request, err error, policy LimiterFailurePolicy)
	// LegacyRateLimitHeaders also sends X-RateLimit-Limit, -Remaining and
	// -Reset (seconds until reset) beside the standard RateLimit headers.
	LegacyRateLimitHeaders bool

	// Logger, if set, logs failures of dependencies and recovered panics.
	Logger *slog.Logger
}

// Middleware authenticates requests with a Manager. Build it with
// NewMiddleware; it is safe for concurrent use.
type Middleware struct {
	m          *Manager
	sources    []KeySource
	optional   bool
	hide       bool
	retryAfter string
	onError    func(http.ResponseWriter, *http.Request, error)
	log        *slog.Logger

	limiter   Limiter
	limitsFor func(*Key) []Limit
	onFailure LimiterFailurePolicy
	fallback  Limiter
	failed    func(*http.Request, error, LimiterFailurePolicy)
	legacy    bool

	challenge string // `Bearer realm="..."`
	bodies    map[int][]byte

	hdrMissing, hdrBadRequest, hdrInvalid, hdrRetryAfter []string
	hdrProblem, hdrNoStore, hdrNoSniff                   []string
}

// NewMiddleware returns a Middleware verifying keys with m. A nil m, a bad
// realm, invalid plans or FailFallback without a FallbackLimiter give an
// error wrapping ErrInvalidOptions.
func NewMiddleware(m *Manager, opts MiddlewareOptions) (*Middleware, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: nil Manager", ErrInvalidOptions)
	}
	realm := opts.Realm
	if realm == "" {
		realm = DefaultRealm
	}
	if strings.ContainsAny(realm, "\"\\\r\n") {
		return nil, fmt.Errorf("%w: realm must not contain quotes, backslashes or line breaks", ErrInvalidOptions)
	}
	if opts.RetryAfter < 0 {
		return nil, fmt.Errorf("%w: negative RetryAfter", ErrInvalidOptions)
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = DefaultRetryAfter
	}
	if err := opts.Plans.Validate(); err != nil {
		return nil, err
	}
	if opts.OnLimiterFailure == FailFallback && opts.FallbackLimiter == nil {
		return nil, fmt.Errorf("%w: FailFallback needs a FallbackLimiter", ErrInvalidOptions)
	}
	sources := append([]KeySource(nil), opts.Sources...)
	if len(sources) == 0 {
		sources = []KeySource{BearerSource(), HeaderSource(HeaderAPIKey)}
	}
	if opts.AllowQuery {
		sources = append(sources, QuerySource(opts.QueryParam))
	}
	for _, s := range sources {
		if s == nil {
			return nil, fmt.Errorf("%w: nil KeySource", ErrInvalidOptions)
		}
	}
	mw := &Middleware{
		m: m, sources: sources, optional: opts.Optional, hide: opts.HideCredentials,
		retryAfter: seconds(opts.RetryAfter), onError: opts.ErrorHandler, log: opts.Logger,
		limiter: opts.Limiter, limitsFor: opts.LimitsFor, onFailure: opts.OnLimiterFailure,
		fallback: opts.FallbackLimiter, failed: opts.LimiterFailed, legacy: opts.LegacyRateLimitHeaders,
		challenge: `Bearer realm="` + realm + `"`, bodies: map[int][]byte{},
	}
	mw.hdrMissing = []string{mw.challenge}
	mw.hdrBadRequest = []string{mw.challenge + `, error="invalid_request"`}
	mw.hdrInvalid = []string{mw.challenge + `, error="invalid_token"`}
	mw.hdrRetryAfter = []string{mw.retryAfter}
	mw.hdrProblem = []string{"application/problem+json"}
	mw.hdrNoStore = []string{"no-store"}
	mw.hdrNoSniff = []string{"nosniff"}
	if mw.limitsFor == nil && opts.Plans != nil {
		mw.limitsFor = opts.Plans.For
	}
	for _, status := range []int{400, 401, 403, 429, 503} {
		b, err := json.Marshal(problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: problemDetail(status)})
		if err != nil {
			return nil, err
		}
		mw.bodies[status] = append(b, '\n')
	}
	return mw, nil
}

type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// problemDetail is the fixed text of a built-in response: one per status,
// so that every 401 for a bad key is byte-identical.
func problemDetail(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "The request carries its credentials in a malformed way."
	case http.StatusUnauthorized:
		return "A valid API key is required."
	case http.StatusForbidden:
		return "The API key lacks a scope this resource requires."
	case http.StatusTooManyRequests:
		return "The API key's rate limit is exceeded."
	}
	return "Authentication is temporarily unavailable."
}

type contextKey struct{}

// FromContext returns the key verified for the request whose context is
// ctx, or nil when there is none (no middleware, or an anonymous request
// in Optional mode). The key must not be modified.
func FromContext(ctx context.Context) *Key {
	k, _ := ctx.Value(contextKey{}).(*Key)
	return k
}

// NewContext returns ctx carrying k, as the middleware does; for tests and
// for authentication schemes of your own.
func NewContext(ctx context.Context, k *Key) context.Context {
	return context.WithValue(ctx, contextKey{}, k)
}

// Authenticate extracts the request's key and verifies it, without writing
// a response and without applying rate limits. It returns the key or an
// error matching one of ErrMissingKey, ErrBadRequest, ErrMalformed,
// ErrInvalid, ErrExpired, ErrRevoked or ErrUnavailable.
func (mw *Middleware) Authenticate(r *http.Request) (*Key, error) {
	k, _, err := mw.authenticate(r)
	return k, err
}

func (mw *Middleware) authenticate(r *http.Request) (k *Key, strip func(*http.Request), err error) {
	defer func() {
		if p := recover(); p != nil {
			mw.logError(r.Context(), "apikey: panic during authentication", panicError{p})
			k, strip, err = nil, nil, ErrUnavailable
		}
	}()
	token := ""
	for _, src := range mw.sources {
		t, s, err := src(r)
		if err != nil {
			return nil, nil, ErrBadRequest
		}
		if t != "" {
			if token != "" {
				return nil, nil, ErrBadRequest // two credentials at once
			}
			token, strip = t, s
		}
	}
	if token == "" {
		return nil, nil, ErrMissingKey
	}
	k, err = mw.m.Verify(r.Context(), token)
	if err != nil {
		return nil, nil, err
	}
	return k, strip, nil
}

// Handler returns next wrapped with authentication and, when a Limiter is
// set, rate limiting. The verified key reaches next through the request's
// context (FromContext). A request is never passed on when verification
// failed, including when a dependency or a hook failed or panicked.
func (mw *Middleware) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k, strip, err := mw.authenticate(r)
		if err != nil {
			if mw.optional && err == ErrMissingKey {
				next.ServeHTTP(w, r)
				return
			}
			mw.Error(w, r, err)
			return
		}
		if mw.limiter != nil && !mw.limit(w, r, k) {
			return
		}
		if k.RotatedTo != "" { // in its grace period: Verify refused it otherwise
			now := mw.m.now()
			h := w.Header()
			h.Set("Deprecation", "@"+strconv.FormatInt(now.Unix(), 10))
			h.Set("Sunset", k.ExpiresAt.UTC().Format(http.TimeFormat))
		}
		r = r.WithContext(NewContext(r.Context(), k))
		if mw.hide && strip != nil {
			r.Header = r.Header.Clone()
			strip(r)
		}
		next.ServeHTTP(w, r)
	})
}

// ScopeError is the refusal of a key that lacks a required scope. It
// matches ErrInsufficientScope with errors.Is.
type ScopeError struct {
	// Scopes are the scopes the route requires.
	Scopes []string
	// Any reports whether one of Scopes suffices (otherwise all are needed).
	Any bool
}

// Error returns ErrInsufficientScope's message.
func (e *ScopeError) Error() string { return ErrInsufficientScope.Error() }

// Is makes errors.Is(e, ErrInsufficientScope) true.
func (e *ScopeError) Is(target error) bool { return target == ErrInsufficientScope }

// RequireScopes returns a middleware that lets a request through only if
// its key (set by Handler) has every one of scopes, else 403 with
// error="insufficient_scope". Scopes are compared exactly: there are no
// wildcards or hierarchies. A request without a key gets 401.
func (mw *Middleware) RequireScopes(scopes ...string) func(http.Handler) http.Handler {
	return mw.requireScopes(&ScopeError{Scopes: scopes})
}

// RequireAnyScope is RequireScopes satisfied by any one of scopes.
func (mw *Middleware) RequireAnyScope(scopes ...string) func(http.Handler) http.Handler {
	return mw.requireScopes(&ScopeError{Scopes: scopes, Any: true})
}

func (mw *Middleware) requireScopes(want *ScopeError) func(http.Handler) http.Handler {
	if err := validScopes(want.Scopes); err != nil || len(want.Scopes) == 0 {
		panic(fmt.Sprintf("apikey: RequireScopes needs valid scopes (%v)", err))
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			k := FromContext(r.Context())
			if k == nil {
				mw.Error(w, r, ErrMissingKey)
				return
			}
			if !hasScopes(k, want) {
				mw.Error(w, r, want)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func hasScopes(k *Key, want *ScopeError) bool {
	for _, s := range want.Scopes {
		if k.HasScope(s) == want.Any {
			return want.Any
		}
	}
	return !want.Any
}

// RateLimitError is the refusal of a request over its key's limit. It
// matches ErrRateLimited with errors.Is.
type RateLimitError struct {
	// Result is the limiter's answer.
	Result LimitResult
}

// Error returns ErrRateLimited's message.
func (e *RateLimitError) Error() string { return ErrRateLimited.Error() }

// Is makes errors.Is(e, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

// limit applies k's limits and writes the RateLimit headers. It reports
// whether the request may go on; if not, it has answered it.
func (mw *Middleware) limit(w http.ResponseWriter, r *http.Request, k *Key) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			mw.logError(r.Context(), "apikey: panic in rate limiting", panicError{p})
			mw.Error(w, r, ErrUnavailable)
			ok = false
		}
	}()
	if mw.limitsFor == nil {
		return true
	}
	limits := mw.limitsFor(k)
	if len(limits) == 0 {
		return true
	}
	res, err := mw.limiter.Allow(r.Context(), k.ID, limits, 1)
	if err != nil {
		if mw.failed != nil {
			mw.failed(r, err, mw.onFailure)
		}
		mw.logError(r.Context(), "apikey: limiter failed, policy "+mw.onFailure.String(), err)
		switch mw.onFailure {
		case FailOpen:
			return true
		case FailFallback:
			res, err = mw.fallback.Allow(r.Context(), k.ID, limits, 1)
		}
		if err != nil {
			mw.Error(w, r, ErrUnavailable)
			return false
		}
	}
	mw.rateLimitHeaders(w.Header(), limits, res)
	if !res.Allowed {
		mw.Error(w, r, &RateLimitError{Result: res})
		return false
	}
	return true
}

// rateLimitHeaders writes RateLimit-Policy and RateLimit as in the IETF
// httpapi rate-limit headers draft, and optionally the X-RateLimit-* trio.
func (mw *Middleware) rateLimitHeaders(h http.Header, limits []Limit, res LimitResult) {
	var b strings.Builder
	for i, l := range limits {
		if i > 0 {
			b.WriteString(", ")
		}
		q, w := l.Count, l.window()
		fmt.Fprintf(&b, "%q;q=%d;w=%d", l.Name, q, w)
	}
	h.Set("RateLimit-Policy", b.String())
	reset := seconds(res.Reset)
	h.Set("RateLimit", fmt.Sprintf("%q;r=%d;t=%s", res.Limit.Name, res.Remaining, reset))
	if mw.legacy {
		h.Set("X-RateLimit-Limit", strconv.FormatInt(res.Limit.Count, 10))
		h.Set("X-RateLimit-Remaining", strconv.FormatInt(res.Remaining, 10))
		h.Set("X-RateLimit-Reset", reset)
	}
}

// window is the length in seconds of l's window for RateLimit-Policy
// (a month counts 30 days).
func (l Limit) window() int64 {
	if l.Kind == KindRate {
		return max(1, int64((l.Period+time.Second-1)/time.Second))
	}
	switch l.Window {
	case Minute:
		return 60
	case Hour:
		return 3600
	case Day:
		return 86400
	}
	return 30 * 86400
}

// seconds renders d in whole seconds, rounded up, at least 1.
func seconds(d time.Duration) string {
	return strconv.FormatInt(max(1, int64((d+time.Second-1)/time.Second)), 10)
}

// Error writes the response for a refusal: the ErrorHandler's if set,
// otherwise a problem+json body with fixed text and the status and
// WWW-Authenticate challenge that err's sentinel calls for. It never echoes
// the key or err's message.
func (mw *Middleware) Error(w http.ResponseWriter, r *http.Request, err error) {
	s := sentinel(err)
	if s == nil || s == ErrUnavailable || errors.Is(err, ErrUnavailable) {
		if err != ErrUnavailable {
			mw.logError(r.Context(), "apikey: dependency failed", err)
		}
		s = ErrUnavailable
	}
	if mw.onError != nil && mw.custom(w, r, s) {
		return
	}
	// Fixed header values are shared slices (len == cap, never appended
	// to in place), so a refusal costs no header allocation.
	h := w.Header()
	status := http.StatusUnauthorized
	switch s {
	case ErrMissingKey:
		h["Www-Authenticate"] = mw.hdrMissing
	case ErrBadRequest:
		status = http.StatusBadRequest
		h["Www-Authenticate"] = mw.hdrBadRequest
	case ErrUnavailable:
		status = http.StatusServiceUnavailable
		h["Retry-After"] = mw.hdrRetryAfter
	case ErrMalformed, ErrInvalid, ErrExpired, ErrRevoked: // one identical answer
		h["Www-Authenticate"] = mw.hdrInvalid
	case ErrInsufficientScope:
		status = http.StatusForbidden
		h.Set("WWW-Authenticate", mw.challenge+`, error="insufficient_scope"`)
	default:
		switch e := s.(type) {
		case *ScopeError:
			status = http.StatusForbidden
			h.Set("WWW-Authenticate", mw.challenge+`, error="insufficient_scope", scope="`+strings.Join(e.Scopes, " ")+`"`)
		case *RateLimitError:
			status = http.StatusTooManyRequests
			h.Set("Retry-After", seconds(e.Result.RetryAfter))
		}
	}
	h["Content-Type"] = mw.hdrProblem
	h["Cache-Control"] = mw.hdrNoStore
	h["X-Content-Type-Options"] = mw.hdrNoSniff
	w.WriteHeader(status)
	w.Write(mw.bodies[status])
}

// custom runs the ErrorHandler, reporting false if it panicked.
func (mw *Middleware) custom(w http.ResponseWriter, r *http.Request, err error) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			mw.logError(r.Context(), "apikey: ErrorHandler panicked", panicError{p})
			ok = false
		}
	}()
	mw.onError(w, r, err)
	return true
}

// sentinel returns the outcome err stands for: a *ScopeError or
// *RateLimitError as it is, otherwise the bare sentinel, so that handlers
// never see a dependency's message.
func sentinel(err error) error {
	switch err {
	case ErrMissingKey, ErrBadRequest, ErrMalformed, ErrInvalid, ErrExpired, ErrRevoked, ErrUnavailable:
		return err
	}
	var se *ScopeError
	var rl *RateLimitError
	switch {
	case errors.As(err, &se):
		return se
	case errors.As(err, &rl):
		return rl
	}
	for _, s := range []error{ErrMissingKey, ErrBadRequest, ErrMalformed, ErrInvalid, ErrExpired, ErrRevoked, ErrInsufficientScope, ErrRateLimited, ErrUnavailable} {
		if errors.Is(err, s) {
			return s
		}
	}
	return nil
}

// logError logs a failure, unless the client went away: a cancelled
// request is not a dependency's fault.
func (mw *Middleware) logError(ctx context.Context, msg string, err error) {
	if mw.log != nil && ctx.Err() == nil {
		mw.log.LogAttrs(ctx, slog.LevelError, msg, slog.String("error", err.Error()))
	}
}
