package rpctest

import (
	"runtime"
	"testing"
	"time"
)

// Compare runs a floor and a candidate in alternating chunks of chunk
// calls on one locked OS thread, for as many rounds as b.N allows, and
// reports each one's CPU time per call (the thread's CPU time where the
// system tells it, else wall time: on a loaded machine, CPU time is what
// the code costs, not what the scheduler adds) and their ratio,
// candidate/floor. Alternating keeps a change of load from favouring one.
func Compare(b *testing.B, chunk int, floor, candidate func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var spent [2]time.Duration
	fns := [2]func(){floor, candidate}
	calls := 0
	b.ResetTimer()
	for calls < b.N {
		for i, fn := range fns {
			start := threadTime()
			for range chunk {
				fn()
			}
			spent[i] += threadTime() - start
		}
		calls += chunk
	}
	b.StopTimer()
	floorNs := float64(spent[0].Nanoseconds()) / float64(calls)
	candNs := float64(spent[1].Nanoseconds()) / float64(calls)
	b.ReportMetric(floorNs, "floor-ns/op")
	b.ReportMetric(candNs, "apikey-ns/op")
	b.ReportMetric(candNs/floorNs, "ratio")
}
