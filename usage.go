package apikey

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gokeys/apikey/usage"
)

// maxUsagePoints is the most buckets one Manager.Usage series holds.
const maxUsagePoints = 1000

// Usage returns the series of what q.Customer (or the key q.KeyID, when
// set) consumed from q.From (inclusive) to q.To (exclusive). It has one
// record per bucket of q.Step (hour, day or month, UTC), empty buckets
// included and summed over the customer's keys. Days and months are
// rolled up from the stored hours on read. From is rounded down to the
// step and To up, so that the bucket holding To is whole. A range of more
// than 1,000 buckets, or a To not after From, is an *InputError. It needs
// a store that implements usage.Store.
func (m *Manager) Usage(ctx context.Context, q usage.Query) ([]usage.Record, error) {
	us, ok := m.store.(usage.Store)
	if !ok {
		return nil, fmt.Errorf("apikey: usage: %w: the store does not implement usage.Store", errors.ErrUnsupported)
	}
	if q.Customer == "" && q.KeyID == "" {
		return nil, &InputError{Field: "customer", Reason: "a customer or a key is needed"}
	}
	from, to := bucketStart(q.From, q.Step), bucketStart(q.To, q.Step)
	if to.Before(q.To.UTC()) {
		to = nextBucket(to, q.Step)
	}
	switch {
	case q.Step < usage.Hour || q.Step > usage.Month:
		return nil, &InputError{Field: "step", Reason: "must be hour, day or month"}
	case !to.After(from):
		return nil, &InputError{Field: "to", Reason: "must be after from"}
	}
	var series []usage.Record
	for t := from; t.Before(to); t = nextBucket(t, q.Step) {
		if len(series) == maxUsagePoints {
			return nil, &InputError{Field: "to", Reason: fmt.Sprintf("more than %d buckets", maxUsagePoints)}
		}
		series = append(series, usage.Record{Customer: q.Customer, KeyID: q.KeyID, Start: t})
	}
	rs, err := us.Usage(ctx, usage.Query{Customer: q.Customer, KeyID: q.KeyID, From: from, To: to, Step: usage.Hour})
	if err != nil {
		return nil, storeErr("usage", err)
	}
	i := 0
	for _, r := range rs {
		b := bucketStart(r.Start, q.Step)
		for i < len(series) && series[i].Start.Before(b) {
			i++
		}
		if i == len(series) {
			break
		}
		if !series[i].Start.Equal(b) {
			continue
		}
		p := &series[i]
		p.Allowed += r.Allowed
		p.Limited += r.Limited
		p.Refused += r.Refused
		p.Cost += r.Cost
	}
	return series, nil
}

// bucketStart is the start of the bucket of step that holds t, in UTC.
func bucketStart(t time.Time, step usage.Step) time.Time {
	t = t.UTC()
	switch step {
	case usage.Day:
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	case usage.Month:
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
	return t.Truncate(time.Hour)
}

// nextBucket is the start of the bucket after the one starting at t.
func nextBucket(t time.Time, step usage.Step) time.Time {
	switch step {
	case usage.Day:
		return t.AddDate(0, 0, 1)
	case usage.Month:
		return t.AddDate(0, 1, 0)
	}
	return t.Add(time.Hour)
}
