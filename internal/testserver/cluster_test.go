package testserver

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A private cluster comes up with three masters and three replicas; a
// killed master is replaced by its replica and rejoins as a replica when
// started again.
func TestRedisClusterKillAndRejoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six redis-server")
	}
	c := StartRedisCluster(t, time.Second)
	nodes, err := Command(c.Nodes[0].Addr, "CLUSTER", "NODES")
	require.NoError(t, err)
	assert.Equal(t, 3, strings.Count(nodes, "master"), nodes)
	assert.Equal(t, 3, strings.Count(nodes, "slave"), nodes)

	victim := c.Nodes[0] // redis-cli makes the first three nodes masters
	c.Kill(victim)
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for {
		info, err := Command(c.Nodes[1].Addr, "CLUSTER", "INFO")
		require.NoError(t, err)
		nodes, err := Command(c.Nodes[1].Addr, "CLUSTER", "NODES")
		require.NoError(t, err)
		if strings.Contains(info, "cluster_slots_ok:16384") && strings.Contains(nodes, "master,fail") {
			break
		}
		require.True(t, time.Now().Before(deadline), "no replica took over:\n%s\n%s", info, nodes)
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("a replica took over %v after the kill", time.Since(start).Round(time.Millisecond))
	c.Start(victim)
	c.WaitOK(30 * time.Second)
	nodes, err = Command(victim.Addr, "CLUSTER", "NODES")
	require.NoError(t, err)
	assert.Contains(t, nodes, "myself,slave", nodes)
}

func TestRedisClusterAddrs(t *testing.T) {
	addrs := RedisClusterAddrs(t)
	assert.Len(t, addrs, 6)
}

// Slot agrees with the examples of the Redis Cluster specification and
// with CLUSTER KEYSLOT.
func TestSlot(t *testing.T) {
	assert.Equal(t, 12739, Slot("123456789"))
	assert.Equal(t, Slot("user1000"), Slot("{user1000}.following"))
	assert.Equal(t, Slot("{}x"), Slot("{}x"))
	assert.Equal(t, 15495, Slot("a"))
}
