package apikey

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// A Notifier carries key changes between the Managers of a fleet, so that
// a revocation made on one instance empties the verification cache of all
// the others at once instead of after their cache TTL. Set it in
// Options.Notifier. Redisnotify (Redis pub/sub) and pgnotify (PostgreSQL
// LISTEN/NOTIFY) implement it.
//
// To implement a Notifier, follow these rules.
//
//  1. Be safe for concurrent use.
//  2. Publish announces that the key with the given id changed, to every
//     subscriber of every instance (including the publishing one). The
//     empty id announces that any key may have changed and must reach
//     subscribers as "" too. Publish returns an error only when the message
//     could not be sent.
//  3. Subscribe blocks until ctx is done and then returns ctx.Err(). It
//     calls changed(id) for every id published anywhere, and changed("")
//     each time it has (re)subscribed, since messages published while it
//     was not subscribed are lost. The Manager then drops its whole cache.
//     It retries broken connections itself, with backoff.
//  4. changed must not be called concurrently with itself.
//
// # The guarantee
//
// With a Notifier, a Manager publishes the id after every Revoke,
// RevokeOwner, Rotate, Delete, Update, Disable and Enable whose store write
// succeeded, before the method returns. And every Manager, from New until
// Close, subscribes and drops the cache entry of each id it receives (and
// its whole cache on ""). A change made through one instance is therefore
// honoured by another, in these bounds.
//
//   - while the other is subscribed, within the Notifier's publish-to-
//     delivery latency (milliseconds on a local network).
//   - while its subscription is down (the broker or the connection failed,
//     or the message was lost in transit), within its cache TTL
//     (Options.CacheTTL), exactly as without a Notifier, since no entry
//     outlives the TTL (CacheTTL+CacheStaleIfError when the store fails
//     too and Options.CacheStaleIfError is set).
//   - as soon as it has resubscribed, since it then drops its whole cache.
//
// A failed Publish never fails the change, because the store write stands.
// It is logged and counted in Stats.PublishErrors, and the cache TTL is
// the bound for that change. Changes made directly in the store, bypassing
// every Manager, are bounded by the TTL alone. After Close a Manager no
// longer listens, and the TTL is again its only bound.
type Notifier interface {
	Publish(ctx context.Context, id string) error
	Subscribe(ctx context.Context, changed func(id string)) error
}

const (
	// publishTimeout bounds one Publish. It runs on a context of its own,
	// so that a change whose caller went away is still announced.
	publishTimeout = 5 * time.Second
	// maxPublishIDs is the largest number of ids published one by one
	// after one change. Beyond it (RevokeOwner of a large owner) a single
	// "" tells every instance to drop its whole cache.
	maxPublishIDs = 100
	// resubscribeMin and resubscribeMax bound the wait before calling a
	// Subscribe that returned early again.
	resubscribeMin = 100 * time.Millisecond
	resubscribeMax = 5 * time.Second
)

// fleet links a Manager to its Notifier. A nil fleet does nothing.
type fleet struct {
	n     Notifier
	cache *cache
	custs *customers
	log   *slog.Logger

	stop context.CancelFunc
	done chan struct{} // closed when the subscription has ended

	published, publishErrors, resets atomic.Uint64
}

// startFleet subscribes to n (when there is a cache to invalidate) in a
// goroutine that close stops.
func startFleet(n Notifier, c *cache, cs *customers, log *slog.Logger) *fleet {
	if n == nil {
		return nil
	}
	f := &fleet{n: n, cache: c, custs: cs, log: log, done: make(chan struct{})}
	if c == nil && (cs == nil || cs.ttl == 0) {
		close(f.done)
		return f
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	go f.subscribe(ctx)
	return f
}

// subscribe runs Subscribe until ctx ends. A Subscribe that returns early
// (it should not) is called again after a backoff, the cache dropped
// first since changes may have been missed.
func (f *fleet) subscribe(ctx context.Context) {
	defer close(f.done)
	wait := resubscribeMin
	for {
		err := f.run(ctx)
		if ctx.Err() != nil {
			return
		}
		f.changed("")
		if f.log != nil {
			msg := "returned early"
			if err != nil {
				msg = err.Error()
			}
			f.log.Warn("apikey: notifier subscription ended; retrying", slog.String("error", msg), slog.Duration("in", wait))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, resubscribeMax)
	}
}

// run calls Subscribe once, turning a panic into an error.
func (f *fleet) run(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError{r}
		}
	}()
	return f.n.Subscribe(ctx, f.changed)
}

// changed applies one notification to the cache.
func (f *fleet) changed(id string) {
	if id == "" {
		f.resets.Add(1)
		f.cache.reset()
		if f.custs != nil {
			f.custs.reset()
		}
		return
	}
	if cid, ok := isCustomerTopic(id); ok {
		if f.custs != nil {
			f.custs.invalidate(cid)
		}
		return
	}
	f.cache.invalidate(id)
}

// publish announces ids (or "" for more than maxPublishIDs of them). A
// failure is logged and counted, never returned.
func (f *fleet) publish(ctx context.Context, ids ...string) {
	if f == nil || len(ids) == 0 {
		return
	}
	if len(ids) > maxPublishIDs {
		ids = []string{""}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	for _, id := range ids {
		if err := f.send(ctx, id); err != nil {
			f.publishErrors.Add(1)
			if f.log != nil {
				f.log.Warn("apikey: notifier publish failed; other instances rely on their cache TTL",
					slog.String("key_id", id), slog.String("error", err.Error()))
			}
			continue
		}
		f.published.Add(1)
	}
}

// send calls Publish once, turning a panic into an error.
func (f *fleet) send(ctx context.Context, id string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError{r}
		}
	}()
	return f.n.Publish(ctx, id)
}

// close ends the subscription and waits for it, at most until ctx is done.
func (f *fleet) close(ctx context.Context) error {
	if f == nil {
		return nil
	}
	if f.stop != nil {
		f.stop()
	}
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// addStats fills the notifier counters of s.
func (f *fleet) addStats(s *Stats) {
	if f == nil {
		return
	}
	s.Published, s.PublishErrors, s.CacheResets = f.published.Load(), f.publishErrors.Load(), f.resets.Load()
}
