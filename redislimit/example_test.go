package redislimit_test

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// newClient returns a go-redis client that fails fast, as a limiter's
// should: a dead or hung server then costs a limiter call milliseconds,
// not go-redis's retries with backoff and its 3 s read timeout. The README
// quotes it.
func newClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true, // honour the middleware's LimiterTimeout
		DialTimeout:           100 * time.Millisecond,
		DialerRetries:         1, // one dial: a refused connection fails at once
		ReadTimeout:           50 * time.Millisecond,
		WriteTimeout:          50 * time.Millisecond,
		PoolTimeout:           50 * time.Millisecond,
		MaxRetries:            -1, // no retries: the middleware's breaker and failure policy take over
	})
}

var _ = newClient
