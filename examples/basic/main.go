// Command basic issues one API key into an in-memory store, prints it, and
// serves an endpoint protected by it on 127.0.0.1.
//
//	go run ./examples/basic
//	curl -H "Authorization: Bearer <the printed key>" http://127.0.0.1:8080/protected
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, addr string) error {
	m, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_test"})
	if err != nil {
		return err
	}
	defer m.Close(context.Background())
	token, key, err := m.Issue(ctx, apikey.IssueParams{Name: "demo", Owner: "demo", Scopes: []string{"read"}})
	if err != nil {
		return err
	}
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Realm: "basic"})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /protected", mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := apikey.FromContext(r.Context())
		fmt.Fprintf(w, "Hello %s (key %s)\n", k.Owner, k.Hint)
	})))

	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("Issued key %s (id %s). It is shown once; only its digest is stored.\n", token, key.ID)
	fmt.Printf("Try: curl -H 'Authorization: Bearer %s' http://%s/protected\n", token, addr)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
