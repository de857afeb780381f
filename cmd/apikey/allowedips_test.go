package main

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

// The CLI restricts keys and customers to IP ranges, shows them, lifts
// them, and scan --revoke revokes a leaked restricted key like any other.
func TestAllowedIPsCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	ctx := context.Background()

	c := h.json("customer", "set", "acme", "--allowed-ips", "203.0.113.0/24, 2001:db8::/32")
	assert.Equal(t, []any{"203.0.113.0/24", "2001:db8::/32"}, c["allowed_ips"])
	r := h.run("", "customer", "show", "acme")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Regexp(t, `(?m)^ALLOWED IPS\s+203\.0\.113\.0/24 2001:db8::/32$`, r.stdout)

	k := h.json("issue", "--owner", "acme", "--allowed-ips", "203.0.113.128/25")
	assert.Equal(t, []any{"203.0.113.128/25"}, k["allowed_ips"])
	id, token := k["id"].(string), k["key"].(string)
	_, err := h.manager().VerifyFrom(ctx, token, netip.MustParseAddr("203.0.113.1"))
	assert.ErrorIs(t, err, apikey.ErrIPNotAllowed)
	r = h.run("", "show", id)
	assert.Regexp(t, `(?m)^ALLOWED IPS\s+203\.0\.113\.128/25$`, r.stdout)

	for _, bad := range []struct {
		args []string
		code int
	}{
		{[]string{"issue", "--owner", "acme", "--allowed-ips", "198.51.100.0/24"}, exitRefused}, // outside the customer's
		{[]string{"issue", "--owner", "acme", "--allowed-ips", "203.0.113.7/24"}, exitUsage},
		{[]string{"update", id, "--allowed-ips", "nonsense"}, exitUsage},
		{[]string{"update", id, "--allowed-ips", "10.0.0.0/8", "--no-allowed-ips"}, exitUsage},
		{[]string{"customer", "set", "acme", "--allowed-ips", "10.0.0.1/8"}, exitUsage},
	} {
		r := h.run("", bad.args...)
		assert.Equal(t, bad.code, r.code, "%v: %s", bad.args, r.stderr)
	}

	k = h.json("update", id, "--allowed-ips", "203.0.113.0/26")
	assert.Equal(t, []any{"203.0.113.0/26"}, k["allowed_ips"])
	k = h.json("update", id, "--no-allowed-ips")
	assert.Equal(t, []any{}, k["allowed_ips"])
	c = h.json("customer", "set", "acme", "--no-allowed-ips")
	assert.Equal(t, []any{}, c["allowed_ips"])

	// A leaked key restricted to IP ranges is still revoked by scan.
	leaked := h.json("issue", "--owner", "acme", "--allowed-ips", "192.0.2.0/24")
	r = h.run("token: "+leaked["key"].(string)+"\n", "scan", "--revoke")
	assert.Equal(t, exitFound, r.code, r.stderr)
	got, err := h.manager().Get(ctx, leaked["id"].(string))
	require.NoError(t, err)
	assert.False(t, got.RevokedAt.IsZero(), "revoked: %s", r.stdout)
}
