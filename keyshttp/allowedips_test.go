package keyshttp_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/selfservice"
)

// allowed_ips on POST /api-keys and PATCH /api-keys/{id}, shown in the
// key view, within the account's ranges, through the OpenAPI checker.
func TestAllowedIPs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true, &selfservice.Options{Scopes: []string{"read"}}, keyshttp.Options{})
	e.customer("ann", func(c *apikey.Customer) {
		c.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	})

	r := e.do("ann", "POST", "/api-keys", `{"scopes":["read"]}`)
	require.Equal(t, 201, r.status, r.raw)
	assert.Equal(t, []any{}, r.body["allowed_ips"], "no ranges of its own: an empty list")

	id, token := e.create("ann", `{"allowed_ips":["203.0.113.128/25","2001:db8::7"]}`)
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("203.0.113.128/25"), netip.MustParsePrefix("2001:db8::7/128")}, e.key(id).AllowedIPs)
	r = e.do("ann", "GET", "/api-keys/"+id, "")
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, []any{"203.0.113.128/25", "2001:db8::7/128"}, r.body["allowed_ips"])
	_, err := e.m.VerifyFrom(context.Background(), token, netip.MustParseAddr("203.0.113.1"))
	assert.ErrorIs(t, err, apikey.ErrIPNotAllowed)

	for body, status := range map[string]int{
		`{"allowed_ips":["198.51.100.0/24"]}`: 403, // outside the account's
		`{"allowed_ips":["0.0.0.0/0"]}`:       403,
		`{"allowed_ips":["203.0.113.7/24"]}`:  400, // host bits
		`{"allowed_ips":["example.com"]}`:     400,
		`{"allowed_ips":"203.0.113.0/24"}`:    400, // not an array
		`{"allowed_ips":[42]}`:                400,
	} {
		r := e.do("ann", "POST", "/api-keys", body)
		assertProblem(t, r, status, "allowed_ips", body)
		r = e.do("ann", "PATCH", "/api-keys/"+id, body)
		assertProblem(t, r, status, "allowed_ips", body)
	}

	r = e.do("ann", "PATCH", "/api-keys/"+id, `{"allowed_ips":["203.0.113.0/26"]}`)
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, []any{"203.0.113.0/26"}, r.body["allowed_ips"])
	_, err = e.m.VerifyFrom(context.Background(), token, netip.MustParseAddr("203.0.113.1"))
	assert.NoError(t, err)
	r = e.do("ann", "PATCH", "/api-keys/"+id, `{"allowed_ips":null}`)
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, []any{}, r.body["allowed_ips"], "null lifts the key's own restriction")
	assert.Empty(t, e.key(id).AllowedIPs)
	r = e.do("ann", "PATCH", "/api-keys/"+id, `{"name":"renamed"}`)
	require.Equal(t, 200, r.status, r.raw)
}
