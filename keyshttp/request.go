package keyshttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gokeys/apikey"
)

// Limits of the request members beyond the Manager's input limits
// (apikey.MaxNameLength and the others), which are checked here too so
// that a bad member is named in the answer.
const (
	maxTTLSeconds    = 100 * 365 * 86400
	maxExpiresInDays = 3650
	// MaxCredits is the largest credits value a request may set (a
	// limit's largest count).
	MaxCredits = 100_000_000_000_000 - 1
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
	if _, ok := any(o.v).(map[string]string); ok {
		// A null member would decode as "": refuse it like any other
		// value that is not a string.
		var members map[string]json.RawMessage
		if json.Unmarshal(b, &members) == nil {
			for _, v := range members {
				if string(v) == "null" {
					return &json.UnmarshalTypeError{Value: "null", Type: reflect.TypeFor[string]()}
				}
			}
		}
	}
	return json.Unmarshal(b, &o.v)
}

// createRequest is the body of POST /api-keys.
type createRequest struct {
	Name          optional[string]            `json:"name"`
	Scopes        optional[[]string]          `json:"scopes"`
	Plan          optional[string]            `json:"plan"`
	Metadata      optional[map[string]string] `json:"metadata"`
	ExpiresAt     optional[time.Time]         `json:"expires_at"`
	TTLSeconds    optional[int64]             `json:"ttl_seconds"`
	ExpiresInDays optional[int64]             `json:"expires_in_days"`
	Credits       optional[int64]             `json:"credits"`
}

// patchRequest is the body of PATCH /api-keys/{id}: every member is
// optional; null clears expires_at (never expires) and credits.
type patchRequest struct {
	Name      optional[string]            `json:"name"`
	Scopes    optional[[]string]          `json:"scopes"`
	Plan      optional[string]            `json:"plan"`
	Metadata  optional[map[string]string] `json:"metadata"`
	ExpiresAt optional[time.Time]         `json:"expires_at"`
	Credits   optional[int64]             `json:"credits"`
}

// rotateRequest is the body of POST /api-keys/{id}/rotate.
type rotateRequest struct {
	GraceSeconds optional[int64] `json:"grace_seconds"`
}

// decode reads r's body, if any, into v: one JSON object of known members,
// at most h.maxBody bytes. An empty body leaves v as it is.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return badField("body", fmt.Sprintf("The body exceeds %d bytes.", h.maxBody))
		}
		return badField("body", "The body could not be read.")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if !utf8.Valid(body) {
		return badField("body", "The body is not valid UTF-8.")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badField("body", "The body must be a single JSON object.")
	}
	return nil
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
	case "metadata":
		return "an object of string values"
	case "ttl_seconds", "expires_in_days", "credits", "grace_seconds":
		return "an integer"
	case "expires_at":
		return "an RFC 3339 time or null"
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

// checkPlan checks a plan name's syntax.
func checkPlan(p string) *fieldError {
	if p == "" {
		return badField("plan", "plan must not be empty.")
	}
	if len(p) > apikey.MaxPlanLength {
		return badField("plan", fmt.Sprintf("plan is longer than %d bytes.", apikey.MaxPlanLength))
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c > '~' {
			return badField("plan", "plan must be printable ASCII without spaces.")
		}
	}
	return nil
}

// checkScopes checks scope tokens and the caller's right to grant them.
func (h *Handler) checkScopes(r *http.Request, owner string, scopes []string) *fieldError {
	if len(scopes) > apikey.MaxScopes {
		return badField("scopes", fmt.Sprintf("At most %d scopes.", apikey.MaxScopes))
	}
	seen := make(map[string]bool, len(scopes))
	for _, s := range scopes {
		if s == "" || len(s) > apikey.MaxScopeLength {
			return badField("scopes", fmt.Sprintf("Each scope must be 1 to %d characters.", apikey.MaxScopeLength))
		}
		for i := 0; i < len(s); i++ {
			if c := s[i]; c <= ' ' || c > '~' || c == '"' || c == '\\' {
				return badField("scopes", fmt.Sprintf("Scope %q has a character outside printable ASCII (no spaces, quotes or backslashes).", s))
			}
		}
		if seen[s] {
			return badField("scopes", fmt.Sprintf("Scope %q is listed twice.", s))
		}
		seen[s] = true
		if h.allowScope != nil && !h.allowScope(r, owner, s) {
			return &fieldError{status: http.StatusForbidden, field: "scopes", detail: fmt.Sprintf("You may not grant scope %q.", s)}
		}
	}
	return nil
}

// planAllowed checks a plan name against Plans and the caller's right to
// choose it.
func (h *Handler) planAllowed(r *http.Request, owner, p string) *fieldError {
	if f := checkPlan(p); f != nil {
		return f
	}
	if h.plans != nil && !h.plans[p] {
		return badField("plan", fmt.Sprintf("Unknown plan %q; use one of: %s.", p, strings.Join(h.planNames(), ", ")))
	}
	if h.allowPlan != nil && !h.allowPlan(r, owner, p) {
		return &fieldError{status: http.StatusForbidden, field: "plan", detail: fmt.Sprintf("You may not choose plan %q.", p)}
	}
	return nil
}

// checkMetadata checks metadata keys and values.
func checkMetadata(md map[string]string) *fieldError {
	if len(md) > apikey.MaxMetadataEntries {
		return badField("metadata", fmt.Sprintf("At most %d metadata entries.", apikey.MaxMetadataEntries))
	}
	for k, v := range md {
		if k == "" {
			return badField("metadata", "Metadata keys must not be empty.")
		}
		if checkText("metadata", k, apikey.MaxMetadataKeyLength) != nil {
			return badField("metadata", fmt.Sprintf("Metadata key %q: at most %d bytes of text without control characters.", k, apikey.MaxMetadataKeyLength))
		}
		if checkText("metadata", v, apikey.MaxMetadataValueLength) != nil {
			return badField("metadata", fmt.Sprintf("Metadata value of %q: at most %d bytes of text without control characters.", k, apikey.MaxMetadataValueLength))
		}
	}
	return nil
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

// checkCredits checks a credits value.
func checkCredits(n int64) *fieldError {
	if n < 1 || n > MaxCredits {
		return badField("credits", fmt.Sprintf("credits must be between 1 and %d.", int64(MaxCredits)))
	}
	return nil
}

// managerField names the field an ErrInvalidOptions of the Manager is
// about, from its message.
func managerField(err error) string {
	msg := strings.ToLower(err.Error())
	for _, f := range []struct{ word, field string }{
		{"scope", "scopes"}, {"plan", "plan"}, {"metadata", "metadata"}, {"expires", "expires_at"},
		{"ttl", "ttl_seconds"}, {"credit", "credits"}, {"limit", "credits"}, {"name", "name"}, {"grace", "grace_seconds"},
	} {
		if strings.Contains(msg, f.word) {
			return f.field
		}
	}
	return "body"
}

// managerDetail is the Manager's message without its package prefixes.
func managerDetail(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, apikey.ErrInvalidOptions.Error()+": "); i >= 0 {
		msg = msg[i+len(apikey.ErrInvalidOptions.Error())+2:]
	}
	return msg + "."
}
