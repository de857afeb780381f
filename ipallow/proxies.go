package ipallow

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// The forwarding headers a Proxies reads.
const (
	// XForwardedFor is the de facto header: a comma-separated list of
	// addresses, each proxy appending the address of its peer.
	XForwardedFor = "X-Forwarded-For"
	// Forwarded is the header of RFC 7239: comma-separated elements, each
	// proxy appending one whose for= parameter names its peer.
	Forwarded = "Forwarded"
)

// Proxies finds the address of a request's client when requests may come
// through proxies the operator trusts. The client is the peer of the
// connection (http.Request.RemoteAddr) unless that peer is a trusted
// proxy. Then the forwarding header is read from the right, where the
// proxies append: each address that is a trusted proxy is skipped, and
// the first that is not is the client. Entries to its left were written
// by the client or on his way, before any trusted proxy, so they are never
// believed: a header forged by a client is ignored, whether he connects
// directly or through the proxies.
//
// Only the header chosen is read. A proxy that writes X-Forwarded-For
// passes on a Forwarded header as the client sent it, and the reverse:
// reading both would believe a forged one.
//
// When the address cannot be known, the answer is the zero netip.Addr,
// which no range contains, so that a restricted key is refused rather than
// let through: a RemoteAddr that is no IP address (a Unix socket), or an
// entry met during the walk that is no address (malformed, "unknown" or
// an obfuscated identifier of RFC 7239). When every entry is a trusted
// proxy, the leftmost is the client: the request began inside the trusted
// network.
//
// A nil *Proxies trusts no proxy. A Proxies is safe for concurrent use.
type Proxies struct {
	trusted   []netip.Prefix
	header    string // canonical
	forwarded bool   // the header is Forwarded
}

// NewProxies returns the Proxies whose addresses are in trusted and whose
// forwarding header is header: XForwardedFor (also when empty) or
// Forwarded, in any case. The ranges go through Normalize; an invalid one,
// or another header, gives an error.
func NewProxies(header string, trusted []netip.Prefix) (*Proxies, error) {
	t, err := Normalize(trusted)
	if err != nil {
		return nil, fmt.Errorf("ipallow: trusted proxies: %w", err)
	}
	p := &Proxies{trusted: t, header: XForwardedFor}
	switch {
	case header == "" || strings.EqualFold(header, XForwardedFor):
	case strings.EqualFold(header, Forwarded):
		p.header, p.forwarded = Forwarded, true
	default:
		return nil, fmt.Errorf("ipallow: forwarding header %q: want %s or %s", header, XForwardedFor, Forwarded)
	}
	return p, nil
}

// Header returns the canonical name of the forwarding header p reads
// (gRPC metadata names it in lower case). It is XForwardedFor for a nil p.
func (p *Proxies) Header() string {
	if p == nil {
		return XForwardedFor
	}
	return p.header
}

// Trusted returns a copy of the trusted ranges.
func (p *Proxies) Trusted() []netip.Prefix {
	if p == nil {
		return nil
	}
	return append([]netip.Prefix(nil), p.trusted...)
}

// ClientAddr returns the address of r's client: its RemoteAddr, or, when
// that is a trusted proxy, what the forwarding header says (see Proxies).
// It does not allocate.
func (p *Proxies) ClientAddr(r *http.Request) netip.Addr {
	peer := ParseRemoteAddr(r.RemoteAddr)
	if p == nil || len(p.trusted) == 0 || !Contains(p.trusted, peer) {
		return peer
	}
	return p.walk(peer, r.Header[p.header])
}

// Client is ClientAddr for a transport other than net/http: peer is the
// connection's peer (a gRPC peer.Peer's address, for example) and values
// are the values of p's header (Header), in the order received, one per
// header line.
func (p *Proxies) Client(peer netip.Addr, values []string) netip.Addr {
	peer = Addr(peer)
	if p == nil || len(p.trusted) == 0 || !Contains(p.trusted, peer) {
		return peer
	}
	return p.walk(peer, values)
}

// walk reads the header values of a request whose peer is a trusted
// proxy, from the right.
func (p *Proxies) walk(peer netip.Addr, values []string) netip.Addr {
	client := peer
	for i := len(values) - 1; i >= 0; i-- {
		var (
			a    netip.Addr
			done bool
		)
		if p.forwarded {
			a, done = p.walkForwarded(client, values[i])
		} else {
			a, done = p.walkXFF(client, values[i])
		}
		if done {
			return a
		}
		client = a
	}
	return client
}

// walkXFF walks one X-Forwarded-For line from the right. It returns the
// client and true when it found him (or found that he cannot be known),
// else the leftmost trusted address and false.
func (p *Proxies) walkXFF(client netip.Addr, line string) (netip.Addr, bool) {
	for line != "" {
		entry := line
		if j := strings.LastIndexByte(line, ','); j >= 0 {
			entry, line = line[j+1:], line[:j]
		} else {
			line = ""
		}
		entry = strings.TrimSpace(entry)
		if entry == "" { // an empty list element (RFC 9110 §5.6.1)
			continue
		}
		a := parseNode(entry)
		if !a.IsValid() || !Contains(p.trusted, a) {
			return a, true
		}
		client = a
	}
	return client, false
}

// maxElements is how many elements of one Forwarded line are kept on the
// stack; a longer line costs an allocation.
const maxElements = 8

// walkForwarded walks one Forwarded line from the right, as walkXFF does.
// A line that does not parse, or an element without for=, gives the zero
// Addr once the walk reaches it.
func (p *Proxies) walkForwarded(client netip.Addr, line string) (netip.Addr, bool) {
	var buf [maxElements]string
	fors, ok := forValues(line, buf[:0])
	if !ok {
		return netip.Addr{}, true
	}
	for i := len(fors) - 1; i >= 0; i-- {
		a := parseNode(fors[i])
		if !a.IsValid() || !Contains(p.trusted, a) {
			return a, true
		}
		client = a
	}
	return client, false
}

// forValues appends to out the for= value of each element of a Forwarded
// line, "" for an element without one; empty list elements are skipped.
// It reports false for a line that does not follow RFC 7239's grammar
// (an unterminated quoted string, a pair without '=').
func forValues(line string, out []string) ([]string, bool) {
	i, n := 0, len(line)
	for i <= n {
		// One element: pairs separated by ';', up to ',' or the end.
		val, empty := "", true
		for {
			for i < n && (line[i] == ' ' || line[i] == '\t') {
				i++
			}
			if i == n || line[i] == ',' || line[i] == ';' {
				if i < n && line[i] == ';' {
					i++
					continue
				}
				break
			}
			empty = false
			eq := i
			for eq < n && line[eq] != '=' && line[eq] != ',' && line[eq] != ';' {
				eq++
			}
			if eq == n || line[eq] != '=' {
				return nil, false
			}
			name := strings.TrimSpace(line[i:eq])
			i = eq + 1
			var v string
			if i < n && line[i] == '"' {
				end := i + 1
				for end < n && line[end] != '"' {
					if line[end] == '\\' {
						return nil, false // no address needs a quoted pair
					}
					end++
				}
				if end == n {
					return nil, false
				}
				v, i = line[i+1:end], end+1
			} else {
				end := i
				for end < n && line[end] != ',' && line[end] != ';' {
					end++
				}
				v, i = strings.TrimSpace(line[i:end]), end
			}
			if strings.EqualFold(name, "for") {
				val = v
			}
			for i < n && (line[i] == ' ' || line[i] == '\t') {
				i++
			}
			if i < n && line[i] != ',' && line[i] != ';' {
				return nil, false
			}
		}
		if !empty {
			out = append(out, val)
		}
		i++ // past ',' (or the end)
	}
	return out, true
}

// parseNode parses an address as forwarding headers write it: "192.0.2.7",
// "192.0.2.7:443", "2001:db8::1", "[2001:db8::1]" or
// "[2001:db8::1]:443", as Addr returns it. Anything else (including
// RFC 7239's "unknown" and obfuscated identifiers) gives the zero Addr.
func parseNode(s string) netip.Addr {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.Addr{}
		}
		rest := s[end+1:]
		if rest != "" && (rest[0] != ':' || !isPort(rest[1:])) {
			return netip.Addr{}
		}
		a, err := netip.ParseAddr(s[1:end])
		if err != nil || !a.Is6() {
			return netip.Addr{}
		}
		return Addr(a)
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return Addr(a)
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Is4() {
		return ap.Addr()
	}
	return netip.Addr{}
}

func isPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ParseRemoteAddr parses http.Request.RemoteAddr ("192.0.2.7:51234",
// "[2001:db8::1%eth0]:443", or an address without port) and returns the
// address as Addr does, or the zero Addr for anything else (a Unix
// socket's "@", a test's "pipe"). It does not allocate.
func ParseRemoteAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return Addr(ap.Addr())
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return Addr(a)
	}
	return netip.Addr{}
}
