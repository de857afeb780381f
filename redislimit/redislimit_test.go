package redislimit_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
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
	"github.com/gokeys/apikey/limits"
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

func newLimiter(t testing.TB, c redis.UniversalClient, prefix string) *redislimit.Limiter {
	t.Helper()
	l, err := redislimit.New(c, redislimit.Options{Prefix: prefix})
	require.NoError(t, err)
	return l
}

// realRedis returns the address of the Redis server named by
// APIKEY_TEST_REDIS_ADDR after checking it answers. It skips the test when
// the variable is unset, and when the server is unreachable unless CI=true,
// where it fails.
func realRedis(t testing.TB) string {
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
// keys at the end of the test (on every master of a cluster).
func testPrefix(t testing.TB, c redis.UniversalClient) string {
	t.Helper()
	prefix := "apikey:test:" + rand.Text()[:12] + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		if cc, ok := c.(*redis.ClusterClient); ok {
			_ = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
				deleteKeys(ctx, node, prefix)
				return nil
			})
			return
		}
		deleteKeys(ctx, c, prefix)
	})
	return prefix
}

// deleteKeys deletes the keys of prefix on one server, one per command so
// that no command spans two cluster slots.
func deleteKeys(ctx context.Context, c redis.Cmdable, prefix string) {
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	pipe := c.Pipeline()
	for iter.Next(ctx) {
		pipe.Unlink(ctx, iter.Val())
		if pipe.Len() == 1000 {
			_, _ = pipe.Exec(ctx)
		}
	}
	_, _ = pipe.Exec(ctx)
}

func TestConformanceMiniredis(t *testing.T) {
	t.Parallel()
	limitertest.Run(t, limitertest.Config{
		New: func(t *testing.T, clock *limitertest.Clock) limits.Limiter {
			_, c := newMiniredis(t, clock)
			return newLimiter(t, c, "")
		},
		Fleet: func(t *testing.T, clock *limitertest.Clock, n int) []limits.Limiter {
			_, c := newMiniredis(t, clock)
			ls := make([]limits.Limiter, n)
			for i := range ls {
				ls[i] = newLimiter(t, c, "")
			}
			return ls
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
		New: func(t *testing.T, _ *limitertest.Clock) limits.Limiter {
			return newLimiter(t, c, prefix)
		},
		Fleet: func(t *testing.T, _ *limitertest.Clock, n int) []limits.Limiter {
			ls := make([]limits.Limiter, n)
			for i := range ls {
				ls[i] = newLimiter(t, c, prefix)
			}
			return ls
		},
		RealTime: true,
	})
}

func TestConformanceRedisCluster(t *testing.T) {
	t.Parallel()
	c := realCluster(t)
	prefix := testPrefix(t, c)
	limitertest.Run(t, limitertest.Config{
		New: func(t *testing.T, _ *limitertest.Clock) limits.Limiter {
			return newLimiter(t, c, prefix)
		},
		Fleet: func(t *testing.T, _ *limitertest.Clock, n int) []limits.Limiter {
			ls := make([]limits.Limiter, n)
			for i := range ls {
				ls[i] = newLimiter(t, c, prefix)
			}
			return ls
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
	_, err := redislimit.New(c, redislimit.Options{CreditsTTL: -time.Second})
	require.ErrorIs(t, err, apikey.ErrInvalidOptions, "negative CreditsTTL")
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
		limit limits.Limit
	}{
		{"EmptyKeyID", "", limits.Quota("q", 1, limits.Day)},
		{"HugeQuota", "k", limits.Quota("q", 1<<50, limits.Day)},
		{"RateTooLong", "k", limits.Rate("r", 1, 1000*time.Hour, 1<<40)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.Allow(context.Background(), tc.id, []limits.Limit{tc.limit}, 1)
			require.ErrorIs(t, err, limits.ErrInvalid)
		})
	}
}

func TestStorageKeys(t *testing.T) {
	t.Parallel()
	clock := limitertest.NewClock(limitertest.Start())
	mr, c := newMiniredis(t, clock)
	l := newLimiter(t, c, "app:")
	ctx := context.Background()
	credits := limits.Credits("credits", 5, limits.Never)
	credits.Subject = "AbC"
	monthly := limits.Credits("monthly", 5, limits.Month)
	monthly.Subject = "AbC"
	lims := []limits.Limit{limits.Rate("per-second", 10, time.Second, 0), limits.Quota("daily", 100, limits.Day), credits, monthly}
	res, err := l.Allow(ctx, "abc123", lims, 1)
	require.NoError(t, err)
	require.True(t, res.Allowed)

	// One key per limit of the subject, each expiring on its own: a rate
	// when it is whole again, a quota or credits refilled at the end of the
	// window, credits never refilled after CreditsTTL.
	now := limitertest.Start().UnixMicro()
	midnight := time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC).Unix()
	april := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	want := []struct {
		key, value string
		ttl        time.Duration
	}{
		{"app:{abc123}r10:per-second", fmt.Sprintf("%d:%d", now+100_000, now), 100 * time.Millisecond},
		{"app:{abc123}q5:daily", fmt.Sprintf("%d:1", midnight), 12 * time.Hour},
		{"app:{abc123}c7:credits:AbC", "0:1", redislimit.DefaultCreditsTTL},
		{"app:{abc123}c7:monthly:AbC", fmt.Sprintf("%d:1", april.Unix()), april.Sub(limitertest.Start())},
	}
	var keys []string
	for _, w := range want {
		keys = append(keys, w.key)
		v, err := mr.Get(w.key)
		require.NoError(t, err, w.key)
		assert.Equal(t, w.value, v, w.key)
		assert.Equal(t, w.ttl, mr.TTL(w.key), w.key)
	}
	assert.ElementsMatch(t, keys, mr.Keys())

	// A call reads and writes only its own keys.
	clock.Advance(50 * time.Millisecond)
	res, err = l.Allow(ctx, "abc123", lims[1:2], 1)
	require.NoError(t, err)
	require.Equal(t, int64(98), res.Remaining)
	v, err := mr.Get(want[0].key)
	require.NoError(t, err)
	assert.Equal(t, want[0].value, v)
	assert.Equal(t, 50*time.Millisecond, mr.TTL(want[0].key))
	assert.Equal(t, want[2].ttl-50*time.Millisecond, mr.TTL(want[2].key))

	// The rate's state disappears when it is whole again, the quota's at
	// midnight, the monthly credits' at the end of the month.
	clock.Advance(50 * time.Millisecond)
	assert.False(t, mr.Exists(want[0].key))
	clock.Set(time.Unix(midnight, 0))
	assert.ElementsMatch(t, keys[2:], mr.Keys())
	clock.Set(april)
	assert.Equal(t, keys[2:3], mr.Keys())
}

// The state of credits never refilled is kept CreditsTTL after their last
// spend, each spend renewing it; then it is forgotten.
func TestCreditsTTL(t *testing.T) {
	t.Parallel()
	clock := limitertest.NewClock(limitertest.Start())
	mr, c := newMiniredis(t, clock)
	l, err := redislimit.New(c, redislimit.Options{CreditsTTL: 30 * 24 * time.Hour})
	require.NoError(t, err)
	ctx := context.Background()
	credits := []limits.Limit{limits.Credits("credits", 2, limits.Never)}
	credits[0].Subject = "key"
	spend := func() limits.Result {
		res, err := l.Allow(ctx, "owner", credits, 1)
		require.NoError(t, err)
		return res
	}
	require.True(t, spend().Allowed)
	clock.Advance(29 * 24 * time.Hour)
	require.True(t, spend().Allowed, "credits lost before CreditsTTL")
	clock.Advance(29 * 24 * time.Hour)
	require.False(t, spend().Allowed, "the spend did not renew the credits' state")
	key := redislimit.DefaultPrefix + "{owner}c7:credits:key"
	assert.Equal(t, 24*time.Hour, mr.TTL(key), "a denied call renewed the state")
	// 30 days after the last spend, the credits are forgotten: granted
	// again in full.
	clock.Advance(24 * time.Hour)
	assert.False(t, mr.Exists(key))
	res := spend()
	require.True(t, res.Allowed)
	assert.Equal(t, int64(1), res.Remaining)
}

// TestNames checks that names and limit Subjects holding the key syntax
// (':', digits, braces) keep states of their own, a rate's apart from a
// quota's, and that invalid names are rejected.
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
		{"RedisCluster", func(t *testing.T) (redis.UniversalClient, string) {
			c := realCluster(t)
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
			// Subject, each have a state of their own.
			var lims []limits.Limit
			for _, name := range []string{"a", "a:1", "a/b", "a.b", "a*", "a-1", "A_b", "a:"} {
				lims = append(lims, limits.Quota(name, 2, limits.Day), limits.Rate(name, 2, time.Hour, 0))
				for _, sub := range []string{"x", "x=", "x=1", "=", "a b", "ü", "{x}", "}", "1:a", ":", "a\nb", "\n"} {
					for _, lim := range []limits.Limit{limits.Quota(name, 2, limits.Day), limits.Rate(name, 2, time.Hour, 0), limits.Credits(name, 2, limits.Never)} {
						lim.Subject = sub
						lims = append(lims, lim)
					}
				}
			}
			for _, want := range []int64{1, 0} {
				for _, lim := range lims {
					res, err := l.Allow(ctx, id, []limits.Limit{lim}, 1)
					require.NoError(t, err, "%q@%q", lim.Name, lim.Subject)
					require.True(t, res.Allowed, "%q@%q", lim.Name, lim.Subject)
					require.Equal(t, want, res.Remaining, "%q@%q (%v) does not have a state of its own", lim.Name, lim.Subject, lim.Kind)
				}
			}

			for _, name := range []string{"a\nb", "\n", "a\n", "a=", "=a", "a b", "ü", "1", "", "a@b", `a"`} {
				_, err := l.Allow(ctx, id, []limits.Limit{limits.Quota(name, 1, limits.Day)}, 1)
				require.ErrorIs(t, err, limits.ErrInvalid, "%q", name)
			}
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
	q := []limits.Limit{limits.Quota("monthly", 1, limits.Month)}
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
		{"RedisCluster", func(t *testing.T) (redis.UniversalClient, string) {
			c := realCluster(t)
			return c, testPrefix(t, c)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, prefix := tc.client(t)
			l := newLimiter(t, c, prefix)
			ctx := context.Background()
			q := []limits.Limit{limits.Quota("daily", 3, limits.Day)}
			id := apikey.NewID()
			for _, want := range []int64{2, 1, 0} {
				require.NoError(t, c.ScriptFlush(ctx).Err())
				res, err := l.Peek(ctx, id, q)
				require.NoError(t, err, "NOSCRIPT not recovered by Peek")
				require.Equal(t, want, res.Remaining)
				require.NoError(t, c.ScriptFlush(ctx).Err())
				res, err = l.Allow(ctx, id, q, 1)
				require.NoError(t, err, "NOSCRIPT not recovered")
				require.True(t, res.Allowed)
				require.Equal(t, want, res.Remaining)
			}
			res, err := l.Allow(ctx, id, q, 1)
			require.NoError(t, err)
			require.False(t, res.Allowed)
			require.NoError(t, c.ScriptFlush(ctx).Err())
			res, err = l.Debit(ctx, id, q, -1)
			require.NoError(t, err, "NOSCRIPT not recovered by Debit")
			require.Equal(t, int64(1), res.Remaining)

			// A single rate runs a script of its own.
			r := []limits.Limit{limits.Rate("hourly", 10, time.Hour, 0)}
			require.NoError(t, c.ScriptFlush(ctx).Err())
			res, err = l.Peek(ctx, id, r)
			require.NoError(t, err, "NOSCRIPT not recovered by Peek of a rate")
			require.Equal(t, int64(9), res.Remaining)
			require.NoError(t, c.ScriptFlush(ctx).Err())
			res, err = l.Allow(ctx, id, r, 1)
			require.NoError(t, err, "NOSCRIPT not recovered by Allow of a rate")
			require.True(t, res.Allowed)
			require.Equal(t, int64(9), res.Remaining)
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
	lims := []limits.Limit{limits.Quota("daily", 100, limits.Day), limits.Rate("r", 10, time.Second, 0)}

	res, err := l.Allow(ctx, "k", lims, 1)
	require.NoError(t, err)
	require.True(t, res.Allowed)

	mr.Close()
	for range 3 {
		start := time.Now()
		_, err = l.Allow(ctx, "k", lims, 1)
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
	_, err := l.Allow(ctx, "k", []limits.Limit{limits.Quota("daily", 1, limits.Day)}, 1)
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
	lims := []limits.Limit{limits.Quota("daily", 100, limits.Day), limits.Rate("hourly", 1000, time.Hour, 0)}
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
					res, err := l.Allow(context.Background(), id, lims, 1)
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
	res, err := newLimiter(t, admin, prefix).Allow(context.Background(), id, lims[1:], 1)
	require.NoError(t, err)
	assert.Equal(t, int64(1000-101), res.Remaining)
}

// Keys hold nothing but the prefix, the subject, the limits' kinds and
// names, and their Subjects.
func TestKeysHoldOnlyTheCallsNames(t *testing.T) {
	t.Parallel()
	_, c := newMiniredis(t, limitertest.NewClock(limitertest.Start()))
	l := newLimiter(t, c, "")
	ctx := context.Background()
	id := apikey.NewID()
	_, err := l.Allow(ctx, id, []limits.Limit{limits.Quota("daily", 1, limits.Day), limits.Rate("r", 1, time.Second, 0)}, 1)
	require.NoError(t, err)
	keys, err := c.Keys(ctx, "*").Result()
	require.NoError(t, err)
	p := redislimit.DefaultPrefix + "{" + id + "}"
	assert.ElementsMatch(t, []string{p + "q5:daily", p + "r1:r"}, keys)
}

// hashTag returns what Redis Cluster hashes of key: the part between the
// first '{' and the first '}' after it, when not empty; else the whole key.
func hashTag(key string) string {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			return key[s+1 : s+1+e]
		}
	}
	return key
}

// checkKeys checks that two (subject, limit) pairs have the same key only
// when they are the same pair, and that a key's hash tag is its subject's
// alone.
func checkKeys(t *testing.T, l *redislimit.Limiter, s1 string, l1 limits.Limit, s2 string, l2 limits.Limit) {
	t.Helper()
	k1, k2 := redislimit.Keys(l, s1, []limits.Limit{l1})[0], redislimit.Keys(l, s2, []limits.Limit{l2})[0]
	same := s1 == s2 && l1.Name == l2.Name && l1.Kind == l2.Kind && l1.Subject == l2.Subject
	if (k1 == k2) != same {
		t.Fatalf("(%q, %q %v %q) has key %q, (%q, %q %v %q) has key %q", s1, l1.Name, l1.Kind, l1.Subject, k1, s2, l2.Name, l2.Kind, l2.Subject, k2)
	}
	if tag1, tag2 := hashTag(k1), hashTag(k2); (tag1 == tag2) != (s1 == s2) || tag1 == k1 || tag2 == k2 {
		t.Fatalf("subjects %q and %q have hash tags %q and %q", s1, s2, tag1, tag2)
	}
}

// No two distinct (subject, kind, name, limit Subject) share a key, and all
// keys of a subject share one hash tag that no other subject has, whatever
// characters they hold.
func TestKeysNeverCollide(t *testing.T) {
	t.Parallel()
	l := newLimiter(t, redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), "p:")
	subjects := []string{"a", "a}", "}a", "}", "{", "{a}", "a{b}c", "%", "%7D", "%7B", "%25", "a%7Db", "a:b", "a}q1:b", "a}}", "a b", "ü"}
	names := []string{"a", "b", "a1", "a:1", "a:", "q1:a", "a:b", "a%", "a}"}
	subs := []string{"", "1", ":", "a", "b", "1:a", ":a", "a:b", "}", "{", "\n"}
	var pairs []struct {
		subject string
		limit   limits.Limit
	}
	for _, s := range subjects {
		for _, n := range names {
			if !strings.ContainsAny(n, "}") { // not a valid name: skipped
				for _, u := range subs {
					for _, lim := range []limits.Limit{limits.Rate(n, 1, time.Second, 0), limits.Quota(n, 1, limits.Day), limits.Credits(n, 1, limits.Never)} {
						lim.Subject = u
						pairs = append(pairs, struct {
							subject string
							limit   limits.Limit
						}{s, lim})
					}
				}
			}
		}
	}
	seen := map[string]int{}
	for i, p := range pairs {
		k := redislimit.Keys(l, p.subject, []limits.Limit{p.limit})[0]
		if j, ok := seen[k]; ok {
			checkKeys(t, l, pairs[j].subject, pairs[j].limit, p.subject, p.limit)
		}
		seen[k] = i
		tag := hashTag(k)
		require.NotEqual(t, k, tag, "%q has no hash tag", k)
		require.Equal(t, hashTag(redislimit.Keys(l, p.subject, []limits.Limit{limits.Quota("z", 1, limits.Day)})[0]), tag)
	}
	require.Len(t, seen, len(pairs))
	for i := range subjects {
		for j := range i {
			checkKeys(t, l, subjects[i], limits.Quota("a", 1, limits.Day), subjects[j], limits.Quota("a", 1, limits.Day))
		}
	}
}

func FuzzKeysNeverCollide(f *testing.F) {
	f.Add("a", "a", uint8(1), "", "a", "a", uint8(2), "")
	f.Add("a}", "b", uint8(2), "1", "a", "b", uint8(2), "}1")
	f.Add("a", "a:1", uint8(3), "b", "a", "a", uint8(3), "1:b")
	f.Add("%7D", "a", uint8(3), "", "}", "a", uint8(3), "")
	l := newLimiter(f, redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), "")
	f.Fuzz(func(t *testing.T, s1, n1 string, k1 uint8, u1, s2, n2 string, k2 uint8, u2 string) {
		l1 := limits.Limit{Name: n1, Kind: limits.Kind(k1%3 + 1), Subject: u1}
		l2 := limits.Limit{Name: n2, Kind: limits.Kind(k2%3 + 1), Subject: u2}
		if s1 == "" || s2 == "" || !validName(n1) || !validName(n2) {
			return
		}
		checkKeys(t, l, s1, l1, s2, l2)
	})
}

// validName reports whether apikey accepts name for a limit.
func validName(name string) bool {
	return limits.Quota(name, 1, limits.Day).Validate() == nil
}

// Peek writes nothing, not even the state of a rate that Allow would move
// after the clock stepped back.
func TestPeekWritesNothing(t *testing.T) {
	t.Parallel()
	clock := limitertest.NewClock(limitertest.Start())
	mr, c := newMiniredis(t, clock)
	l := newLimiter(t, c, "")
	ctx := context.Background()
	credits := limits.Credits("credits", 2, limits.Never)
	credits.Subject = "key"
	lims := []limits.Limit{limits.Rate("r", 2, time.Hour, 0), limits.Quota("q", 2, limits.Day), credits}
	for range 2 {
		res, err := l.Allow(ctx, "owner", lims, 1)
		require.NoError(t, err)
		require.True(t, res.Allowed)
	}
	snapshot := func() map[string]string {
		m := map[string]string{}
		for _, k := range mr.Keys() {
			v, err := mr.Get(k)
			require.NoError(t, err)
			m[k] = fmt.Sprintf("%s %v", v, mr.TTL(k))
		}
		return m
	}
	before := snapshot()
	clock.Set(clock.Now().Add(-time.Hour))
	for _, ls := range [][]limits.Limit{lims, lims[:1], {limits.Quota("new", 1, limits.Day)}} {
		res, err := l.Peek(ctx, "owner", ls)
		require.NoError(t, err)
		require.Equal(t, len(ls) == 1 && ls[0].Name == "new", res.Allowed)
		assert.Equal(t, before, snapshot())
	}
	res, err := l.Allow(ctx, "owner", lims[:1], 1)
	require.NoError(t, err)
	require.False(t, res.Allowed)
	assert.NotEqual(t, before, snapshot(), "Allow did not move the rate's state to the stepped-back clock")
}

// BenchmarkHistory times one call (a daily quota and a key's credits) for
// a subject with one past key's credits and for a subject with 10,000, on
// the Redis of APIKEY_TEST_REDIS_ADDR when set, on miniredis otherwise: a
// call costs what its own limits cost, whatever the subject's history.
func BenchmarkHistory(b *testing.B) {
	var c redis.UniversalClient
	prefix := ""
	if os.Getenv("APIKEY_TEST_REDIS_ADDR") != "" {
		rc := redis.NewClient(&redis.Options{Addr: realRedis(b)})
		b.Cleanup(func() { _ = rc.Close() })
		c, prefix = rc, testPrefix(b, rc)
	} else {
		mr := miniredis.RunT(b)
		rc := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		b.Cleanup(func() { _ = rc.Close() })
		c = rc
	}
	l := newLimiter(b, c, prefix)
	ctx := context.Background()
	credits := func(key string, n int64) limits.Limit {
		l := limits.Credits("credits", n, limits.Never)
		l.Subject = key
		return l
	}
	const batch = 100
	for _, past := range []int{1, 10_000} {
		for _, mode := range []string{"serial", "parallel"} {
			b.Run(fmt.Sprintf("past=%d/mode=%s", past, mode), func(b *testing.B) {
				subject := apikey.NewID()
				ls := make([]limits.Limit, 0, batch)
				for i := range past {
					ls = append(ls, credits(apikey.NewID(), 1))
					if len(ls) == batch || i == past-1 {
						res, err := l.Allow(ctx, subject, ls, 1)
						require.NoError(b, err)
						require.True(b, res.Allowed)
						ls = ls[:0]
					}
				}
				call := []limits.Limit{limits.Quota("daily", 1e13, limits.Day), credits(apikey.NewID(), 1e13)}
				do := func() {
					res, err := l.Allow(ctx, subject, call, 1)
					if err != nil || !res.Allowed {
						b.Fatalf("Allow: %v, %+v", err, res)
					}
				}
				b.ReportAllocs()
				if mode == "serial" {
					for b.Loop() {
						do()
					}
					return
				}
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						do()
					}
				})
			})
		}
	}
}

// The client settings the package documentation advises are those of
// newClient, which compiles and runs in Example.
func TestPackageDocQuotesNewClient(t *testing.T) {
	t.Parallel()
	options := func(file, start, end, prefix string) []string {
		b, err := os.ReadFile(file)
		require.NoError(t, err)
		_, rest, ok := strings.Cut(string(b), start)
		require.True(t, ok, "%s: no %q", file, start)
		body, _, ok := strings.Cut(rest, end)
		require.True(t, ok, "%s: no %q", file, end)
		var lines []string
		for line := range strings.Lines(body) {
			line, ok := strings.CutPrefix(line, prefix)
			require.True(t, ok, "%s: %q", file, line)
			lines = append(lines, strings.TrimSpace(line))
		}
		return lines
	}
	doc := options("redislimit.go", "//\tclient := redis.NewClient(&redis.Options{\n", "//\t})", "//")
	example := options("example_test.go", "return redis.NewClient(&redis.Options{\n", "\t})", "")
	assert.Equal(t, example, doc)
	assert.Contains(t, doc, "ContextTimeoutEnabled: true, // honour LimitOptions.Timeout")
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
