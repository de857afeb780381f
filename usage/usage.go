// Package usage holds the vocabulary of usage recording. It describes what
// each key and customer consumed, hour by hour (see
// apikey.Options.UsageInterval and apikey.Manager.Usage). It also holds the
// Store capability that keeps it, and the one that writes last-used times
// at a granularity.
package usage

import (
	"context"
	"time"
)

// Record is what one key of one customer consumed in one hour. It holds the
// requests it made, by outcome, and the cost it spent. Counts are added,
// never replaced, so that any number of instances can record the same key
// and hour.
type Record struct {
	// Customer is the key's customer (apikey.Key.Customer) and KeyID the key.
	Customer string `json:"customer"`
	KeyID    string `json:"key_id"`
	// Start is the start of the bucket, in UTC. The bucket is an hour as
	// stored, or a day or a month in a series of apikey.Manager.Usage.
	Start time.Time `json:"start"`
	// Allowed counts requests let through. Limited counts those refused by
	// a limit (429). Refused counts those of a verified key refused for a
	// scope, the key's or the customer's state, or the client's address.
	Allowed int64 `json:"allowed"`
	Limited int64 `json:"limited"`
	Refused int64 `json:"refused"`
	// Cost is what the allowed requests spent, post-hoc costs included.
	Cost int64 `json:"cost"`
}

// Query selects the usage of one customer (all of his keys) or of one
// key, from From (inclusive) to To (exclusive), in buckets of Step.
type Query struct {
	Customer string
	KeyID    string
	From, To time.Time
	Step     Step
}

// Step is the width of the buckets of a series.
type Step uint8

// The steps of a series, aligned to UTC.
const (
	Hour Step = iota + 1
	Day
	Month
)

// Store is an optional apikey.Store capability that keeps hourly usage
// counts (see apikey.Options.UsageInterval). memstore and sqlstore
// implement it.
//
// AddUsage adds each record's counts to the stored counts of its
// (KeyID, Start) hour, creating it when absent. It works atomically per
// record, so that concurrent calls from many instances sum exactly. Start
// is always a whole UTC hour. Usage returns the stored hourly records of
// q.Customer (or of q.KeyID, when set) with From <= Start < To, ordered
// by Start then KeyID. q.Step is the caller's and may be ignored.
// PurgeUsage deletes the records that start before before and returns
// how many it deleted.
type Store interface {
	AddUsage(ctx context.Context, records []Record) error
	Usage(ctx context.Context, q Query) ([]Record, error)
	PurgeUsage(ctx context.Context, before time.Time) (int, error)
}

// LastUsedStore is an optional apikey.Store capability. It writes
// last-used times at a granularity (see apikey.Options.LastUsedGranularity),
// so that the instances of a fleet write a busy key about once per
// granularity, not once per instance and flush. memstore and sqlstore
// implement it.
//
// MarkUsedGranular sets the LastUsedAt of each id in uses to its time
// only where the stored LastUsedAt is unset or earlier than that time
// minus granularity, and returns how many keys it changed (rows
// written). Unknown ids are ignored and Revision is left alone, as in
// apikey.Store.MarkUsed. With a granularity of 0 it is MarkUsed, and any
// later time is written. The check and the write are one atomic step per
// key. Of concurrent calls that give one key times within granularity of
// each other, at most one writes it.
type LastUsedStore interface {
	MarkUsedGranular(ctx context.Context, uses map[string]time.Time, granularity time.Duration) (written int, err error)
}
