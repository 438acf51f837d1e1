package httpx

import (
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ClientIP returns the remote IP of r: the host part of RemoteAddr (or
// RemoteAddr itself when it has no port). Forwarding headers such as
// X-Forwarded-For are ignored: any client can set them. It is what
// [NewClientIP] returns when no proxy is trusted.
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// NewClientIP returns the function that tells a request's client address,
// the one that admission control and the failed-credential limit count
// (HUB_TRUSTED_PROXIES). It is the TCP peer ([ClientIP]), or, when the peer
// is in one of the trusted prefixes, the rightmost address of
// X-Forwarded-For that is not itself in a trusted prefix.
//
// Reading from the right is what makes it safe: each trusted proxy appends
// the address it received the request from, so the entries on the right
// were written by proxies the operator trusts, while anything on the left
// of the first untrusted one may have been sent by the client (a spoofed
// "X-Forwarded-For: 1.2.3.4" stays on the left of the address the proxy
// saw). Several header lines count as one list, in order. An entry may
// carry a port (192.0.2.7:5555, [2001:db8::7]:443) or brackets; an
// IPv4-mapped IPv6 address counts as the IPv4 one. An entry that is no
// address (empty, "unknown", a host name, a zone) stops the walk: the
// answer is then the last address read before it, a trusted proxy, since
// nothing further left can be believed. When every entry is trusted the
// leftmost one is the client.
//
// With no trusted prefix it returns ClientIP itself. The returned function
// is safe for concurrent use; trusted is copied.
func NewClientIP(trusted []netip.Prefix) func(*http.Request) string {
	if len(trusted) == 0 {
		return ClientIP
	}
	prefixes := slices.Clone(trusted)
	isTrusted := func(a netip.Addr) bool {
		for _, p := range prefixes {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return func(r *http.Request) string {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			return ClientIP(r)
		}
		client := ap.Addr().WithZone("").Unmap()
		if !isTrusted(client) {
			return ClientIP(r)
		}
		lines := r.Header.Values("X-Forwarded-For")
		for i := len(lines) - 1; i >= 0; i-- {
			rest := lines[i]
			for more := true; more; {
				var item string
				if j := strings.LastIndexByte(rest, ','); j >= 0 {
					item, rest = rest[j+1:], rest[:j]
				} else {
					item, more = rest, false
				}
				a, ok := parseForwarded(strings.TrimSpace(item))
				if !ok {
					return client.String()
				}
				client = a
				if !isTrusted(a) {
					return a.String()
				}
			}
		}
		return client.String()
	}
}

// parseForwarded reads one X-Forwarded-For entry: an IPv4 or IPv6 address,
// perhaps with a port ("192.0.2.7:5555", "[2001:db8::7]:443") or in
// brackets ("[2001:db8::7]"). A zone, a host name or anything else is not
// an address.
func parseForwarded(s string) (netip.Addr, bool) {
	host := s
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 || !validPort(s[end+1:]) {
			return netip.Addr{}, false
		}
		host = s[1:end]
	case strings.Count(s, ":") == 1: // IPv4 with a port
		i := strings.IndexByte(s, ':')
		if !validPort(s[i:]) {
			return netip.Addr{}, false
		}
		host = s[:i]
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// validPort accepts "" or ":" followed by a port number.
func validPort(s string) bool {
	if s == "" {
		return true
	}
	digits, ok := strings.CutPrefix(s, ":")
	if !ok || digits == "" || len(digits) > 5 || strings.Trim(digits, "0123456789") != "" {
		return false
	}
	n, err := strconv.Atoi(digits)
	return err == nil && n <= 65535
}
