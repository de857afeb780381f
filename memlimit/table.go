package memlimit

// A shard finds its entries through an open-addressing hash table keyed
// by the subject's hash, the one that chose the shard: a call hashes its
// subject once, and a lookup usually reads one cache line of the table
// before the entry itself. Go's map would hash that hash again and read a
// control word and a slot in two places.

// bucket is a place in a shard's table: an entry and its subject's hash,
// or nothing (e nil).
type bucket struct {
	h uint64
	e *entry
}

// minTable is the smallest table, in buckets. A table grows when more than
// 3/4 of its buckets are in use, and shrinks after a sweep while fewer
// than 1/8 are.
const minTable = 8

// home is the first bucket a lookup of h reads. The low bits of h chose
// the shard, so the table uses the high ones.
func (sh *shard) home(h uint64) int {
	return int(h>>32) & (len(sh.tab) - 1)
}

// get returns the entry of subject, whose hash is h, or nil.
func (sh *shard) get(h uint64, subject string) *entry {
	mask := len(sh.tab) - 1
	for i := sh.home(h); ; i = (i + 1) & mask {
		b := &sh.tab[i]
		if b.e == nil {
			return nil
		}
		if b.h == h && b.e.is(subject) {
			return b.e
		}
	}
}

// insert adds e, whose subject's hash is h and which the shard does not
// hold, growing the table when it is full enough.
func (sh *shard) insert(h uint64, e *entry) {
	if 4*(sh.used+1) > 3*len(sh.tab) {
		sh.resize(2 * len(sh.tab))
	}
	sh.place(h, e)
	sh.used++
}

// place puts e in the first free bucket from h's home.
func (sh *shard) place(h uint64, e *entry) {
	mask := len(sh.tab) - 1
	i := sh.home(h)
	for sh.tab[i].e != nil {
		i = (i + 1) & mask
	}
	sh.tab[i] = bucket{h, e}
}

// resize moves every entry to a table of n buckets.
func (sh *shard) resize(n int) {
	old := sh.tab
	sh.tab = make([]bucket, n)
	for _, b := range old {
		if b.e != nil {
			sh.place(b.h, b.e)
		}
	}
}

// remove unlinks e, whose subject's hash is h.
func (sh *shard) remove(h uint64, e *entry) {
	mask := len(sh.tab) - 1
	for i := sh.home(h); sh.tab[i].e != nil; i = (i + 1) & mask {
		if sh.tab[i].e == e {
			sh.removeAt(i)
			return
		}
	}
}

// removeAt empties bucket i, moving back the entries after it that a
// lookup would no longer reach (backward-shift deletion), so that the
// table needs no tombstones. Only entries after i move, each to a bucket
// closer to its home; a walk over the table that removes the entry of
// bucket i must therefore look at bucket i again.
func (sh *shard) removeAt(i int) {
	mask := len(sh.tab) - 1
	for j := (i + 1) & mask; sh.tab[j].e != nil; j = (j + 1) & mask {
		// The entry at j may move to i when its home is not in (i, j],
		// cyclically.
		k := sh.home(sh.tab[j].h)
		if (j > i && (k <= i || k > j)) || (j < i && k <= i && k > j) {
			sh.tab[i] = sh.tab[j]
			i = j
		}
	}
	sh.tab[i] = bucket{}
	sh.used--
}

// shrink halves the table while it is mostly empty. It must not run
// during a walk of the table.
func (sh *shard) shrink() {
	n := len(sh.tab)
	for n > minTable && 8*sh.used < n {
		n /= 2
	}
	if n != len(sh.tab) {
		sh.resize(n)
	}
}
