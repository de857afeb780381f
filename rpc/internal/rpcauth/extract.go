package rpcauth

import (
	"strings"

	"github.com/gokeys/apikey"
)

// Metadata is a call's request metadata, as one framework holds it.
type Metadata interface {
	// Values returns the values of s, nil when there are none. The
	// slice is only read.
	Values(s *Source) []string
}

// Extract returns the token of a call's metadata and the index in sources
// of the key that carried it. It reads the keys exactly as the HTTP
// middleware reads its headers. The "authorization" key holds "Bearer
// <token>", with the scheme matched case-insensitively. Another scheme is
// no token. Any other key holds the bare token. Each is trimmed of spaces.
// A key present twice, an empty token, one longer than
// apikey.MaxTokenLength, or tokens under two keys give
// apikey.ErrBadRequest. No token at all gives apikey.ErrMissingKey.
func Extract[M Metadata](sources []Source, md M) (token string, from int, err error) {
	from = -1
	for i := range sources {
		s := &sources[i]
		vs := md.Values(s)
		if len(vs) == 0 {
			continue
		}
		if len(vs) > 1 {
			return "", -1, apikey.ErrBadRequest
		}
		v := vs[0]
		if s.Bearer {
			if len(v) > len("Bearer ") && v[:len("Bearer ")] == "Bearer " { // the usual form
				v = v[len("Bearer "):]
			} else {
				scheme, t, _ := strings.Cut(strings.TrimLeft(v, " "), " ")
				if !strings.EqualFold(scheme, "Bearer") {
					continue
				}
				v = t
			}
		}
		if v != "" && (v[0] == ' ' || v[len(v)-1] == ' ') {
			v = strings.Trim(v, " ")
		}
		if v == "" || len(v) > apikey.MaxTokenLength {
			return "", -1, apikey.ErrBadRequest
		}
		if token != "" {
			return "", -1, apikey.ErrBadRequest // two credentials at once
		}
		token, from = v, i
	}
	if token == "" {
		return "", -1, apikey.ErrMissingKey
	}
	return token, from, nil
}
