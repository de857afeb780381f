package selfservice

import (
	"errors"
	"fmt"

	"github.com/gokeys/apikey"
)

// ErrForbidden is matched by every refusal of the policy that is about
// authority rather than input. Such a refusal is a field the owner may not
// set (*FieldError), a scope outside what his customer was granted, or a
// suspension the operator set. Over HTTP it is a 403.
var ErrForbidden = errors.New("selfservice: forbidden")

// errSuspended refuses every change but a revocation while the owner's
// customer is suspended. It matches ErrForbidden and apikey.ErrSuspended.
var errSuspended = fmt.Errorf("selfservice: %w: %w: only listing and revoking keys is allowed", ErrForbidden, apikey.ErrSuspended)

// FieldError reports a field the owner may not set (plan, credits,
// limits, metadata, disabled, ...), or a value he was not granted. Such a
// value is a scope outside his customer's ceiling, or resuming a key the
// operator disabled.
// It matches ErrForbidden with errors.Is. Its message never holds the
// value the owner sent.
type FieldError struct {
	// Field names the field as the owner's request named it, e.g. "plan",
	// "credits", "scopes" or "disabled".
	Field string
	// Reason says why, for people.
	Reason string
}

// Error returns "selfservice: forbidden <field>: <reason>".
func (e *FieldError) Error() string {
	return "selfservice: forbidden " + e.Field + ": " + e.Reason
}

// Is makes errors.Is(e, ErrForbidden) true.
func (e *FieldError) Is(target error) bool { return target == ErrForbidden }

// forbidden returns the *FieldError of a field the owner may not set.
func forbidden(field string) *FieldError {
	return &FieldError{Field: field, Reason: "only the service sets it"}
}
