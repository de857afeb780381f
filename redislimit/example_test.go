package redislimit_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit"
)

// newClient returns a go-redis client that fails fast, as a limiter's
// should: a dead or hung server then costs a limiter call milliseconds,
// not go-redis's retries with backoff and its 3 s read timeout. The README
// and the package documentation quote it.
func newClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true, // honour LimitOptions.Timeout
		DialTimeout:           100 * time.Millisecond,
		DialerRetries:         1, // one dial: a refused connection fails at once
		ReadTimeout:           50 * time.Millisecond,
		WriteTimeout:          50 * time.Millisecond,
		PoolTimeout:           50 * time.Millisecond,
		MaxRetries:            -1, // no retries: the middleware's breaker and failure policy take over
	})
}

// A customer's plan allows 10 requests per second; the key he calls with
// carries 2 credits of its own. The limiter decides both at once, on a
// client with the fail-fast settings above.
func Example() {
	server, err := miniredis.Run() // an in-process server: use your Redis's address
	if err != nil {
		panic(err)
	}
	defer server.Close()
	client := newClient(server.Addr())
	defer client.Close()
	limiter, err := redislimit.New(client, redislimit.Options{})
	if err != nil {
		panic(err)
	}

	credits := limits.Credits("credits", 2, limits.Never)
	credits.Subject = "key-lineage" // the middleware sets the key's Lineage
	lims := []limits.Limit{limits.Rate("per-second", 10, time.Second, 0), credits}
	for range 3 {
		res, err := limiter.Allow(context.Background(), "customer-42", lims, 1)
		if err != nil {
			panic(err) // Redis failed: wraps apikey.ErrUnavailable
		}
		fmt.Println(res.Allowed, res.Limit.Name, res.Remaining)
	}
	// Output:
	// true credits 1
	// true credits 0
	// false credits 0
}
