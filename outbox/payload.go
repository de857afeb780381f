package outbox

import "time"

// Payload is the JSON body of every webhook, as the Standard Webhooks
// specification recommends it. It holds the event's type, when it
// happened, and its data. A receiver decodes it after verifying the signature (see
// webhook.Verifier).
type Payload struct {
	// Type is the event type, e.g. "key.revoked".
	Type string `json:"type"`
	// Timestamp is when the event happened, in UTC, by the clock of the
	// Manager that wrote it (not when it was delivered).
	Timestamp time.Time `json:"timestamp"`
	// Data holds what the event is about. The package documentation says
	// which fields each type sets.
	Data Data `json:"data"`
}

// Data is what an event is about. Each type sets some of its fields.
type Data struct {
	// Key is the key concerned, for key events.
	Key *Key `json:"key,omitempty"`
	// Successor is the new key of a key.rotated event.
	Successor *Key `json:"successor,omitempty"`
	// Customer is the customer concerned, for customer events.
	Customer string `json:"customer,omitempty"`
	// URL is where a leaked token was found (key.leaked).
	URL string `json:"url,omitempty"`
	// Action is what the report of a leaked key asked, "revoke",
	// "disable" or "report" (key.leaked).
	Action string `json:"action,omitempty"`
	// Limit is the limit concerned, for customer.credits_low and
	// customer.quota_exhausted.
	Limit *Limit `json:"limit,omitempty"`
}

// Key describes a key in an event, never with its token, secret or
// digest.
type Key struct {
	ID       string `json:"id"`
	Prefix   string `json:"prefix,omitempty"`
	Hint     string `json:"hint,omitempty"`
	Name     string `json:"name,omitempty"`
	Owner    string `json:"owner,omitempty"`
	Customer string `json:"customer,omitempty"`
	// CreatedAt, ExpiresAt and RevokedAt are the key's, zero when not
	// set (and then left out).
	CreatedAt time.Time `json:"created_at,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// Disabled is the key's state after the change.
	Disabled bool `json:"disabled,omitempty"`
}

// Limit describes the state of a customer's limit in an event.
type Limit struct {
	// Name and Kind ("quota" or "credits") name the limit.
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Count is the limit's count, requests per window or credits
	// granted.
	Count int64 `json:"count"`
	// Remaining is what was left when the event was raised.
	Remaining int64 `json:"remaining"`
	// Threshold is the balance at or below which credits are low.
	Threshold int64 `json:"threshold,omitempty"`
	// WindowStart and WindowEnd bound the quota's window, or the credits'
	// refill period. They are zero (left out) for credits never refilled.
	WindowStart time.Time `json:"window_start,omitzero"`
	WindowEnd   time.Time `json:"window_end,omitzero"`
}
