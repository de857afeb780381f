package apikey

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
)

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
	case http.StatusInternalServerError:
		return "The server could not process the request."
	}
	return "Authentication is temporarily unavailable."
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
	case ErrMalformed, ErrInvalid, ErrExpired, ErrRevoked, ErrDisabled, ErrPaused, ErrSuspended: // one identical answer
		h["Www-Authenticate"] = mw.hdrInvalid
	case ErrUnknownPlan, ErrIPNotAllowed:
		status = http.StatusForbidden
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
			if e.Result.RetryAfter > 0 { // else only credits never refilled deny
				h.Set("Retry-After", seconds(e.Result.RetryAfter))
			}
		}
	}
	h["Content-Type"] = mw.hdrProblem
	h["Cache-Control"] = mw.hdrNoStore
	h["X-Content-Type-Options"] = mw.hdrNoSniff
	w.WriteHeader(status)
	if s == ErrUnknownPlan {
		w.Write(mw.planBody)
		return
	}
	if s == ErrIPNotAllowed {
		w.Write(mw.ipBody)
		return
	}
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
	case ErrMissingKey, ErrBadRequest, ErrMalformed, ErrInvalid, ErrExpired, ErrRevoked, ErrDisabled, ErrPaused, ErrSuspended, ErrUnavailable, ErrUnknownPlan, ErrIPNotAllowed:
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
	for _, s := range []error{ErrMissingKey, ErrBadRequest, ErrMalformed, ErrInvalid, ErrExpired, ErrRevoked, ErrDisabled, ErrPaused, ErrSuspended, ErrInsufficientScope, ErrRateLimited, ErrUnknownPlan, ErrIPNotAllowed, ErrUnavailable} {
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
