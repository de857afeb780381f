package rpctest

import (
	"runtime"
	"slices"
	"testing"
)

// Compare runs a floor and a candidate in alternating chunks of chunk
// calls (floor first in even rounds, candidate first in odd ones). It runs
// them on one locked OS thread, for as many rounds as b.N allows. It
// reports the median over rounds of each one's CPU time per call and of
// their ratio, candidate/floor. The time is the thread's CPU time where the
// system tells it, else wall time. On a loaded machine, CPU time is what
// the code costs, not what the scheduler adds. Short alternating rounds
// and medians keep a change of load from favouring one.
func Compare(b *testing.B, chunk int, floor, candidate func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fns := [2]func(){floor, candidate}
	var per [2][]float64
	var ratios []float64
	b.ResetTimer()
	for calls, round := 0, 0; calls < b.N; calls, round = calls+chunk, round+1 {
		var ns [2]float64
		for j := range 2 {
			i := j ^ round&1
			start := threadTime()
			for range chunk {
				fns[i]()
			}
			ns[i] = float64((threadTime() - start).Nanoseconds()) / float64(chunk)
		}
		per[0], per[1] = append(per[0], ns[0]), append(per[1], ns[1])
		if ns[0] > 0 {
			ratios = append(ratios, ns[1]/ns[0])
		}
	}
	b.StopTimer()
	b.ReportMetric(median(per[0]), "floor-ns/op")
	b.ReportMetric(median(per[1]), "apikey-ns/op")
	b.ReportMetric(median(ratios), "ratio")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}
