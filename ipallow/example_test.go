package ipallow_test

import (
	"fmt"
	"net/http/httptest"
	"net/netip"

	"github.com/gokeys/apikey/ipallow"
)

func Example() {
	allowed, err := ipallow.Parse("203.0.113.0/24", "2001:db8::/32")
	if err != nil {
		panic(err)
	}
	// Requests come through a load balancer in 10.0.0.0/8, which appends
	// the address of its peer to X-Forwarded-For.
	proxies, err := ipallow.NewProxies(ipallow.XForwardedFor, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	if err != nil {
		panic(err)
	}
	for _, tc := range []struct{ remote, xff string }{
		{"10.0.0.5:443", "203.0.113.7"},               // through the balancer
		{"10.0.0.5:443", "203.0.113.7, 198.51.100.9"}, // the client forged the first entry
		{"198.51.100.9:443", "203.0.113.7"},           // directly, with a forged header
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		r.Header.Set("X-Forwarded-For", tc.xff)
		client := proxies.ClientAddr(r)
		fmt.Println(client, ipallow.Contains(allowed, client))
	}
	// Output:
	// 203.0.113.7 true
	// 198.51.100.9 false
	// 198.51.100.9 false
}
