// Package ipallow restricts API keys to IP ranges. It checks an address
// against a list of ranges, relates two lists (one within the other, their
// intersection), and finds the address of a request's client, reading the
// forwarding headers of trusted proxies only.
//
//	ranges, err := ipallow.Parse("203.0.113.0/24", "2001:db8::/32")
//	proxies, err := ipallow.NewProxies("", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
//	ok := ipallow.Contains(ranges, proxies.ClientAddr(r))
//
// A list of ranges is a set of addresses. An IPv4 address and its
// IPv4-mapped IPv6 form (::ffff:203.0.113.7) are the same address, and a
// zone (fe80::1%eth0) is ignored. The zero netip.Addr, the answer for an
// address that cannot be known, is in no range.
//
// Everything in this package is safe for concurrent use; a *Proxies is
// read-only once built.
package ipallow

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// ErrInvalidRange is matched by every error of Parse and Normalize.
var ErrInvalidRange = errors.New("ipallow: invalid range")

// rangeError reports the entry of a list that is not a range, by its
// position: the value itself is not repeated.
type rangeError struct {
	index  int
	reason string
}

func (e *rangeError) Error() string {
	return fmt.Sprintf("ipallow: invalid range: entry %d %s", e.index+1, e.reason)
}

func (e *rangeError) Is(target error) bool { return target == ErrInvalidRange }

// Parse parses ranges in CIDR notation ("203.0.113.0/24",
// "2001:db8::/32") or single addresses ("203.0.113.7", a /32 or /128),
// and returns them as Normalize does. A range with bits set beyond its
// length ("203.0.113.7/24") is refused rather than widened: it is more
// likely a typo for a narrower range than a wish for the wider one. The
// error names the entry by its position (from 1) and matches
// ErrInvalidRange.
func Parse(ranges ...string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ranges))
	for i, s := range ranges {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			switch {
			case aerr != nil:
				return nil, &rangeError{i, "is neither a CIDR range nor an IP address"}
			case a.Zone() != "":
				return nil, &rangeError{i, "has an IPv6 zone"}
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	return Normalize(out)
}

// Normalize checks ranges and returns a new list of them in canonical
// form: IPv4-mapped IPv6 ranges (::ffff:203.0.113.0/120) as IPv4 ranges,
// sorted, each once. An invalid prefix (the zero netip.Prefix) or one
// with bits set beyond its length is an error matching ErrInvalidRange.
// An empty list gives nil.
func Normalize(ranges []netip.Prefix) ([]netip.Prefix, error) {
	if len(ranges) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, 0, len(ranges))
	for i, p := range ranges {
		if !p.IsValid() {
			return nil, &rangeError{i, "is not a valid range"}
		}
		if p.Masked() != p {
			return nil, &rangeError{i, fmt.Sprintf("has bits set beyond its length: write %s, or the single address as /%d", p.Masked(), p.Addr().BitLen())}
		}
		out = append(out, unmapPrefix(p))
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out), nil
}

// unmapPrefix turns an IPv4-mapped IPv6 range of length 96 or more into
// the IPv4 range of the same addresses.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// comparePrefix orders ranges by address, then by length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Addr returns a as this package matches it: an IPv4-mapped IPv6 address
// as IPv4, without zone.
func Addr(a netip.Addr) netip.Addr {
	if a.Is4In6() {
		return a.Unmap()
	}
	if a.Zone() != "" {
		return a.WithZone("")
	}
	return a
}

// Contains reports whether a lies in one of ranges. An IPv4-mapped IPv6
// address is matched as IPv4, and a zone is ignored. The zero Addr lies
// in no range, and no address lies in an empty list. It does not
// allocate.
func Contains(ranges []netip.Prefix, a netip.Addr) bool {
	a = Addr(a)
	for _, p := range ranges {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// covers reports whether outer holds every address of p.
func covers(outer, p netip.Prefix) bool {
	return outer.Bits() <= p.Bits() && outer.Contains(p.Addr())
}

// Within reports whether every address of inner lies in outer: each
// range of inner lies inside a range of outer. An empty inner lies
// within anything.
func Within(inner, outer []netip.Prefix) bool {
	for _, p := range inner {
		if !slices.ContainsFunc(outer, func(o netip.Prefix) bool { return covers(o, p) }) {
			return false
		}
	}
	return true
}

// Intersect returns the addresses in both a and b, as a sorted list of
// ranges: two ranges are either disjoint or one holds the other, so the
// intersection is made of the ranges of each list that lie inside a range
// of the other. It is empty (nil) when no address is in both.
func Intersect(a, b []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range [2][2][]netip.Prefix{{a, b}, {b, a}} {
		for _, p := range x[0] {
			if slices.ContainsFunc(x[1], func(o netip.Prefix) bool { return covers(o, p) }) {
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}
