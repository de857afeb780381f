package apikey

import (
	"testing"
	"time"

	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/outbox"
)

// BenchmarkObserve is what the request path pays for the events of a
// Limiter's answer: nothing to raise (a quota and credits with room), and
// an exhausted quota already raised by this instance.
func BenchmarkObserve(b *testing.B) {
	p, err := outbox.Policy{}.Resolved()
	if err != nil {
		b.Fatal(err)
	}
	w := &webhooks{policy: p} // no store: the queue is never flushed here
	w.queue = newEventQueue(w, queueOptions{interval: time.Hour})
	b.Cleanup(func() { w.queue.stopOnce.Do(func() { close(w.queue.stop) }) })
	ls := []limits.Limit{limits.Quota("daily", 1000, limits.Day), limits.Credits(CreditsLimit, 1000, limits.Never)}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	room := limits.Result{Allowed: true, States: []limits.State{{Remaining: 500}, {Remaining: 500}}}
	full := limits.Result{States: []limits.State{{Remaining: 0}, {Remaining: 500}}}
	w.observe("alice", ls, full, now) // raised once: later calls find it seen
	for _, bc := range []struct {
		name string
		res  limits.Result
	}{{"Room", room}, {"ExhaustedSeen", full}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w.observe("alice", ls, bc.res, now)
			}
		})
		b.Run(bc.name+"Parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					w.observe("alice", ls, bc.res, now)
				}
			})
		})
	}
}
