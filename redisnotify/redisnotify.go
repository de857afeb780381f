// Package redisnotify is an apikey.Notifier over Redis pub/sub: every
// Manager of a fleet publishes the ids of the keys it changes on one
// channel and drops the cache entries of the ids it hears there. Pick it
// when more than one process serves the same keys and they share a Redis
// (for example the one redislimit uses); without Redis, pgnotify does the
// same over PostgreSQL, and a single process needs no Notifier.
//
//	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	n, err := redisnotify.New(client, redisnotify.Options{})
//	if err != nil { ... }
//	m, err := apikey.New(store, apikey.Options{Notifier: n, ...})
//
// It works with any redis.UniversalClient (a single node, Sentinel or
// Cluster). Pub/sub delivers a message only to the subscribers connected
// when it is published; apikey.Notifier explains why that is enough.
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
	// attempts to subscribe when Options leaves them 0: it starts at the
	// minimum and doubles up to the maximum, with up to 20% of jitter.
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = time.Second
	// DefaultHealthCheck is how long a subscription may stay silent before
	// it is pinged when Options.HealthCheck is 0.
	DefaultHealthCheck = 5 * time.Second
)

// Options configures a Notifier. The zero value uses the defaults above.
type Options struct {
	// Channel is the pub/sub channel: DefaultChannel when empty. Every
	// instance of one fleet must use the same channel, and fleets sharing
	// one Redis different channels.
	Channel string
	// MinBackoff and MaxBackoff bound the wait before subscribing again
	// after a failure: DefaultMinBackoff and DefaultMaxBackoff when 0.
	MinBackoff, MaxBackoff time.Duration
	// HealthCheck is how long the subscription may receive nothing before
	// a PING checks its connection: DefaultHealthCheck when 0.
	HealthCheck time.Duration
	// Logger, if set, logs lost subscriptions. Nil logs nothing.
	Logger *slog.Logger
}

// Notifier publishes and receives key changes on one Redis channel. Build
// it with New; it is safe for concurrent use. It owns no connection: the
// client's pool serves Publish, and each Subscribe holds one connection
// until its context ends. Closing the client is the caller's business.
type Notifier struct {
	client   redis.UniversalClient
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

// Subscriptions returns how many times a Subscribe of n has (re)subscribed.
func (n *Notifier) Subscriptions() uint64 { return n.subscriptions.Load() }

// Publish implements apikey.Notifier with one PUBLISH of id on the channel.
func (n *Notifier) Publish(ctx context.Context, id string) error {
	if err := n.client.Publish(ctx, n.channel, id).Err(); err != nil {
		return fmt.Errorf("redisnotify: publish: %w", err)
	}
	return nil
}

// Subscribe implements apikey.Notifier: it subscribes to the channel,
// calls changed("") once subscribed and changed(id) for every message, and
// on any failure of the connection subscribes again after a backoff,
// calling changed("") again, until ctx is done.
func (n *Notifier) Subscribe(ctx context.Context, changed func(id string)) error {
	return backoff.Retry(ctx, n.min, n.max, n.log, "redisnotify: subscription lost; subscribing again",
		[]slog.Attr{slog.String("channel", n.channel)},
		func(ctx context.Context, reset func()) error { return n.session(ctx, changed, reset) })
}

// session subscribes once and delivers messages until the connection
// fails (its error is returned) or ctx is done. Once subscribed it calls
// reset, so that the next wait is the minimum backoff.
func (n *Notifier) session(ctx context.Context, changed func(string), reset func()) error {
	ps := n.client.Subscribe(ctx)
	defer ps.Close()
	// A blocked read does not watch ctx: closing the connection ends it.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	if err := ps.Subscribe(ctx, n.channel); err != nil {
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
			if m.Kind == "subscribe" && m.Channel == n.channel {
				n.subscriptions.Add(1)
				reset()
				changed("")
			}
		case *redis.Message:
			if m.Channel == n.channel {
				changed(m.Payload)
			}
		}
	}
}
