package limitertest

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
)

// debiter returns the limiter as an limits.Debiter, or skips the test.
func debiter(t *testing.T, e env) limits.Debiter {
	d, ok := e.l.(limits.Debiter)
	if !ok {
		t.Skip("limitertest: the limiter does not implement limits.Debiter")
	}
	return d
}

// debit calls Debit and requires no error.
func debit(t *testing.T, d limits.Debiter, id string, amount int64, lims ...limits.Limit) limits.Result {
	t.Helper()
	res, err := d.Debit(context.Background(), id, lims, amount)
	require.NoError(t, err)
	return res
}

// A debit takes its amount from quotas and credits, not from rates,
// answers every limit's state after it, and a refund gives back.
func testDebit(t *testing.T, e env) {
	d := debiter(t, e)
	id := apikey.NewID()
	c := limits.Credits("credits", 5, limits.Never)
	c.Subject = apikey.NewID()
	ls := []limits.Limit{limits.Quota("daily", 10, limits.Day), c, limits.Rate("hourly", 10, time.Hour, 0)}
	require.True(t, allow(t, e.l, id, 1, ls...).Allowed)

	res := debit(t, d, id, 3, ls...)
	assert.True(t, res.Allowed)
	assert.Equal(t, []int64{6, 1, 9}, remaining(res), "quota and credits debited, the rate as it stands")
	assert.Equal(t, "credits", res.Limit.Name, "the tightest limit")
	assert.Equal(t, int64(1), res.Remaining)
	assert.Zero(t, res.Reset, "credits never refilled")
	if !e.real {
		assert.Equal(t, 12*time.Hour, res.States[0].Reset)
	}
	for _, s := range res.States {
		assert.Zero(t, s.RetryAfter)
	}

	assert.Equal(t, []int64{5, 0, 8}, remaining(allow(t, e.l, id, 1, ls...)), "Allow sees the debit")
	assert.Equal(t, []int64{7, 2, 8}, remaining(debit(t, d, id, -2, ls...)), "a refund")
	assert.Equal(t, []int64{7, 2, 8}, remaining(debit(t, d, id, 0, ls...)), "an amount of 0 only reads")
	assert.Equal(t, []int64{7, 2, 8}, remaining(debit(t, d, id, 0, ls...)))

	res = debit(t, d, id, 2, ls[0])
	assert.Equal(t, int64(5), res.Remaining, "a single limit")
	assert.Equal(t, "daily", res.Limit.Name)
	other := apikey.NewID()
	assert.Equal(t, []int64{10, 5, 10}, remaining(debit(t, d, other, 0, ls...)), "another subject is untouched")
	res = debit(t, d, other, 0)
	assert.True(t, res.Allowed, "no limits")
}

// A debit may take a balance below zero; the next request is refused
// until the balance recovers, and a refund never takes a limit above its
// count.
func testDebitOverdraw(t *testing.T, e env) {
	d := debiter(t, e)
	id := apikey.NewID()
	q := limits.Quota("daily", 5, limits.Day)
	require.True(t, allow(t, e.l, id, 5, q).Allowed)
	res := debit(t, d, id, 4, q)
	assert.Equal(t, int64(-4), res.Remaining, "a debt")
	res = allow(t, e.l, id, 1, q)
	require.False(t, res.Allowed, "a debt refuses the next request")
	assert.Equal(t, int64(0), res.Remaining, "Allow reports no debt")
	assert.Positive(t, res.RetryAfter, "until the quota's window ends")
	assert.Equal(t, int64(-1), debit(t, d, id, -3, q).Remaining)
	require.False(t, allow(t, e.l, id, 1, q).Allowed)
	assert.Equal(t, int64(1), debit(t, d, id, -2, q).Remaining)
	require.True(t, allow(t, e.l, id, 1, q).Allowed, "the balance recovered")
	assert.Equal(t, int64(5), debit(t, d, id, -100, q).Remaining, "a refund never goes above the count")
	require.True(t, allow(t, e.l, id, 5, q).Allowed)

	fresh := apikey.NewID()
	assert.Equal(t, int64(5), debit(t, d, fresh, -3, q).Remaining, "a refund with nothing used")
	require.True(t, allow(t, e.l, fresh, 5, q).Allowed)

	c := limits.Credits("credits", 2, limits.Never)
	c.Subject = apikey.NewID()
	assert.Equal(t, int64(-1), debit(t, d, id, 3, c).Remaining)
	res = allow(t, e.l, id, 1, c)
	require.False(t, res.Allowed)
	assert.Zero(t, res.RetryAfter, "credits never refilled: no wait helps")
}

// A quota's debt ends with its window, as do the debts of credits
// refilled each day.
func testDebitQuotaDebt(t *testing.T, e env) {
	d := debiter(t, e)
	id := apikey.NewID()
	c := limits.Credits("credits", 5, limits.Day)
	c.Subject = apikey.NewID()
	ls := []limits.Limit{limits.Quota("daily", 5, limits.Day), c}
	res := debit(t, d, id, 12, ls...)
	assert.Equal(t, []int64{-7, -7}, remaining(res))
	assert.Equal(t, 12*time.Hour, res.Reset)
	require.False(t, allow(t, e.l, id, 1, ls...).Allowed)
	e.clock.Advance(12*time.Hour - time.Second)
	require.False(t, allow(t, e.l, id, 1, ls...).Allowed)
	e.clock.Advance(time.Second)
	res = allow(t, e.l, id, 1, ls...)
	require.True(t, res.Allowed, "a new window")
	assert.Equal(t, []int64{4, 4}, remaining(res))
}

// A debt of credits never refilled stays, whatever the time; granting
// more credits pays it.
func testDebitCreditsDebt(t *testing.T, e env) {
	d := debiter(t, e)
	id := apikey.NewID()
	c := limits.Credits("credits", 5, limits.Never)
	c.Subject = apikey.NewID()
	assert.Equal(t, int64(-3), debit(t, d, id, 8, c).Remaining)
	e.clock.Advance(400 * 24 * time.Hour)
	require.False(t, allow(t, e.l, id, 1, c).Allowed, "the debt ended")
	assert.Equal(t, int64(-3), debit(t, d, id, 0, c).Remaining)
	c.Count = 10 // a grant
	res := allow(t, e.l, id, 1, c)
	require.True(t, res.Allowed)
	assert.Equal(t, int64(1), res.Remaining)
}

// Bad arguments are errors wrapping limits.ErrInvalid and debit
// nothing.
func testDebitInvalid(t *testing.T, e env) {
	d := debiter(t, e)
	id := apikey.NewID()
	q := limits.Quota("daily", 5, limits.Day)
	for _, tc := range []struct {
		name    string
		subject string
		lims    []limits.Limit
		amount  int64
	}{
		{"EmptySubject", "", []limits.Limit{q}, 1},
		{"InvalidLimit", id, []limits.Limit{q, limits.Quota("bad", 0, limits.Day)}, 1},
		{"LimitNameTwice", id, []limits.Limit{q, q}, 1},
		{"AmountTooLarge", id, []limits.Limit{q}, limitsMax + 1},
		{"RefundTooLarge", id, []limits.Limit{q}, -limitsMax - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.Debit(context.Background(), tc.subject, tc.lims, tc.amount)
			require.ErrorIs(t, err, limits.ErrInvalid)
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := d.Debit(ctx, id, []limits.Limit{q}, 1)
	require.Error(t, err, "a cancelled context")
	assert.Equal(t, int64(5), debit(t, d, id, 0, q).Remaining, "an invalid call debited")
	assert.Equal(t, int64(5-limitsMax), debit(t, d, id, limitsMax, q).Remaining, "the largest amount")
}

// Concurrent requests, each admitted with a reservation and then settled
// with a random cost known after its work (a debit of the difference,
// negative for a refund): what is debited in total equals what was
// reported exactly, and a balance never falls below minus the sum of the
// costs of the requests in flight when it was last admitted into.
func testPostHoc(t *testing.T, e env) {
	d := debiter(t, e)
	const workers, each, quota, credits, burst = 64, 25, 6000, 4000, 1_000_000
	id := apikey.NewID()
	c := limits.Credits("credits", credits, limits.Never)
	c.Subject = apikey.NewID()
	ls := []limits.Limit{limits.Quota("daily", quota, limits.Day), c, limits.Rate("slow", burst, 10_000*time.Hour, 0)}

	// inflight sums the costs of the requests between the start of their
	// Allow and the end of their Debit; peak is its highest value.
	var inflight, peak, reported, reserved, admitted, denied, errs atomic.Int64
	var low atomic.Int64 // the lowest balance a Debit answered
	var mu sync.Mutex
	var over []string
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range each {
				r, cost := 1+rng.Int64N(3), rng.Int64N(25)
				for n := inflight.Add(cost); ; {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				res, err := e.l.Allow(context.Background(), id, ls, r)
				if err != nil {
					errs.Add(1)
					inflight.Add(-cost)
					continue
				}
				if !res.Allowed {
					denied.Add(1)
					inflight.Add(-cost)
					continue
				}
				admitted.Add(1)
				reserved.Add(r)
				res, err = d.Debit(context.Background(), id, ls, cost-r)
				if err != nil {
					errs.Add(1)
					inflight.Add(-cost)
					continue
				}
				reported.Add(cost)
				bound := -peak.Load()
				for _, s := range res.States[:2] {
					for l := low.Load(); s.Remaining < l && !low.CompareAndSwap(l, s.Remaining); l = low.Load() {
					}
					if s.Remaining < bound {
						mu.Lock()
						over = append(over, "balance below minus the costs in flight")
						mu.Unlock()
					}
				}
				inflight.Add(-cost)
			}
		})
	}
	wg.Wait()
	require.Zero(t, errs.Load())
	t.Logf("admitted %d, denied %d, reported %d, lowest balance %d, peak in flight %d",
		admitted.Load(), denied.Load(), reported.Load(), low.Load(), peak.Load())

	res := debit(t, d, id, 0, ls...)
	assert.Equal(t, quota-reported.Load(), res.States[0].Remaining, "the quota's total debit is not the total reported")
	assert.Equal(t, credits-reported.Load(), res.States[1].Remaining, "the credits' total debit is not the total reported")
	want := burst - reserved.Load() // rates count the reservations only
	if held := e.under.units(ls[2]); e.real || held > 0 {
		// A limiter may hold back part of the rate, never give more.
		assert.LessOrEqual(t, res.States[2].Remaining, want+1)
		assert.GreaterOrEqual(t, res.States[2].Remaining, want-held-1)
	} else {
		assert.Equal(t, want, res.States[2].Remaining)
	}
	assert.Empty(t, over)
	assert.Positive(t, denied.Load(), "the budget never ran out: the test proves nothing")
	if res.States[1].Remaining < 1 {
		require.False(t, allow(t, e.l, id, 1, ls...).Allowed, "a request admitted while the credits are spent")
	}
}
