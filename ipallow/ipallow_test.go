package ipallow_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/gokeys/apikey/ipallow"
)

func prefixes(t testing.TB, s ...string) []netip.Prefix {
	t.Helper()
	ps, err := ipallow.Parse(s...)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestParse(t *testing.T) {
	got := prefixes(t, "2001:db8::/32", "203.0.113.0/24", "198.51.100.7", "2001:db8::1", "::ffff:192.0.2.0/120", "203.0.113.0/24")
	want := "[192.0.2.0/24 198.51.100.7/32 203.0.113.0/24 2001:db8::/32 2001:db8::1/128]"
	if fmtPrefixes(got) != want {
		t.Errorf("Parse: got %s, want %s", fmtPrefixes(got), want)
	}
	if got, err := ipallow.Parse(); err != nil || got != nil {
		t.Errorf("Parse(): got %v, %v; want nil, nil", got, err)
	}
	for _, bad := range []string{"203.0.113.7/24", "2001:db8::1/32", "fe80::1%eth0", "fe80::%eth0/64", "203.0.113.0/33", "example.com", "", "10.0.0.0/8 "} {
		_, err := ipallow.Parse("10.0.0.0/8", bad)
		if !errors.Is(err, ipallow.ErrInvalidRange) {
			t.Errorf("Parse(%q): want ErrInvalidRange, got %v", bad, err)
			continue
		}
		if !strings.Contains(err.Error(), "entry 2 ") || bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("Parse(%q): the error names the entry by position, not by value: %v", bad, err)
		}
	}
	if _, err := ipallow.Normalize([]netip.Prefix{{}}); !errors.Is(err, ipallow.ErrInvalidRange) {
		t.Errorf("Normalize of the zero Prefix: want ErrInvalidRange, got %v", err)
	}
}

func fmtPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

func TestContains(t *testing.T) {
	ranges := prefixes(t, "203.0.113.0/24", "2001:db8::/32", "fe80::/10")
	for addr, want := range map[string]bool{
		"203.0.113.9":        true,
		"203.0.114.9":        false,
		"::ffff:203.0.113.9": true, // IPv4-mapped IPv6 is the IPv4 address
		"2001:db8::7":        true,
		"2001:db9::7":        false,
		"fe80::1%eth0":       true, // a zone is ignored
		"::203.0.113.9":      false,
	} {
		if got := ipallow.Contains(ranges, netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", addr, got, want)
		}
	}
	if ipallow.Contains(ranges, netip.Addr{}) {
		t.Error("the zero Addr is in no range")
	}
	if ipallow.Contains(nil, netip.MustParseAddr("203.0.113.9")) {
		t.Error("no address is in an empty list")
	}
	mapped := prefixes(t, "::ffff:203.0.113.0/120")
	if !ipallow.Contains(mapped, netip.MustParseAddr("203.0.113.9")) {
		t.Error("a range written in IPv4-mapped form holds the IPv4 addresses")
	}
}

func TestWithinAndIntersect(t *testing.T) {
	p := func(s ...string) []netip.Prefix { return prefixes(t, s...) }
	for _, tc := range []struct {
		a, b   []netip.Prefix
		within bool // a within b
		inter  string
	}{
		{p("10.1.0.0/16"), p("10.0.0.0/8"), true, "[10.1.0.0/16]"},
		{p("10.0.0.0/8"), p("10.1.0.0/16"), false, "[10.1.0.0/16]"},
		{p("10.1.0.0/16", "192.168.0.0/16"), p("10.0.0.0/8"), false, "[10.1.0.0/16]"},
		{p("10.0.0.0/8", "2001:db8::/32"), p("10.2.3.4", "2001:db8:1::/48", "172.16.0.0/12"), false, "[10.2.3.4/32 2001:db8:1::/48]"},
		{p("10.0.0.0/8"), p("172.16.0.0/12"), false, "[]"},
		{nil, p("10.0.0.0/8"), true, "[]"},
		{p("10.0.0.0/8"), nil, false, "[]"},
		{p("0.0.0.0/0"), p("0.0.0.0/0", "::/0"), true, "[0.0.0.0/0]"},
	} {
		if got := ipallow.Within(tc.a, tc.b); got != tc.within {
			t.Errorf("Within(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.within)
		}
		if got := fmtPrefixes(ipallow.Intersect(tc.a, tc.b)); got != tc.inter {
			t.Errorf("Intersect(%v, %v) = %s, want %s", tc.a, tc.b, got, tc.inter)
		}
		if got := fmtPrefixes(ipallow.Intersect(tc.b, tc.a)); got != tc.inter {
			t.Errorf("Intersect(%v, %v) = %s, want %s (symmetric)", tc.b, tc.a, got, tc.inter)
		}
	}
}

func newProxies(t testing.TB, header string, trusted ...string) *ipallow.Proxies {
	t.Helper()
	p, err := ipallow.NewProxies(header, prefixes(t, trusted...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func request(remote string, header string, values ...string) *http.Request {
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = remote
	for _, v := range values {
		r.Header.Add(header, v)
	}
	return r
}

// The client address through trusted proxies, with forwarding headers
// spoofed by the client, IPv4-mapped IPv6 addresses, zones, several
// header lines and malformed values.
func TestClientAddr(t *testing.T) {
	xff := newProxies(t, "", "10.0.0.0/8", "fd00::/8", "fe80::/10")
	fwd := newProxies(t, "forwarded", "10.0.0.0/8", "fd00::/8")
	const X, F = ipallow.XForwardedFor, ipallow.Forwarded
	for _, tc := range []struct {
		name    string
		p       *ipallow.Proxies
		r       *http.Request
		want    string // "" for the zero Addr
		comment string
	}{
		{"direct", xff, request("203.0.113.9:5000", X), "203.0.113.9", ""},
		{"direct, forged XFF", xff, request("203.0.113.9:5000", X, "10.1.1.1"), "203.0.113.9", "an untrusted peer's header is ignored"},
		{"direct, forged Forwarded", fwd, request("203.0.113.9:5000", F, "for=10.1.1.1"), "203.0.113.9", ""},
		{"nil Proxies trusts nobody", nil, request("10.0.0.1:80", X, "198.51.100.1"), "10.0.0.1", ""},
		{"one proxy", xff, request("10.0.0.1:80", X, "198.51.100.1"), "198.51.100.1", ""},
		{"two proxies", xff, request("10.0.0.1:80", X, "198.51.100.1, 10.0.0.2"), "198.51.100.1", ""},
		{"forged entries left of the client", xff, request("10.0.0.1:80", X, "10.9.9.9, 192.0.2.66, 198.51.100.1, 10.0.0.2"), "198.51.100.1", "the client cannot pose as a proxy or another client"},
		{"several lines", xff, request("10.0.0.1:80", X, "10.9.9.9, 192.0.2.66", "198.51.100.1", "10.0.0.2"), "198.51.100.1", ""},
		{"several lines, client in the first", xff, request("10.0.0.1:80", X, "192.0.2.66, 198.51.100.1", "10.0.0.3", "10.0.0.2"), "198.51.100.1", ""},
		{"empty elements", xff, request("10.0.0.1:80", X, " , 198.51.100.1 ,,"), "198.51.100.1", ""},
		{"no header from a proxy", xff, request("10.0.0.1:80", X), "10.0.0.1", "the proxy itself is the client"},
		{"every hop trusted", xff, request("10.0.0.1:80", X, "10.0.0.3, 10.0.0.2"), "10.0.0.3", "the leftmost"},
		{"mapped peer", xff, request("[::ffff:10.0.0.1]:80", X, "198.51.100.1"), "198.51.100.1", "an IPv4-mapped peer is a trusted IPv4 proxy"},
		{"mapped client", xff, request("10.0.0.1:80", X, "::ffff:198.51.100.1"), "198.51.100.1", ""},
		{"mapped proxy entry", xff, request("10.0.0.1:80", X, "198.51.100.1, ::ffff:10.0.0.2"), "198.51.100.1", ""},
		{"zoned peer", xff, request("[fe80::1%eth0]:80", X, "2001:db8::5"), "2001:db8::5", "the zone is ignored"},
		{"zoned client", xff, request("10.0.0.1:80", X, "fe80::7%eth1"), "fe80::7", "fe80::/10 is trusted: the leftmost, without its zone"},
		{"zoned direct peer", xff, request("[2001:db8::9%en0]:443", X), "2001:db8::9", ""},
		{"IPv6 with brackets and port", xff, request("10.0.0.1:80", X, "[2001:db8::5]:4711"), "2001:db8::5", ""},
		{"IPv4 with port", xff, request("10.0.0.1:80", X, "198.51.100.1:4711"), "198.51.100.1", ""},
		{"malformed at the client's place", xff, request("10.0.0.1:80", X, "198.51.100.1, bogus"), "", "an unknown client is refused by every restriction"},
		{"malformed left of the client", xff, request("10.0.0.1:80", X, "bogus, 198.51.100.1"), "198.51.100.1", "never read"},
		{"malformed brackets", xff, request("10.0.0.1:80", X, "[198.51.100.1]"), "", ""},
		{"unknown peer", xff, request("pipe", X, "198.51.100.1"), "", "a RemoteAddr that is no address"},
		{"unix socket", xff, request("@", X), "", ""},
		{"Forwarded", fwd, request("10.0.0.1:80", F, `for=198.51.100.1;proto=https;by=10.0.0.1`), "198.51.100.1", ""},
		{"Forwarded IPv6", fwd, request("10.0.0.1:80", F, `for="[2001:db8:cafe::17]:4711"`), "2001:db8:cafe::17", ""},
		{"Forwarded chain", fwd, request("10.0.0.1:80", F, `for=192.0.2.66, for=198.51.100.1;by="[fd00::1]", For="[fd00::2]"`), "198.51.100.1", ""},
		{"Forwarded lines", fwd, request("10.0.0.1:80", F, `for=192.0.2.66`, `for=198.51.100.1`, `for=10.0.0.3`), "198.51.100.1", ""},
		{"Forwarded quoted comma", fwd, request("10.0.0.1:80", F, `for=198.51.100.1;ext="a,b;c", for=10.0.0.3`), "198.51.100.1", ""},
		{"Forwarded obfuscated", fwd, request("10.0.0.1:80", F, `for=_hidden`), "", ""},
		{"Forwarded unknown", fwd, request("10.0.0.1:80", F, `for=unknown, for=10.0.0.3`), "", ""},
		{"Forwarded without for", fwd, request("10.0.0.1:80", F, `proto=https`), "", ""},
		{"Forwarded unterminated", fwd, request("10.0.0.1:80", F, `for="198.51.100.1`), "", ""},
		{"Forwarded forged on the left", fwd, request("10.0.0.1:80", F, `for=10.9.9.9;by=x, for=198.51.100.1`), "198.51.100.1", ""},
		{"XFF ignored when Forwarded is read", fwd, request("10.0.0.1:80", X, "198.51.100.1"), "10.0.0.1", "a proxy writing Forwarded passes a forged X-Forwarded-For on"},
		{"Forwarded ignored when XFF is read", xff, request("10.0.0.1:80", F, "for=198.51.100.1"), "10.0.0.1", ""},
		{"both headers", xff, withHeader(request("10.0.0.1:80", X, "198.51.100.1"), F, "for=10.9.9.9"), "198.51.100.1", ""},
	} {
		got := tc.p.ClientAddr(tc.r)
		want := netip.Addr{}
		if tc.want != "" {
			want = netip.MustParseAddr(tc.want)
		}
		if got != want {
			t.Errorf("%s: got %v, want %v %s", tc.name, got, want, tc.comment)
		}
	}
}

func withHeader(r *http.Request, name, value string) *http.Request {
	r.Header.Add(name, value)
	return r
}

func TestClientAddrZonedFromTrustedRange(t *testing.T) {
	// A zoned link-local entry lies in the trusted fe80::/10: skipped, and
	// the client is the address to its left.
	p := newProxies(t, "", "10.0.0.0/8", "fe80::/10")
	got := p.ClientAddr(request("10.0.0.1:80", ipallow.XForwardedFor, "198.51.100.1, fe80::7%eth1"))
	if got != netip.MustParseAddr("198.51.100.1") {
		t.Errorf("got %v", got)
	}
}

func TestClientForGRPC(t *testing.T) {
	p := newProxies(t, "", "10.0.0.0/8")
	if got := p.Client(netip.MustParseAddr("::ffff:10.0.0.1"), []string{"192.0.2.66, 198.51.100.1"}); got != netip.MustParseAddr("198.51.100.1") {
		t.Errorf("through a proxy: got %v", got)
	}
	if got := p.Client(netip.MustParseAddr("203.0.113.9"), []string{"198.51.100.1"}); got != netip.MustParseAddr("203.0.113.9") {
		t.Errorf("direct: got %v", got)
	}
	if h := strings.ToLower(p.Header()); h != "x-forwarded-for" {
		t.Errorf("Header: %s", h)
	}
}

func TestNewProxies(t *testing.T) {
	if _, err := ipallow.NewProxies("X-Real-IP", nil); err == nil {
		t.Error("an unknown header is refused")
	}
	if _, err := ipallow.NewProxies("", []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}); !errors.Is(err, ipallow.ErrInvalidRange) {
		t.Errorf("a range with host bits: %v", err)
	}
	p := newProxies(t, "FORWARDED", "::ffff:10.0.0.0/104")
	if p.Header() != ipallow.Forwarded || fmtPrefixes(p.Trusted()) != "[10.0.0.0/8]" {
		t.Errorf("got %s %v", p.Header(), p.Trusted())
	}
}

// Finding the client allocates nothing, through proxies or not.
func TestClientAddrAllocatesNothing(t *testing.T) {
	xff := newProxies(t, "", "10.0.0.0/8")
	fwd := newProxies(t, ipallow.Forwarded, "10.0.0.0/8")
	for name, tc := range map[string]struct {
		p *ipallow.Proxies
		r *http.Request
	}{
		"direct":    {xff, request("203.0.113.9:5000", ipallow.XForwardedFor, "10.1.1.1")},
		"XFF":       {xff, request("10.0.0.1:80", ipallow.XForwardedFor, "192.0.2.1, 198.51.100.1, 10.0.0.2")},
		"Forwarded": {fwd, request("[::ffff:10.0.0.1]:80", ipallow.Forwarded, `for=192.0.2.1, for="[2001:db8::1]:80", for=10.0.0.2`)},
	} {
		if n := testing.AllocsPerRun(100, func() { tc.p.ClientAddr(tc.r) }); n != 0 {
			t.Errorf("%s: %v allocations", name, n)
		}
	}
}

// FuzzClientAddr: whatever a client behind a trusted proxy sends, finding
// his address never panics, and an address other than the peer's comes
// from the header.
func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{`for=198.51.100.1, for="[2001:db8::1]:80"`, `for="`, `;;,,=`, `198.51.100.1, 10.0.0.2`, `[::1`, `for=a;b`} {
		f.Add(s, true)
		f.Add(s, false)
	}
	xff := newProxies(f, "", "10.0.0.0/8")
	fwd := newProxies(f, ipallow.Forwarded, "10.0.0.0/8")
	peer := netip.MustParseAddr("10.0.0.1")
	f.Fuzz(func(t *testing.T, value string, forwarded bool) {
		p, h := xff, ipallow.XForwardedFor
		if forwarded {
			p, h = fwd, ipallow.Forwarded
		}
		r := request("10.0.0.1:80", h)
		r.Header[h] = []string{value}
		if got := p.ClientAddr(r); got.IsValid() && got != peer && strings.TrimSpace(value) == "" {
			t.Errorf("%q gave %v", value, got)
		}
	})
}
