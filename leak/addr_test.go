package leak_test

import (
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gokeys/apikey/leak"
)

func TestRemoteAddr(t *testing.T) {
	t.Parallel()
	for remote, want := range map[string]string{
		"203.0.113.7:4000":              "203.0.113.7",
		"[2001:db8::1]:443":             "2001:db8::1",
		"[fe80::1%eth0]:443":            "fe80::1",
		"[::ffff:203.0.113.7]:80":       "::ffff:203.0.113.7",
		"203.0.113.7":                   "203.0.113.7",
		"@":                             "@",
		"[2001:db8::1%25zone]:443":      "2001:db8::1",
		"not an address at all, surely": "not an address at all, surely",
	} {
		r := httptest.NewRequest("POST", "/", nil)
		r.RemoteAddr = remote
		assert.Equal(t, want, leak.RemoteAddr(r), remote)
	}
}
