// Command chi protects a chi router with apikey. The middleware goes in
// r.Use, and RequireScopes guards one route.
//
//	go run ./examples/chi    # prints a key, then serves 127.0.0.1:8080
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// router returns the chi router: every route needs a key, POST /data a
// key with the "write" scope.
func router(mw *apikey.Middleware) http.Handler {
	r := chi.NewRouter()
	r.Use(mw.Handler)
	r.Get("/data", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "data for "+apikey.FromContext(r.Context()).Owner)
	})
	r.With(mw.RequireScopes("write")).Post("/data", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "written")
	})
	return r
}

func main() {
	ctx := context.Background()
	m, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_test"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(ctx)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Realm: "chi-example"})
	if err != nil {
		log.Fatal(err)
	}
	token, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "bob", Scopes: []string{"read"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("curl -H 'X-API-Key: %s' http://127.0.0.1:8080/data\n", token)
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", router(mw)))
}
