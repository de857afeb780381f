package apikey

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// No lookup that starts after invalidate returned is answered by a record
// read before it, even when a lookup that read that record is still in
// flight and finishes after the invalidation: the customer cache never
// keeps, not even for an instant, what was read before an invalidation.
func TestCustomerCacheNeverKeepsARecordReadBeforeAnInvalidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var cur atomic.Pointer[Customer]
	source := func(context.Context, string) (*Customer, error) {
		c := cur.Load()
		runtime.Gosched() // a slow read: the record changes meanwhile
		return c, nil
	}
	cs := newCustomers(nil, source, cacheOptions{TTL: time.Hour})
	now := time.Now()
	stale := 0
	for trial, deadline := 0, now.Add(time.Second); time.Now().Before(deadline); trial++ {
		old := &Customer{ID: "ann", Revision: int64(2 * trial)}
		cur.Store(old)
		cs.invalidate("ann")
		var wg sync.WaitGroup
		for range 4 { // lookups in flight that read the old record
			wg.Go(func() { cs.lookup(ctx, "ann", now) })
		}
		runtime.Gosched()
		cur.Store(&Customer{ID: "ann", Suspended: true, Revision: old.Revision + 1})
		cs.invalidate("ann")
		for range 200 {
			if c, err := cs.lookup(ctx, "ann", now); err == nil && c == old {
				stale++
			}
		}
		wg.Wait()
	}
	if stale != 0 {
		t.Errorf("%d lookups that started after the invalidation returned the record read before it", stale)
	}
}
