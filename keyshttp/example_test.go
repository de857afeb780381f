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
)

func Example() {
	m, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_live"})
	if err != nil {
		panic(err)
	}
	defer m.Close(context.Background())

	h, err := keyshttp.New(m, keyshttp.Options{
		// Replace with your session check: who is asking?
		Owner: func(r *http.Request) (string, error) {
			if u := r.Header.Get("X-User"); u != "" {
				return u, nil
			}
			return "", errors.New("not signed in")
		},
		Plans:       []string{"free", "pro"},
		DefaultPlan: "free",
	})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api-keys", h)
	mux.Handle("/api-keys/", h)
	mux.Handle("GET /openapi.json", h)

	req := httptest.NewRequest("POST", "/api-keys", strings.NewReader(`{"name":"ci","scopes":["read"]}`))
	req.Header.Set("X-User", "alice")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	var created struct {
		Key  string `json:"key"`
		Plan string `json:"plan"`
	}
	json.NewDecoder(rec.Body).Decode(&created)
	fmt.Println(rec.Code, rec.Header().Get("Cache-Control"), strings.HasPrefix(created.Key, "sk_live_"), created.Plan)

	req = httptest.NewRequest("POST", "/api-keys", strings.NewReader(`{"plan":"gold"}`))
	req.Header.Set("X-User", "alice")
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	// Output:
	// 201 no-store true free
	// 400 application/problem+json
}
