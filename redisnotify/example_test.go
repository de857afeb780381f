package redisnotify_test

import (
	"context"
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
