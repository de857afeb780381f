package apikey

import (
	"net/http"
	"net/url"
	"strings"
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
	vs := r.Header[HeaderAuthorization] // canonical already: no Values
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
		vs := r.Header[name] // canonicalized once, above
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
