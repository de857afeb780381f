package leak

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// RemoteAddr returns the address of r's peer, RemoteAddr without its port
// and zone. It is the default client address of Reports. Behind a proxy it
// is the proxy's, so set ReportsOptions.ClientAddr to read a trusted
// forwarding header instead.
func RemoteAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.WithZone("").String()
	}
	return host
}

// bucketOf returns the rate-limit bucket of a client address. For IPv4 it
// is the address itself (an IPv4-mapped IPv6 address is its IPv4
// address). For IPv6 it is its /64 network, since one client often holds a
// whole /64. When it is no IP address, it is the string itself, cut to 64
// bytes.
func bucketOf(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return clip(addr, 64)
	}
	a = a.WithZone("").Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// clip returns s cut to at most n bytes.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// addrLimiter admits at most n requests per period from each bucket, with
// a burst of n. It is a GCRA, so an idle bucket starts full and refills one
// request every period/n. It tracks at most max buckets. When that many
// are still limited, requests from new buckets are refused until some
// refill. So its memory is bounded whatever the number of addresses. It is
// safe for concurrent use.
type addrLimiter struct {
	every  time.Duration // period / n
	period time.Duration
	max    int

	mu    sync.Mutex
	tat   map[string]time.Time // theoretical arrival time of each bucket
	swept time.Time            // the last sweep: at most one a second
}

func newAddrLimiter(n int, period time.Duration, max int) *addrLimiter {
	return &addrLimiter{every: period / time.Duration(n), period: period, max: max, tat: map[string]time.Time{}}
}

// allow reports whether a request from bucket b is admitted at now, and
// otherwise how long until one would be.
func (l *addrLimiter) allow(b string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.tat[b]
	if !ok && len(l.tat) >= l.max {
		if now.Sub(l.swept) >= time.Second {
			l.sweep(now)
		}
		if len(l.tat) >= l.max {
			return false, l.every
		}
	}
	if tat.Before(now) {
		tat = now
	}
	next := tat.Add(l.every)
	if over := next.Sub(now) - l.period; over > 0 {
		return false, over
	}
	l.tat[b] = next
	return true, 0
}

// sweep forgets the buckets that are full again. Forgetting them changes
// nothing.
func (l *addrLimiter) sweep(now time.Time) {
	l.swept = now
	for b, tat := range l.tat {
		if !tat.After(now) {
			delete(l.tat, b)
		}
	}
}
