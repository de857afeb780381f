package bench

import (
	"container/heap"
	"slices"
	"testing"
)

// span is one admission of a unit: decided at some time between start
// and end (µs since the run began), the span of the Allow call that
// admitted it.
type span struct{ start, end uint32 }

// overAdmitted returns how many admissions no single exact GCRA of
// emission interval t and burst b (t in µs) could have made, whatever the
// time within its span each was decided at: 0 when some choice of times
// conforms. It places the admissions earliest deadline first, each as
// early as the GCRA allows, which is optimal for units: an admission whose
// span ends before the GCRA has room counts as over-admitted and is
// dropped.
func overAdmitted(adm []span, t, b int64) int {
	slices.SortFunc(adm, func(x, y span) int { return int(x.start) - int(y.start) })
	tau := t * b
	tat, now := int64(-1<<40), int64(-1<<40)
	var ends endHeap
	over, i := 0, 0
	for i < len(adm) || ends.Len() > 0 {
		if ends.Len() == 0 {
			now = max(now, int64(adm[i].start))
		}
		now = max(now, tat+t-tau) // when the GCRA has room for one more
		for i < len(adm) && int64(adm[i].start) <= now {
			heap.Push(&ends, adm[i].end)
			i++
		}
		if ends.Len() == 0 {
			continue
		}
		if e := int64(heap.Pop(&ends).(uint32)); e < now {
			over++
			continue
		}
		tat = max(tat, now) + t
	}
	return over
}

// endHeap is a min-heap of span ends.
type endHeap []uint32

func (h endHeap) Len() int           { return len(h) }
func (h endHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h endHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *endHeap) Push(x any)        { *h = append(*h, x.(uint32)) }
func (h *endHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func TestOverAdmitted(t *testing.T) {
	t.Parallel()
	at := func(us ...uint32) []span {
		var s []span
		for _, u := range us {
			s = append(s, span{u, u})
		}
		return s
	}
	tests := []struct {
		name string
		adm  []span
		want int
	}{
		// GCRA of 10 µs, burst 3.
		{"BurstAtOnce", at(0, 0, 0), 0},
		{"BeyondTheBurst", at(0, 0, 0, 0), 1},
		{"OneIntervalLater", at(0, 0, 0, 10), 0},
		{"TooSoon", at(0, 0, 0, 9), 1},
		{"Smooth", at(0, 10, 20, 30, 40, 50, 60), 0},
		{"BurstAfterRest", at(0, 100, 100, 100), 0},
		{"SecondBurst", at(0, 0, 0, 30, 30, 30), 0},
		{"SecondBurstTooSoon", at(0, 0, 0, 29, 29, 29), 1},
		// A call spanning time may have been decided when there was room.
		{"SpanReachesRoom", []span{{0, 0}, {0, 0}, {0, 0}, {0, 10}}, 0},
		{"SpanEndsBeforeRoom", []span{{0, 0}, {0, 0}, {0, 0}, {0, 9}}, 1},
		{"EarliestDeadlineFirst", []span{{0, 100}, {0, 0}, {0, 0}, {0, 0}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := overAdmitted(tc.adm, 10, 3); got != tc.want {
				t.Fatalf("over-admitted %d, want %d", got, tc.want)
			}
		})
	}
}
