package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/gokeys/apikey"
)

// The operator's side of the example: the customers it defines at its
// first start, and the operator's credentials in front of the operator
// API (adminhttp), which checks none itself.

// customers are the example's customers and their plans, defined when
// they have no record yet.
func customers() map[string]string { return map[string]string{"demo": "free", "bob": "pro"} }

// errDefined stops the definition of a customer who has a record.
var errDefined = errors.New("customer already defined")

// defineCustomers gives each of customers() his plan unless he already
// has a record, so that an operator's changes survive restarts. Instances
// starting together define each customer once: the write is conditional.
func defineCustomers(ctx context.Context, m *apikey.Manager) error {
	for id, plan := range customers() {
		_, err := m.SetCustomer(ctx, id, func(c *apikey.Customer) error {
			if c.Revision != 0 {
				return errDefined
			}
			c.Plan = plan
			return nil
		})
		if err != nil && !errors.Is(err, errDefined) {
			return fmt.Errorf("define customer %s: %w", id, err)
		}
	}
	return nil
}

// operatorOnly lets through the requests that carry the operator's HTTP
// Basic credentials; a user's credentials are not the operator's.
func (a *app) operatorOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := basicUser(r, a.operators); err != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="operators", charset="UTF-8"`)
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": "Unauthorized", "status": 401,
				"detail": "The operator's credentials are required."})
			return
		}
		next.ServeHTTP(w, r)
	})
}
