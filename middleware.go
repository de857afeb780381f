package apikey

import (
	"encoding/json"
	"fmt"
	"github.com/gokeys/apikey/limits"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names and defaults used by the middleware.
const (
	// headerAuthorization carries "Bearer <token>" (RFC 6750 §2.1).
	headerAuthorization = "Authorization"
	// headerAPIKey carries the bare token.
	headerAPIKey = "X-API-Key"
	// defaultQueryParam is the query parameter read by querySource when
	// query keys are enabled.
	defaultQueryParam = "api_key"
	// defaultRealm is the realm of WWW-Authenticate challenges.
	defaultRealm = "api"
	// defaultRetryAfter is the Retry-After of 503 responses.
	defaultRetryAfter = 5 * time.Second
	// defaultLimiterTimeout is the deadline of a Limiter call.
	defaultLimiterTimeout = 50 * time.Millisecond
	// defaultBreakerFailures is how many consecutive Limiter failures
	// open the circuit breaker.
	defaultBreakerFailures = 5
	// defaultBreakerCoolDown is how long the circuit stays open before a
	// probe.
	defaultBreakerCoolDown = 5 * time.Second
)

// MiddlewareOptions configures a Middleware. The zero value is secure: keys
// from "Authorization: Bearer" and X-API-Key only, every request needs a
// valid key, and no rate limits.
type MiddlewareOptions struct {
	// Sources are tried in order; a request that carries keys from two of
	// them is refused with 400. Default: HeaderSource("Authorization")
	// (Bearer), then HeaderSource("X-API-Key").
	Sources []KeySource
	// AllowQuery also reads the key from the query parameter QueryParam,
	// after Sources. It is off by default because URLs leak into logs,
	// proxies and Referer headers (RFC 6750 §2.3, RFC 9700 §4.3.2).
	AllowQuery bool
	// QueryParam names the query parameter; "api_key" when empty.
	QueryParam string
	// Realm is the realm of WWW-Authenticate challenges; "api" when
	// empty. It must not contain '"', '\' or line breaks.
	Realm string
	// Optional lets requests with no key at all through, anonymously
	// (FromContext returns nil). A present but invalid key is still
	// refused.
	Optional bool
	// HideCredentials removes the key (its header, query parameter or
	// cookie) from the request the next handler sees, so that downstream
	// logging and proxying cannot leak it.
	HideCredentials bool
	// RetryAfter is the Retry-After of 503 answers; 5 seconds when
	// 0; negative is refused. It is sent in whole seconds, rounded up.
	RetryAfter time.Duration
	// ErrorHandler, if set, writes every refusal instead of the built-in
	// problem+json responses. It receives a sentinel error (or a
	// *ScopeError or *RateLimitError, which match theirs with errors.Is),
	// never a dependency's error. A panic in it is recovered and the
	// built-in response is written instead.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)

	// Limiter, if set, is what Limit spends with: each request that
	// passes Limit takes Cost from the limits of its customer (see
	// Limit), counted per customer (Key.Customer).
	// Nil means no limits: Limit passes every request.
	Limiter limits.Limiter
	// Cost gives what a request costs: default 1 for every request,
	// including HEAD and OPTIONS. Return 0 for a request that spends
	// nothing (it is passed on without RateLimit headers); a negative cost
	// is a bug answered with 500. A cost above a limit's capacity is
	// refused with 429 without consuming anything.
	Cost func(*http.Request, *Key) int64
	// LimiterTimeout bounds every Limiter call: 50 milliseconds when
	// 0, no deadline but the request's when negative. A call that runs
	// out of time is a failure of the Limiter. A Limiter that never waits
	// says so with a method InProcess() bool returning true (memlimit
	// does); it gets no deadline, which would only cost allocations. The
	// Limiter's client must honour the deadline: with go-redis, set
	// ContextTimeoutEnabled.
	LimiterTimeout time.Duration
	// FallbackLimiter, if set, decides in place of a failing Limiter (for
	// example a memlimit.Limiter: limits then hold per process). Without
	// it, a failing Limiter's requests are answered 503 with Retry-After,
	// never 429, unless FailOpen is set.
	FallbackLimiter limits.Limiter
	// FailOpen lets the requests of a failing Limiter (and of a failing
	// FallbackLimiter) through, unlimited, instead of answering 503.
	FailOpen bool
	// LimiterFailed, if set, is called each time the Limiter's failure is
	// handled (by FallbackLimiter, FailOpen or a 503), with the backend's
	// error (or ErrCircuitOpen's, wrapping ErrUnavailable, while the
	// circuit breaker is open).
	LimiterFailed func(r *http.Request, err error)
	// BreakerFailures is how many consecutive Limiter failures open the
	// circuit breaker: 5 when 0, never when negative.
	// While open, failures are handled at once, without calling
	// the Limiter; after BreakerCoolDown one request probes it, and
	// closes the circuit if it answers.
	BreakerFailures int
	// BreakerCoolDown is how long the circuit stays open before a probe:
	// 5 seconds when 0. The Manager's clock (Options.Now)
	// measures it.
	BreakerCoolDown time.Duration
	// LegacyRateLimitHeaders also sends X-RateLimit-Limit, -Remaining and
	// -Reset (seconds until reset; absent for credits never refilled) of
	// the tightest limit beside the standard RateLimit headers.
	LegacyRateLimitHeaders bool
	// ReportedCosts lets a handler behind Limit report what its request
	// cost once the work is done, with ReportCost: the request then costs
	// that instead of Cost, the difference taken from (or refunded to) its
	// customer's quotas and credits; rates decide admission only. A
	// request is admitted only while its limits hold its Cost, so a
	// balance falls below zero only by what admitted requests cost beyond
	// it: with requests admitted concurrently, never below minus the sum
	// of their costs. The next request is then refused until the balance
	// recovers: a quota's debt ends with its window, a debt of credits
	// stays until they are refilled or granted. It needs a Limiter, and a
	// FallbackLimiter if set, that implements limits.Debiter.
	ReportedCosts bool
	// CostHeader, if set, names a response header or trailer in which a
	// handler behind Limit reports its request's cost (a decimal integer),
	// as with ReportCost; Limit reads it and removes it from the response.
	// A header is settled before the response header is written, a
	// trailer after the response. Setting it implies ReportedCosts.
	CostHeader string

	// Logger, if set, logs failures of dependencies and recovered panics.
	Logger *slog.Logger
}

// Middleware authenticates requests with a Manager. Build it with
// NewMiddleware (the zero value is not usable); it is safe for concurrent
// use.
type Middleware struct {
	m          *Manager
	sources    []KeySource
	optional   bool
	hide       bool
	retryAfter string
	onError    func(http.ResponseWriter, *http.Request, error)
	log        *slog.Logger

	rl rateLimits

	challenge string // `Bearer realm="..."`
	bodies    map[int][]byte
	planBody  []byte // 403 for ErrUnknownPlan

	hdrMissing, hdrBadRequest, hdrInvalid, hdrRetryAfter []string
	hdrProblem, hdrNoStore, hdrNoSniff                   []string
}

// NewMiddleware returns a Middleware verifying keys with m. A nil m, a nil
// KeySource, a bad realm, a negative RetryAfter or a negative
// BreakerCoolDown give an error wrapping ErrInvalidOptions.
func NewMiddleware(m *Manager, opts MiddlewareOptions) (*Middleware, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: nil Manager", ErrInvalidOptions)
	}
	realm := opts.Realm
	if realm == "" {
		realm = defaultRealm
	}
	if strings.ContainsAny(realm, "\"\\\r\n") {
		return nil, fmt.Errorf("%w: realm must not contain quotes, backslashes or line breaks", ErrInvalidOptions)
	}
	if opts.RetryAfter < 0 {
		return nil, fmt.Errorf("%w: negative RetryAfter", ErrInvalidOptions)
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = defaultRetryAfter
	}
	sources := append([]KeySource(nil), opts.Sources...)
	if len(sources) == 0 {
		sources = []KeySource{bearerSource, HeaderSource(headerAPIKey)}
	}
	if opts.AllowQuery {
		sources = append(sources, querySource(opts.QueryParam))
	}
	for _, s := range sources {
		if s == nil {
			return nil, fmt.Errorf("%w: nil KeySource", ErrInvalidOptions)
		}
	}
	mw := &Middleware{
		m: m, sources: sources, optional: opts.Optional, hide: opts.HideCredentials,
		retryAfter: seconds(opts.RetryAfter), onError: opts.ErrorHandler, log: opts.Logger,
		challenge: `Bearer realm="` + realm + `"`, bodies: map[int][]byte{},
	}
	mw.hdrMissing = []string{mw.challenge}
	mw.hdrBadRequest = []string{mw.challenge + `, error="invalid_request"`}
	mw.hdrInvalid = []string{mw.challenge + `, error="invalid_token"`}
	mw.hdrRetryAfter = []string{mw.retryAfter}
	mw.hdrProblem = []string{"application/problem+json"}
	mw.hdrNoStore = []string{"no-store"}
	mw.hdrNoSniff = []string{"nosniff"}
	if err := mw.rl.init(m, &opts); err != nil {
		return nil, err
	}
	for _, status := range []int{400, 401, 403, 429, 500, 503} {
		b, err := json.Marshal(problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: problemDetail(status)})
		if err != nil {
			return nil, err
		}
		mw.bodies[status] = append(b, '\n')
	}
	b, err := json.Marshal(problem{Type: "about:blank", Title: http.StatusText(403), Status: 403, Detail: "The API key's plan is not configured on this server."})
	if err != nil {
		return nil, err
	}
	mw.planBody = append(b, '\n')
	return mw, nil
}

// Authenticate extracts the request's key and verifies it, without writing
// a response and without applying rate limits. It returns the key or an
// error matching one of ErrMissingKey, ErrBadRequest, ErrMalformed,
// ErrInvalid, ErrExpired, ErrRevoked, ErrDisabled, ErrPaused, ErrSuspended
// or ErrUnavailable.
func (mw *Middleware) Authenticate(r *http.Request) (*Key, error) {
	k, _, _, err := mw.authenticate(r)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// authenticate is Authenticate, also returning the time of the
// verification, the credential's strip function and, on a refusal for
// the key's state (its secret verified), the key.
func (mw *Middleware) authenticate(r *http.Request) (k *Key, now time.Time, strip func(*http.Request), err error) {
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
			return nil, now, nil, ErrBadRequest
		}
		if t != "" {
			if token != "" {
				return nil, now, nil, ErrBadRequest // two credentials at once
			}
			token, strip = t, s
		}
	}
	if token == "" {
		return nil, now, nil, ErrMissingKey
	}
	k, now, err = mw.m.verifyKey(r.Context(), token)
	if err != nil {
		return k, now, nil, err
	}
	return k, now, strip, nil
}

// Handler returns next wrapped with authentication. The verified key
// reaches next through the request's context (FromContext). With usage
// recording (see Options.UsageInterval), Handler counts the request of a
// key whose secret verified, and the stages after it settle its outcome;
// Authenticate counts nothing. A request is
// never passed on when verification failed, including when a dependency
// or a hook failed or panicked. Handler spends no limits: put Limit after
// the checks that may refuse the request (RequireScopes, your own), so
// that only authorized requests spend:
//
//	mux.Handle("POST /data", mw.Handler(mw.RequireScopes("write")(mw.Limit(h))))
func (mw *Middleware) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k, now, strip, err := mw.authenticate(r)
		if err != nil {
			if k != nil { // a refusal for the key's state
				mw.m.meter.refuse(k, now)
			}
			if mw.optional && err == ErrMissingKey {
				next.ServeHTTP(w, r)
				return
			}
			mw.Error(w, r, err)
			return
		}
		if k.RotatedTo != "" { // in its grace period: Verify refused it otherwise
			// Deprecation (RFC 9745) is when the key was rotated, the same
			// on every response; set before any later middleware (a rate
			// limit's 429 included) answers.
			h := w.Header()
			if !k.RotatedAt.IsZero() {
				h.Set("Deprecation", "@"+strconv.FormatInt(k.RotatedAt.Unix(), 10))
			}
			h.Set("Sunset", k.ExpiresAt.UTC().Format(http.TimeFormat))
		}
		c := mw.m.meter.acquire(k, now) // counted allowed; later stages may move it
		if c != nil {
			c.allowed.Add(1)
			defer c.release()
		}
		r = r.WithContext(&keyContext{Context: r.Context(), k: k, c: c})
		if mw.hide && strip != nil {
			r.Header = r.Header.Clone()
			strip(r)
		}
		next.ServeHTTP(w, r)
	})
}
