package apikey

import "time"

// Metrics receives measurements of a Manager and of the Middlewares built
// on it; set it in Options.Metrics. Its methods are called synchronously,
// some on the request path: they must be fast (a counter increment) and
// safe for concurrent use. Outcomes and cache results are short fixed
// strings, never key ids, so they are safe as metric attributes.
type Metrics interface {
	// Verified reports one verification: its outcome ("ok", "malformed",
	// "invalid", "expired", "revoked", "disabled" or "unavailable"), how
	// the cache answered ("hit", "miss", "negative" or "off") and how long
	// it took.
	Verified(outcome, cache string, d time.Duration)
	// Limited reports one rate-limit decision: its outcome ("allowed",
	// "denied" or "error") and the name of the limit that decided it.
	Limited(outcome, limit string)
	// LimiterFailed reports that the failure policy ("fail-closed",
	// "fail-open" or "fallback") was applied, and whether the circuit
	// breaker is open (no backend call was made).
	LimiterFailed(policy string, breakerOpen bool)
	// Flushed reports one last-used flush: how many keys it wrote, how
	// long it took and its error (nil on success).
	Flushed(keys int, d time.Duration, err error)
	// UsesQueued reports the number of keys waiting for a last-used flush
	// and, when positive, how many uses were dropped because it was full.
	UsesQueued(queued, dropped int)
}
