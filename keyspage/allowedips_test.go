package keyspage_test

import (
	"html"
	"net/http"
	"net/netip"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/keyspage"
)

// The page creates keys restricted to IP ranges, shows the ranges, and
// changes them (POST .../ips) within the customer's.
func TestIPRanges(t *testing.T) {
	t.Parallel()
	f := newFixture(t, keyspage.Options{})
	f.customer(t, "alice", func(c *apikey.Customer) { c.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")} })

	form := createForm("office")
	form.Set("allowed_ips", "203.0.113.128/25,\n203.0.113.7")
	res := f.do(t, http.MethodPost, "/keys/create", "alice", form, nil)
	require.Equal(t, http.StatusCreated, res.status, res.body)
	ks := f.keys(t, "alice")
	require.Len(t, ks, 1)
	k := ks[0]
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("203.0.113.7/32"), netip.MustParsePrefix("203.0.113.128/25")}, k.AllowedIPs)
	page := html.UnescapeString(f.do(t, http.MethodGet, "/keys/", "alice", nil, nil).body)
	assert.Contains(t, page, "from 203.0.113.7/32, 203.0.113.128/25")

	for value, want := range map[string]string{
		"198.51.100.0/24": "You may not set allowed_ips",
		"203.0.113.7/24":  "Allowed IP ranges: entry 1 has bits set beyond its length",
		"not-an-address":  "Allowed IP ranges: entry 1 is neither",
	} {
		res := f.do(t, http.MethodPost, "/keys/ips", "alice", url.Values{"id": {k.ID}, "allowed_ips": {value}}, nil)
		assert.Contains(t, []int{http.StatusBadRequest, http.StatusForbidden}, res.status, value)
		assert.Contains(t, html.UnescapeString(res.body), want, value)
		bad := createForm("bad")
		bad.Set("allowed_ips", value)
		res = f.do(t, http.MethodPost, "/keys/create", "alice", bad, nil)
		assert.Contains(t, html.UnescapeString(res.body), want, value)
	}
	assert.Len(t, f.keys(t, "alice"), 1, "no key was created")

	res = f.do(t, http.MethodPost, "/keys/ips", "alice", url.Values{"id": {k.ID}, "allowed_ips": {"203.0.113.0/26"}}, nil)
	require.Equal(t, http.StatusSeeOther, res.status, res.body)
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("203.0.113.0/26")}, f.get(t, k.ID).AllowedIPs)
	res = f.do(t, http.MethodPost, "/keys/ips", "alice", url.Values{"id": {k.ID}, "allowed_ips": {""}}, nil)
	require.Equal(t, http.StatusSeeOther, res.status, res.body)
	assert.Empty(t, f.get(t, k.ID).AllowedIPs, "an empty field lifts the key's own restriction")

	res = f.do(t, http.MethodPost, "/keys/ips", "bob", url.Values{"id": {k.ID}, "allowed_ips": {"10.0.0.0/8"}}, nil)
	assert.Equal(t, http.StatusNotFound, res.status, "another owner's key")
}
