package apikey

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"

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

// VerifyFrom is Verify for a request from the client address addr, as
// the caller found it (for example with an ipallow.Proxies): a key or
// customer restricted to IP ranges that do not hold addr is refused with
// ErrIPNotAllowed, after every other check, and records no use. The zero
// addr is in no range.
func (m *Manager) VerifyFrom(ctx context.Context, token string, addr netip.Addr) (*Key, error) {
	k, _, err := m.verifyKey(ctx, token, &origin{addr: addr})
	if err != nil {
		return nil, err
	}
	return k, nil
}

// noAddress returns the ranges of a key whose own ranges and its
// customer's have no address in common: one invalid prefix, which holds
// no address.
func noAddress() []netip.Prefix { return []netip.Prefix{{}} }

// confined reports whether k needs no narrowing to c's ranges: c has
// none, or k's own lie within them.
func confined(k *Key, c *Customer) bool {
	return len(c.AllowedIPs) == 0 || len(k.AllowedIPs) != 0 && ipallow.Within(k.AllowedIPs, c.AllowedIPs)
}

// effectiveIPs returns the ranges k may be used from under c: the
// addresses in both k's ranges and c's, each empty list meaning any
// address; noAddress when they have none in common.
func effectiveIPs(k *Key, c *Customer) []netip.Prefix {
	switch {
	case len(c.AllowedIPs) == 0:
		return slices.Clone(k.AllowedIPs)
	case len(k.AllowedIPs) == 0:
		return slices.Clone(c.AllowedIPs)
	}
	if both := ipallow.Intersect(k.AllowedIPs, c.AllowedIPs); len(both) > 0 {
		return both
	}
	return noAddress()
}

// ipsWithin reports whether k's ranges are allowed under c at Issue and
// Update: k has none (it takes c's), c has none, or they lie within c's.
func ipsWithin(k *Key, c *Customer) bool {
	return len(k.AllowedIPs) == 0 || c == nil || len(c.AllowedIPs) == 0 || ipallow.Within(k.AllowedIPs, c.AllowedIPs)
}

// errIPsOutside refuses key ranges outside the customer's.
func errIPsOutside() error {
	return &InputError{Field: "allowed_ips", Reason: "outside the IP ranges the customer may use"}
}

// validIPs checks the ranges *ranges and puts them in canonical form
// (see ipallow.Normalize): sorted, each once, nil when empty.
func validIPs(ranges *[]netip.Prefix) error {
	if len(*ranges) > MaxAllowedIPs {
		return &InputError{Field: "allowed_ips", Reason: fmt.Sprintf("more than %d ranges", MaxAllowedIPs)}
	}
	n, err := ipallow.Normalize(*ranges)
	if err != nil {
		return &InputError{Field: "allowed_ips", Reason: strings.TrimPrefix(err.Error(), ipallow.ErrInvalidRange.Error()+": ")}
	}
	*ranges = n
	return nil
}

// validIPChange checks the ranges of a key that Update changes: valid,
// and within the customer's. An Update that leaves them as they are is
// not refused for ranges the customer lost since they were set.
func (m *Manager) validIPChange(ctx context.Context, before, after *Key) error {
	if slices.Equal(after.AllowedIPs, before.AllowedIPs) {
		return nil
	}
	if err := validIPs(&after.AllowedIPs); err != nil {
		return err
	}
	if len(after.AllowedIPs) == 0 || m.custs == nil {
		return nil
	}
	c, err := m.custs.read(ctx, after.Customer())
	if err != nil {
		return storeErr("update", err)
	}
	if !ipsWithin(after, c) {
		return errIPsOutside()
	}
	return nil
}
