package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// The lean path verifies the common HMAC token without jwx: a header of
// alg (HS256/384/512, configured), typ and kid only; a payload whose
// registered claims have their plain shapes (sub, iss and jti strings
// without escapes, aud a string or array of such strings, exp, nbf and iat
// positive integers, roles an array of strings and role a string) and
// whose other members are any JSON. It only ever accepts: whatever it does
// not recognise, and every refusal, goes to the full path (jwx), which
// gives the answer and the error, so the two cannot disagree on a refusal.
// FuzzLeanMatchesFull checks that they agree on acceptance and identity.

// leanMaxHeader and leanMaxPayload bound the decoded header and payload
// the lean path handles (on the stack); longer tokens take the full path.
const (
	leanMaxHeader  = 256
	leanMaxPayload = 1024
)

// hmacAlg is one accepted HMAC algorithm with a pool of keyed hashes.
type hmacAlg struct {
	pool sync.Pool // *hmacState
	size int
}

// hmacState is a hash keyed with the secret and room for its sum.
type hmacState struct {
	h   hash.Hash
	sum [sha512.Size]byte
}

func newHMACAlgs(secret []byte, algs []string) map[string]*hmacAlg {
	out := make(map[string]*hmacAlg, len(algs))
	for _, alg := range algs {
		var h func() hash.Hash
		switch alg {
		case "HS256":
			h = sha256.New
		case "HS384":
			h = sha512.New384
		case "HS512":
			h = sha512.New
		default:
			continue
		}
		key := append([]byte(nil), secret...)
		a := &hmacAlg{size: h().Size()}
		a.pool.New = func() any { return &hmacState{h: hmac.New(h, key)} }
		out[alg] = a
	}
	return out
}

// leanClaims are the claims the lean path read.
type leanClaims struct {
	sub           string
	issMatch      bool  // iss is the configured issuer
	audMatch      bool  // aud is or holds the configured audience
	exp, nbf, iat int64 // 0: absent
	roles         []string
	role          string
}

// verifyLean returns the identity of token when the lean path can accept
// it, and false when the full path must decide.
func (v *Verifier) verifyLean(token string) (*Identity, bool) {
	i := strings.IndexByte(token, '.')
	if i < 0 {
		return nil, false
	}
	j := strings.IndexByte(token[i+1:], '.')
	if j < 0 {
		return nil, false
	}
	j += i + 1
	if strings.IndexByte(token[j+1:], '.') >= 0 ||
		strictB64.DecodedLen(i) > leanMaxHeader || strictB64.DecodedLen(j-i-1) > leanMaxPayload ||
		strictB64.DecodedLen(len(token)-j-1) > sha512.Size {
		return nil, false
	}
	tb := []byte(token) // one copy, sliced below
	hSeg, pSeg, sSeg := tb[:i], tb[i+1:j], tb[j+1:]
	var hb [leanMaxHeader]byte
	var pb [leanMaxPayload]byte
	var sb [sha512.Size]byte
	hn, err := strictB64.Decode(hb[:], hSeg)
	if err != nil {
		return nil, false
	}
	alg, ok := leanHeader(hb[:hn])
	if !ok {
		return nil, false
	}
	ha := v.hmacAlgs[alg]
	if ha == nil {
		return nil, false
	}
	sn, err := strictB64.Decode(sb[:], sSeg)
	if err != nil || sn != ha.size {
		return nil, false
	}
	pn, err := strictB64.Decode(pb[:], pSeg)
	if err != nil {
		return nil, false
	}
	m := ha.pool.Get().(*hmacState)
	m.h.Reset()
	m.h.Write(tb[:j])
	good := hmac.Equal(m.h.Sum(m.sum[:0]), sb[:sn])
	ha.pool.Put(m)
	if !good {
		return nil, false
	}
	var c leanClaims
	if !leanPayload(pb[:pn], &c, v.issuer, v.audience) {
		return nil, false
	}
	return v.leanIdentity(&c)
}

// leanIdentity applies the checks of the full path (jwt.Validate with
// the verifier's options, then identity) to claims the lean path read,
// and returns the identity when every one passes.
func (v *Verifier) leanIdentity(c *leanClaims) (*Identity, bool) {
	if c.exp == 0 {
		return nil, false // required
	}
	// As jwx compares: the clock truncated to the second, the dates
	// moved by the leeway.
	now := v.now().Truncate(time.Second)
	if c.iat != 0 && now.Before(time.Unix(c.iat, 0).Add(-v.leeway)) {
		return nil, false
	}
	exp := time.Unix(c.exp, 0)
	if !now.Before(exp.Add(v.leeway)) {
		return nil, false
	}
	if c.nbf != 0 && now.Before(time.Unix(c.nbf, 0).Add(-v.leeway)) {
		return nil, false
	}
	if v.issuer != "" && !c.issMatch {
		return nil, false
	}
	if v.audience != "" && !c.audMatch {
		return nil, false
	}
	if len(c.sub) == 0 || len(c.sub) > maxSubjectLen {
		return nil, false
	}
	roles := c.roles
	if c.role != "" && !slices.Contains(roles, c.role) {
		roles = append(roles, c.role)
	}
	return &Identity{UserID: c.sub, Caller: jwtCaller(c.sub), Roles: roles, ExpiresAt: exp.UTC()}, true
}

// jsonScanner reads JSON text the way the lean path needs: strings without
// escapes are returned as they are, everything else is validated and
// skipped.
type jsonScanner struct {
	b []byte
	i int
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek skips whitespace and returns the next byte (0 at the end).
func (s *jsonScanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// eat consumes c after whitespace.
func (s *jsonScanner) eat(c byte) bool {
	if s.peek() != c {
		return false
	}
	s.i++
	return true
}

// plainString reads a string without escapes whose bytes are valid UTF-8
// (so that it reads as encoding/json would read it).
func (s *jsonScanner) plainString() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	ascii := true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			str := s.b[start:s.i]
			s.i++
			if !ascii && !utf8.Valid(str) {
				return nil, false
			}
			return str, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= 0x80:
			ascii = false
		}
		s.i++
	}
	return nil, false
}

// nextString reads the next plain string of an array the scanner opened
// (eat('[')) until the array ends (done). first is true for the first
// call on an array.
func (s *jsonScanner) nextString(first bool) (str []byte, done, ok bool) {
	if s.eat(']') {
		return nil, true, true
	}
	if !first && !s.eat(',') {
		return nil, false, false
	}
	str, ok = s.plainString()
	return str, false, ok
}

// date reads a positive integer of at most 11 digits (a NumericDate in its
// common form; fractions, exponents, zero and other forms are left to
// the full path).
func (s *jsonScanner) date() (int64, bool) {
	s.ws()
	var n int64
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		n = n*10 + int64(s.b[s.i]-'0')
		s.i++
	}
	d := s.i - start
	if d == 0 || d > 11 || s.b[start] == '0' {
		return 0, false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	return n, true
}

// skip validates and skips one JSON value.
func (s *jsonScanner) skip(depth int) bool {
	if depth > 32 {
		return false
	}
	switch s.peek() {
	case '"':
		return s.skipString()
	case '{':
		s.i++
		if s.eat('}') {
			return true
		}
		for {
			if s.peek() != '"' || !s.skipString() || !s.eat(':') || !s.skip(depth+1) {
				return false
			}
			if s.eat('}') {
				return true
			}
			if !s.eat(',') {
				return false
			}
		}
	case '[':
		s.i++
		if s.eat(']') {
			return true
		}
		for {
			if !s.skip(depth + 1) {
				return false
			}
			if s.eat(']') {
				return true
			}
			if !s.eat(',') {
				return false
			}
		}
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		return s.skipNumber()
	}
}

func (s *jsonScanner) literal(w string) bool {
	if len(s.b)-s.i < len(w) || string(s.b[s.i:s.i+len(w)]) != w {
		return false
	}
	s.i += len(w)
	return true
}

// skipString skips a string, escapes included (validated).
func (s *jsonScanner) skipString() bool {
	s.i++ // the opening quote
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			s.i++
			if s.i >= len(s.b) {
				return false
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(s.b)-s.i < 5 {
					return false
				}
				for _, h := range s.b[s.i+1 : s.i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return false
					}
				}
				s.i += 4
			default:
				return false
			}
		}
		s.i++
	}
	return false
}

// skipNumber skips a number of the JSON grammar that encoding/json can
// also read as a float64 (jwx decodes other claims that way, and refuses
// a token with a number beyond its range, such as 1e400).
func (s *jsonScanner) skipNumber() bool {
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	numStart := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	start := s.i
	n := digits()
	if n == 0 || (n > 1 && s.b[start] == '0') {
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return false
		}
	}
	exp := false
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		exp = true
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return false
		}
	}
	if exp || n > 300 {
		// the only numbers that may be out of a float64's range
		if _, err := strconv.ParseFloat(string(s.b[numStart:s.i]), 64); err != nil {
			return false
		}
	}
	return true
}

// open starts an object; next then reads each member's key, the scanner
// left at its value, until the object ends (done).
func (s *jsonScanner) open() bool { return s.eat('{') }

// next reads the next member's key and its colon. first is true for the
// first call on an object.
func (s *jsonScanner) next(first bool) (key []byte, done, ok bool) {
	if s.eat('}') {
		return nil, true, true
	}
	if !first && !s.eat(',') {
		return nil, false, false
	}
	key, ok = s.plainString()
	if !ok || !s.eat(':') {
		return nil, false, false
	}
	return key, false, true
}

// end reports whether nothing but whitespace follows.
func (s *jsonScanner) end() bool { return s.peek() == 0 && s.i == len(s.b) }

// leanHeader reads a protected header of alg, typ and kid (strings, each
// at most once) and returns alg.
func leanHeader(b []byte) (string, bool) {
	s := jsonScanner{b: b}
	var alg []byte
	var seen uint8
	if !s.open() {
		return "", false
	}
	for first := true; ; first = false {
		key, done, ok := s.next(first)
		if !ok {
			return "", false
		}
		if done {
			break
		}
		var bit uint8
		switch string(key) {
		case "alg":
			bit = 1
		case "typ":
			bit = 2
		case "kid":
			bit = 4
		default:
			return "", false
		}
		if seen&bit != 0 {
			return "", false
		}
		seen |= bit
		v, ok := s.plainString()
		if !ok {
			return "", false
		}
		if bit == 1 {
			alg = v
		}
	}
	if !s.end() {
		return "", false
	}
	// the names as constants (no allocation)
	switch string(alg) {
	case "HS256":
		return "HS256", true
	case "HS384":
		return "HS384", true
	case "HS512":
		return "HS512", true
	}
	return "", false
}

// leanPayload reads the claims; false when they are not in the common
// shapes (or not JSON). Of iss and aud it keeps whether they name
// issuer and audience.
func leanPayload(b []byte, c *leanClaims, issuer, audience string) bool {
	s := jsonScanner{b: b}
	var seen uint16
	if !s.open() {
		return false
	}
	for first := true; ; first = false {
		key, done, ok := s.next(first)
		if !ok {
			return false
		}
		if done {
			break
		}
		var bit uint16
		switch string(key) {
		case "sub":
			bit = 1
			var sub []byte
			if sub, ok = s.plainString(); ok && len(sub) <= maxSubjectLen {
				c.sub = string(sub)
			}
		case "iss":
			bit = 2
			var iss []byte
			iss, ok = s.plainString()
			c.issMatch = ok && issuer != "" && string(iss) == issuer
		case "jti":
			bit = 4
			_, ok = s.plainString()
		case "aud":
			bit = 8
			ok = s.aud(c, audience)
		case "exp":
			bit = 16
			c.exp, ok = s.date()
		case "nbf":
			bit = 32
			c.nbf, ok = s.date()
		case "iat":
			bit = 64
			c.iat, ok = s.date()
		case "roles":
			bit = 128
			ok = s.roles(c)
		case "role":
			bit = 256
			var role []byte
			if role, ok = s.plainString(); ok {
				c.role = string(role)
			}
		default:
			ok = s.skip(0)
		}
		if !ok || seen&bit != 0 {
			return false // a registered claim twice, or not in its plain shape
		}
		seen |= bit
	}
	return s.end()
}

// aud reads aud, a string or an array of strings, and notes whether it
// names audience.
func (s *jsonScanner) aud(c *leanClaims, audience string) bool {
	if s.peek() == '"' {
		a, ok := s.plainString()
		c.audMatch = ok && audience != "" && string(a) == audience
		return ok
	}
	if !s.eat('[') {
		return false
	}
	for first := true; ; first = false {
		a, done, ok := s.nextString(first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		c.audMatch = c.audMatch || (audience != "" && string(a) == audience)
	}
}

// roles reads the roles claim, an array of strings, into c.roles without
// empty strings and duplicates (as identity does).
func (s *jsonScanner) roles(c *leanClaims) bool {
	if !s.eat('[') {
		return false
	}
	for first := true; ; first = false {
		r, done, ok := s.nextString(first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		if len(r) > 0 && !slices.Contains(c.roles, string(r)) {
			c.roles = append(c.roles, string(r))
		}
	}
}
