// Package redisnotify is an apikey.Notifier over Redis pub/sub. Every
// Manager of a fleet publishes the ids of the keys it changes on one
// channel. It drops the cache entries of the ids it hears there. Pick it
// when more than one process serves the same keys and they share a Redis
// (for example the one redislimit uses). Without Redis, pgnotify does the
// same over PostgreSQL. A single process needs no Notifier.
//
//	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	n, err := redisnotify.New(client, redisnotify.Options{})
//	if err != nil { ... }
//	m, err := apikey.New(store, apikey.Options{Notifier: n, ...})
//
// It works with any redis.UniversalClient (a single node, Sentinel or
// Cluster). Pub/sub delivers a message only to the subscribers connected
// when it is published. apikey.Notifier explains why that is enough.
//
// # Redis Cluster
//
// With a *redis.ClusterClient it uses sharded pub/sub (SPUBLISH and
// SSUBSCRIBE, Redis 7 and later). A message goes to the shard that owns
// the channel's hash slot. Only that shard's master and replicas carry it,
// where a plain PUBLISH would be copied to every node of the cluster.
// A failover of that shard, or the move of its slot, ends the
// subscription (the node answers SUNSUBSCRIBE, or the connection drops).
// Subscribe then asks the client to reload the cluster's layout and
// subscribes again, calling changed("") as after any lost subscription.
// docs/scale.md gives the time this takes.
//
// Options.PlainPubSub keeps plain PUBLISH and SUBSCRIBE on a cluster. It
// serves servers older than Redis 7, and a rolling deploy from a release
// that published with PUBLISH. Instances of one fleet must agree, since a
// message sent with SPUBLISH never reaches a SUBSCRIBE, nor the reverse.
// Plain messages are still published on the master of the channel's hash
// slot, so that they arrive in the order they were sent. The cluster bus
// copies them to every node, and two nodes would not keep their order.
package redisnotify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/backoff"
)

// Defaults of Options.
const (
	// DefaultChannel is the pub/sub channel when Options.Channel is empty.
	DefaultChannel = "apikey:changed"
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between two
	// attempts to subscribe when Options leaves them 0. The wait starts at
	// the minimum and doubles up to the maximum, with up to 20% of jitter.
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = time.Second
	// DefaultHealthCheck is how long a subscription may stay silent before
	// it is pinged when Options.HealthCheck is 0.
	DefaultHealthCheck = 5 * time.Second
)

// Options configures a Notifier. The zero value uses the defaults above.
type Options struct {
	// Channel is the pub/sub channel, DefaultChannel when empty. Every
	// instance of one fleet must use the same channel, and fleets sharing
	// one Redis different channels.
	Channel string
	// MinBackoff and MaxBackoff bound the wait before subscribing again
	// after a failure. They are DefaultMinBackoff and DefaultMaxBackoff
	// when 0.
	MinBackoff, MaxBackoff time.Duration
	// HealthCheck is how long the subscription may receive nothing before
	// a PING checks its connection, DefaultHealthCheck when 0.
	HealthCheck time.Duration
	// Logger, if set, logs lost subscriptions. Nil logs nothing.
	Logger *slog.Logger
	// PlainPubSub makes a Notifier on a *redis.ClusterClient use plain
	// PUBLISH and SUBSCRIBE instead of sharded pub/sub (see Redis
	// Cluster above). It is false by default. Other clients always use
	// plain pub/sub.
	PlainPubSub bool
}

// Notifier publishes and receives key changes on one Redis channel. Build
// it with New. It is safe for concurrent use. It owns no connection. The
// client's pool serves Publish, and each Subscribe holds one connection
// until its context ends. Closing the client is the caller's business.
type Notifier struct {
	client   redis.UniversalClient
	cluster  *redis.ClusterClient // client, when it is one
	sharded  bool                 // SPUBLISH and SSUBSCRIBE
	channel  string
	min, max time.Duration
	health   time.Duration
	log      *slog.Logger

	subscriptions atomic.Uint64
}

var _ apikey.Notifier = (*Notifier)(nil)

// New returns a Notifier over client. A nil client, negative durations or
// a MinBackoff above MaxBackoff give an error wrapping
// apikey.ErrInvalidOptions.
func New(client redis.UniversalClient, opts Options) (*Notifier, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: redisnotify: nil client", apikey.ErrInvalidOptions)
	}
	n := &Notifier{client: client, channel: opts.Channel, min: opts.MinBackoff, max: opts.MaxBackoff,
		health: opts.HealthCheck, log: opts.Logger}
	if n.channel == "" {
		n.channel = DefaultChannel
	}
	if cc, ok := client.(*redis.ClusterClient); ok {
		n.cluster, n.sharded = cc, !opts.PlainPubSub
	}
	if n.min == 0 {
		n.min = DefaultMinBackoff
	}
	if n.max == 0 {
		n.max = max(DefaultMaxBackoff, n.min)
	}
	if n.health == 0 {
		n.health = DefaultHealthCheck
	}
	if n.min < 0 || n.max < 0 || n.health < 0 || n.min > n.max {
		return nil, fmt.Errorf("%w: redisnotify: bad backoff or health check", apikey.ErrInvalidOptions)
	}
	return n, nil
}

// Channel returns the channel n publishes and subscribes on.
func (n *Notifier) Channel() string { return n.channel }

// Sharded reports whether n uses sharded pub/sub (SPUBLISH and
// SSUBSCRIBE). That is true for a *redis.ClusterClient unless
// Options.PlainPubSub is set.
func (n *Notifier) Sharded() bool { return n.sharded }

// Subscriptions returns how many times a Subscribe of n has (re)subscribed.
func (n *Notifier) Subscriptions() uint64 { return n.subscriptions.Load() }

// Publish implements apikey.Notifier with one PUBLISH of id on the
// channel, or one SPUBLISH when n is Sharded.
func (n *Notifier) Publish(ctx context.Context, id string) error {
	var err error
	switch {
	case n.sharded:
		err = n.cluster.SPublish(ctx, n.channel, id).Err()
	case n.cluster != nil:
		var c *redis.Client
		if c, err = n.cluster.MasterForKey(ctx, n.channel); err == nil {
			err = c.Publish(ctx, n.channel, id).Err()
		}
	default:
		err = n.client.Publish(ctx, n.channel, id).Err()
	}
	if err != nil {
		if n.cluster != nil {
			// A master that died answers no MOVED: the client must
			// reload the layout to find the slot's new master.
			n.cluster.ReloadState(ctx)
		}
		return fmt.Errorf("redisnotify: publish: %w", err)
	}
	return nil
}

// errUnsubscribed ends a session the server unsubscribed. That happens to
// a sharded channel whose slot changed owner (a failover or a resharding).
var errUnsubscribed = errors.New("redisnotify: unsubscribed by the server")

// Subscribe implements apikey.Notifier. It subscribes to the channel and
// calls changed("") once subscribed and changed(id) for every message. On
// any failure of the connection it subscribes again after a backoff,
// calling changed("") again. It does so until ctx is done.
//
// On a cluster, each new attempt after a failure first reloads the
// cluster's layout, so that it subscribes on the shard's new master rather
// than on a node that failed.
func (n *Notifier) Subscribe(ctx context.Context, changed func(id string)) error {
	retry := false
	return backoff.Retry(ctx, n.min, n.max, n.log, "redisnotify: subscription lost; subscribing again",
		[]slog.Attr{slog.String("channel", n.channel)},
		func(ctx context.Context, reset func()) error {
			if retry && n.cluster != nil {
				// ForEachMaster reloads the layout before it returns
				// (ReloadState would reload it in the background, too
				// late for this attempt); there is nothing to run on
				// the masters.
				_ = n.cluster.ForEachMaster(ctx, func(context.Context, *redis.Client) error { return nil })
			}
			retry = true
			return n.session(ctx, changed, reset)
		})
}

// session subscribes once and delivers messages until the connection
// fails (its error is returned) or ctx is done. Once subscribed it calls
// reset, so that the next wait is the minimum backoff.
func (n *Notifier) session(ctx context.Context, changed func(string), reset func()) error {
	var ps *redis.PubSub
	subscribed, unsubscribed := "subscribe", "unsubscribe"
	if n.sharded {
		ps = n.cluster.SSubscribe(ctx)
		subscribed, unsubscribed = "ssubscribe", "sunsubscribe"
	} else {
		ps = n.client.Subscribe(ctx)
	}
	defer ps.Close()
	// A blocked read does not watch ctx: closing the connection ends it.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	var err error
	if n.sharded {
		err = ps.SSubscribe(ctx, n.channel)
	} else {
		err = ps.Subscribe(ctx, n.channel)
	}
	if err != nil {
		return err
	}
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, n.health)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() && !pinged {
				// Silent for a while: a PING proves the connection alive
				// (its PONG arrives as a message) or breaks it.
				if err := ps.Ping(ctx); err != nil {
					return err
				}
				pinged = true
				continue
			}
			return err
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			// Also sent when go-redis resubscribed on a new connection by
			// itself: messages may have been lost in between.
			switch {
			case m.Channel != n.channel:
			case m.Kind == subscribed:
				n.subscriptions.Add(1)
				reset()
				changed("")
			case m.Kind == unsubscribed:
				return errUnsubscribed
			}
		case *redis.Message:
			if m.Channel == n.channel {
				changed(m.Payload)
			}
		}
	}
}
