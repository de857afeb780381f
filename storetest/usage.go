package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/usage"
)

// hour0 is the first hour of the usage tests.
var hour0 = time.Date(2026, 3, 14, 15, 0, 0, 0, time.UTC)

// hour returns the start of the i-th hour after hour0.
func hour(i int) time.Time { return hour0.Add(time.Duration(i) * time.Hour) }

// runUsageTests runs the usage.Store contract when the store implements
// it. It runs one subtest per sentence, then the race of concurrent
// flushes.
func runUsageTests(t *testing.T, newStore func(t *testing.T) apikey.Store, opts Options) {
	tests := []struct {
		name string
		fn   func(*testing.T, usage.Store)
	}{
		{"UsageRoundTripsEveryFieldWithStartInUTC", testUsageRoundTrip},
		{"UsageAddsCountsNeverReplaces", testUsageAdds},
		{"UsageSumsRecordsOfOneHourWithinACall", testUsageSumsWithinCall},
		{"UsageSelectsACustomerOrAKey", testUsageSelects},
		{"UsageRangeIsFromInclusiveToExclusive", testUsageRange},
		{"UsageIsOrderedByStartThenKeyID", testUsageOrder},
		{"UsageAddsLargeBatches", testUsageLarge},
		{"UsagePurgeDeletesRecordsStartingBefore", testUsagePurge},
		{"UsageHonoursCancelledContext", testUsageCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, usageStore(t, newStore(t))) })
	}
	if opts.Trials > 0 {
		t.Run("RaceConcurrentAddUsageSumsExactly", func(t *testing.T) {
			us := usageStore(t, newStore(t))
			runTrials(t, opts, func(n int) string { return raceAddUsage(t, us, n) })
		})
	}
}

func usageStore(t *testing.T, s apikey.Store) usage.Store {
	t.Helper()
	require.NotNil(t, s, "newStore returned nil")
	us, ok := s.(usage.Store)
	if !ok {
		t.Skip("store does not implement usage.Store")
	}
	return us
}

// rec returns a record of key id of customer in the h-th hour.
func rec(customer, id string, h int, allowed, limited, refused, cost int64) usage.Record {
	return usage.Record{Customer: customer, KeyID: id, Start: hour(h), Allowed: allowed, Limited: limited, Refused: refused, Cost: cost}
}

func mustAddUsage(t *testing.T, us usage.Store, rs ...usage.Record) {
	t.Helper()
	require.NoError(t, us.AddUsage(ctx(t), rs))
}

func mustUsage(t *testing.T, us usage.Store, q usage.Query) []usage.Record {
	t.Helper()
	rs, err := us.Usage(ctx(t), q)
	require.NoError(t, err)
	return rs
}

// assertRecords compares records in order, times with Equal and in UTC.
func assertRecords(t *testing.T, want, got []usage.Record, msg string) {
	t.Helper()
	require.Len(t, got, len(want), "%s: %v", msg, got)
	for i := range want {
		w, g := want[i], got[i]
		assert.True(t, w.Start.Equal(g.Start), "%s: record %d: Start: want %v, got %v", msg, i, w.Start, g.Start)
		assert.Equal(t, time.UTC, g.Start.Location(), "%s: record %d: Start not in UTC", msg, i)
		g.Start = w.Start
		assert.Equal(t, w, g, "%s: record %d", msg, i)
	}
}

func testUsageRoundTrip(t *testing.T, us usage.Store) {
	east := time.FixedZone("X", 2*3600)
	a := rec("alice", apikey.NewID(), 0, 1<<40, 7, 3, -5) // a refund may leave a negative cost
	b := rec("alice", apikey.NewID(), 1, 1, 0, 0, 1<<50)
	b.Start = b.Start.In(east) // the same instant, another zone
	mustAddUsage(t, us, a, b)
	b.Start = b.Start.UTC()
	assertRecords(t, []usage.Record{a, b}, mustUsage(t, us, usage.Query{Customer: "alice", From: hour(0), To: hour(2)}), "alice")
	assertRecords(t, []usage.Record{b}, mustUsage(t, us, usage.Query{KeyID: b.KeyID, From: hour(0), To: hour(2)}), "key b")
	require.NoError(t, us.AddUsage(ctx(t), nil), "an empty call")
	assertRecords(t, []usage.Record{a, b}, mustUsage(t, us, usage.Query{Customer: "alice", From: hour(0), To: hour(2)}), "after an empty call")
}

func testUsageAdds(t *testing.T, us usage.Store) {
	id := apikey.NewID()
	mustAddUsage(t, us, rec("alice", id, 0, 10, 1, 2, 100))
	mustAddUsage(t, us, rec("alice", id, 0, 5, 0, 1, 50))
	mustAddUsage(t, us, rec("alice", id, 0, 0, 4, 0, 0), rec("alice", id, 1, 1, 1, 1, 1))
	assertRecords(t, []usage.Record{rec("alice", id, 0, 15, 5, 3, 150), rec("alice", id, 1, 1, 1, 1, 1)},
		mustUsage(t, us, usage.Query{KeyID: id, From: hour(0), To: hour(2)}), "counts are added, not replaced")
}

func testUsageSumsWithinCall(t *testing.T, us usage.Store) {
	id, other := apikey.NewID(), apikey.NewID()
	mustAddUsage(t, us,
		rec("alice", id, 0, 1, 0, 0, 10),
		rec("alice", other, 0, 7, 7, 7, 7),
		rec("alice", id, 0, 2, 1, 0, 20),
		rec("alice", id, 0, 3, 0, 1, 30),
	)
	got := mustUsage(t, us, usage.Query{Customer: "alice", From: hour(0), To: hour(1)})
	want := []usage.Record{rec("alice", id, 0, 6, 1, 1, 60), rec("alice", other, 0, 7, 7, 7, 7)}
	if id > other {
		want[0], want[1] = want[1], want[0]
	}
	assertRecords(t, want, got, "records of one key and hour in one call are summed")
}

func testUsageSelects(t *testing.T, us usage.Store) {
	k1, k2, k3 := apikey.NewID(), apikey.NewID(), apikey.NewID()
	if k1 > k2 {
		k1, k2 = k2, k1
	}
	mustAddUsage(t, us, rec("alice", k1, 0, 1, 0, 0, 0), rec("alice", k2, 0, 2, 0, 0, 0), rec("bob", k3, 0, 3, 0, 0, 0),
		rec("ALICE", apikey.NewID(), 0, 4, 0, 0, 0))
	q := usage.Query{From: hour(0), To: hour(1)}
	q.Customer = "alice"
	assertRecords(t, []usage.Record{rec("alice", k1, 0, 1, 0, 0, 0), rec("alice", k2, 0, 2, 0, 0, 0)}, mustUsage(t, us, q),
		"a customer's records, and not another's (customers are case-sensitive)")
	q.Customer, q.KeyID = "", k2
	assertRecords(t, []usage.Record{rec("alice", k2, 0, 2, 0, 0, 0)}, mustUsage(t, us, q), "a key's records")
	q.Customer, q.KeyID = "bob", k3
	assertRecords(t, []usage.Record{rec("bob", k3, 0, 3, 0, 0, 0)}, mustUsage(t, us, q), "a key of its customer")
	q.Customer, q.KeyID = "carol", ""
	assert.Empty(t, mustUsage(t, us, q), "an unknown customer has none")
	q.Customer, q.KeyID = "", apikey.NewID()
	assert.Empty(t, mustUsage(t, us, q), "an unknown key has none")
}

func testUsageRange(t *testing.T, us usage.Store) {
	id := apikey.NewID()
	var all []usage.Record
	for h := range 5 {
		all = append(all, rec("alice", id, h, int64(h+1), 0, 0, 0))
	}
	mustAddUsage(t, us, all...)
	for _, tc := range []struct {
		name     string
		from, to time.Time
		want     []usage.Record
	}{
		{"FromIncludedToExcluded", hour(1), hour(3), all[1:3]},
		{"Wider", hour(-10), hour(10), all},
		{"FromInsideAnHour", hour(1).Add(30 * time.Minute), hour(3), all[2:3]},
		{"ToInsideAnHour", hour(1), hour(3).Add(time.Minute), all[1:4]},
		{"Empty", hour(2), hour(2), nil},
		{"Reversed", hour(3), hour(1), nil},
		{"Before", hour(-5), hour(0), nil},
		{"AfterInAnotherZone", hour(5).In(time.FixedZone("Y", -7*3600)), hour(9), nil},
	} {
		got := mustUsage(t, us, usage.Query{KeyID: id, From: tc.from, To: tc.to})
		assertRecords(t, tc.want, got, tc.name)
		got = mustUsage(t, us, usage.Query{Customer: "alice", From: tc.from, To: tc.to})
		assertRecords(t, tc.want, got, tc.name+" by customer")
	}
}

func testUsageOrder(t *testing.T, us usage.Store) {
	// In byte order: digits, upper case, lower case.
	ids := []string{"0rderTestKey0000", "ORDERtestKey0000", "OrderTestKey0000", "orderTestKey0000"}
	var want []usage.Record
	for h := range 3 {
		for i, id := range ids {
			want = append(want, rec("alice", id, h, int64(10*h+i+1), 0, 0, 0))
		}
	}
	shuffled := append([]usage.Record(nil), want...)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	mustAddUsage(t, us, shuffled[:5]...)
	mustAddUsage(t, us, shuffled[5:]...)
	assertRecords(t, want, mustUsage(t, us, usage.Query{Customer: "alice", From: hour(0), To: hour(3)}),
		"ordered by Start, then KeyID in byte order")
}

func testUsageLarge(t *testing.T, us usage.Store) {
	const keys = 1250
	var rs []usage.Record
	for i := range keys {
		id := fmt.Sprintf("large%011d", i)
		rs = append(rs, rec("alice", id, 0, int64(i), 1, 0, int64(2*i)), rec("alice", id, 1, 1, 0, int64(i), 0))
	}
	mustAddUsage(t, us, rs...)
	mustAddUsage(t, us, rs...)
	got := mustUsage(t, us, usage.Query{Customer: "alice", From: hour(0), To: hour(2)})
	require.Len(t, got, 2*keys)
	for i, g := range got {
		h, k := i/keys, i%keys
		want := rs[2*k+h]
		want.Allowed, want.Limited, want.Refused, want.Cost = 2*want.Allowed, 2*want.Limited, 2*want.Refused, 2*want.Cost
		if !assert.True(t, want.Start.Equal(g.Start) && want.KeyID == g.KeyID && want.Allowed == g.Allowed &&
			want.Limited == g.Limited && want.Refused == g.Refused && want.Cost == g.Cost,
			"record %d: want %+v, got %+v", i, want, g) {
			return
		}
	}
}

func testUsagePurge(t *testing.T, us usage.Store) {
	a, b := apikey.NewID(), apikey.NewID()
	var rs []usage.Record
	for h := range 4 {
		rs = append(rs, rec("alice", a, h, 1, 0, 0, 0), rec("bob", b, h, 1, 0, 0, 0))
	}
	mustAddUsage(t, us, rs...)
	purge := func(before time.Time) int {
		t.Helper()
		n, err := us.PurgeUsage(ctx(t), before)
		require.NoError(t, err)
		return n
	}
	assert.Equal(t, 0, purge(time.Time{}), "nothing starts before the zero time")
	assert.Equal(t, 0, purge(hour(0)), "a record starting at before is kept")
	assert.Equal(t, 4, purge(hour(2)), "the records of both customers in hours 0 and 1")
	assert.Equal(t, 0, purge(hour(2)), "nothing left before hour 2")
	q := usage.Query{Customer: "alice", From: hour(-5), To: hour(5)}
	assertRecords(t, []usage.Record{rs[4], rs[6]}, mustUsage(t, us, q), "alice keeps hours 2 and 3")
	assert.Equal(t, 2, purge(hour(2).Add(time.Minute)), "hour 2 starts before 2:01")
	q.Customer = "bob"
	assertRecords(t, []usage.Record{rs[7]}, mustUsage(t, us, q), "bob keeps hour 3")
}

func testUsageCancelled(t *testing.T, us usage.Store) {
	c, cancel := context.WithCancel(context.Background())
	cancel()
	id := apikey.NewID()
	assert.ErrorIs(t, us.AddUsage(c, []usage.Record{rec("alice", id, 0, 1, 0, 0, 0)}), context.Canceled, "AddUsage")
	_, err := us.Usage(c, usage.Query{KeyID: id, From: hour(0), To: hour(1)})
	assert.ErrorIs(t, err, context.Canceled, "Usage")
	_, err = us.PurgeUsage(c, hour(1))
	assert.ErrorIs(t, err, context.Canceled, "PurgeUsage")
	assert.Empty(t, mustUsage(t, us, usage.Query{KeyID: id, From: hour(0), To: hour(1)}), "a cancelled AddUsage adds nothing")
}

// The race of concurrent flushes. usageWriters instances each flush
// usageFlushes times, concurrently, records of the same usageKeys keys and
// usageHours hours, shuffled, some twice in one call.
const (
	usageWriters = 4
	usageFlushes = 2
	usageKeys    = 6
	usageHours   = 3
)

// raceAddUsage checks that concurrent AddUsage calls of overlapping
// records, as the flushes of several Managers make them, all succeed and
// sum exactly.
func raceAddUsage(t *testing.T, us usage.Store, n int) string {
	customer := fmt.Sprintf("race-%d", n)
	ids := make([]string, usageKeys)
	for i := range ids {
		ids[i] = apikey.NewID()
	}
	type cell struct {
		id string
		h  int
	}
	want := map[cell]usage.Record{}
	calls := make([][]usage.Record, usageWriters*usageFlushes)
	for c := range calls {
		for _, id := range ids {
			for h := range usageHours {
				r := rec(customer, id, h, rand.Int64N(100), rand.Int64N(10), rand.Int64N(10), rand.Int64N(1000)-100)
				calls[c] = append(calls[c], r)
				if rand.IntN(4) == 0 { // the same hour twice in one call
					calls[c] = append(calls[c], r)
					r.Allowed, r.Limited, r.Refused, r.Cost = 2*r.Allowed, 2*r.Limited, 2*r.Refused, 2*r.Cost
				}
				w := want[cell{id, h}]
				w.Customer, w.KeyID, w.Start = customer, id, r.Start
				w.Allowed += r.Allowed
				w.Limited += r.Limited
				w.Refused += r.Refused
				w.Cost += r.Cost
				want[cell{id, h}] = w
			}
		}
		rand.Shuffle(len(calls[c]), func(i, j int) { calls[c][i], calls[c][j] = calls[c][j], calls[c][i] })
	}
	errs := make([]error, usageWriters)
	fns := make([]func(), usageWriters)
	for w := range fns {
		fns[w] = func() {
			for f := range usageFlushes {
				if err := us.AddUsage(context.Background(), calls[w*usageFlushes+f]); err != nil {
					errs[w] = err
					return
				}
			}
		}
	}
	together(fns...)
	for w, err := range errs {
		if err != nil {
			return fmt.Sprintf("writer %d: AddUsage: %v", w, err)
		}
	}
	got, err := us.Usage(context.Background(), usage.Query{Customer: customer, From: hour(0), To: hour(usageHours)})
	if err != nil {
		return fmt.Sprintf("Usage: %v", err)
	}
	if len(got) != len(want) {
		return fmt.Sprintf("%d records, want %d", len(got), len(want))
	}
	for _, g := range got {
		w, ok := want[cell{g.KeyID, int(g.Start.Sub(hour0) / time.Hour)}]
		g.Start = w.Start
		if !ok || g != w {
			return fmt.Sprintf("key %s at %v: got %+v, want the sums %+v", g.KeyID, w.Start, g, w)
		}
	}
	return ""
}
