package memlimit

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// Subjects whose hashes collide share a map slot as a chain.
func TestHashCollisionChain(t *testing.T) {
	t.Parallel()
	sh := &shard{m: map[uint64]*entry{}}
	a, b, c := &entry{subject: "a"}, &entry{subject: "b"}, &entry{subject: "c"}
	for _, e := range []*entry{a, b, c} {
		sh.insert(7, e)
	}
	assert.Same(t, a, sh.get(7, "a"))
	assert.Same(t, b, sh.get(7, "b"))
	assert.Same(t, c, sh.get(7, "c"))
	assert.Nil(t, sh.get(7, "d"))
	assert.Nil(t, sh.get(8, "a"))
	sh.remove(7, b) // the middle
	assert.Nil(t, sh.get(7, "b"))
	assert.Same(t, a, sh.get(7, "a"))
	sh.remove(7, c) // the head
	assert.Same(t, a, sh.get(7, "a"))
	sh.remove(7, a)
	assert.Empty(t, sh.m)
}
