package notifytest_test

import (
	"context"
	"sync"
	"testing"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/notifytest"
)

// bus is an in-process Notifier: every instance of one bus hears every
// publication, delivered by one goroutine per subscriber.
type bus struct {
	mu   sync.Mutex
	subs map[chan string]struct{}
}

type instance struct{ b *bus }

func (n instance) Publish(ctx context.Context, id string) error {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	for ch := range n.b.subs {
		select {
		case ch <- id:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (n instance) Subscribe(ctx context.Context, changed func(string)) error {
	ch := make(chan string, 1024)
	n.b.mu.Lock()
	n.b.subs[ch] = struct{}{}
	n.b.mu.Unlock()
	defer func() {
		n.b.mu.Lock()
		delete(n.b.subs, ch)
		n.b.mu.Unlock()
	}()
	changed("")
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case id := <-ch:
			changed(id)
		}
	}
}

func newFleet(t *testing.T, n int) []apikey.Notifier {
	b := &bus{subs: map[chan string]struct{}{}}
	ns := make([]apikey.Notifier, n)
	for i := range ns {
		ns[i] = instance{b}
	}
	return ns
}

func TestConformance(t *testing.T) { notifytest.Run(t, newFleet) }

func TestPropagation(t *testing.T) {
	ns := newFleet(t, 2)
	r := notifytest.Propagation(t, ns[0], ns[1], notifytest.Trials, notifytest.Bound)
	t.Log("in-process bus:", r)
}
