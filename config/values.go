package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// sizeUnits maps a lower-case unit to its multiplier: the IEC units (KiB,
// MiB, GiB) are powers of 1024, the SI units (KB, MB, GB) powers of 1000.
var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kb":  1000,
	"mb":  1000 * 1000,
	"gb":  1000 * 1000 * 1000,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
}

// parseSize parses a byte size: plain bytes ("65536") or a non-negative
// integer followed by an optional space and a unit ("64KiB", "1 MB", "512B").
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	unit := strings.ToLower(strings.TrimSpace(s[i:]))
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n * mult, nil
}

// formatSize writes n with the largest IEC unit that divides it exactly.
func formatSize(n int64) string {
	switch {
	case n == 0:
		return "0"
	case n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}

// redactURL returns s with the password of a URL replaced by "xxxxx"; text
// that does not parse but looks like it holds credentials is hidden.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if strings.Contains(s, "@") {
			return "[redacted]"
		}
		return s
	}
	return u.Redacted()
}

// optional accepts the empty string and checks anything else with check.
func optional(check func(string) error) func(string) error {
	return func(s string) error {
		if s == "" {
			return nil
		}
		return check(s)
	}
}

// oneOf accepts exactly one of the given words.
func oneOf(words ...string) func(string) error {
	return func(s string) error {
		for _, w := range words {
			if s == w {
				return nil
			}
		}
		return fmt.Errorf("must be one of %s", strings.Join(words, ", "))
	}
}

// checkBroker accepts the brokers built.
func checkBroker(s string) error {
	return oneOf("memory", "redis", "redis-cluster")(s)
}

// checkAddr accepts host:port with a numeric port (host may be empty).
func checkAddr(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("must be host:port, such as :8080 or 127.0.0.1:9090")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("must be host:port with a port number from 0 to 65535")
	}
	return nil
}

// checkNodeName accepts a non-empty name without control characters.
func checkNodeName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return errors.New("must not contain control characters")
	}
	return nil
}

// checkHTTPURL accepts an absolute http or https URL with a host.
func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be an http:// or https:// URL with a host")
	}
	return nil
}

// checkRedisURL accepts a redis:// or rediss:// URL with a host that the
// Redis client's parser accepts as well (the broker's and the idempotency
// stores' clients parse it with redis.ParseURL): a bad database number or
// an unknown option is refused here, naming the key, rather than when the
// app starts.
func checkRedisURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return errors.New("must be a redis:// or rediss:// URL with a host")
	}
	parse := func(s string) error { _, err := redis.ParseURL(s); return err }
	if isClusterURL(s) { // checked against HUB_BROKER by Validate
		parse = func(s string) error { _, err := redis.ParseClusterURL(s); return err }
	}
	if err := parse(s); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "redis: "))
	}
	return nil
}

// isClusterURL reports whether a Redis URL names more seed nodes (addr=),
// the syntax of go-redis's cluster URLs.
func isClusterURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Query().Has("addr")
}

// algorithms are the token algorithms the hub accepts.
var algorithms = []string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA", "PS256"}

// canonicalAlgorithm spells a known algorithm the standard way ("hs256" is
// "HS256"); other text is returned unchanged.
func canonicalAlgorithm(s string) string {
	for _, a := range algorithms {
		if strings.EqualFold(s, a) {
			return a
		}
	}
	return s
}

// checkAlgorithm accepts a known algorithm, spelled the standard way.
func checkAlgorithm(s string) error {
	if strings.EqualFold(s, "none") {
		return errors.New(`"none" is never allowed: tokens must be signed`)
	}
	for _, a := range algorithms {
		if s == a {
			return nil
		}
	}
	return fmt.Errorf("must be among %s", strings.Join(algorithms, ", "))
}

// isHMAC reports whether alg is a shared-secret algorithm.
func isHMAC(alg string) bool { return strings.HasPrefix(alg, "HS") }

// checkCookieName accepts a non-empty RFC 7230 token.
func checkCookieName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	for _, r := range s {
		if r > unicode.MaxASCII || r <= ' ' || r == 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return errors.New("must be a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)")
		}
	}
	return nil
}

// MinSecretBytes is the shortest HMAC secret accepted: RFC 7518 §3.2 wants
// a key at least as long as the hash output, 32 bytes for HS256.
const MinSecretBytes = 32

// MinAPIKeyChars is the shortest API key accepted.
const MinAPIKeyChars = 16

// checkSecret accepts an HMAC secret of MinSecretBytes or more. Its
// message never shows the secret, nor its length.
func checkSecret(s string) error {
	if len(s) < MinSecretBytes {
		return fmt.Errorf("must be at least %d bytes (RFC 7518 §3.2); make one with: openssl rand -hex 32", MinSecretBytes)
	}
	return nil
}

// checkAPIKey accepts a key of MinAPIKeyChars or more that can travel in an
// HTTP header.
func checkAPIKey(s string) error {
	if strings.IndexFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return errors.New("keys must not contain commas, spaces or control characters")
	}
	if utf8.RuneCountInString(s) < MinAPIKeyChars {
		return fmt.Errorf("each key must be at least %d characters; make one with: openssl rand -hex 16", MinAPIKeyChars)
	}
	return nil
}

// parsePrefix reads a CIDR (10.0.0.0/8, 2001:db8::/32) or a single address
// (a prefix of its full length). Host bits must be zero.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or an IP address", s)
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or an IP address", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: write an IPv4 prefix in dotted form, such as 10.0.0.0/8", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q has bits set after the prefix length; did you mean %s?", s, p.Masked())
	}
	return p, nil
}

// checkOrigin accepts "*", a host pattern ("app.example", "*.example.com",
// "localhost:3000") or a scheme and host ("https://app.example").
func checkOrigin(s string) error {
	if s == "*" {
		return nil
	}
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return errors.New("origin patterns must not contain spaces")
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return errors.New("an origin pattern with a scheme must be scheme://host[:port], such as https://app.example")
		}
		return nil
	}
	if strings.ContainsAny(s, "/?#@") {
		return errors.New("an origin pattern must be a host such as app.example, scheme://host, or *")
	}
	return nil
}

// reservedPaths are served by the hub itself and cannot be endpoint paths.
var reservedPaths = []string{"/", "/healthz", "/readyz", "/metrics"}

// reservedPrefixes are path prefixes served by the hub itself.
var reservedPrefixes = []string{"/api/", "/client/", "/debug/"}

// checkPath accepts an absolute URL path that does not clash with the hub's
// own routes.
func checkPath(s string) error {
	if !strings.HasPrefix(s, "/") {
		return errors.New(`must start with "/"`)
	}
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == '?' || r == '#' }) >= 0 {
		return errors.New("must be a plain path without spaces, ? or #")
	}
	for _, p := range reservedPaths {
		if s == p {
			return fmt.Errorf("%s is used by the hub itself", p)
		}
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(s, p) {
			return fmt.Errorf("paths under %s are used by the hub itself", p)
		}
	}
	return nil
}
