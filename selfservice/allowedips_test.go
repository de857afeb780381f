package selfservice_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/selfservice"
)

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

// An owner restricts his keys to IP ranges within his customer's, narrows
// them further or lifts his own restriction; he can never reach past the
// customer's ranges.
func TestOwnerNarrowsKeysWithinTheCustomersRanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, m, _ := newPolicy(t, selfservice.Options{Scopes: []string{"read"}})
	require.NoError(t, selfservice.CheckFields(selfservice.FieldAllowedIPs))
	_, err := m.SetCustomer(ctx, "ann", func(c *apikey.Customer) error { c.AllowedIPs = prefixes("203.0.113.0/24"); return nil })
	require.NoError(t, err)
	a, err := p.Allowance(ctx, "ann")
	require.NoError(t, err)
	assert.Equal(t, prefixes("203.0.113.0/24"), a.AllowedIPs)

	for name, ips := range map[string][]netip.Prefix{
		"outside": prefixes("198.51.100.0/24"),
		"wider":   prefixes("203.0.0.0/16"),
		"partly":  prefixes("203.0.113.0/25", "192.0.2.0/24"),
	} {
		_, _, err := p.Create(ctx, "ann", selfservice.Create{Fields: []string{"allowed_ips"}, AllowedIPs: ips})
		var fe *selfservice.FieldError
		require.ErrorAs(t, err, &fe, name)
		assert.Equal(t, "allowed_ips", fe.Field, name)
		assert.ErrorIs(t, err, selfservice.ErrForbidden, name)
	}
	_, _, err = p.Create(ctx, "ann", selfservice.Create{AllowedIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.7/24")}})
	var ie *apikey.InputError
	require.ErrorAs(t, err, &ie, "host bits are bad input, not a forbidden value")
	assert.Equal(t, "allowed_ips", ie.Field)

	token, k, err := p.Create(ctx, "ann", selfservice.Create{Fields: []string{"allowed_ips"}, AllowedIPs: prefixes("203.0.113.128/25")})
	require.NoError(t, err)
	assert.Equal(t, prefixes("203.0.113.128/25"), k.AllowedIPs)
	_, err = m.VerifyFrom(ctx, token, netip.MustParseAddr("203.0.113.1"))
	assert.ErrorIs(t, err, apikey.ErrIPNotAllowed)

	k, err = p.Update(ctx, "ann", k.ID, selfservice.Change{Fields: []string{"allowed_ips"}, AllowedIPs: prefixes("203.0.113.192/26")})
	require.NoError(t, err)
	assert.Equal(t, prefixes("203.0.113.192/26"), k.AllowedIPs)
	_, err = p.Update(ctx, "ann", k.ID, selfservice.Change{Fields: []string{"allowed_ips"}, AllowedIPs: prefixes("0.0.0.0/0")})
	assert.ErrorIs(t, err, selfservice.ErrForbidden, "never past the customer's ranges")
	k, err = p.Update(ctx, "ann", k.ID, selfservice.Change{Fields: []string{"allowed_ips"}})
	require.NoError(t, err, "lifting his own restriction")
	assert.Empty(t, k.AllowedIPs)
	_, err = m.VerifyFrom(ctx, token, netip.MustParseAddr("203.0.113.1"))
	assert.NoError(t, err, "the customer's ranges still hold, and allow this")
	_, err = m.VerifyFrom(ctx, token, netip.MustParseAddr("198.51.100.1"))
	assert.ErrorIs(t, err, apikey.ErrIPNotAllowed, "the customer's ranges still hold")

	// A customer without ranges: an owner may restrict his key to any.
	_, k2, err := p.Create(ctx, "bob", selfservice.Create{AllowedIPs: prefixes("198.51.100.0/24", "2001:db8::/32")})
	require.NoError(t, err)
	assert.Equal(t, prefixes("198.51.100.0/24", "2001:db8::/32"), k2.AllowedIPs)
}
