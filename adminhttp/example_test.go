package adminhttp_test

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/adminhttp"
	"github.com/gokeys/apikey/limits"
)

func Example() {
	// newCustomerStore is a store that keeps customer records
	// (apikey.CustomerStore), as sqlstore does.
	m, err := apikey.New(newCustomerStore(), apikey.Options{DefaultPlan: "free", Plans: limits.Plans{
		"free": {limits.Quota("daily", 100, limits.Day)},
		"pro":  {limits.Quota("daily", 10_000, limits.Day)},
	}})
	if err != nil {
		panic(err)
	}
	defer m.Close(context.Background())
	h, err := adminhttp.New(m, adminhttp.Options{})
	if err != nil {
		panic(err)
	}
	// The handler checks no credentials: only operators may reach it.
	operatorOnly := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			user, pass, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(user+":"+pass), []byte("ops:secret")) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="operators"`)
				http.Error(w, "operators only", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/", operatorOnly(h))

	put := func(id, body string) {
		req := httptest.NewRequest("PUT", "/admin/customers/"+id, strings.NewReader(body))
		req.SetBasicAuth("ops", "secret")
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		var v struct{ Plan, Field string }
		json.NewDecoder(rec.Body).Decode(&v)
		fmt.Printf("%d plan=%q field=%q\n", rec.Code, v.Plan, v.Field)
	}
	put("bob", `{"plan":"pro","max_keys":5}`)
	put("bob", `{"plan":"gold"}`)
	// Output:
	// 200 plan="pro" field=""
	// 400 plan="" field="plan"
}
