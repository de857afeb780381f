package apikey

import "sync/atomic"

// Stats counts a Manager's background work. It covers last-used tracking
// and, with a Notifier, the changes it published and the cache drops it
// applied. Manager.Stats returns a snapshot of plain data, counting since
// New.
type Stats struct {
	// UsesRecorded counts successful verifications recorded for a flush
	// (a cached key verified many times within a millisecond counts once).
	UsesRecorded uint64
	// UsesDropped counts uses not recorded because the queue was full.
	UsesDropped uint64
	// Flushes counts MarkUsed calls that succeeded.
	Flushes uint64
	// FlushErrors counts MarkUsed calls that failed. Their uses are kept
	// for the next flush while the queue has room.
	FlushErrors uint64
	// UsesWritten counts the keys whose stored last-used time flushes
	// changed, as a store that implements usage.LastUsedStore reports
	// them (rows written). With another store, every key flushed counts.
	UsesWritten uint64
	// Published counts ids announced through the Notifier.
	Published uint64
	// PublishErrors counts ids the Notifier failed to announce. Other
	// instances then notice those changes within their cache TTL.
	PublishErrors uint64
	// UsageRecorded counts requests counted for usage (see
	// Options.UsageInterval). UsageDropped counts those not counted
	// because the queue was full (Options.UsageQueue). UsageFlushes and
	// UsageFlushErrors count the usage.Store.AddUsage calls that
	// succeeded and failed. A failed call's counts are kept for the
	// next flush.
	UsageRecorded, UsageDropped, UsageFlushes, UsageFlushErrors uint64
	// CacheResets counts whole-cache drops on a notifier's (re)subscription
	// or on an announcement that any key may have changed.
	CacheResets uint64
	// DebitRetries counts the retries of failed debits of costs reported
	// after the work (see ReportCost). DebitFailures counts the debits
	// given up after their retries, each logged with its customer and
	// amount.
	DebitRetries, DebitFailures uint64
}

// debitStats counts the debits of reported costs.
type debitStats struct {
	retries, failures atomic.Uint64
}

// addStats fills the debit counters of s.
func (d *debitStats) addStats(s *Stats) {
	s.DebitRetries, s.DebitFailures = d.retries.Load(), d.failures.Load()
}
