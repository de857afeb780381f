package testserver

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

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
