package apikey

import (
	"fmt"
	"net/http"
)

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
				mw.meterRefused(r)
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
