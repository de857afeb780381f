package keyshttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/selfservice"
)

func Example() {
	m, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_live"})
	if err != nil {
		panic(err)
	}
	defer m.Close(context.Background())

	// What a signed-in user may do to his keys: the same policy serves
	// keyspage.
	policy, err := selfservice.New(m, selfservice.Options{Scopes: []string{"read", "write"}})
	if err != nil {
		panic(err)
	}
	h, err := keyshttp.New(m, keyshttp.Options{
		// Replace with your session check: who is asking?
		Owner: func(r *http.Request) (string, error) {
			if u := r.Header.Get("X-User"); u != "" {
				return u, nil
			}
			return "", errors.New("not signed in")
		},
		Policy: policy,
	})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api-keys", h)
	mux.Handle("/api-keys/", h)
	mux.Handle("GET /openapi.json", h)
	mux.Handle("GET /usage", h)

	req := httptest.NewRequest("POST", "/api-keys", strings.NewReader(`{"name":"ci","scopes":["read"]}`))
	req.Header.Set("X-User", "alice")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	var created struct {
		Key string `json:"key"`
	}
	json.NewDecoder(rec.Body).Decode(&created)
	fmt.Println(rec.Code, rec.Header().Get("Cache-Control"), strings.HasPrefix(created.Key, "sk_live_"))

	// A user never chooses his plan, credits or limits: the operator does.
	req = httptest.NewRequest("POST", "/api-keys", strings.NewReader(`{"plan":"enterprise"}`))
	req.Header.Set("X-User", "alice")
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	var problem struct {
		Field string `json:"field"`
	}
	json.NewDecoder(rec.Body).Decode(&problem)
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"), problem.Field)
	// Output:
	// 201 no-store true
	// 403 application/problem+json plan
}
