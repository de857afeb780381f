package apikey

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
)

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

// requireScopes returns the middleware of RequireScopes and
// RequireAnyScope.
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
				mw.refused(r)
				mw.Error(w, r, want)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// refused moves the request of r, counted allowed by Handler, to refused
// in usage.
func (mw *Middleware) refused(r *http.Request) {
	if mw.m.meter == nil {
		return
	}
	if c := counterOf(r.Context()); c != nil {
		c.move(&c.refused)
	}
}

// hasScopes reports whether k has the scopes want requires.
func hasScopes(k *Key, want *ScopeError) bool {
	for _, s := range want.Scopes {
		if k.HasScope(s) == want.Any {
			return want.Any
		}
	}
	return !want.Any
}

// Authorize is what Handler and RequireScopes decide, for a surface other
// than net/http (an RPC interceptor): it verifies token and checks that
// its key has every one of scopes (any one of them when anyScope is
// set; no scopes means none is needed). It returns the key, or an error
// as Manager.Verify does, or a *ScopeError. With usage recording, a
// refusal of a key whose secret verified (its state, its customer's, a
// missing scope) counts as refused, as over HTTP; an authorized call is
// counted when Spend takes its cost (a cost of 0 included). Authorize
// knows no client address: a key restricted to IP ranges is refused with
// ErrIPNotAllowed (see AuthorizeFrom).
func (mw *Middleware) Authorize(ctx context.Context, token string, scopes []string, anyScope bool) (*Key, error) {
	return mw.authorize(ctx, token, nil, scopes, anyScope)
}

// AuthorizeFrom is Authorize for a call from the client address addr, as
// VerifyFrom is Verify's: an RPC interceptor passes the peer's address,
// through its own ipallow.Proxies if calls come through proxies. A
// refusal for the address (ErrIPNotAllowed) counts nothing in usage.
func (mw *Middleware) AuthorizeFrom(ctx context.Context, token string, addr netip.Addr, scopes []string, anyScope bool) (*Key, error) {
	return mw.authorize(ctx, token, &origin{addr: addr}, scopes, anyScope)
}

// authorize is Authorize for a call from the client address in from
// (nil when unknown).
func (mw *Middleware) authorize(ctx context.Context, token string, from *origin, scopes []string, anyScope bool) (*Key, error) {
	k, now, err := mw.m.verifyKey(ctx, token, from)
	if err != nil {
		if k != nil { // a refusal for the key's state
			mw.m.meter.refuse(k, now)
		}
		return nil, err
	}
	if want := (&ScopeError{Scopes: scopes, Any: anyScope}); len(scopes) > 0 && !hasScopes(k, want) {
		mw.m.meter.refuse(k, now)
		return nil, want
	}
	return k, nil
}
