package apikey_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/usage"
)

// Manager.Usage rolls the stored hours up into series of hours, days or
// months in UTC, empty buckets included, from inclusive to exclusive.
func TestManagerUsageSeries(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	m := newManager(t, store, apikey.Options{UsageInterval: -1})
	at := func(month time.Month, day, hour int) time.Time {
		return time.Date(2026, month, day, hour, 0, 0, 0, time.UTC)
	}
	require.NoError(t, store.AddUsage(ctx, []usage.Record{
		{Customer: "ann", KeyID: "k1", Start: at(1, 31, 23), Allowed: 1},
		{Customer: "ann", KeyID: "k2", Start: at(2, 1, 0), Allowed: 2, Cost: 5},
		{Customer: "ann", KeyID: "k1", Start: at(2, 1, 5), Limited: 3},
		{Customer: "ann", KeyID: "k1", Start: at(3, 15, 10), Refused: 1},
		{Customer: "bob", KeyID: "k3", Start: at(2, 1, 0), Allowed: 100},
	}))
	series := func(q usage.Query) []usage.Record {
		t.Helper()
		rs, err := m.Usage(ctx, q)
		require.NoError(t, err)
		for _, r := range rs {
			require.Equal(t, time.UTC, r.Start.Location())
		}
		return rs
	}
	rec := func(start time.Time, a, l, r, c int64) usage.Record {
		return usage.Record{Customer: "ann", Start: start, Allowed: a, Limited: l, Refused: r, Cost: c}
	}
	assert.Equal(t, []usage.Record{
		rec(at(1, 31, 22), 0, 0, 0, 0), rec(at(1, 31, 23), 1, 0, 0, 0), rec(at(2, 1, 0), 2, 0, 0, 5), rec(at(2, 1, 1), 0, 0, 0, 0),
	}, series(usage.Query{Customer: "ann", From: at(1, 31, 22), To: at(2, 1, 2), Step: usage.Hour}))
	assert.Equal(t, []usage.Record{rec(at(1, 31, 23), 1, 0, 0, 0)},
		series(usage.Query{Customer: "ann", From: at(1, 31, 23), To: at(2, 1, 0), Step: usage.Hour}), "To is exclusive")
	plus5 := time.FixedZone("+05", 5*3600)
	assert.Equal(t, []usage.Record{
		rec(at(1, 31, 0), 1, 0, 0, 0), rec(at(2, 1, 0), 2, 3, 0, 5), rec(at(2, 2, 0), 0, 0, 0, 0),
	}, series(usage.Query{Customer: "ann", From: time.Date(2026, 2, 1, 3, 0, 0, 0, plus5), To: at(2, 3, 0), Step: usage.Day}),
		"days in UTC: 03:00+05 is the 31st")
	assert.Equal(t, []usage.Record{
		rec(at(1, 1, 0), 1, 0, 0, 0), rec(at(2, 1, 0), 2, 3, 0, 5), rec(at(3, 1, 0), 0, 0, 1, 0), rec(at(4, 1, 0), 0, 0, 0, 0),
	}, series(usage.Query{Customer: "ann", From: at(1, 20, 0), To: at(4, 2, 0), Step: usage.Month}), "To rounded up to the step")
	k2 := series(usage.Query{KeyID: "k2", From: at(2, 1, 0), To: at(2, 2, 0), Step: usage.Day})
	assert.Equal(t, []usage.Record{{KeyID: "k2", Start: at(2, 1, 0), Allowed: 2, Cost: 5}}, k2)

	assert.Len(t, series(usage.Query{Customer: "ann", From: at(1, 1, 0), To: at(1, 1, 0).Add(1000 * time.Hour), Step: usage.Hour}), 1000)
	for name, q := range map[string]usage.Query{
		"to":       {Customer: "ann", From: at(1, 1, 0), To: at(1, 1, 0).Add(1001 * time.Hour), Step: usage.Hour},
		"to ":      {Customer: "ann", From: at(1, 1, 0), To: at(1, 1, 0), Step: usage.Day},
		"step":     {Customer: "ann", From: at(1, 1, 0), To: at(2, 1, 0)},
		"customer": {From: at(1, 1, 0), To: at(2, 1, 0), Step: usage.Day},
	} {
		_, err := m.Usage(ctx, q)
		assertInputError(t, err, trimSpace(name), name)
	}
	_, err := newManager(t, newSpy(), apikey.Options{}).Usage(ctx, usage.Query{Customer: "ann", From: at(1, 1, 0), To: at(2, 1, 0), Step: usage.Day})
	assert.ErrorIs(t, err, errors.ErrUnsupported)
}

func trimSpace(s string) string {
	for len(s) > 0 && s[len(s)-1] == ' ' {
		s = s[:len(s)-1]
	}
	return s
}
