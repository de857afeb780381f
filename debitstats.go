package apikey

import "sync/atomic"

// debitStats counts the debits of reported costs, for Manager.Stats.
type debitStats struct {
	retries, failures atomic.Uint64
}

// addStats fills the debit counters of s.
func (d *debitStats) addStats(s *Stats) {
	s.DebitRetries, s.DebitFailures = d.retries.Load(), d.failures.Load()
}
