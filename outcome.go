package apikey

import (
	"errors"
	"net/http"

	"github.com/gokeys/apikey/limits"
)

// outcome is how a verification or a request ends. Each outcome has one
// row in outcomes: the sentinel error it stands for, its name in logs and
// metrics, and the middleware's answer. Everything that names, counts or
// answers an outcome reads it there.
type outcome uint8

// The outcomes, in the order of the table.
const (
	outcomeOK outcome = iota
	outcomeMalformed
	outcomeInvalid
	outcomeExpired
	outcomeRevoked
	outcomeDisabled
	outcomePaused
	outcomeSuspended
	outcomeIPNotAllowed
	outcomeUnavailable
	outcomeMissingKey
	outcomeBadRequest
	outcomeInsufficientScope
	outcomeRateLimited
	outcomeUnknownPlan
	outcomeMisconfigured
	numOutcomes
)

// challenge is the WWW-Authenticate challenge of an answer (RFC 6750 §3).
type challenge uint8

const (
	noChallenge       challenge = iota // no WWW-Authenticate
	bareChallenge                      // Bearer realm="..."
	invalidRequest                     // with error="invalid_request"
	invalidToken                       // with error="invalid_token"
	insufficientScope                  // with error="insufficient_scope"
)

// param is the error parameter of the challenge, "" for none.
func (c challenge) param() string {
	switch c {
	case invalidRequest:
		return "invalid_request"
	case invalidToken:
		return "invalid_token"
	case insufficientScope:
		return "insufficient_scope"
	}
	return ""
}

// outcomeRow is one row of the table of outcomes.
type outcomeRow struct {
	err       error     // the sentinel; nil for outcomeOK
	name      string    // in logs and metrics
	status    int       // the middleware's answer
	challenge challenge // its WWW-Authenticate
	detail    string    // its problem+json detail, fixed text
}

// Fixed texts that several outcomes share, so that their answers are
// byte-identical: a client cannot tell an unknown key from a revoked one.
const (
	detailKeyRequired = "A valid API key is required."
	detailUnavailable = "Authentication is temporarily unavailable."
)

// outcomes is the table of outcomes, indexed by outcome. A key refused for
// its state (expired, revoked, disabled, paused, suspended) is answered
// exactly like an unknown one.
var outcomes = [numOutcomes]outcomeRow{
	outcomeOK:        {nil, "ok", http.StatusOK, noChallenge, ""},
	outcomeMalformed: {ErrMalformed, "malformed", http.StatusUnauthorized, invalidToken, detailKeyRequired},
	outcomeInvalid:   {ErrInvalid, "invalid", http.StatusUnauthorized, invalidToken, detailKeyRequired},
	outcomeExpired:   {ErrExpired, "expired", http.StatusUnauthorized, invalidToken, detailKeyRequired},
	outcomeRevoked:   {ErrRevoked, "revoked", http.StatusUnauthorized, invalidToken, detailKeyRequired},
	outcomeDisabled:  {ErrDisabled, "disabled", http.StatusUnauthorized, invalidToken, detailKeyRequired},
	outcomePaused:    {ErrPaused, "paused", http.StatusUnauthorized, invalidToken, detailKeyRequired},
	outcomeSuspended: {ErrSuspended, "suspended", http.StatusUnauthorized, invalidToken, detailKeyRequired},
	outcomeIPNotAllowed: {ErrIPNotAllowed, "ip_not_allowed", http.StatusForbidden, noChallenge,
		"The API key may not be used from this IP address: it is restricted to other IP ranges."},
	outcomeUnavailable: {ErrUnavailable, "unavailable", http.StatusServiceUnavailable, noChallenge, detailUnavailable},
	outcomeMissingKey:  {ErrMissingKey, "missing_key", http.StatusUnauthorized, bareChallenge, detailKeyRequired},
	outcomeBadRequest:  {ErrBadRequest, "bad_request", http.StatusBadRequest, invalidRequest, "The request carries its credentials in a malformed way."},
	outcomeInsufficientScope: {ErrInsufficientScope, "insufficient_scope", http.StatusForbidden, insufficientScope,
		"The API key lacks a scope this resource requires."},
	outcomeRateLimited:   {ErrRateLimited, "rate_limited", http.StatusTooManyRequests, noChallenge, "The API key's rate limit is exceeded."},
	outcomeUnknownPlan:   {ErrUnknownPlan, "unknown_plan", http.StatusForbidden, noChallenge, "The API key's plan is not configured on this server."},
	outcomeMisconfigured: {ErrInvalidOptions, "misconfigured", http.StatusInternalServerError, noChallenge, "The server could not process the request."},
}

// classify returns the outcome err stands for: outcomeOK for nil, the row
// of its sentinel (matched with errors.Is when wrapped), and
// outcomeUnavailable for anything else. An error that wraps ErrUnavailable
// is unavailable whatever else it wraps: a failing dependency is never
// taken for a verdict on the key.
func classify(err error) outcome {
	if err == nil {
		return outcomeOK
	}
	for o := outcomeMalformed; o < numOutcomes; o++ {
		if err == outcomes[o].err {
			return o
		}
	}
	if errors.Is(err, ErrUnavailable) {
		return outcomeUnavailable
	}
	for o := outcomeMalformed; o < numOutcomes; o++ {
		if errors.Is(err, outcomes[o].err) {
			return o
		}
	}
	return outcomeUnavailable
}

// outcomeOf names the outcome of err, as logs and Metrics.Verified
// report it.
func outcomeOf(err error) string { return outcomes[classify(err)].name }

// Outcome returns the row of the table of outcomes that err stands for.
// Its name is what logs and Metrics report. Its status and detail are the
// middleware's answer (detail is "" for nil). Other transports derive
// their answers from it, so that a client reads the same on every
// surface. An error of no outcome is "unavailable".
func Outcome(err error) (name string, status int, detail string) {
	r := &outcomes[classify(err)]
	return r.name, r.status, r.detail
}

// sentinel returns what an ErrorHandler receives for err: a *ScopeError or
// *RateLimitError as it is, otherwise the bare sentinel of its outcome,
// so that handlers never see a dependency's message.
func sentinel(err error) (outcome, error) {
	o := classify(err)
	switch o {
	case outcomeInsufficientScope:
		var se *ScopeError
		if errors.As(err, &se) {
			return o, se
		}
	case outcomeRateLimited:
		var rl *RateLimitError
		if errors.As(err, &rl) {
			return o, rl
		}
	}
	return o, outcomes[o].err
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

// RateLimitError is the refusal of a request over its key's limit. It
// matches ErrRateLimited with errors.Is.
type RateLimitError struct {
	// Result is the limiter's answer.
	Result limits.Result
}

// Error returns ErrRateLimited's message.
func (e *RateLimitError) Error() string { return ErrRateLimited.Error() }

// Is makes errors.Is(e, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }
