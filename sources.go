package apikey

import (
	"net/http"
	"net/url"
	"strings"
)

// The credentials the middleware reads by default.
const (
	// headerAuthorization carries "Bearer <token>" (RFC 6750 §2.1).
	headerAuthorization = "Authorization"
	// headerAPIKey carries the bare token.
	headerAPIKey = "X-API-Key"
	// defaultQueryParam is the query parameter read by querySource when
	// query keys are enabled.
	defaultQueryParam = "api_key"
)

// A KeySource extracts a token from a request. It returns the token and a
// function that removes it from a request (used by
// MiddlewareOptions.HideCredentials; nil if it cannot), or "" when the
// request carries no token for this source. A request that carries a token
// in a malformed way (two of them, an empty one, one longer than
// MaxTokenLength) gives an error wrapping ErrBadRequest.
type KeySource func(r *http.Request) (token string, strip func(*http.Request), err error)

// bearerSource reads "Authorization: Bearer <token>".
func bearerSource(r *http.Request) (string, func(*http.Request), error) {
	vs := r.Header[headerAuthorization] // canonical already: no Values
	if len(vs) == 0 {
		return "", nil, nil
	}
	if len(vs) > 1 {
		return "", nil, ErrBadRequest
	}
	v := vs[0]
	if len(v) > len("Bearer ") && v[:len("Bearer ")] == "Bearer " && v[len("Bearer ")] != ' ' && v[len(v)-1] != ' ' {
		return checkToken(v[len("Bearer "):], stripAuthorization) // the usual form, nothing to trim
	}
	scheme, token, _ := strings.Cut(strings.TrimLeft(v, " "), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", nil, nil
	}
	return checkToken(strings.Trim(token, " "), stripAuthorization)
}

// defaultSource reads the default sources at once: "Authorization:
// Bearer" and X-API-Key. A request with both is refused with ErrBadRequest.
func defaultSource(r *http.Request) (string, func(*http.Request), error) {
	token, strip, err := bearerSource(r)
	if err != nil {
		return "", nil, err
	}
	vs := r.Header["X-Api-Key"] // headerAPIKey, canonical
	switch {
	case len(vs) == 0:
		return token, strip, nil
	case token != "" || len(vs) > 1:
		return "", nil, ErrBadRequest // two credentials at once
	}
	return checkToken(strings.Trim(vs[0], " "), stripAPIKey)
}

func stripAPIKey(r *http.Request) { r.Header.Del(headerAPIKey) }

func stripAuthorization(r *http.Request) { r.Header.Del(headerAuthorization) }

// HeaderSource reads the token from the named header: from
// "Authorization", the Bearer scheme (RFC 6750 §2.1, matched
// case-insensitively; other schemes count as no token); from any other
// header, such as "X-API-Key", the bare token.
func HeaderSource(name string) KeySource {
	name = http.CanonicalHeaderKey(name)
	if name == headerAuthorization {
		return bearerSource
	}
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

// querySource reads the token from the named query parameter
// ("api_key" when empty). Keys in URLs end up in access logs,
// proxies and Referer headers (RFC 6750 §2.3, RFC 9700 §4.3.2), so the
// middleware only uses it when MiddlewareOptions.AllowQuery is set.
func querySource(param string) KeySource {
	if param == "" {
		param = defaultQueryParam
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

// CookieSource reads the token from the named cookie. A request carrying
// two cookies of that name is refused with ErrBadRequest (400): a sibling
// subdomain can set a second cookie of the same name ("cookie tossing"),
// and which of the two a server reads first is not defined. With
// MiddlewareOptions.HideCredentials the cookie is removed from the Cookie
// header the next handler sees, the other cookies kept as they were.
//
// CSRF: a browser attaches cookies to cross-site requests too, so a key
// in a cookie authenticates requests that another site makes the user's
// browser send. Set the cookie with SameSite=Strict (or Lax), Secure and
// HttpOnly, and protect state-changing routes against cross-site requests
// (for example with net/http's CrossOriginProtection), or use a header
// source, which a cross-site request cannot set.
func CookieSource(name string) KeySource {
	strip := func(r *http.Request) { stripCookie(r, name) }
	return func(r *http.Request) (string, func(*http.Request), error) {
		cs := r.CookiesNamed(name)
		switch len(cs) {
		case 0:
			return "", nil, nil
		case 1:
			return checkToken(cs[0].Value, strip)
		}
		return "", nil, ErrBadRequest // cookie tossing, or a confused client
	}
}

// stripCookie removes every cookie called name from r's Cookie headers,
// keeping the others byte for byte.
func stripCookie(r *http.Request, name string) {
	lines := r.Header.Values("Cookie")
	if len(lines) == 0 {
		return
	}
	var kept []string
	for _, line := range lines {
		var parts []string
		for part := range strings.SplitSeq(line, ";") {
			n, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if n != name {
				parts = append(parts, strings.TrimSpace(part))
			}
		}
		if len(parts) > 0 {
			kept = append(kept, strings.Join(parts, "; "))
		}
	}
	r.Header.Del("Cookie")
	for _, line := range kept {
		r.Header.Add("Cookie", line)
	}
}

// checkToken returns token and strip, or ErrBadRequest for an empty token
// or one longer than MaxTokenLength.
func checkToken(token string, strip func(*http.Request)) (string, func(*http.Request), error) {
	if token == "" || len(token) > MaxTokenLength {
		return "", nil, ErrBadRequest
	}
	return token, strip, nil
}
