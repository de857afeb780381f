package apikey

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gokeys/apikey/ipallow"
)

// MiddlewareOptions configures a Middleware. The zero value is secure: keys
// from "Authorization: Bearer" and X-API-Key only, every request needs a
// valid key, and no rate limits.
type MiddlewareOptions struct {
	// Sources are tried in order. A request that carries keys from two of
	// them is refused with 400. The default is
	// HeaderSource("Authorization") (Bearer), then
	// HeaderSource("X-API-Key").
	Sources []KeySource
	// AllowQuery also reads the key from the query parameter QueryParam,
	// after Sources. It is off by default because URLs leak into logs,
	// proxies and Referer headers (RFC 6750 §2.3, RFC 9700 §4.3.2).
	AllowQuery bool
	// QueryParam names the query parameter: "api_key" when empty.
	QueryParam string
	// Realm is the realm of WWW-Authenticate challenges, "api" when
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
	// RetryAfter is the Retry-After of 503 answers, 5 seconds when 0.
	// A negative one is refused. It is sent in whole seconds, rounded up.
	RetryAfter time.Duration
	// ErrorHandler, if set, writes every refusal instead of the built-in
	// problem+json responses. It receives a sentinel error (or a
	// *ScopeError or *RateLimitError, which match theirs with errors.Is),
	// never a dependency's error. A panic in it is recovered and the
	// built-in response is written instead.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)

	// Limits configures what Limit, Spend, Debit and Balance spend with:
	// the Limiter, its failure policy and the RateLimit headers. Its zero
	// value has no Limiter: Limit passes every request.
	Limits LimitOptions
	// Cost gives what a request costs in Limit: 1 when nil, for every
	// method, HEAD and OPTIONS included. Return 0 for a request that
	// spends nothing (it is passed on without RateLimit headers). A
	// negative cost is a bug answered with 500. A cost above a limit's
	// capacity is refused with 429 without consuming anything.
	Cost func(*http.Request, *Key) int64
	// CostHeader, if set, names a response header or trailer in which a
	// handler behind Limit reports its request's cost (a decimal integer),
	// as with ReportCost. Limit reads it and removes it from the response.
	// A header is settled before the response header is written, a
	// trailer after the response. Setting it implies
	// LimitOptions.ReportedCosts.
	CostHeader string

	// TrustedProxies, if set, are the proxies whose forwarding header
	// names the client of a request, for keys restricted to IP ranges
	// (see ipallow.Proxies). Nil: the client is the request's RemoteAddr,
	// and forwarding headers are ignored.
	TrustedProxies *ipallow.Proxies

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
	proxies    *ipallow.Proxies
	p          *problems
	rl         limitStage
	cost       func(*http.Request, *Key) int64
	costHeader string // canonical; "" for none
}

// NewMiddleware returns a Middleware verifying keys with m. A nil m, a nil
// KeySource, a bad realm, a negative RetryAfter or BreakerCoolDown, or
// ReportedCosts without a limits.Debiter give an error wrapping
// ErrInvalidOptions.
func NewMiddleware(m *Manager, opts MiddlewareOptions) (*Middleware, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: nil Manager", ErrInvalidOptions)
	}
	p, err := newProblems(opts.Realm, opts.RetryAfter, opts.ErrorHandler, opts.Logger)
	if err != nil {
		return nil, err
	}
	sources := append([]KeySource(nil), opts.Sources...)
	if len(sources) == 0 {
		sources = []KeySource{defaultSource} // bearerSource, then HeaderSource(headerAPIKey)
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
		proxies: opts.TrustedProxies, p: p, cost: opts.Cost,
	}
	if opts.CostHeader != "" {
		mw.costHeader = http.CanonicalHeaderKey(opts.CostHeader)
		opts.Limits.ReportedCosts = true
	}
	if err := mw.rl.init(m, opts.Limits, p); err != nil {
		return nil, err
	}
	return mw, nil
}

// Error writes the response for a refusal: the ErrorHandler's if set,
// otherwise a problem+json body with fixed text and the status and
// WWW-Authenticate challenge that err's sentinel calls for. It never echoes
// the key or err's message.
func (mw *Middleware) Error(w http.ResponseWriter, r *http.Request, err error) {
	mw.p.write(w, r, err)
}

// Authenticate extracts the request's key and verifies it, without writing
// a response and without applying rate limits. It returns the key or an
// error matching one of ErrMissingKey, ErrBadRequest, ErrMalformed,
// ErrInvalid, ErrExpired, ErrRevoked, ErrDisabled, ErrPaused, ErrSuspended,
// ErrIPNotAllowed or ErrUnavailable.
func (mw *Middleware) Authenticate(r *http.Request) (*Key, error) {
	var v verification
	mw.authenticate(r, &v)
	if v.err != nil {
		return nil, v.err
	}
	return v.key, nil
}

// authenticate is Authenticate, writing the whole verification into v
// (its key set, with an error, only on a refusal for the key's state, its
// secret verified), and returning the credential's strip function.
func (mw *Middleware) authenticate(r *http.Request, v *verification) (strip func(*http.Request)) {
	defer func() {
		if p := recover(); p != nil {
			mw.p.logError(r.Context(), "apikey: panic during authentication", panicError{p})
			*v, strip = verification{err: ErrUnavailable}, nil
		}
	}()
	token := ""
	for _, src := range mw.sources {
		t, s, err := src(r)
		if err != nil {
			*v = verification{err: ErrBadRequest}
			return nil
		}
		if t != "" {
			if token != "" {
				*v = verification{err: ErrBadRequest} // two credentials at once
				return nil
			}
			token, strip = t, s
		}
	}
	if token == "" {
		*v = verification{err: ErrMissingKey}
		return nil
	}
	mw.m.verifyRequest(r.Context(), token, &origin{r: r, proxies: mw.proxies}, v)
	if v.err != nil {
		return nil
	}
	return strip
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
		var v verification
		strip := mw.authenticate(r, &v)
		k, now, err := v.key, v.now, v.err
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
		var c *meterCounter
		if mw.m.meter != nil {
			c = mw.m.meter.acquire(k, now) // counted allowed; later stages may move it
		}
		if c != nil {
			c.allowed.Add(1)
			defer c.release()
		}
		if mw.rl.limiter != nil { // room for Limit's RateLimit header in the same allocation
			r = r.WithContext(&limitContext{keyContext: keyContext{Context: r.Context(), k: k, c: c}, now: now, cust: v.cust})
		} else {
			r = r.WithContext(&keyContext{Context: r.Context(), k: k, c: c})
		}
		if mw.hide && strip != nil {
			r.Header = r.Header.Clone()
			strip(r)
		}
		next.ServeHTTP(w, r)
	})
}
