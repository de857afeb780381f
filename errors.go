package apikey

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers branch on them with errors.Is. The package wraps
// them with context (for example "apikey: lookup: ...") but never replaces
// them. None of their messages ever contains a token or a secret.
var (
	// ErrMalformed reports a token that does not follow the token grammar.
	// Such a token has a wrong prefix, a wrong length, a character outside
	// base62 or a bad checksum. It is decided before any hashing or store
	// access.
	ErrMalformed = errors.New("apikey: malformed token")

	// ErrInvalid reports a well-formed token that does not match a stored
	// key, because its id is unknown or its secret is wrong. The two cases
	// are deliberately indistinguishable, in the error and in its timing.
	ErrInvalid = errors.New("apikey: invalid key")

	// ErrExpired reports a key whose expiry time has passed, including a
	// rotated key whose grace period is over.
	ErrExpired = errors.New("apikey: key expired")

	// ErrRevoked reports a key that has been revoked.
	ErrRevoked = errors.New("apikey: key revoked")

	// ErrDisabled reports a key that is disabled (see Manager.Disable). The
	// middleware answers it exactly like ErrInvalid.
	ErrDisabled = errors.New("apikey: key disabled")

	// ErrPaused reports a key its owner paused (see Manager.Pause). The
	// middleware answers it exactly like ErrInvalid.
	ErrPaused = errors.New("apikey: key paused")

	// ErrSuspended reports a key whose customer the operator suspended
	// (see Customer.Suspended). The middleware answers it exactly like
	// ErrInvalid.
	ErrSuspended = errors.New("apikey: customer suspended")

	// ErrIPNotAllowed reports a valid key used from an address outside
	// its IP ranges or its customer's (Key.AllowedIPs,
	// Customer.AllowedIPs). The middleware answers it with 403; unlike the
	// refusals above, that tells the caller the key is valid (see
	// docs/ip-restrictions.md). Metrics and logs name it "ip_not_allowed".
	ErrIPNotAllowed = errors.New("apikey: client address not allowed for this key")

	// ErrTooManyKeys reports an Issue beyond the customer's key cap
	// (Customer.MaxKeys).
	ErrTooManyKeys = errors.New("apikey: customer has the most keys allowed")

	// ErrInvalidInput is matched by every *InputError. An InputError
	// reports a value sent by a caller (a name, a scope, an expiry) that
	// the Manager refuses.
	ErrInvalidInput = errors.New("apikey: invalid input")

	// ErrRotated reports an attempt to rotate a key that already has a
	// successor.
	ErrRotated = errors.New("apikey: key already rotated")

	// ErrNotFound is returned by a Store (possibly wrapped) for an id it
	// does not hold, and by the Manager's management methods.
	ErrNotFound = errors.New("apikey: key not found")

	// ErrConflict is returned by a Store (possibly wrapped) when a key with
	// the same id already exists (Create, Rotator.Rotate), and by a
	// conditional Store.Update when the key changed since it was read (its
	// Revision differs). The Manager retries the latter a bounded number of
	// times. Manager.Update returns it only when every attempt lost a race.
	ErrConflict = errors.New("apikey: key id already exists or key changed since read")

	// ErrUnavailable wraps every failure of a dependency (the store, the
	// hasher's configuration, a limiter backend). It is never reported as
	// an invalid key. The middleware answers it with 503.
	ErrUnavailable = errors.New("apikey: service unavailable")

	// ErrMissingKey reports a request that carries no key at all.
	ErrMissingKey = errors.New("apikey: missing key")

	// ErrBadRequest reports a request whose credentials are malformed as a
	// request. Such a request carries two credentials at once, an empty
	// Bearer token or a token longer than MaxTokenLength.
	ErrBadRequest = errors.New("apikey: invalid request")

	// ErrInsufficientScope reports an authenticated key that lacks a scope
	// the route requires.
	ErrInsufficientScope = errors.New("apikey: insufficient scope")

	// ErrRateLimited reports a request denied by a rate limit or quota.
	ErrRateLimited = errors.New("apikey: rate limited")

	// ErrUnknownPlan reports a key whose plan is not in Options.Plans
	// when no DefaultPlan is set. The middleware answers it with 403.
	ErrUnknownPlan = errors.New("apikey: plan not configured")

	// ErrCircuitOpen reports a Limiter call skipped because the circuit
	// breaker is open. It wraps ErrUnavailable.
	ErrCircuitOpen = fmt.Errorf("%w: limiter circuit open", ErrUnavailable)

	// ErrInvalidOptions reports a configuration rejected by a constructor,
	// or a call the Manager refuses whatever its input.
	ErrInvalidOptions = errors.New("apikey: invalid options")

	// ErrUnknownHashVersion is returned by a Hasher's Compare (and wrapped
	// in ErrUnavailable by the Manager) when a stored digest names a hash
	// version the hasher does not have, such as a retired pepper.
	ErrUnknownHashVersion = errors.New("apikey: unknown hash version")
)

// storeErr wraps a store error for the caller. Outcomes (not found,
// conflict, revoked, rotated) keep their sentinel. Anything else is a
// failure of the store and wraps ErrUnavailable.
func storeErr(op string, err error) error {
	for _, s := range []error{ErrNotFound, ErrConflict, ErrRevoked, ErrRotated, ErrExpired, ErrInvalidOptions, ErrInvalidInput, ErrTooManyKeys, ErrSuspended} {
		if errors.Is(err, s) {
			return fmt.Errorf("apikey: %s: %w", op, s)
		}
	}
	return fmt.Errorf("apikey: %s: %w: %w", op, ErrUnavailable, err)
}

func isConflict(err error) bool { return errors.Is(err, ErrConflict) }

// InputError reports a value a caller sent that the Manager refuses. It
// gives the field the value was in and why. It matches ErrInvalidInput
// with errors.Is. Its message never holds the value itself.
type InputError struct {
	// Field names the field, as in JSON (e.g. "name", "scopes",
	// "expires_at").
	Field string
	// Reason says what is wrong, e.g. "longer than 256 bytes".
	Reason string
}

// Error returns "apikey: invalid <field>: <reason>".
func (e *InputError) Error() string { return "apikey: invalid " + e.Field + ": " + e.Reason }

// Is makes errors.Is(e, ErrInvalidInput) true.
func (e *InputError) Is(target error) bool { return target == ErrInvalidInput }

// panicError carries a recovered panic as an error.
type panicError struct{ v any }

// Error describes the panic.
func (p panicError) Error() string { return fmt.Sprintf("panic: %v", p.v) }
