package redislimit_test

import (
	"context"
	_ "embed"
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
	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limitertest"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit"
)

// legacyScript is the script of the previous release, which kept all
// limits of a subject in one string.
//
//go:embed testdata/legacy_limit.lua
var legacyScript string

// backend is a Redis to run a test on: miniredis, whose clock the test
// moves, or the real Redis of APIKEY_TEST_REDIS_ADDR, whose clock it
// cannot (clock is nil).
type backend struct {
	c      redis.UniversalClient
	prefix string
	clock  *limitertest.Clock
	old    *redis.Script
}

// eachBackend runs f on miniredis, on the Redis of APIKEY_TEST_REDIS_ADDR
// and on the Redis Cluster of APIKEY_TEST_REDIS_CLUSTER (each skipped
// when its variable is unset).
func eachBackend(t *testing.T, f func(t *testing.T, b *backend)) {
	t.Run("Miniredis", func(t *testing.T) {
		t.Parallel()
		clock := limitertest.NewClock(limitertest.Start())
		_, c := newMiniredis(t, clock)
		f(t, &backend{c: c, prefix: redislimit.DefaultPrefix, clock: clock, old: redis.NewScript(legacyScript)})
	})
	t.Run("Redis", func(t *testing.T) {
		t.Parallel()
		c := redis.NewClient(&redis.Options{Addr: realRedis(t)})
		t.Cleanup(func() { _ = c.Close() })
		f(t, &backend{c: c, prefix: testPrefix(t, c), old: redis.NewScript(legacyScript)})
	})
	t.Run("RedisCluster", func(t *testing.T) {
		t.Parallel()
		c := realCluster(t)
		f(t, &backend{c: c, prefix: testPrefix(t, c), old: redis.NewScript(legacyScript)})
	})
}

// oldAllow is Allow of the previous release: its script with its
// arguments, writing the legacy key of subject.
func (b *backend) oldAllow(t *testing.T, subject string, ls []limits.Limit, cost int64) bool {
	t.Helper()
	args := []any{cost}
	for _, lim := range ls {
		pat := "\n" + lim.Name + "="
		if lim.Subject != "" {
			pat = "\n" + lim.Name + "@" + lim.Kind.String()[:1] + lim.Subject + "="
		}
		if lim.Kind == limits.KindRate {
			tt, burst := gcra.GCRA(lim.Count, lim.Period, lim.Burst, time.Microsecond)
			args = append(args, pat, tt, burst)
		} else {
			args = append(args, pat, -lim.Count, int64(lim.Window))
		}
	}
	vals, err := b.old.Run(context.Background(), b.c, []string{b.legacyKey(subject)}, args...).Int64Slice()
	require.NoError(t, err)
	return vals[0] == 1
}

func (b *backend) legacyKey(subject string) string { return b.prefix + "{" + subject + "}" }

func (b *backend) limiter(t *testing.T) *redislimit.Limiter {
	t.Helper()
	return newLimiter(t, b.c, b.prefix)
}

// get returns the value of key, "" when missing.
func (b *backend) get(t *testing.T, key string) string {
	t.Helper()
	v, err := b.c.Get(context.Background(), key).Result()
	if err == redis.Nil {
		return ""
	}
	require.NoError(t, err)
	return v
}

// credits returns credits of name counted for sub (the limit's Subject).
func credits(name string, n int64, refill limits.Window, sub string) limits.Limit {
	l := limits.Credits(name, n, refill)
	l.Subject = sub
	return l
}

// remaining returns what each limit has left, read by a Debit of 0.
func remaining(t *testing.T, l *redislimit.Limiter, subject string, ls []limits.Limit) []int64 {
	t.Helper()
	res, err := l.Debit(context.Background(), subject, ls, 0)
	require.NoError(t, err)
	rem := make([]int64, len(res.States))
	for i, s := range res.States {
		rem[i] = s.Remaining
	}
	return rem
}

// spendLegacy writes, through the previous release's script, the state
// of a customer whose three key lineages each spent 2 of the plan's
// credits "credits" (10, never refilled), whose first lineage also spent 3
// of its own credits "key-credits" (5), a rate and a daily quota, and
// whose grant "grant" (10) was spent once by the customer and once by the
// third lineage.
func spendLegacy(t *testing.T, b *backend, owner string, lineages []string) {
	t.Helper()
	for i, lin := range lineages {
		ls := []limits.Limit{credits("credits", 10, limits.Never, lin)}
		if i == 0 {
			ls = append(ls, credits("key-credits", 5, limits.Never, lin), limits.Rate("per-hour", 2, time.Hour, 0), limits.Quota("daily", 3, limits.Day))
		}
		for range 2 {
			require.True(t, b.oldAllow(t, owner, ls, 1))
		}
	}
	require.True(t, b.oldAllow(t, owner, []limits.Limit{credits("key-credits", 5, limits.Never, lineages[0])}, 1))
	require.True(t, b.oldAllow(t, owner, []limits.Limit{credits("grant", 10, limits.Never, "")}, 1))
	require.True(t, b.oldAllow(t, owner, []limits.Limit{credits("grant", 10, limits.Never, lineages[2])}, 1))
}

// The credits a customer spent under the previous release's single key
// are carried into the new keys: a plan's credits, counted per lineage
// then, are the sum over the customer's lineages (and the customer), a
// key's own credits its lineage's count. Quotas and rates start afresh.
// The legacy key is never written.
func TestLegacyCreditsCarried(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := b.limiter(t)
		owner, lin := apikey.NewID(), []string{apikey.NewID(), apikey.NewID(), apikey.NewID()}
		spendLegacy(t, b, owner, lin)
		legacy := b.get(t, b.legacyKey(owner))
		require.Contains(t, legacy, "\ncredits@c"+lin[1]+"=0:2\n", "not the previous release's format")
		require.Contains(t, legacy, "\nkey-credits@c"+lin[0]+"=0:3\n")
		legacyTTL := b.c.PTTL(ctx, b.legacyKey(owner)).Val()

		plan := credits("credits", 10, limits.Never, "")
		own := credits("key-credits", 5, limits.Never, lin[0])
		call := []limits.Limit{plan, own, credits("grant", 10, limits.Never, ""), limits.Rate("per-hour", 2, time.Hour, 0), limits.Quota("daily", 3, limits.Day)}
		assert.Equal(t, []int64{4, 2, 8, 2, 3}, remaining(t, l, owner, call), "plan 6 spent, key 3, grant 2; rate and quota afresh")
		res, err := l.Peek(ctx, owner, call[:2])
		require.NoError(t, err)
		assert.Equal(t, int64(3), res.States[0].Remaining, "Peek answers for a cost of 1")
		assert.Equal(t, int64(1), res.States[1].Remaining)
		assert.Empty(t, b.get(t, redislimit.Keys(l, owner, call)[0]), "Peek or a Debit of 0 wrote")

		// Another lineage's own credits had no legacy entry: whole.
		assert.Equal(t, []int64{5}, remaining(t, l, owner, []limits.Limit{credits("key-credits", 5, limits.Never, lin[1])}))
		// A customer without legacy state is unaffected.
		assert.Equal(t, []int64{10, 5}, remaining(t, l, apikey.NewID(), call[:2]))
		// A lower count caps what is carried: nothing left, no debt.
		assert.Equal(t, []int64{0}, remaining(t, l, owner, []limits.Limit{credits("credits", 5, limits.Never, "")}))

		// The plan admits the 4 credits left, then denies.
		res, err = l.Allow(ctx, owner, call[:1], 4)
		require.NoError(t, err)
		require.True(t, res.Allowed)
		assert.Equal(t, int64(0), res.Remaining)
		res, err = l.Allow(ctx, owner, call[:1], 1)
		require.NoError(t, err)
		assert.False(t, res.Allowed)
		assert.Equal(t, "0:10", b.get(t, redislimit.Keys(l, owner, call)[0]))

		// The legacy key is as the previous release left it.
		assert.Equal(t, legacy, b.get(t, b.legacyKey(owner)))
		ttl := b.c.PTTL(ctx, b.legacyKey(owner)).Val()
		assert.Equal(t, legacyTTL < 0, ttl < 0, "the legacy key's expiry changed")
		assert.LessOrEqual(t, ttl, legacyTTL)
	})
}

// Refilled credits carry only the legacy count of their current window.
func TestLegacyRefilledCredits(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *backend) {
		l := b.limiter(t)
		monthly := credits("monthly", 10, limits.Month, "")
		current, past := apikey.NewID(), apikey.NewID()
		for _, owner := range []string{current, past} {
			// Credits never refilled keep the legacy key past the month.
			old := []limits.Limit{credits("monthly", 10, limits.Month, "lin"), credits("credits", 10, limits.Never, "lin")}
			for range 3 {
				require.True(t, b.oldAllow(t, owner, old, 1))
			}
		}
		assert.Equal(t, []int64{7}, remaining(t, l, current, []limits.Limit{monthly}), "the current window's count is not carried")

		// The window of past's legacy count has passed: on miniredis the
		// clock moves to the next month, on Redis the legacy count is
		// moved to the previous month.
		if b.clock != nil {
			b.clock.Set(time.Date(2026, 4, 1, 0, 0, 1, 0, time.UTC))
			march := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC).Unix()
			require.Contains(t, b.get(t, b.legacyKey(past)), fmt.Sprintf("\nmonthly@clin=%d:3\n", march))
		} else {
			now := time.Now().UTC()
			start := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).Unix()
			end := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC).Unix()
			v := b.get(t, b.legacyKey(past))
			w := strings.Replace(v, fmt.Sprintf("=%d:", end), fmt.Sprintf("=%d:", start), 1)
			require.NotEqual(t, v, w, "%q holds no count of this month", v)
			require.NoError(t, b.c.Set(context.Background(), b.legacyKey(past), w, 0).Err())
		}
		assert.Equal(t, []int64{10}, remaining(t, l, past, []limits.Limit{monthly}), "a past window's count was carried")
	})
}

// Allow, Debit and Peek each start missing credits from the legacy key,
// and the first spend writes the new key, even when Allow denies or a
// refund brings the count to 0: the legacy count is carried once, never
// again.
func TestLegacyCarriedOnce(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := b.limiter(t)
		owner, lin := apikey.NewID(), []string{apikey.NewID(), apikey.NewID(), apikey.NewID()}
		spendLegacy(t, b, owner, lin)
		plan := []limits.Limit{credits("credits", 10, limits.Never, "")}
		key := redislimit.Keys(l, owner, plan)[0]

		// A Debit carries the grant's 2 and takes 3.
		grant := []limits.Limit{credits("grant", 10, limits.Never, "")}
		res, err := l.Debit(ctx, owner, grant, 3)
		require.NoError(t, err)
		assert.Equal(t, int64(5), res.Remaining)
		assert.Equal(t, "0:5", b.get(t, redislimit.Keys(l, owner, grant)[0]))

		// A refund of 8 as the first call carries 6 and leaves 0 used,
		// which is written: the legacy count is not carried again.
		res, err = l.Debit(ctx, owner, plan, -8)
		require.NoError(t, err)
		assert.Equal(t, int64(10), res.Remaining)
		assert.Equal(t, "0:0", b.get(t, key))
		assert.Equal(t, []int64{10}, remaining(t, l, owner, plan))

		// An Allow denied by what is carried still writes it.
		all := []limits.Limit{credits("key-credits", 3, limits.Never, lin[0])}
		res, err = l.Allow(ctx, owner, all, 1)
		require.NoError(t, err)
		assert.False(t, res.Allowed)
		assert.Equal(t, "0:3", b.get(t, redislimit.Keys(l, owner, all)[0]))
		if b.clock == nil {
			assert.Greater(t, b.c.PTTL(ctx, redislimit.Keys(l, owner, all)[0]).Val(), redislimit.DefaultCreditsTTL-time.Minute)
		}
	})
}

// Once the new key of credits exists, no call reads the legacy key: the
// cost of a call stays that of its own limits, whatever the legacy key
// holds. The legacy key is replaced by a list, which GET refuses, so a
// call that read it would fail.
func TestLegacyReadOnlyOnAMiss(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := b.limiter(t)
		owner, lin := apikey.NewID(), []string{apikey.NewID(), apikey.NewID(), apikey.NewID()}
		spendLegacy(t, b, owner, lin)
		call := []limits.Limit{credits("credits", 10, limits.Never, ""), credits("key-credits", 8, limits.Never, lin[0]), limits.Quota("daily", 10, limits.Day)}
		res, err := l.Allow(ctx, owner, call, 1)
		require.NoError(t, err)
		require.True(t, res.Allowed)

		lk := b.legacyKey(owner)
		require.NoError(t, b.c.Del(ctx, lk).Err())
		require.NoError(t, b.c.RPush(ctx, lk, "not a string").Err())
		for range 3 {
			res, err = l.Allow(ctx, owner, call, 1)
			require.NoError(t, err, "Allow read the legacy key")
			require.True(t, res.Allowed)
			_, err = l.Peek(ctx, owner, call)
			require.NoError(t, err, "Peek read the legacy key")
			_, err = l.Debit(ctx, owner, call, 0)
			require.NoError(t, err, "Debit read the legacy key")
		}
		assert.Equal(t, []int64{0, 1, 6}, remaining(t, l, owner, call))

		// Credits whose key is missing do read it: the list makes the
		// call fail, which is how the calls above would have failed.
		_, err = l.Allow(ctx, owner, []limits.Limit{credits("other", 1, limits.Never, "")}, 1)
		require.ErrorIs(t, err, apikey.ErrUnavailable)
		// A quota never reads it.
		_, err = l.Allow(ctx, owner, []limits.Limit{limits.Quota("other", 1, limits.Day)}, 1)
		require.NoError(t, err)
	})
}

// Concurrent first calls of many instances carry the legacy count once:
// of 10 credits with 6 spent before the upgrade, exactly 4 are admitted.
func TestLegacyConcurrentFirstCalls(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *backend) {
		owner, lin := apikey.NewID(), []string{apikey.NewID(), apikey.NewID(), apikey.NewID()}
		spendLegacy(t, b, owner, lin)
		instances := []*redislimit.Limiter{b.limiter(t), b.limiter(t), b.limiter(t), b.limiter(t)}
		plan := []limits.Limit{credits("credits", 10, limits.Never, "")}
		var allowed atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 32 {
			wg.Go(func() {
				<-start
				res, err := instances[i%len(instances)].Allow(context.Background(), owner, plan, 1)
				if err != nil {
					t.Error(err)
					return
				}
				if res.Allowed {
					allowed.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		assert.Equal(t, int64(4), allowed.Load())
	})
}

// A subject holding '%', '{' or '}' has its legacy key in another hash
// slot than its new keys: its credits are not carried, and its calls do
// not fail.
func TestLegacySubjectsOfAnotherSlot(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b *backend) {
		l := b.limiter(t)
		for _, owner := range []string{"a{" + apikey.NewID(), apikey.NewID() + "}", "%" + apikey.NewID()} {
			require.True(t, b.oldAllow(t, owner, []limits.Limit{credits("credits", 10, limits.Never, "lin")}, 1))
			assert.Equal(t, []int64{10}, remaining(t, l, owner, []limits.Limit{credits("credits", 10, limits.Never, "")}), owner)
		}
	})
}

// BenchmarkLegacy times a call (a daily quota and the customer's credits)
// for a customer without legacy state and for one whose legacy key holds
// 100,000 lineages' credits, once the first call carried them (carried)
// and for credits seen for the first time (first), on the Redis of
// APIKEY_TEST_REDIS_ADDR when set, on miniredis otherwise: the legacy key
// costs nothing once carried.
func BenchmarkLegacy(b *testing.B) {
	var c redis.UniversalClient
	prefix := redislimit.DefaultPrefix
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
	for _, lineages := range []int{0, 100_000} {
		b.Run(fmt.Sprintf("legacy=%d", lineages), func(b *testing.B) {
			owner := apikey.NewID()
			if lineages > 0 {
				var v strings.Builder
				v.WriteString("\n")
				for range lineages {
					fmt.Fprintf(&v, "credits@c%s=0:1\n", apikey.NewID())
				}
				require.NoError(b, c.Set(ctx, prefix+"{"+owner+"}", v.String(), 0).Err())
			}
			call := []limits.Limit{limits.Quota("daily", 1e13, limits.Day), credits("credits", 1e13, limits.Never, "")}
			res, err := l.Allow(ctx, owner, call, 1)
			require.NoError(b, err)
			require.Equal(b, int64(1e13-1-int64(lineages)), res.States[1].Remaining)
			b.Run("carried", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					res, err := l.Allow(ctx, owner, call, 1)
					if err != nil || !res.Allowed {
						b.Fatalf("Allow: %v, %+v", err, res)
					}
				}
			})
			// The first call of credits never seen: the one that reads
			// the legacy key.
			b.Run("first", func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					i++
					first := []limits.Limit{call[0], credits(fmt.Sprintf("c%d", i), 1e13, limits.Never, "")}
					if _, err := l.Allow(ctx, owner, first, 1); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
