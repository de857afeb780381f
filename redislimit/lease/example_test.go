package lease_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit/lease"
)

// Two instances share a customer's daily quota of 100. The first call of
// each is decided by Redis; once an instance sees demand, it leases part
// of what remains and decides from it, without Redis. Together they never
// admit more than 100, and Close gives back what an instance holds.
func Example() {
	server, err := miniredis.Run() // an in-process server: use your Redis's address
	if err != nil {
		panic(err)
	}
	defer server.Close()
	client := redis.NewClient(&redis.Options{Addr: server.Addr()})
	defer client.Close()

	var fleet []*lease.Limiter
	for range 2 {
		l, err := lease.New(client, lease.Options{})
		if err != nil {
			panic(err)
		}
		defer l.Close(context.Background())
		fleet = append(fleet, l)
	}
	daily := []limits.Limit{limits.Quota("daily", 100, limits.Day)}
	admitted := 0
	for i := range 300 {
		res, err := fleet[i%2].Allow(context.Background(), "customer-42", daily, 1)
		if err != nil {
			panic(err) // Redis failed: wraps apikey.ErrUnavailable
		}
		if res.Allowed {
			admitted++
		}
		time.Sleep(100 * time.Microsecond)
	}
	s := fleet[0].Stats()
	fmt.Println("admitted", admitted, "of 300")
	fmt.Println("decided without Redis:", s.Local > s.Trips)
	// Output:
	// admitted 100 of 300
	// decided without Redis: true
}
