package apikey

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokeys/apikey/usage"
)

// sumStore is a usage.Store (and a Store that holds no key) that sums
// what it is given.
type sumStore struct {
	Store
	mu  sync.Mutex
	sum map[meterKey]usage.Record
}

func (s *sumStore) AddUsage(_ context.Context, rs []usage.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rs {
		k := meterKey{r.KeyID, unixHour(r.Start)}
		t := s.sum[k]
		t.Allowed += r.Allowed
		t.Limited += r.Limited
		t.Refused += r.Refused
		t.Cost += r.Cost
		s.sum[k] = t
	}
	return nil
}

func (s *sumStore) Usage(context.Context, usage.Query) ([]usage.Record, error) { return nil, nil }

func (s *sumStore) PurgeUsage(context.Context, time.Time) (int, error) { return 0, nil }

func newTestMeter(t *testing.T, now func() time.Time) (*meter, *sumStore) {
	t.Helper()
	s := &sumStore{sum: map[meterKey]usage.Record{}}
	u, err := newMeter(s, meterOptions{interval: time.Hour, now: now, retention: -1})
	if err != nil || u == nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.close(context.Background()) })
	return u, s
}

// A request that finds a counter in the lock-free table after a flush
// removed it (retired) does not count into it: it looks again under the
// lock and counts into a live counter.
func TestMeterBacksOffARetiredCounter(t *testing.T) {
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	u, s := newTestMeter(t, func() time.Time { return at })
	k := &Key{ID: "0123456789abcdef", Owner: "ann"}
	c := u.acquire(k, at)
	c.allowed.Add(1)
	c.release()
	// As a flush does, under the lock: out of the map, marked retired,
	// taken; but still in the hot table (a reader loaded it before).
	shard, _ := locate(k.ID)
	sh := &u.shards[shard]
	sh.mu.Lock()
	delete(sh.counters, meterKey{k.ID, unixHour(at)})
	c.retired.Store(true)
	r, _ := u.take(c)
	u.queued.Add(-1)
	sh.mu.Unlock()
	if err := u.store.AddUsage(context.Background(), []usage.Record{r}); err != nil {
		t.Fatal(err)
	}
	c2 := u.acquire(k, at)
	if c2 == c {
		t.Fatal("a retired counter was handed out")
	}
	c2.allowed.Add(1)
	c2.release()
	if c.pins.Load() != 0 {
		t.Fatal("the retired counter stays pinned")
	}
	if err := u.close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := s.sum[meterKey{k.ID, unixHour(at)}].Allowed; got != 2 {
		t.Fatalf("stored %d requests, want 2", got)
	}
}

// Many goroutines count, move and release while flushes run back to back
// and the clock moves on by the hour: every count lands exactly once, in
// the hour the request read from the clock.
func TestMeterStress(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	u, s := newTestMeter(t, now)
	keys := []*Key{{ID: "aaaaaaaaaaaaaaaa", Owner: "ann"}, {ID: "bbbbbbbbbbbbbbbb", Owner: "ann"}, {ID: "cccccccccccccccc", Owner: "bob"}}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%20 == 0 {
				clock.Add(int64(time.Hour))
			}
			u.flush(context.Background(), false)
		}
	})
	var mu sync.Mutex
	want := map[meterKey]usage.Record{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			got := map[meterKey]usage.Record{}
			for i := range 20_000 {
				if g == 0 && i%2_000 == 0 { // the hours move whatever the scheduler does
					clock.Add(int64(time.Hour))
				}
				k := keys[(g+i)%len(keys)]
				at := now()
				c := u.acquire(k, at)
				if c == nil {
					t.Error("dropped")
					return
				}
				key := meterKey{k.ID, unixHour(at)}
				r := got[key]
				c.allowed.Add(1)
				switch i % 4 {
				case 0:
					c.move(&c.limited)
					r.Limited++
				case 1:
					c.move(&c.refused)
					r.Refused++
				default:
					c.cost.Add(3)
					r.Allowed++
					r.Cost += 3
				}
				c.release()
				got[key] = r
			}
			mu.Lock()
			defer mu.Unlock()
			for k, r := range got {
				w := want[k]
				w.Allowed += r.Allowed
				w.Limited += r.Limited
				w.Refused += r.Refused
				w.Cost += r.Cost
				want[k] = w
			}
		})
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	if err := u.close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(want) < 10 {
		t.Fatalf("only %d (key, hour) pairs: the clock did not move enough", len(want))
	}
	for k, w := range want {
		if got := s.sum[k]; got != w {
			t.Errorf("%v: stored %+v, want %+v", k, got, w)
		}
	}
	for k, got := range s.sum {
		if _, ok := want[k]; !ok && (got != usage.Record{}) {
			t.Errorf("%v: stored %+v, counted nothing", k, got)
		}
	}
	if q := u.queued.Load(); q != 0 {
		t.Errorf("queued %d after Close", q)
	}
}
