package apikey

import (
	"net/http"
	"net/netip"

	"github.com/gokeys/apikey/ipallow"
)

// IP restrictions. A key and its customer can each be restricted to IP
// ranges (Key.AllowedIPs, Customer.AllowedIPs). A request is let through
// only from an address within both: the key's own ranges are its
// customer's narrowed further. Issue and Update refuse key ranges outside
// the customer's. When the operator narrows the customer's ranges later,
// every key is narrowed at once, at verification, and keeps its stored
// ranges, so that widening the customer again restores them: a key whose
// ranges lie wholly outside the new ones is refused from everywhere until
// they change. The check comes after every other verdict on the key and
// before anything is recorded, so that a refused request spends nothing.

// origin is where a request being verified came from. Its address is
// found only for a restricted key, so that an unrestricted one costs
// nothing. A nil *origin is a caller who knows no address (Verify).
type origin struct {
	r       *http.Request // when set, the client is found from it
	proxies *ipallow.Proxies
	addr    netip.Addr // else this is the client
}

// allows reports whether the client of o lies in ranges.
func (o *origin) allows(ranges []netip.Prefix) bool {
	if o == nil {
		return false
	}
	a := o.addr
	if o.r != nil {
		a = o.proxies.ClientAddr(o.r)
	}
	return ipallow.Contains(ranges, a)
}

// noAddress returns the ranges of a key whose own ranges and its
// customer's have no address in common: one invalid prefix, which holds
// no address.
func noAddress() []netip.Prefix { return []netip.Prefix{{}} }
