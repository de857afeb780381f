package sqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/usage"
)

var usageHour = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

// TestAddUsageRefusesBadRecords: a record without key or whose start is
// not a whole hour is invalid input, and nothing of its call is written.
func TestAddUsageRefusesBadRecords(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		ctx := context.Background()
		good := usage.Record{Customer: "alice", KeyID: apikey.NewID(), Start: usageHour, Allowed: 1}
		for name, bad := range map[string]usage.Record{
			"NoKey":      {Customer: "alice", Start: usageHour, Allowed: 1},
			"ZeroStart":  {Customer: "alice", KeyID: apikey.NewID(), Allowed: 1},
			"NotAnHour":  {Customer: "alice", KeyID: apikey.NewID(), Start: usageHour.Add(time.Minute), Allowed: 1},
			"Nanosecond": {Customer: "alice", KeyID: apikey.NewID(), Start: usageHour.Add(time.Nanosecond), Allowed: 1},
		} {
			err := s.AddUsage(ctx, []usage.Record{good, bad})
			assert.ErrorIs(t, err, apikey.ErrInvalidInput, name)
			var ie *apikey.InputError
			assert.ErrorAs(t, err, &ie, name)
		}
		got, err := s.Usage(ctx, usage.Query{Customer: "alice", From: usageHour, To: usageHour.Add(time.Hour)})
		require.NoError(t, err)
		assert.Empty(t, got, "a call with a bad record writes nothing")
	})
}

// TestAddUsageIsAllOrNothing: a call whose last record cannot be added
// (its sum overflows 64 bits) fails and adds none of its records, whether
// it is one statement (up to 1,000 records) or several in a transaction.
// On SQLite, whose integers turn into floats when a sum overflows, the
// table's CHECK makes the overflow an error too.
func TestAddUsageIsAllOrNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		ctx := context.Background()
		full := usage.Record{Customer: "alice", KeyID: "zzzzzzzzzzzzzzzz", Start: usageHour, Allowed: math.MaxInt64, Cost: 7}
		require.NoError(t, s.AddUsage(ctx, []usage.Record{full}))
		for _, n := range []int{10, 2500} {
			var rs []usage.Record
			for i := range n {
				rs = append(rs, usage.Record{Customer: "alice", KeyID: fmt.Sprintf("a%015d", i), Start: usageHour, Allowed: 1})
			}
			over := full
			over.Allowed, over.Cost = 1, 1
			rs = append(rs, over) // sorted last: in the last statement
			require.Error(t, s.AddUsage(ctx, rs), "%d records: the sum overflows", n)
			got, err := s.Usage(ctx, usage.Query{Customer: "alice", From: usageHour, To: usageHour.Add(time.Hour)})
			require.NoError(t, err)
			require.Len(t, got, 1, "%d records: none of the failed call's records is added", n)
			assert.Equal(t, int64(math.MaxInt64), got[0].Allowed)
			assert.Equal(t, int64(7), got[0].Cost, "%d records: the overflowing record added nothing", n)
		}
	})
}

// TestUsageHoursOfManyKeysSumAcrossCalls writes a day of 300 keys in
// calls of different sizes and checks the sums through a Manager-like
// roll-up: every count arrives, whatever the chunking.
func TestUsageHoursOfManyKeysSumAcrossCalls(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend, db *sql.DB) {
		s := newStore(t, db, b.dialect, randomTable("keys_"))
		ctx := context.Background()
		const keys, hours = 300, 24
		var rs []usage.Record
		for i := range keys {
			for h := range hours {
				rs = append(rs, usage.Record{Customer: fmt.Sprintf("c%d", i%3), KeyID: fmt.Sprintf("k%015d", i),
					Start: usageHour.Add(time.Duration(h) * time.Hour), Allowed: int64(i + h), Cost: int64(h)})
			}
		}
		for lo, size := 0, 1; lo < len(rs); lo, size = lo+size, size*3 {
			require.NoError(t, s.AddUsage(ctx, rs[lo:min(lo+size, len(rs))]))
		}
		var allowed, cost int64
		for c := range 3 {
			got, err := s.Usage(ctx, usage.Query{Customer: fmt.Sprintf("c%d", c), From: usageHour, To: usageHour.Add(hours * time.Hour)})
			require.NoError(t, err)
			assert.Len(t, got, keys*hours/3)
			for _, r := range got {
				allowed += r.Allowed
				cost += r.Cost
			}
		}
		var wantAllowed, wantCost int64
		for _, r := range rs {
			wantAllowed += r.Allowed
			wantCost += r.Cost
		}
		assert.Equal(t, wantAllowed, allowed)
		assert.Equal(t, wantCost, cost)
	})
}
