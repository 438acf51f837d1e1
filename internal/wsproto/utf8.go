package wsproto

import "unicode/utf8"

// UTF8 validates a text message fragment by fragment (RFC 3629, as RFC
// 6455 §8.1 asks), failing fast: Write reports false at the first byte
// after which no continuation could make the text valid, even when that
// byte ends a fragment (a lead byte that cannot start a sequence, a
// continuation byte out of the range its lead byte allows: an overlong
// form, a surrogate, a code point past U+10FFFF). A sequence that a
// fragment leaves incomplete is carried to the next one; Done tells
// whether the text ends on a whole character. The zero value is ready.
type UTF8 struct {
	need   uint8 // continuation bytes still expected
	lo, hi byte  // range of the next continuation byte
	failed bool
}

// Write validates the next bytes of the text; false means the text is not
// UTF-8, whatever follows.
func (v *UTF8) Write(p []byte) bool {
	if v.failed {
		return false
	}
	for len(p) > 0 {
		if v.need == 0 {
			// Between characters: whole characters are checked by the
			// standard library, a sequence cut at the end below.
			i := len(p) - 1
			for i > 0 && len(p)-i < utf8.UTFMax && !utf8.RuneStart(p[i]) {
				i--
			}
			// p[i:] is the last sequence, possibly incomplete.
			if !utf8.Valid(p[:i]) {
				v.failed = true
				return false
			}
			if utf8.FullRune(p[i:]) {
				if !utf8.Valid(p[i:]) {
					v.failed = true
					return false
				}
				return true
			}
			p = p[i:]
			if !v.start(p[0]) {
				v.failed = true
				return false
			}
			p = p[1:]
			continue
		}
		c := p[0]
		if c < v.lo || c > v.hi {
			v.failed = true
			return false
		}
		v.need--
		v.lo, v.hi = 0x80, 0xbf
		p = p[1:]
	}
	return true
}

// start takes the lead byte of a sequence that continues beyond the bytes
// at hand.
func (v *UTF8) start(c byte) bool {
	v.lo, v.hi = 0x80, 0xbf
	switch {
	case c >= 0xc2 && c <= 0xdf:
		v.need = 1
	case c == 0xe0:
		v.need, v.lo = 2, 0xa0
	case c >= 0xe1 && c <= 0xec, c == 0xee, c == 0xef:
		v.need = 2
	case c == 0xed:
		v.need, v.hi = 2, 0x9f
	case c == 0xf0:
		v.need, v.lo = 3, 0x90
	case c >= 0xf1 && c <= 0xf3:
		v.need = 3
	case c == 0xf4:
		v.need, v.hi = 3, 0x8f
	default: // ASCII cannot be cut; 0x80-0xc1 and 0xf5-0xff start nothing
		return false
	}
	return true
}

// Done reports whether the text seen so far is valid and complete (no
// sequence left cut).
func (v *UTF8) Done() bool { return !v.failed && v.need == 0 }

// Reset makes v ready for the next message.
func (v *UTF8) Reset() { *v = UTF8{} }
