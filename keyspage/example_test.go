package keyspage_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyspage"
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
