package apikey_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// HeaderSource reads the Bearer scheme from Authorization, whatever the
// case of the name, and the bare token from any other header.
func TestHeaderSource(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	token, _ := issue(t, m, apikey.IssueParams{})
	for _, tc := range []struct {
		name, source, header, value, want string
	}{
		{"bearer", "authorization", "Authorization", "Bearer " + token, token},
		{"bearer any case", "Authorization", "Authorization", "bEaReR  " + token, token},
		{"other scheme", "Authorization", "Authorization", "Basic " + token, ""},
		{"bare in Authorization", "Authorization", "Authorization", token, ""},
		{"bare header", "x-api-key", "X-API-Key", token, token},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set(tc.header, tc.value)
			got, _, err := apikey.HeaderSource(tc.source)(r)
			if tc.want == "" {
				if err == nil {
					assert.Empty(t, got)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestCookieSourceRefusesDuplicates pins the defence against cookie
// tossing: two cookies of the key's name give 400, never the
// first of them; HideCredentials strips the cookie.
func TestCookieSourceRefusesDuplicates(t *testing.T) {
	t.Parallel()
	m := newManager(t, memstore.New(), apikey.Options{})
	token, k := issue(t, m, apikey.IssueParams{Owner: "alice"})
	other, _ := issue(t, m, apikey.IssueParams{Owner: "mallory"})
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{
		Sources: []apikey.KeySource{apikey.CookieSource("api_key"), apikey.HeaderSource("Authorization")}, HideCredentials: true,
	})
	require.NoError(t, err)
	var seen *http.Request
	h := mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r }))
	serve := func(header ...string) int {
		seen = nil
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, get("/", header...))
		return rec.Code
	}

	assert.Equal(t, 200, serve("Cookie", "theme=dark; api_key="+token+"; lang=en"))
	require.NotNil(t, seen)
	assert.Equal(t, k.ID, apikey.FromContext(seen.Context()).ID)
	assert.Equal(t, []string{"theme=dark; lang=en"}, seen.Header.Values("Cookie"), "HideCredentials strips the cookie, keeps the others")

	for name, header := range map[string][]string{
		"OneHeader":    {"Cookie", "api_key=" + other + "; api_key=" + token},
		"TwoHeaders":   {"Cookie", "api_key=" + token, "Cookie", "api_key=" + other},
		"SameValue":    {"Cookie", "api_key=" + token + "; api_key=" + token},
		"CookieBearer": {"Cookie", "api_key=" + token, "Authorization", "Bearer " + token},
		"Empty":        {"Cookie", "api_key="},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, 400, serve(header...))
			assert.Nil(t, seen, "a request with two credentials never passes")
		})
	}
	_, err = mw.Authenticate(get("/", "Cookie", "api_key="+token+"; api_key="+other))
	assert.ErrorIs(t, err, apikey.ErrBadRequest)
}
