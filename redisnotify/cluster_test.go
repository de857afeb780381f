package redisnotify_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/testserver"
	"github.com/gokeys/apikey/notifytest"
	"github.com/gokeys/apikey/redisnotify"
)

// clusterFleet returns n notifiers on one fresh channel of the Redis
// Cluster of addrs, each with a cluster client of its own, as in separate
// processes.
func clusterFleet(t *testing.T, addrs []string, n int, opts redisnotify.Options) []*redisnotify.Notifier {
	opts.Channel = channel()
	opts.HealthCheck = time.Second
	ns := make([]*redisnotify.Notifier, n)
	for i := range ns {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, DialTimeout: 500 * time.Millisecond,
			ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
		t.Cleanup(func() { c.Close() })
		var err error
		ns[i], err = redisnotify.New(c, opts)
		require.NoError(t, err)
	}
	return ns
}

func TestConformanceCluster(t *testing.T) {
	addrs := testserver.RedisClusterAddrs(t)
	for _, tc := range []struct {
		name string
		opts redisnotify.Options
	}{
		{"Sharded", redisnotify.Options{}},
		{"Plain", redisnotify.Options{PlainPubSub: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notifytest.Run(t, func(t *testing.T, n int) []apikey.Notifier {
				ns := clusterFleet(t, addrs, n, tc.opts)
				require.Equal(t, !tc.opts.PlainPubSub, ns[0].Sharded())
				return asNotifiers(ns)
			})
		})
	}
}

// Two Managers, each with its own cluster client: B refuses a key revoked
// on A within a second, 100 times out of 100, through SPUBLISH.
func TestPropagationCluster(t *testing.T) {
	ns := clusterFleet(t, testserver.RedisClusterAddrs(t), 2, redisnotify.Options{})
	r := notifytest.Propagation(t, ns[0], ns[1], notifytest.Trials, notifytest.Bound)
	t.Log("redis cluster (sharded pub/sub):", r)
}

// A failover of the channel's shard, handed over (CLUSTER FAILOVER on its
// replica) and then forced (SIGKILL of the new master), ends every
// subscription; each notifier subscribes again on the shard's new master
// and calls changed("") (a revocation missed meanwhile is not served from
// the cache), and propagation is as fast as before.
func TestShardedResubscribesAfterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a private Redis Cluster")
	}
	cluster := testserver.StartRedisCluster(t, time.Second)
	ns := clusterFleet(t, cluster.Addrs(), 2, redisnotify.Options{MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	ctx := context.Background()
	ch := ns[0].Channel()

	subscribed := make([]chan string, len(ns))
	for i, n := range ns {
		subscribed[i] = make(chan string, 1024)
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		t.Cleanup(func() { cancel(); <-done })
		go func() {
			defer close(done)
			_ = n.Subscribe(sctx, func(id string) { subscribed[i] <- id })
		}()
	}
	// expect waits until every notifier has called changed(id).
	expect := func(id string, within time.Duration) {
		t.Helper()
		for i := range ns {
			deadline := time.After(within)
			for got := "?"; got != id; {
				select {
				case got = <-subscribed[i]:
				case <-deadline:
					t.Fatalf("notifier %d: changed(%q) not called within %v", i, id, within)
				}
			}
		}
	}
	publish := func(id string) {
		t.Helper()
		require.Eventually(t, func() bool { return ns[0].Publish(ctx, id) == nil }, 10*time.Second, 10*time.Millisecond)
		expect(id, 5*time.Second)
	}
	expect("", 5*time.Second)
	publish("before")

	master, replica := cluster.Shard(ch, 15*time.Second)
	start := time.Now()
	_, err := testserver.Command(replica.Addr, "CLUSTER", "FAILOVER")
	require.NoError(t, err)
	expect("", 10*time.Second)
	t.Logf("CLUSTER FAILOVER %s -> %s: both notifiers subscribed again within %v", master.Addr, replica.Addr, time.Since(start).Round(time.Millisecond))
	publish("after-handover")
	assert.EqualValues(t, 2, ns[0].Subscriptions())
	assert.EqualValues(t, 2, ns[1].Subscriptions())

	master, replica = cluster.Shard(ch, 15*time.Second)
	start = time.Now()
	cluster.Kill(master)
	expect("", 15*time.Second)
	t.Logf("SIGKILL of %s, %s promoted: both notifiers subscribed again within %v", master.Addr, replica.Addr, time.Since(start).Round(time.Millisecond))
	publish("after-kill")
	r := notifytest.Propagation(t, ns[0], ns[1], 20, notifytest.Bound)
	t.Log("redis cluster after two failovers:", r)
}
