package keyshttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/selfservice"
)

// Limits of the request members beyond the Manager's input limits
// (apikey.MaxNameLength and the others), which are checked here too so
// that a bad member is named in the answer.
const (
	maxTTLSeconds    = 100 * 365 * 86400
	maxExpiresInDays = 3650
)

// optional is a JSON member that may be absent, null or a value.
type optional[T any] struct {
	set, null bool
	v         T
}

func (o *optional[T]) UnmarshalJSON(b []byte) error {
	o.set = true
	if string(b) == "null" {
		o.null = true
		return nil
	}
	return json.Unmarshal(b, &o.v)
}

// createRequest is the body of POST /api-keys.
type createRequest struct {
	Name          optional[string]    `json:"name"`
	Scopes        optional[[]string]  `json:"scopes"`
	ExpiresAt     optional[time.Time] `json:"expires_at"`
	TTLSeconds    optional[int64]     `json:"ttl_seconds"`
	ExpiresInDays optional[int64]     `json:"expires_in_days"`
	AllowedIPs    optional[[]string]  `json:"allowed_ips"`
}

// patchRequest is the body of PATCH /api-keys/{id}. Every member is
// optional, and only those present change.
type patchRequest struct {
	Name       optional[string]    `json:"name"`
	Scopes     optional[[]string]  `json:"scopes"`
	ExpiresAt  optional[time.Time] `json:"expires_at"`
	AllowedIPs optional[[]string]  `json:"allowed_ips"`
}

// rotateRequest is the body of POST /api-keys/{id}/rotate.
type rotateRequest struct {
	GraceSeconds optional[int64] `json:"grace_seconds"`
}

// decode reads r's body, if any, into v: one JSON object, at most
// h.maxBody bytes. Before any value is read, the name of each member
// (in byte order) goes through field, whose error refuses the request:
// a member the caller may not set is refused as such, never ignored. It
// returns the names of the members present. An empty body leaves v as it
// is.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, v any, field func(name string) error) ([]string, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, badField("body", fmt.Sprintf("The body exceeds %d bytes.", h.maxBody))
		}
		return nil, badField("body", "The body could not be read.")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	if !utf8.Valid(body) {
		return nil, badField("body", "The body is not valid UTF-8.")
	}
	var members map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&members); err != nil || members == nil {
		return nil, badField("body", "The body must be one JSON object.")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badField("body", "The body must be a single JSON object.")
	}
	names := slices.Sorted(maps.Keys(members))
	for _, name := range names {
		if err := field(name); err != nil {
			return nil, err
		}
	}
	dec = json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, jsonError(err)
	}
	return names, nil
}

// only accepts the members names and refuses any other with a
// *selfservice.FieldError.
func only(names ...string) func(string) error {
	return func(name string) error {
		if slices.Contains(names, name) {
			return nil
		}
		return &selfservice.FieldError{Field: name, Reason: "the request has no such member"}
	}
}

// jsonError names the field a decoding error is about.
func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var timeErr *time.ParseError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		field, _, _ := strings.Cut(typeErr.Field, ".")
		return badField(field, fmt.Sprintf("%s must be %s.", field, expected(field)))
	case errors.As(err, &typeErr):
		return badField("body", "The body must be a JSON object.")
	case errors.As(err, &timeErr):
		return badField("expires_at", "expires_at must be an RFC 3339 time, e.g. 2030-01-31T00:00:00Z.")
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return badField(name, fmt.Sprintf("Unknown field %q in the body.", name))
	}
	return badField("body", "The body must be one JSON object with known fields.")
}

// expected describes the JSON type of a request member.
func expected(field string) string {
	switch field {
	case "scopes":
		return "an array of strings"
	case "allowed_ips":
		return "an array of CIDR ranges or IP addresses, e.g. [\"203.0.113.0/24\"]"
	case "ttl_seconds", "expires_in_days", "grace_seconds":
		return "an integer"
	case "expires_at":
		return "an RFC 3339 time"
	}
	return "a string"
}

// checkText checks a free-text value: valid UTF-8, no control characters, at
// most max bytes.
func checkText(field, v string, max int) *fieldError {
	if len(v) > max {
		return badField(field, fmt.Sprintf("%s is longer than %d bytes.", field, max))
	}
	if !utf8.ValidString(v) {
		return badField(field, field+" is not valid UTF-8.")
	}
	for _, c := range v {
		if c < 0x20 || c >= 0x7f && c <= 0x9f {
			return badField(field, field+" contains a control character.")
		}
	}
	return nil
}

// checkScopes checks scope tokens; whether the caller may grant them is
// the policy's.
func checkScopes(scopes []string) *fieldError {
	if len(scopes) > apikey.MaxScopes {
		return badField("scopes", fmt.Sprintf("At most %d scopes.", apikey.MaxScopes))
	}
	for i, s := range scopes {
		if !selfservice.ScopeToken(s) {
			return badField("scopes", fmt.Sprintf("Each scope must be 1 to %d characters of printable ASCII without spaces, quotes or backslashes.", apikey.MaxScopeLength))
		}
		if slices.Contains(scopes[:i], s) {
			return badField("scopes", fmt.Sprintf("Scope %q is listed twice.", s))
		}
	}
	return nil
}

// checkIPs parses the ranges of allowed_ips; whether the caller may use
// them is the policy's.
func checkIPs(ranges []string) ([]netip.Prefix, *fieldError) {
	if len(ranges) > apikey.MaxAllowedIPs {
		return nil, badField("allowed_ips", fmt.Sprintf("At most %d ranges.", apikey.MaxAllowedIPs))
	}
	ips, err := ipallow.Parse(ranges...)
	if err != nil {
		reason := strings.TrimPrefix(err.Error(), ipallow.ErrInvalidRange.Error()+": ")
		return nil, badField("allowed_ips", "allowed_ips: "+reason+".")
	}
	return ips, nil
}

// checkExpiry checks an expiry time against now.
func checkExpiry(t, now time.Time) *fieldError {
	if !t.After(now) {
		return badField("expires_at", "expires_at must be in the future.")
	}
	if t.UTC().Year() > 9999 {
		return badField("expires_at", "expires_at is too far in the future.")
	}
	return nil
}
