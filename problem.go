package apikey

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// defaultRealm is the realm of WWW-Authenticate challenges.
const defaultRealm = "api"

// defaultRetryAfter is the Retry-After of 503 responses.
const defaultRetryAfter = 5 * time.Second

// problem is the body of a built-in answer (RFC 9457).
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// problems writes the answers to refused requests: the ErrorHandler's if
// set, otherwise problem+json bodies with fixed text, each outcome's
// status and challenge as the table of outcomes gives them. It never
// echoes the key or an error's message. It also logs the failures of
// dependencies. Its fields are set once by newProblems.
type problems struct {
	challenge string // `Bearer realm="..."`
	onError   func(http.ResponseWriter, *http.Request, error)
	log       *slog.Logger

	// The bodies and WWW-Authenticate values of each outcome, and the
	// fixed header values: shared slices (len == cap, never appended to
	// in place), so that a refusal costs no header allocation.
	bodies                             [numOutcomes][]byte
	auth                               [numOutcomes][]string
	retryAfter                         []string
	hdrProblem, hdrNoStore, hdrNoSniff []string
}

// newProblems returns the writer of refusals for realm ("api" when empty;
// no '"', '\' or line breaks) with retryAfter as the Retry-After of 503
// answers (5 seconds when 0, negative refused). Its errors wrap
// ErrInvalidOptions.
func newProblems(realm string, retryAfter time.Duration, onError func(http.ResponseWriter, *http.Request, error), log *slog.Logger) (*problems, error) {
	if realm == "" {
		realm = defaultRealm
	}
	if strings.ContainsAny(realm, "\"\\\r\n") {
		return nil, fmt.Errorf("%w: realm must not contain quotes, backslashes or line breaks", ErrInvalidOptions)
	}
	switch {
	case retryAfter < 0:
		return nil, fmt.Errorf("%w: negative RetryAfter", ErrInvalidOptions)
	case retryAfter == 0:
		retryAfter = defaultRetryAfter
	}
	p := &problems{
		challenge: `Bearer realm="` + realm + `"`, onError: onError, log: log,
		retryAfter: []string{seconds(retryAfter)},
		hdrProblem: []string{"application/problem+json"}, hdrNoStore: []string{"no-store"}, hdrNoSniff: []string{"nosniff"},
	}
	for o := outcomeMalformed; o < numOutcomes; o++ {
		row := &outcomes[o]
		b, err := json.Marshal(problem{Type: "about:blank", Title: http.StatusText(row.status), Status: row.status, Detail: row.detail})
		if err != nil {
			return nil, err
		}
		p.bodies[o] = append(b, '\n')
		switch row.challenge {
		case noChallenge:
		case bareChallenge:
			p.auth[o] = []string{p.challenge}
		default:
			p.auth[o] = []string{p.challenge + `, error="` + row.challenge.param() + `"`}
		}
	}
	return p, nil
}

// write writes the answer to a request refused with err.
func (p *problems) write(w http.ResponseWriter, r *http.Request, err error) {
	o, s := sentinel(err)
	if o == outcomeOK { // not a refusal: a bug of the caller
		o, s = outcomeUnavailable, ErrUnavailable
	}
	switch {
	case o == outcomeUnavailable && err != ErrUnavailable:
		p.logError(r.Context(), "apikey: dependency failed", err)
	case o == outcomeMisconfigured:
		p.logError(r.Context(), "apikey: misconfigured", err)
	}
	if p.onError != nil && p.custom(w, r, s) {
		return
	}
	h := w.Header()
	if a := p.auth[o]; a != nil {
		h["Www-Authenticate"] = a
	}
	switch e := s.(type) {
	case *ScopeError:
		h.Set("WWW-Authenticate", p.challenge+`, error="insufficient_scope", scope="`+strings.Join(e.Scopes, " ")+`"`)
	case *RateLimitError:
		if e.Result.RetryAfter > 0 { // else only credits never refilled deny
			h.Set("Retry-After", seconds(e.Result.RetryAfter))
		}
	}
	if o == outcomeUnavailable {
		h["Retry-After"] = p.retryAfter
	}
	p.body(w, o)
}

// internal answers 500 for a bug in the configuration, and logs it. It
// does not call the ErrorHandler.
func (p *problems) internal(w http.ResponseWriter, r *http.Request, err error) {
	p.logError(r.Context(), "apikey: rate limiting misconfigured", err)
	p.body(w, outcomeMisconfigured)
}

// body writes the status and the problem+json body of o.
func (p *problems) body(w http.ResponseWriter, o outcome) {
	h := w.Header()
	h["Content-Type"] = p.hdrProblem
	h["Cache-Control"] = p.hdrNoStore
	h["X-Content-Type-Options"] = p.hdrNoSniff
	w.WriteHeader(outcomes[o].status)
	w.Write(p.bodies[o])
}

// custom runs the ErrorHandler, reporting false if it panicked.
func (p *problems) custom(w http.ResponseWriter, r *http.Request, err error) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			p.logError(r.Context(), "apikey: ErrorHandler panicked", panicError{v})
			ok = false
		}
	}()
	p.onError(w, r, err)
	return true
}

// logError logs a failure, unless the client went away: a cancelled
// request is not a dependency's fault.
func (p *problems) logError(ctx context.Context, msg string, err error) {
	if p.log != nil && ctx.Err() == nil {
		p.log.LogAttrs(ctx, slog.LevelError, msg, slog.String("error", err.Error()))
	}
}
