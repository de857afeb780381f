package memstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/usage"
)

var noon = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// Concurrent AddUsage calls of the same (key, hour) sum exactly.
func TestAddUsageSumsConcurrentCalls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := memstore.New()
	const writers, calls = 8, 200
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for i := range calls {
				err := s.AddUsage(ctx, []usage.Record{
					{Customer: "ann", KeyID: "k1", Start: noon, Allowed: 1, Limited: 2, Refused: 3, Cost: 4},
					{Customer: "ann", KeyID: "k1", Start: noon.Add(time.Duration(i%2) * time.Hour), Allowed: 1},
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	rs, err := s.Usage(ctx, usage.Query{KeyID: "k1", From: noon, To: noon.Add(2 * time.Hour)})
	require.NoError(t, err)
	n := int64(writers * calls)
	assert.Equal(t, []usage.Record{
		{Customer: "ann", KeyID: "k1", Start: noon, Allowed: n + n/2, Limited: 2 * n, Refused: 3 * n, Cost: 4 * n},
		{Customer: "ann", KeyID: "k1", Start: noon.Add(time.Hour), Allowed: n / 2},
	}, rs)
}

// Usage answers a customer's keys or one key, From inclusive and To
// exclusive, ordered by Start then KeyID, in UTC; a key asked for with
// another customer answers nothing.
func TestUsageFiltersAndOrders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := memstore.New()
	h := func(n int) time.Time { return noon.Add(time.Duration(n) * time.Hour) }
	require.NoError(t, s.AddUsage(ctx, []usage.Record{
		{Customer: "ann", KeyID: "kb", Start: h(1), Allowed: 1},
		{Customer: "ann", KeyID: "ka", Start: h(1), Allowed: 2},
		{Customer: "ann", KeyID: "ka", Start: h(0), Allowed: 3},
		{Customer: "ann", KeyID: "ka", Start: h(2), Allowed: 4},
		{Customer: "bob", KeyID: "kc", Start: h(1), Allowed: 5},
	}))
	plus2 := time.FixedZone("+02", 2*3600)
	rs, err := s.Usage(ctx, usage.Query{Customer: "ann", From: h(0).In(plus2), To: h(2)})
	require.NoError(t, err)
	assert.Equal(t, []usage.Record{
		{Customer: "ann", KeyID: "ka", Start: h(0), Allowed: 3},
		{Customer: "ann", KeyID: "ka", Start: h(1), Allowed: 2},
		{Customer: "ann", KeyID: "kb", Start: h(1), Allowed: 1},
	}, rs)
	for _, r := range rs {
		assert.Equal(t, time.UTC, r.Start.Location())
	}
	rs, err = s.Usage(ctx, usage.Query{KeyID: "ka", From: h(1), To: h(3)})
	require.NoError(t, err)
	assert.Len(t, rs, 2)
	rs, err = s.Usage(ctx, usage.Query{Customer: "bob", KeyID: "ka", From: h(0), To: h(3)})
	require.NoError(t, err)
	assert.Empty(t, rs, "ka is not bob's")
	rs, err = s.Usage(ctx, usage.Query{Customer: "nobody", From: h(0), To: h(3)})
	require.NoError(t, err)
	assert.NotNil(t, rs)
	assert.Empty(t, rs)
}

// PurgeUsage deletes the hours that start before its time and says how
// many.
func TestPurgeUsage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := memstore.New()
	require.NoError(t, s.AddUsage(ctx, []usage.Record{
		{Customer: "ann", KeyID: "ka", Start: noon.Add(-2 * time.Hour), Allowed: 1},
		{Customer: "ann", KeyID: "ka", Start: noon, Allowed: 1},
		{Customer: "bob", KeyID: "kb", Start: noon.Add(-time.Hour), Allowed: 1},
	}))
	n, err := s.PurgeUsage(ctx, noon)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	rs, err := s.Usage(ctx, usage.Query{Customer: "ann", From: noon.Add(-time.Hour * 24), To: noon.Add(time.Hour)})
	require.NoError(t, err)
	assert.Equal(t, []usage.Record{{Customer: "ann", KeyID: "ka", Start: noon, Allowed: 1}}, rs)
	rs, err = s.Usage(ctx, usage.Query{Customer: "bob", From: noon.Add(-time.Hour * 24), To: noon.Add(time.Hour)})
	require.NoError(t, err)
	assert.Empty(t, rs)
	n, err = s.PurgeUsage(ctx, noon)
	require.NoError(t, err)
	assert.Zero(t, n)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	assert.Error(t, s.AddUsage(cancelled, []usage.Record{{KeyID: "k", Start: noon, Allowed: 1}}))
	_, err = s.Usage(cancelled, usage.Query{KeyID: "k"})
	assert.Error(t, err)
	_, err = s.PurgeUsage(cancelled, noon)
	assert.Error(t, err)
}
