package rpcauth

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// mdMap is request metadata keyed by lower-case metadata key.
type mdMap map[string][]string

func (m mdMap) Values(s *Source) []string { return m[s.Key] }

func defaultSources(t testing.TB) []Source {
	g, err := New(newManager(t), Config{})
	require.NoError(t, err)
	return g.Sources()
}

func newManager(t testing.TB) *apikey.Manager {
	m, err := apikey.New(memstore.New(), apikey.Options{Prefix: "sk_test"})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

func TestExtract(t *testing.T) {
	sources := defaultSources(t)
	long := strings.Repeat("a", apikey.MaxTokenLength+1)
	for _, c := range []struct {
		name  string
		md    mdMap
		token string
		from  int
		err   error
	}{
		{"bearer", mdMap{"authorization": {"Bearer tok"}}, "tok", 0, nil},
		{"bearer in any case, spaces around", mdMap{"authorization": {"  bEARER   tok  "}}, "tok", 0, nil},
		{"x-api-key", mdMap{"x-api-key": {" tok "}}, "tok", 1, nil},
		{"another scheme", mdMap{"authorization": {"Basic abc"}}, "", -1, apikey.ErrMissingKey},
		{"another scheme beside x-api-key", mdMap{"authorization": {"Basic abc"}, "x-api-key": {"tok"}}, "tok", 1, nil},
		{"nothing", mdMap{"x-other": {"tok"}}, "", -1, apikey.ErrMissingKey},
		{"two keys", mdMap{"authorization": {"Bearer a"}, "x-api-key": {"b"}}, "", -1, apikey.ErrBadRequest},
		{"authorization twice", mdMap{"authorization": {"Bearer a", "Bearer a"}}, "", -1, apikey.ErrBadRequest},
		{"x-api-key twice", mdMap{"x-api-key": {"a", "b"}}, "", -1, apikey.ErrBadRequest},
		{"empty bearer", mdMap{"authorization": {"Bearer"}}, "", -1, apikey.ErrBadRequest},
		{"blank x-api-key", mdMap{"x-api-key": {"  "}}, "", -1, apikey.ErrBadRequest},
		{"too long", mdMap{"x-api-key": {long}}, "", -1, apikey.ErrBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			token, from, err := Extract(sources, c.md)
			assert.Equal(t, c.token, token)
			assert.Equal(t, c.from, from)
			assert.Equal(t, c.err, err)
		})
	}
}

// FuzzExtract checks Extract against the HTTP middleware's extraction:
// for the same header values, both find the same token, or refuse the
// same way.
func FuzzExtract(f *testing.F) {
	for _, seed := range []struct {
		auth, key     string
		nAuth, nKey   uint8
		authorization bool
	}{
		{"Bearer sk_test_abc", "", 1, 0, true},
		{"bearer  sk_test_abc ", "", 1, 0, true},
		{"Basic dXNlcjpwdw==", "sk_test_abc", 1, 1, true},
		{"Bearer a", "b", 1, 1, true},
		{"Bearer a", "", 2, 0, true},
		{"", "sk_test_abc", 0, 2, false},
		{"Bearer ", " ", 1, 1, true},
		{"Bearer\ta", "\x00", 1, 1, true},
		{"Bearer " + strings.Repeat("x", apikey.MaxTokenLength), "", 1, 0, true},
	} {
		f.Add(seed.auth, seed.key, seed.nAuth, seed.nKey)
	}
	m := newManager(f)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{})
	require.NoError(f, err)
	sources := defaultSources(f)
	f.Fuzz(func(t *testing.T, auth, key string, nAuth, nKey uint8) {
		md := mdMap{}
		r, _ := http.NewRequest("GET", "/", nil)
		for range nAuth % 3 {
			md["authorization"] = append(md["authorization"], auth)
			r.Header.Add("Authorization", auth)
		}
		for range nKey % 3 {
			md["x-api-key"] = append(md["x-api-key"], key)
			r.Header.Add("X-Api-Key", key)
		}
		token, from, err := Extract(sources, md)
		_, httpErr := mw.Authenticate(r)
		switch {
		case err != nil:
			assert.Empty(t, token)
			assert.Equal(t, -1, from)
			assert.ErrorIs(t, httpErr, err, "the HTTP middleware refuses the same way")
		default:
			assert.NotEmpty(t, token)
			assert.LessOrEqual(t, len(token), apikey.MaxTokenLength)
			assert.Equal(t, strings.Trim(token, " "), token)
			assert.Contains(t, []int{0, 1}, from)
			// The HTTP middleware found a token too, and its verdict is
			// Verify's verdict on ours.
			_, verr := m.Verify(context.Background(), token)
			assert.False(t, errors.Is(httpErr, apikey.ErrMissingKey) || errors.Is(httpErr, apikey.ErrBadRequest), "HTTP: %v", httpErr)
			assert.Equal(t, verr, httpErr)
		}
	})
}
