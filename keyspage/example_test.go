package keyspage_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyspage"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/selfservice"
)

// mount is the README's example: the keys page next to the service's own
// pages, behind its sign-in.
func mount(m *apikey.Manager, mux *http.ServeMux) error {
	// What a user may do to his keys; the same policy serves keyshttp.
	policy, err := selfservice.New(m, selfservice.Options{
		Scopes: []string{"read", "write"}, // the checkboxes, unless the customer has a ceiling
	})
	if err != nil {
		return err
	}
	page, err := keyspage.New(m, keyspage.Options{
		Owner:  currentUser, // func(*http.Request) (string, error)
		Policy: policy,
	})
	if err != nil {
		return err
	}
	mux.Handle("/keys/", requireSignIn(page))
	return nil
}

// currentUser and requireSignIn stand for the service's own sign-in.
func currentUser(r *http.Request) (string, error) {
	if c, err := r.Cookie("user"); err == nil {
		return c.Value, nil
	}
	return "", errors.New("not signed in")
}

func requireSignIn(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := currentUser(r); err != nil {
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func TestMountREADMEExample(t *testing.T) {
	t.Parallel()
	m, err := apikey.New(memstore.New(), apikey.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(t.Context()) })
	require.NoError(t, mount(m, http.NewServeMux()))
}

// The usage chart draws the daily quota of the customer's plan when
// DailyQuota says it: here read from the Manager's customer record and the
// same Plans the Manager limits with.
func ExampleOptions_dailyQuota() {
	ctx := context.Background()
	plans := limits.Plans{
		"free": {limits.Quota("daily", 100, limits.Day)},
		"pro":  {limits.Quota("daily", 10_000, limits.Day)},
	}
	m, err := apikey.New(memstore.New(), apikey.Options{Plans: plans, DefaultPlan: "free"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(ctx)
	page, err := keyspage.New(m, keyspage.Options{
		Owner: currentUser,
		DailyQuota: func(ctx context.Context, customer string) (int64, bool) {
			c, err := m.Customer(ctx, customer)
			if err != nil {
				return 0, false
			}
			for _, l := range plans[cmp.Or(c.Plan, "free")] {
				if l.Kind == limits.KindQuota && l.Window == limits.Day {
					return l.Count, true
				}
			}
			return 0, false
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	_, err = m.SetCustomer(ctx, "bob", func(c *apikey.Customer) error { c.Plan = "pro"; return nil })
	if err != nil {
		log.Fatal(err)
	}
	for _, user := range []string{"alice", "bob"} {
		r := httptest.NewRequest(http.MethodGet, "/keys/", nil)
		r.AddCookie(&http.Cookie{Name: "user", Value: user})
		w := httptest.NewRecorder()
		page.ServeHTTP(w, r)
		fmt.Println(user, regexp.MustCompile(`Daily quota: [0-9,]+`).FindString(w.Body.String()))
	}
	// Output:
	// alice Daily quota: 100
	// bob Daily quota: 10,000
}
