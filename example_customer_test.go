package apikey_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memstore"
)

// The operator decides each customer's plan, scope ceiling and key cap.
// Every key of the customer spends from that plan, and no key can hold
// more than the customer was granted.
func Example_customers() {
	ctx := context.Background()
	m, err := apikey.New(memstore.New(), apikey.Options{
		Plans: limits.Plans{
			"free": {limits.Quota("daily", 100, limits.Day)},
			"pro":  {limits.Quota("daily", 10_000, limits.Day)},
		},
		DefaultPlan: "free", // for customers without a record
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(ctx)

	if err := grantBob(ctx, m); err != nil {
		log.Fatal(err)
	}
	_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "bob", Scopes: []string{"admin"}})
	fmt.Println(err)

	token, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "bob", Scopes: []string{"read"}})
	if err != nil {
		log.Fatal(err)
	}
	for range 2 { // the second key fits the cap, the third does not
		_, _, err = m.Issue(ctx, apikey.IssueParams{Owner: "bob", Scopes: []string{"read"}})
	}
	fmt.Println(errors.Is(err, apikey.ErrTooManyKeys))

	// Suspending bob refuses every key of his at once.
	_, err = m.SetCustomer(ctx, "bob", func(c *apikey.Customer) error { c.Suspended = true; return nil })
	if err != nil {
		log.Fatal(err)
	}
	_, err = m.Verify(ctx, token)
	fmt.Println(errors.Is(err, apikey.ErrSuspended))
	// Output:
	// apikey: invalid scopes: outside the customer's scopes
	// true
	// true
}

// grantBob is what the operator decides for bob: every key of his spends
// from the pro plan, holds at most the scopes read and write, and he has
// at most 2 of them. Owners can narrow this on their keys, never widen it.
func grantBob(ctx context.Context, m *apikey.Manager) error {
	_, err := m.SetCustomer(ctx, "bob", func(c *apikey.Customer) error {
		c.Plan, c.MaxKeys, c.Scopes = "pro", 2, []string{"read", "write"}
		return nil
	})
	return err
}
