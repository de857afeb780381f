package apikey

import "context"

// A Notifier carries key changes between the Managers of a fleet, so that
// a revocation made on one instance empties the verification cache of all
// the others at once instead of after their cache TTL.
//
// How to implement a Notifier:
//
//  1. Be safe for concurrent use.
//  2. Publish announces that the key with the given id changed, to every
//     subscriber of every instance (including the publishing one). It
//     returns an error only when the message could not be sent.
//  3. Subscribe blocks until ctx is done and then returns ctx.Err(). It
//     calls changed(id) for every id published anywhere, and changed("")
//     each time it has (re)subscribed, since messages published while it
//     was not subscribed are lost: the Manager then drops its whole cache.
//     It retries broken connections itself, with backoff.
//  4. changed must not be called concurrently with itself.
type Notifier interface {
	Publish(ctx context.Context, id string) error
	Subscribe(ctx context.Context, changed func(id string)) error
}
