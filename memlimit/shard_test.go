package memlimit

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Subjects whose hashes collide are all found, and each removal keeps the
// others reachable.
func TestHashCollision(t *testing.T) {
	t.Parallel()
	sh := &shard{tab: make([]bucket, minTable)}
	a, b, c := newEntry("a"), newEntry("b"), newEntry("c")
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
	assert.Same(t, c, sh.get(7, "c"))
	sh.remove(7, a) // the first
	assert.Same(t, c, sh.get(7, "c"))
	sh.remove(7, c)
	assert.Zero(t, sh.used)
	assert.Equal(t, make([]bucket, minTable), sh.tab)

	// Subjects held in the entry and beside it.
	subjects := []string{strings.Repeat("x", shortSubject), strings.Repeat("x", shortSubject+1),
		strings.Repeat("x", shortSubject) + "y", strings.Repeat("x", shortSubject-1), "x"}
	for _, s := range subjects {
		sh.insert(7, newEntry(s))
	}
	for _, s := range subjects {
		assert.Equal(t, s, sh.get(7, s).subject())
	}
	assert.Nil(t, sh.get(7, strings.Repeat("x", shortSubject+2)))
	assert.Nil(t, sh.get(7, "xx"))
}

// The table finds every entry it holds through growth, removals that wrap
// around its end and shrinking, whatever the hashes' homes.
func TestTable(t *testing.T) {
	t.Parallel()
	sh := &shard{tab: make([]bucket, minTable)}
	held := map[string]uint64{}
	check := func() {
		t.Helper()
		for s, h := range held {
			e := sh.get(h, s)
			require.NotNil(t, e, s)
			require.Equal(t, s, e.subject())
		}
		require.Equal(t, len(held), sh.used)
		require.LessOrEqual(t, 4*sh.used, 3*len(sh.tab))
	}
	// Homes crowd on few buckets, near the end of the table too, so that
	// runs wrap around.
	hash := func(i int) uint64 {
		if i%2 == 0 {
			return uint64(math.MaxUint32-i%3) << 32 // the last buckets
		}
		return uint64(i%5) << 32
	}
	for i := range 200 {
		s := fmt.Sprint("s", i)
		held[s] = hash(i)
		sh.insert(held[s], newEntry(s))
		if i%7 == 0 {
			check()
		}
	}
	check()
	for i := range 200 {
		if i%10 == 0 {
			continue
		}
		s := fmt.Sprint("s", i)
		sh.remove(held[s], sh.get(held[s], s))
		delete(held, s)
		if i%5 == 0 {
			check()
		}
	}
	check()
	n := len(sh.tab)
	sh.shrink()
	assert.Less(t, len(sh.tab), n)
	check()
	// Removing while walking, as a sweep does, visits every entry.
	seen := map[string]bool{}
	for i := 0; i < len(sh.tab); i++ {
		e := sh.tab[i].e
		if e == nil {
			continue
		}
		seen[e.subject()] = true
		if len(e.subject())%2 == 0 {
			sh.removeAt(i)
			delete(held, e.subject())
			i--
		}
	}
	for s := range held {
		assert.True(t, seen[s], s)
	}
	check()
}
