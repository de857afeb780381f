package apikey

import "time"

// Metrics receives measurements of a Manager and of the Middlewares built
// on it; set it in Options.Metrics. Its methods are called synchronously,
// some on the request path: they must be fast (a counter increment) and
// safe for concurrent use. Outcomes and cache results are short fixed
// strings, never key ids, so they are safe as metric attributes.
//
// A Metrics may also have the methods UsageFlushed(records int, d
// time.Duration, err error), called for each usage.Store.AddUsage call,
// and UsageQueued(queued, dropped int), called after each usage flush
// with the (key, hour) counters held and the requests left uncounted
// since the last call (see Options.UsageQueue).
type Metrics interface {
	// Verified reports one verification (every call of Manager.Verify,
	// so every authentication of the middleware): its outcome ("ok",
	// "malformed", "invalid", "expired", "revoked", "disabled" or
	// "unavailable"), how the cache answered and how long it took. The
	// cache answers "hit" (a cached key answered, no store query),
	// "negative" (a remembered failed lookup answered: an unknown id or a
	// wrong secret), "miss" (the store was queried), "stale" (the store
	// failed and a key within Options.CacheStaleIfError answered), "off"
	// (no cache) or "none" (a malformed token, refused before any lookup).
	// With Metrics set, a verification costs one more reading of the
	// monotonic clock.
	Verified(outcome, cached string, d time.Duration)
	// Limited reports one rate-limit decision of the middleware: its
	// outcome ("allowed" or "denied", with the name of the tightest limit,
	// limits.Result.Limit; "error", with an empty name, when no Limiter
	// answered, whatever the failure policy then did). Requests without
	// limits, with a zero Cost, refused for an unconfigured plan or a
	// misconfigured limit, or whose client went away before the Limiter
	// answered are not reported.
	Limited(outcome, limit string)
	// LimiterFailed reports that the failure policy ("fail-closed",
	// "fail-open" or "fallback") was applied, and whether the circuit
	// breaker is open (no backend call was made).
	LimiterFailed(policy string, breakerOpen bool)
	// Flushed reports one last-used write, one Store.MarkUsed call of at
	// most Options.LastUsedBatch keys (a flush makes as many as it
	// needs): how many keys it wrote, how long it took and its error (nil
	// on success; the batch is then kept for the next flush).
	Flushed(keys int, d time.Duration, err error)
	// UsesQueued reports, after each flush, the number of keys waiting for
	// the next one and how many uses were dropped since the previous
	// report because the queue was full (Options.LastUsedQueue).
	UsesQueued(queued, dropped int)
}
