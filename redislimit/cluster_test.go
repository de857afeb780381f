package redislimit_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey/internal/testserver"
)

// realCluster returns a client of the shared Redis Cluster named by
// APIKEY_TEST_REDIS_CLUSTER, closed when the test ends. It skips the test
// when the variable is unset, and when the cluster is unusable unless
// CI=true, where it fails.
func realCluster(t testing.TB) *redis.ClusterClient {
	t.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testserver.RedisClusterAddrs(t)})
	t.Cleanup(func() { _ = c.Close() })
	return c
}
