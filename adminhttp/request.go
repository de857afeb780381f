package adminhttp

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
	"github.com/gokeys/apikey/limits"
)

// optional is a JSON member that may be absent, null or a value.
type optional[T any] struct {
	set, null bool
	v         T
}

// putRequest is the body of PUT /admin/customers/{id}. Every member is
// optional, and each one sent replaces that field of the record.
type putRequest struct {
	Plan       optional[string]
	Scopes     optional[[]string]
	MaxKeys    optional[int]
	Limits     optional[[]limitRequest]
	Credits    optional[int64]
	Suspended  optional[bool]
	Metadata   optional[map[string]string]
	AllowedIPs optional[[]string]
}

// limitRequest is one limit granted to a customer, as the API writes it.
type limitRequest struct {
	Name          string `json:"name"`
	Kind          string `json:"kind"`
	Count         int64  `json:"count"`
	PeriodSeconds int64  `json:"period_seconds"`
	Burst         int64  `json:"burst"`
	Window        string `json:"window"`
}

// decode reads r's body into req: one JSON object of known members, at
// most h.maxBody bytes. A member of the wrong type is an
// *apikey.InputError naming it.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, req *putRequest) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return &apikey.InputError{Field: "body", Reason: fmt.Sprintf("exceeds %d bytes", h.maxBody)}
		}
		return &apikey.InputError{Field: "body", Reason: "could not be read"}
	}
	if !utf8.Valid(body) {
		return &apikey.InputError{Field: "body", Reason: "not valid UTF-8"}
	}
	var members map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&members); err != nil || members == nil {
		return &apikey.InputError{Field: "body", Reason: "must be a JSON object"}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &apikey.InputError{Field: "body", Reason: "must be a single JSON object"}
	}
	for _, name := range slices.Sorted(maps.Keys(members)) {
		raw := members[name]
		switch name {
		case "plan":
			err = member(raw, &req.Plan)
		case "scopes":
			err = member(raw, &req.Scopes)
		case "max_keys":
			err = member(raw, &req.MaxKeys)
		case "limits":
			err = member(raw, &req.Limits)
		case "credits":
			err = member(raw, &req.Credits)
		case "suspended":
			if err = member(raw, &req.Suspended); err == nil && req.Suspended.null {
				err = errors.New("null")
			}
		case "metadata":
			err = member(raw, &req.Metadata)
		case "allowed_ips":
			err = member(raw, &req.AllowedIPs)
		default:
			return &apikey.InputError{Field: name, Reason: "unknown field"}
		}
		if err != nil {
			return &apikey.InputError{Field: name, Reason: "must be " + expected(name)}
		}
	}
	return nil
}

// member decodes one member's JSON into o. Objects in it may hold only
// known members, and a null metadata value is marked so that it is
// refused rather than stored as "".
func member[T any](raw json.RawMessage, o *optional[T]) error {
	o.set = true
	if string(bytes.TrimSpace(raw)) == "null" {
		o.null = true
		return nil
	}
	if md, ok := any(&o.v).(*map[string]string); ok {
		var vs map[string]*string
		if err := json.Unmarshal(raw, &vs); err != nil || vs == nil {
			return errors.New("not an object of strings")
		}
		*md = make(map[string]string, len(vs))
		for k, v := range vs {
			if v == nil {
				return errors.New("null value")
			}
			(*md)[k] = *v
		}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(&o.v)
}

// expected describes the JSON type of a request member.
func expected(field string) string {
	switch field {
	case "plan":
		return "a string or null"
	case "scopes":
		return "an array of strings or null"
	case "max_keys", "credits":
		return "an integer or null"
	case "limits":
		return "an array of limits ({name, kind, count, period_seconds, burst, window}) or null"
	case "suspended":
		return "a boolean"
	case "metadata":
		return "an object of string values or null"
	case "allowed_ips":
		return "an array of CIDR ranges or IP addresses, or null"
	}
	return "valid"
}

// change checks the members that the Manager does not check itself and
// returns the change they make to a record.
func (req *putRequest) change() (func(*apikey.Customer), error) {
	if req.Scopes.set && !req.Scopes.null {
		seen := make(map[string]bool, len(req.Scopes.v))
		for _, s := range req.Scopes.v {
			if seen[s] {
				return nil, &apikey.InputError{Field: "scopes", Reason: fmt.Sprintf("scope %q is listed twice", s)}
			}
			seen[s] = true
		}
	}
	var ips []netip.Prefix
	if req.AllowedIPs.set {
		if len(req.AllowedIPs.v) > apikey.MaxAllowedIPs {
			return nil, &apikey.InputError{Field: "allowed_ips", Reason: fmt.Sprintf("more than %d ranges", apikey.MaxAllowedIPs)}
		}
		var err error
		if ips, err = ipallow.Parse(req.AllowedIPs.v...); err != nil {
			return nil, &apikey.InputError{Field: "allowed_ips", Reason: strings.TrimPrefix(err.Error(), ipallow.ErrInvalidRange.Error()+": ")}
		}
	}
	var ls []limits.Limit
	if req.Limits.set && !req.Limits.null {
		var err error
		if ls, err = limitsOf(req.Limits.v); err != nil {
			return nil, err
		}
	}
	return func(c *apikey.Customer) {
		if req.Plan.set {
			c.Plan = req.Plan.v
		}
		if req.Scopes.set {
			c.Scopes = nil
			if !req.Scopes.null {
				c.Scopes = append(make([]string, 0, len(req.Scopes.v)), req.Scopes.v...)
			}
		}
		if req.MaxKeys.set {
			c.MaxKeys = req.MaxKeys.v
		}
		if req.Limits.set {
			c.Limits = slices.Clone(ls)
		}
		if req.Credits.set {
			c.Credits = req.Credits.v
		}
		if req.Suspended.set {
			c.Suspended = req.Suspended.v
		}
		if req.Metadata.set {
			c.Metadata = maps.Clone(req.Metadata.v)
		}
		if req.AllowedIPs.set {
			c.AllowedIPs = slices.Clone(ips)
		}
	}, nil
}

// limitsOf translates the limits of a request; the Manager validates
// them.
func limitsOf(in []limitRequest) ([]limits.Limit, error) {
	out := make([]limits.Limit, 0, len(in))
	for i, l := range in {
		var kind limits.Kind
		if err := kind.UnmarshalText([]byte(l.Kind)); err != nil {
			return nil, &apikey.InputError{Field: "limits", Reason: fmt.Sprintf("limit %d: kind must be rate, quota or credits", i)}
		}
		var window limits.Window
		if l.Window != "" {
			if err := window.UnmarshalText([]byte(l.Window)); err != nil {
				return nil, &apikey.InputError{Field: "limits", Reason: fmt.Sprintf("limit %d: window must be minute, hour, day, month or never", i)}
			}
		}
		if l.PeriodSeconds < 0 || l.PeriodSeconds > int64(100*365*24*time.Hour/time.Second) {
			return nil, &apikey.InputError{Field: "limits", Reason: fmt.Sprintf("limit %d: period_seconds out of range", i)}
		}
		switch kind {
		case limits.KindRate:
			if l.PeriodSeconds == 0 || l.Window != "" {
				return nil, &apikey.InputError{Field: "limits", Reason: fmt.Sprintf("limit %d: a rate takes period_seconds and no window", i)}
			}
		case limits.KindQuota:
			if l.Window == "" || l.PeriodSeconds != 0 || l.Burst != 0 {
				return nil, &apikey.InputError{Field: "limits", Reason: fmt.Sprintf("limit %d: a quota takes a window and no period_seconds or burst", i)}
			}
		case limits.KindCredits:
			if l.PeriodSeconds != 0 || l.Burst != 0 {
				return nil, &apikey.InputError{Field: "limits", Reason: fmt.Sprintf("limit %d: credits take no period_seconds or burst", i)}
			}
		}
		out = append(out, limits.Limit{Name: l.Name, Kind: kind, Count: l.Count,
			Period: time.Duration(l.PeriodSeconds) * time.Second, Burst: l.Burst, Window: window})
	}
	return out, nil
}
