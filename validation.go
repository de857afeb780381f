package apikey

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/limits"
)

// Input limits. Issue and Update refuse a key beyond the input limits with
// an error wrapping ErrInvalidInput (an *InputError). So bad input is
// reported as such (400 over HTTP) and never reaches a store as a failure.
// Every store of this module, in every sqlstore dialect, holds values at
// these limits exactly. Lengths are in bytes of UTF-8.
//
// Every string (name, owner, plan, scope, metadata key and value) must be
// valid UTF-8 without control characters (U+0000-U+001F, U+007F-U+009F).
// PostgreSQL cannot store NUL, and the others have no place in a label.
// Scopes are further restricted to RFC 6749 scope-token characters
// (printable ASCII without space, '"' and '\'). An expiry, when set, lies
// within the years 1000 to 9999 in UTC (what MySQL's DATETIME holds).
const (
	// MaxNameLength is the longest Key.Name.
	MaxNameLength = 256
	// MaxOwnerLength is the longest Key.Owner.
	MaxOwnerLength = 255
	// MaxPlanLength is the longest Key.Plan.
	MaxPlanLength = 64
	// MaxScopes is the most scopes a key may have.
	MaxScopes = 64
	// MaxScopeLength is the longest scope.
	MaxScopeLength = 128
	// MaxMetadataEntries is the most Key.Metadata entries.
	MaxMetadataEntries = 32
	// MaxMetadataKeyLength is the longest metadata key. Keys are not empty.
	MaxMetadataKeyLength = 64
	// MaxMetadataValueLength is the longest metadata value.
	MaxMetadataValueLength = 512
	// MaxLimits is the most Key.Limits entries (whose names Limit.Validate
	// limits to 64 characters).
	MaxLimits = 16
	// MaxAllowedIPs is the most ranges in Key.AllowedIPs and
	// Customer.AllowedIPs.
	MaxAllowedIPs = 64
	// MaxCustomerKeys is the largest Customer.MaxKeys.
	MaxCustomerKeys = 100_000
	// CreditsLimit is the name of the limit made of Customer.Credits.
	CreditsLimit = "credits"
	// MaxPageSize is the largest page Store.List must serve
	// (ListOptions.Limit). Larger limits are reduced to it.
	MaxPageSize = 1000
)

// Bounds of Key.ExpiresAt are the range of MySQL's DATETIME, in UTC.
var (
	minExpiry = time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxExpiry = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

// validExpiry checks an expiry against the range every store holds. The
// zero time (no expiry) passes.
func validExpiry(t time.Time) error {
	if !t.IsZero() && (t.Before(minExpiry) || t.After(maxExpiry)) {
		return &InputError{Field: "expires_at", Reason: "outside the years 1000 to 9999 (UTC)"}
	}
	return nil
}

// storable reports whether s is a value every store can hold and query.
// Such a value is valid UTF-8 without NUL (PostgreSQL refuses either even
// in a query). An id or owner that is not names no key.
func storable(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// validText checks a string field against the input rules.
func validText(field, s string, max int) error {
	if len(s) > max {
		return &InputError{Field: field, Reason: fmt.Sprintf("longer than %d bytes", max)}
	}
	if !utf8.ValidString(s) {
		return &InputError{Field: field, Reason: "not valid UTF-8"}
	}
	for _, r := range s {
		if r < 0x20 || r >= 0x7f && r <= 0x9f {
			return &InputError{Field: field, Reason: "contains a control character"}
		}
	}
	return nil
}

func validScopes(scopes []string) error {
	if len(scopes) > MaxScopes {
		return &InputError{Field: "scopes", Reason: fmt.Sprintf("more than %d scopes", MaxScopes)}
	}
	for _, s := range scopes {
		if s == "" {
			return &InputError{Field: "scopes", Reason: "empty scope"}
		}
		if len(s) > MaxScopeLength {
			return &InputError{Field: "scopes", Reason: fmt.Sprintf("a scope is longer than %d bytes", MaxScopeLength)}
		}
		for i := 0; i < len(s); i++ {
			if c := s[i]; c <= ' ' || c > '~' || c == '"' || c == '\\' {
				return &InputError{Field: "scopes", Reason: "a scope has a character outside RFC 6749 scope-token"}
			}
		}
	}
	return nil
}

func validMetadata(md map[string]string) error {
	if len(md) > MaxMetadataEntries {
		return &InputError{Field: "metadata", Reason: fmt.Sprintf("more than %d entries", MaxMetadataEntries)}
	}
	for k, v := range md {
		if k == "" {
			return &InputError{Field: "metadata", Reason: "empty key"}
		}
		if err := validText("metadata", k, MaxMetadataKeyLength); err != nil {
			return err
		}
		if err := validText("metadata", v, MaxMetadataValueLength); err != nil {
			return err
		}
	}
	return nil
}

// validKeyLimits checks a key's own limits. There are at most MaxLimits,
// each valid (Limit.Validate bounds the name to a 64-character token), and
// no name twice.
func validKeyLimits(ls []limits.Limit) error {
	if len(ls) > MaxLimits {
		return &InputError{Field: "limits", Reason: fmt.Sprintf("more than %d limits", MaxLimits)}
	}
	// A set of limits is valid when a call spending 1 under them is.
	if err := limits.ValidateAllow("key", ls, 1); err != nil {
		return &InputError{Field: "limits", Reason: strings.TrimPrefix(err.Error(), limits.ErrInvalid.Error()+": ")}
	}
	return nil
}

// validPlan checks a plan name. With Options.Plans set, it must be one of
// them (the empty plan always passes).
func validPlan(plans limits.Plans, plan string) error {
	if err := validText("plan", plan, MaxPlanLength); err != nil {
		return err
	}
	if plans != nil && plan != "" {
		if _, ok := plans[plan]; !ok {
			return &InputError{Field: "plan", Reason: "not a configured plan"}
		}
	}
	return nil
}

// validKey checks the fields of k a caller chooses, as Issue takes them.
func validKey(k *Key, plans limits.Plans) error {
	if err := validText("name", k.Name, MaxNameLength); err != nil {
		return err
	}
	if err := validText("owner", k.Owner, MaxOwnerLength); err != nil {
		return err
	}
	if len(k.Owner) == IDLength && isBase62(k.Owner) {
		// The customer of a key without owner is named by its lineage, a
		// key id: an owner of that form could share his customer.
		return &InputError{Field: "owner", Reason: fmt.Sprintf("has the form of a key id (%d base62 characters)", IDLength)}
	}
	if err := validPlan(plans, k.Plan); err != nil {
		return err
	}
	if err := validScopes(k.Scopes); err != nil {
		return err
	}
	if err := validMetadata(k.Metadata); err != nil {
		return err
	}
	if err := validIPs(&k.AllowedIPs); err != nil {
		return err
	}
	return validKeyLimits(k.Limits)
}

// errIPsOutside refuses key ranges outside the customer's.
func errIPsOutside() error {
	return &InputError{Field: "allowed_ips", Reason: "outside the IP ranges the customer may use"}
}

// validIPs checks the ranges *ranges and puts them in canonical form
// (see ipallow.Normalize): sorted, each once, nil when empty.
func validIPs(ranges *[]netip.Prefix) error {
	if len(*ranges) > MaxAllowedIPs {
		return &InputError{Field: "allowed_ips", Reason: fmt.Sprintf("more than %d ranges", MaxAllowedIPs)}
	}
	n, err := ipallow.Normalize(*ranges)
	if err != nil {
		return &InputError{Field: "allowed_ips", Reason: strings.TrimPrefix(err.Error(), ipallow.ErrInvalidRange.Error()+": ")}
	}
	*ranges = n
	return nil
}
