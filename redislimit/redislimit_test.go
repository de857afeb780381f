package redislimit_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limitertest"
	"github.com/gokeys/apikey/redislimit"
)

// newMiniredis starts a miniredis whose clock (TIME and key expiry)
// follows clock, and returns a client for it.
func newMiniredis(t *testing.T, clock *limitertest.Clock) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	mr := miniredis.RunT(t)
	mr.SetTime(clock.Now())
	clock.OnMove(func(now time.Time, d time.Duration) {
		mr.SetTime(now)
		if d > 0 {
			mr.FastForward(d)
		}
	})
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return mr, c
}

func newLimiter(t *testing.T, c redis.UniversalClient, prefix string) *redislimit.Limiter {
	t.Helper()
	l, err := redislimit.New(c, redislimit.Options{Prefix: prefix})
	require.NoError(t, err)
	return l
}

// realRedis returns the address of the Redis server named by
// APIKEY_TEST_REDIS_ADDR after checking it answers. It skips the test when
// the variable is unset, and when the server is unreachable unless CI=true,
// where it fails.
func realRedis(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("APIKEY_TEST_REDIS_ADDR")
	if addr == "" {
		t.Skip("APIKEY_TEST_REDIS_ADDR is not set")
	}
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 2 * time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Redis at %s (APIKEY_TEST_REDIS_ADDR) is unreachable: %v", addr, err)
		}
		t.Skipf("Redis at %s (APIKEY_TEST_REDIS_ADDR) is unreachable: %v", addr, err)
	}
	return addr
}

// testPrefix returns a prefix of its own for one test run, and deletes its
// keys at the end of the test.
func testPrefix(t *testing.T, c redis.UniversalClient) string {
	t.Helper()
	prefix := "apikey:test:" + rand.Text()[:12] + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return prefix
}

func TestConformanceMiniredis(t *testing.T) {
	t.Parallel()
	limitertest.Run(t, limitertest.Config{
		New: func(t *testing.T, clock *limitertest.Clock) apikey.Limiter {
			_, c := newMiniredis(t, clock)
			return newLimiter(t, c, "")
		},
	})
}

func TestConformanceRedis(t *testing.T) {
	t.Parallel()
	addr := realRedis(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	prefix := testPrefix(t, c)
	limitertest.Run(t, limitertest.Config{
		New: func(t *testing.T, _ *limitertest.Clock) apikey.Limiter {
			return newLimiter(t, c, prefix)
		},
		RealTime: true,
	})
}

func TestNewValidatesOptions(t *testing.T) {
	t.Parallel()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = c.Close() })
	tests := []struct {
		name   string
		client redis.UniversalClient
		prefix string
		ok     bool
	}{
		{"Default", c, "", true},
		{"CustomPrefix", c, "myapp:limits:", true},
		{"NilClient", nil, "", false},
		{"PrefixWithOpeningBrace", c, "a{b:", false},
		{"PrefixWithClosingBrace", c, "a}b:", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := redislimit.New(tc.client, redislimit.Options{Prefix: tc.prefix})
			if tc.ok {
				require.NoError(t, err)
				require.NotNil(t, l)
				return
			}
			require.ErrorIs(t, err, apikey.ErrInvalidOptions)
		})
	}
}

func TestAllowValidatesArguments(t *testing.T) {
	t.Parallel()
	_, c := newMiniredis(t, limitertest.NewClock(limitertest.Start()))
	l := newLimiter(t, c, "")
	tests := []struct {
		name  string
		id    string
		limit apikey.Limit
	}{
		{"EmptyKeyID", "", apikey.Quota("q", 1, apikey.Day)},
		{"HugeQuota", "k", apikey.Quota("q", 1<<50, apikey.Day)},
		{"RateTooLong", "k", apikey.Rate("r", 1, 1000*time.Hour, 1<<40)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.Allow(context.Background(), tc.id, []apikey.Limit{tc.limit}, 1)
			require.ErrorIs(t, err, apikey.ErrInvalidOptions)
		})
	}
}

func TestStorageKeys(t *testing.T) {
	t.Parallel()
	clock := limitertest.NewClock(limitertest.Start())
	mr, c := newMiniredis(t, clock)
	l := newLimiter(t, c, "app:")
	limits := []apikey.Limit{apikey.Rate("per-second", 10, time.Second, 0), apikey.Quota("daily", 100, apikey.Day)}
	res, err := l.Allow(context.Background(), "abc123", limits, 1)
	require.NoError(t, err)
	require.True(t, res.Allowed)

	// One key per key id, holding every limit; it lives as long as its
	// longest-lived entry, the quota's, until midnight UTC.
	const key = "app:{abc123}"
	assert.Equal(t, []string{key}, mr.Keys())
	assert.Equal(t, 12*time.Hour, mr.TTL(key))
	midnight := time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC).Unix()
	tat := limitertest.Start().Add(100 * time.Millisecond).UnixMicro()
	v, err := mr.Get(key)
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("\nper-second=%d\ndaily=%d:1\n", tat, midnight), v)

	// A call with other limits keeps the entries it does not name while
	// they matter, and drops them once expired.
	hourly := []apikey.Limit{apikey.Quota("hourly", 5, apikey.Hour)}
	_, err = l.Allow(context.Background(), "abc123", hourly, 1)
	require.NoError(t, err)
	hour := time.Date(2026, 3, 14, 13, 0, 0, 0, time.UTC).Unix()
	v, err = mr.Get(key)
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("\nper-second=%d\ndaily=%d:1\nhourly=%d:1\n", tat, midnight, hour), v)
	assert.Equal(t, 12*time.Hour, mr.TTL(key))

	clock.Advance(100 * time.Millisecond)
	_, err = l.Allow(context.Background(), "abc123", hourly, 1)
	require.NoError(t, err)
	v, err = mr.Get(key)
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("\ndaily=%d:1\nhourly=%d:2\n", midnight, hour), v)

	// Past the hour only the daily quota is left; a new hourly window
	// starts from zero.
	clock.Advance(time.Hour)
	_, err = l.Allow(context.Background(), "abc123", limits[1:], 1)
	require.NoError(t, err)
	v, err = mr.Get(key)
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("\ndaily=%d:2\n", midnight), v)
	assert.Equal(t, 12*time.Hour-time.Hour-100*time.Millisecond, mr.TTL(key))

	// The state disappears when it stops mattering.
	clock.Advance(11 * time.Hour)
	assert.Empty(t, mr.Keys())
}

// TestExpiryIsTheLongestEntry checks that the key outlives every entry,
// including one the current call does not name.
func TestExpiryIsTheLongestEntry(t *testing.T) {
	t.Parallel()
	clock := limitertest.NewClock(limitertest.Start())
	mr, c := newMiniredis(t, clock)
	l := newLimiter(t, c, "")
	ctx := context.Background()
	slow := []apikey.Limit{apikey.Rate("slow", 1, time.Hour, 3)}
	fast := []apikey.Limit{apikey.Rate("fast", 10, time.Second, 0)}
	for range 2 {
		_, err := l.Allow(ctx, "k", slow, 1)
		require.NoError(t, err)
	}
	_, err := l.Allow(ctx, "k", fast, 1)
	require.NoError(t, err)
	assert.Equal(t, 2*time.Hour, mr.TTL(redislimit.DefaultPrefix+"{k}"))

	clock.Advance(time.Hour)
	res, err := l.Allow(ctx, "k", slow, 1)
	require.NoError(t, err)
	require.True(t, res.Allowed)
	assert.Equal(t, int64(1), res.Remaining, "the slow rate's state was lost")
}

// TestNames checks that names holding the entry syntax ('=', ':') keep
// states of their own, a rate's apart from a quota's, and that a newline is
// rejected.
func TestNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		client func(t *testing.T) (redis.UniversalClient, string)
	}{
		{"Miniredis", func(t *testing.T) (redis.UniversalClient, string) {
			_, c := newMiniredis(t, limitertest.NewClock(limitertest.Start()))
			return c, ""
		}},
		{"Redis", func(t *testing.T) (redis.UniversalClient, string) {
			c := redis.NewClient(&redis.Options{Addr: realRedis(t)})
			t.Cleanup(func() { _ = c.Close() })
			return c, testPrefix(t, c)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, prefix := tc.client(t)
			l := newLimiter(t, c, prefix)
			ctx := context.Background()
			id := apikey.NewID()
			// Names that prefix one another, and limits with their own
			// Subject (whose entry is "<name>@<kind><Subject>"), each have
			// a state of their own.
			var lims []apikey.Limit
			for _, name := range []string{"a", "a:1", "a/b", "a.b", "a*", "a-1", "A_b", "a:"} {
				lims = append(lims, apikey.Quota(name, 2, apikey.Day), apikey.Rate(name, 2, time.Hour, 0))
				for _, sub := range []string{"x", "x=", "x=1", "=", "a b", "ü", "{x}"} {
					for _, lim := range []apikey.Limit{apikey.Quota(name, 2, apikey.Day), apikey.Rate(name, 2, time.Hour, 0), apikey.Credits(name, 2, apikey.Never)} {
						lim.Subject = sub
						lims = append(lims, lim)
					}
				}
			}
			for _, want := range []int64{1, 0} {
				for _, lim := range lims {
					res, err := l.Allow(ctx, id, []apikey.Limit{lim}, 1)
					require.NoError(t, err, "%q@%q", lim.Name, lim.Subject)
					require.True(t, res.Allowed, "%q@%q", lim.Name, lim.Subject)
					require.Equal(t, want, res.Remaining, "%q@%q (%v) does not have a state of its own", lim.Name, lim.Subject, lim.Kind)
				}
			}

			for _, name := range []string{"a\nb", "\n", "a\n", "a=", "=a", "a b", "ü", "1", "", "a@b", `a"`} {
				_, err := l.Allow(ctx, id, []apikey.Limit{apikey.Quota(name, 1, apikey.Day)}, 1)
				require.ErrorIs(t, err, apikey.ErrInvalidOptions, "%q", name)
			}
			bad := apikey.Credits("c", 1, apikey.Never)
			bad.Subject = "a\nb"
			_, err := l.Allow(ctx, id, []apikey.Limit{bad}, 1)
			require.ErrorIs(t, err, apikey.ErrInvalidOptions)
		})
	}
}

// TestMonthWindows checks the script's calendar against Go's for every
// month of 2000 (a leap century) to 2030 and of 2099 to 2101 (2100 is not
// a leap year): a quota used at the first microsecond of a month is still
// used at its last microsecond, and reset at the next month.
func TestMonthWindows(t *testing.T) {
	t.Parallel()
	clock := limitertest.NewClock(limitertest.Start())
	_, c := newMiniredis(t, clock)
	l := newLimiter(t, c, "")
	ctx := context.Background()
	q := []apikey.Limit{apikey.Quota("monthly", 1, apikey.Month)}
	for m := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC); m.Year() <= 2101; m = m.AddDate(0, 1, 0) {
		if m.Year() == 2031 {
			m = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
		}
		end := m.AddDate(0, 1, 0)
		clock.Set(m)
		res, err := l.Allow(ctx, "k", q, 1)
		require.NoError(t, err)
		require.True(t, res.Allowed, "not reset at %v", m)
		require.Equal(t, end.Sub(m), res.Reset, "%v", m)

		clock.Set(end.Add(-time.Microsecond))
		res, err = l.Allow(ctx, "k", q, 1)
		require.NoError(t, err)
		require.False(t, res.Allowed, "reset before the end of the month at %v", clock.Now())
		require.Equal(t, time.Microsecond, res.RetryAfter, "%v", clock.Now())
	}
}

func TestScriptFlushIsRecovered(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		client func(t *testing.T) (redis.UniversalClient, string)
	}{
		{"Miniredis", func(t *testing.T) (redis.UniversalClient, string) {
			_, c := newMiniredis(t, limitertest.NewClock(limitertest.Start()))
			return c, ""
		}},
		{"Redis", func(t *testing.T) (redis.UniversalClient, string) {
			c := redis.NewClient(&redis.Options{Addr: realRedis(t)})
			t.Cleanup(func() { _ = c.Close() })
			return c, testPrefix(t, c)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, prefix := tc.client(t)
			l := newLimiter(t, c, prefix)
			ctx := context.Background()
			q := []apikey.Limit{apikey.Quota("daily", 3, apikey.Day)}
			id := apikey.NewID()
			for _, want := range []int64{2, 1, 0} {
				require.NoError(t, c.ScriptFlush(ctx).Err())
				res, err := l.Allow(ctx, id, q, 1)
				require.NoError(t, err, "NOSCRIPT not recovered")
				require.True(t, res.Allowed)
				require.Equal(t, want, res.Remaining)
			}
			res, err := l.Allow(ctx, id, q, 1)
			require.NoError(t, err)
			require.False(t, res.Allowed)
		})
	}
}

func TestOutageIsErrUnavailable(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{
		Addr:         mr.Addr(),
		DialTimeout:  200 * time.Millisecond,
		ReadTimeout:  200 * time.Millisecond,
		WriteTimeout: 200 * time.Millisecond,
		MaxRetries:   -1,
	})
	t.Cleanup(func() { _ = c.Close() })
	l := newLimiter(t, c, "")
	ctx := context.Background()
	limits := []apikey.Limit{apikey.Quota("daily", 100, apikey.Day), apikey.Rate("r", 10, time.Second, 0)}

	res, err := l.Allow(ctx, "k", limits, 1)
	require.NoError(t, err)
	require.True(t, res.Allowed)

	mr.Close()
	for range 3 {
		start := time.Now()
		_, err = l.Allow(ctx, "k", limits, 1)
		require.Error(t, err)
		assert.ErrorIs(t, err, apikey.ErrUnavailable)
		assert.Less(t, time.Since(start), time.Second, "the failure is not prompt")
	}
	assert.NotContains(t, err.Error(), "secret")
}

func TestCancelledContextDuringCallIsUnavailable(t *testing.T) {
	t.Parallel()
	_, c := newMiniredis(t, limitertest.NewClock(limitertest.Start()))
	l := newLimiter(t, c, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	_, err := l.Allow(ctx, "k", []apikey.Limit{apikey.Quota("daily", 1, apikey.Day)}, 1)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, apikey.ErrUnavailable)
}

// TestInstancesShareAQuota runs 16 limiters, each with its own client, on
// one key of a real Redis: exactly the quota is admitted.
func TestInstancesShareAQuota(t *testing.T) {
	t.Parallel()
	addr := realRedis(t)
	const instances, attempts = 16, 20
	admin := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = admin.Close() })
	prefix := testPrefix(t, admin)

	id := apikey.NewID()
	limits := []apikey.Limit{apikey.Quota("daily", 100, apikey.Day), apikey.Rate("hourly", 1000, time.Hour, 0)}
	var admitted, errs atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range instances {
		c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 4})
		t.Cleanup(func() { _ = c.Close() })
		l := newLimiter(t, c, prefix)
		for range 4 {
			wg.Go(func() {
				<-start
				for range attempts {
					res, err := l.Allow(context.Background(), id, limits, 1)
					switch {
					case err != nil:
						errs.Add(1)
					case res.Allowed:
						admitted.Add(1)
					}
				}
			})
		}
	}
	close(start)
	wg.Wait()
	require.Zero(t, errs.Load())
	assert.Equal(t, int64(100), admitted.Load(), "of %d attempts", instances*4*attempts)

	// The rate counted exactly the admitted requests.
	res, err := newLimiter(t, admin, prefix).Allow(context.Background(), id, limits[1:], 1)
	require.NoError(t, err)
	assert.Equal(t, int64(1000-101), res.Remaining)
}

func TestKeysNeverHoldMoreThanTheKeyID(t *testing.T) {
	t.Parallel()
	_, c := newMiniredis(t, limitertest.NewClock(limitertest.Start()))
	l := newLimiter(t, c, "")
	ctx := context.Background()
	id := apikey.NewID()
	_, err := l.Allow(ctx, id, []apikey.Limit{apikey.Quota("daily", 1, apikey.Day), apikey.Rate("r", 1, time.Second, 0)}, 1)
	require.NoError(t, err)
	keys, err := c.Keys(ctx, "*").Result()
	require.NoError(t, err)
	assert.Equal(t, []string{redislimit.DefaultPrefix + "{" + id + "}"}, keys)
}

func FuzzAllowMiniredis(f *testing.F) {
	for _, s := range limitertest.FuzzSeeds() {
		f.Add(s.Kind, s.Name, s.Count, s.Period, s.Burst, s.Window, s.Cost)
	}
	mr := miniredis.RunT(f)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	f.Cleanup(func() { _ = c.Close() })
	l, err := redislimit.New(c, redislimit.Options{})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, kind uint8, name string, count, period, burst int64, window uint8, cost int64) {
		limitertest.Fuzz(t, l, kind, name, count, period, burst, window, cost)
	})
}
