package pgnotify_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/pgnotify"
)

// Every instance of a fleet builds its Manager with a Notifier on the same
// channel of the shared PostgreSQL database: a key revoked through one is
// refused by all the others within milliseconds instead of their cache TTL.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@127.0.0.1:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	n, err := pgnotify.New(pool, pgnotify.Options{}) // holds one pool connection while subscribed
	if err != nil {
		log.Fatal(err)
	}
	store := memstore.New() // in a fleet: a sqlstore.Store over the same database
	m, err := apikey.New(store, apikey.Options{Notifier: n})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(ctx) // also ends the subscription
}
