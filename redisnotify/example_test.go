package redisnotify_test

import (
	"context"
	"fmt"
	"log"

	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/redisnotify"
)

// Every instance of a fleet builds its Manager with a Notifier on the same
// channel: a key revoked through one is refused by all the others within
// milliseconds instead of their cache TTL.
func Example() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close()
	n, err := redisnotify.New(client, redisnotify.Options{Channel: "myservice:apikey:changed"})
	if err != nil {
		log.Fatal(err)
	}
	store := memstore.New() // in a fleet: a sqlstore.Store on a shared database
	m, err := apikey.New(store, apikey.Options{Notifier: n})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(context.Background()) // also ends the subscription
}

// On a Redis Cluster the Notifier uses sharded pub/sub: only the shard that
// owns the channel's hash slot carries its messages.
func ExampleNotifier_Sharded() {
	client := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"},
	})
	defer client.Close()
	n, err := redisnotify.New(client, redisnotify.Options{})
	if err != nil {
		log.Fatal(err)
	}
	// During a rolling deploy from a release that used PUBLISH.
	plain, err := redisnotify.New(client, redisnotify.Options{PlainPubSub: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n.Sharded(), plain.Sharded())
	// Output: true false
}
