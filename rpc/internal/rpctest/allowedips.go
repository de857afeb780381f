package rpctest

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/ipallow"
	"github.com/gokeys/apikey/rpc/internal/rpcauth"
)

// RunIPRestrictions checks keys restricted to IP ranges over a transport
// whose peer is loopback (TCP): the peer's address decides without
// trusted proxies, forwarding metadata decides only through them, read
// from the right, and a refused call spends nothing.
func RunIPRestrictions(t *testing.T, newDriver func(t *testing.T, env *Env) Driver) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	elsewhere := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}

	direct := NewEnv(t, Default)
	d := newDriver(t, direct)
	token, _ := direct.Issue(t, Key{AllowedIPs: loopback})
	o := d.Unary(ctx, Echo, Bearer(token), Request(nil))
	assert.Zero(t, o.Code, "from loopback: %s", o.Message)
	token, key := direct.Issue(t, Key{AllowedIPs: elsewhere})
	for _, md := range []map[string][]string{
		Bearer(token),
		with(Bearer(token), "x-forwarded-for", "203.0.113.9"),
	} {
		o = d.Unary(ctx, Echo, md, Request(nil))
		assert.Equal(t, rpcauth.PermissionDenied, o.Code, "no proxy is trusted: %s", o.Message)
		assert.Empty(t, o.Header.Get("Ratelimit"), "nothing spent")
	}
	open, _ := direct.IssueTo(t, key.Owner) // the same customer, unrestricted
	o = d.Unary(ctx, Echo, Bearer(open), Request(nil))
	require.Zero(t, o.Code, o.Message)
	assert.Equal(t, `"daily";r=`+strconv.Itoa(FreeQuota-1)+`;t=43200`, o.Header.Get("Ratelimit"), "the refused calls spent nothing")

	proxied := NewEnv(t, Default)
	var err error
	proxied.Config.TrustedProxies, err = ipallow.NewProxies("", loopback)
	require.NoError(t, err)
	d = newDriver(t, proxied)
	token, _ = proxied.Issue(t, Key{AllowedIPs: elsewhere})
	for _, tc := range []struct {
		md   map[string][]string
		want rpcauth.Code
	}{
		{with(Bearer(token), "x-forwarded-for", "203.0.113.9"), 0},
		{with(Bearer(token), "x-forwarded-for", "198.51.100.1, 203.0.113.9, 127.0.0.5"), 0},
		{with(Bearer(token), "x-forwarded-for", "203.0.113.9, 198.51.100.1"), rpcauth.PermissionDenied}, // forged on the left
		{with(Bearer(token), "forwarded", "for=203.0.113.9"), rpcauth.PermissionDenied},                 // not the proxies' header
		{Bearer(token), rpcauth.PermissionDenied},                                                       // the proxy itself is the client
	} {
		o := d.Unary(ctx, Echo, tc.md, Request(nil))
		assert.Equal(t, tc.want, o.Code, "%v: %s", tc.md, o.Message)
	}
}
