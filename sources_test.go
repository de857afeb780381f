package apikey_test

import (
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
