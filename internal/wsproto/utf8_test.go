package wsproto_test

import (
	"bytes"
	"testing"
	"unicode/utf8"

	"github.com/hubd/hub/internal/wsproto"
)

// validPrefix reports whether p can be completed into valid UTF-8 (tried
// with every continuation a cut sequence may need).
func validPrefix(p []byte) bool {
	if utf8.Valid(p) {
		return true
	}
	conts := []byte{0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf}
	var try func(q []byte, depth int) bool
	try = func(q []byte, depth int) bool {
		if utf8.Valid(q) {
			return true
		}
		if depth == 3 {
			return false
		}
		for _, c := range conts {
			if try(append(bytes.Clone(q), c), depth+1) {
				return true
			}
		}
		return false
	}
	return try(p, 0)
}

// checkPieces feeds p to a validator in the given pieces and checks it
// against the standard library: the same verdict, and a failure at the
// first piece after which p cannot be completed any more.
func checkPieces(t *testing.T, p []byte, cuts []int) {
	t.Helper()
	var v wsproto.UTF8
	prev := 0
	for i, end := range append(cuts, len(p)) {
		ok := v.Write(p[prev:end])
		if want := validPrefix(p[:end]); ok != want {
			t.Fatalf("% x cut at %v: piece %d (to %d) reported %v, want %v", p, cuts, i, end, ok, want)
		}
		if !ok {
			if v.Write([]byte("a")) || v.Done() {
				t.Fatal("a failed validator recovered")
			}
			return
		}
		prev = end
	}
	if v.Done() != utf8.Valid(p) {
		t.Fatalf("% x cut at %v: done %v, utf8.Valid %v", p, cuts, v.Done(), utf8.Valid(p))
	}
}

func TestUTF8(t *testing.T) {
	// Every code point whole; cut after each of its bytes, the first and
	// last of each length and every 31st.
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if r >= 0xd800 && r <= 0xdfff {
			continue
		}
		p := utf8.AppendRune([]byte("a"), r)
		if !utf8.Valid(p) {
			t.Fatalf("U+%04X", r)
		}
		var v wsproto.UTF8
		if !v.Write(p) || !v.Done() {
			t.Fatalf("U+%04X refused", r)
		}
		if r%31 != 0 && r != 0x80 && r != 0x7ff && r != 0x800 && r != 0xffff && r != 0x10000 && r != utf8.MaxRune {
			continue
		}
		for cut := 1; cut < len(p); cut++ {
			checkPieces(t, p, []int{cut})
		}
	}
	// Surrogates, overlong forms and past U+10FFFF, cut everywhere.
	for _, s := range []string{"\xed\xa0\x80", "\xed\xbf\xbf", "\xc0\x80", "\xe0\x9f\xbf", "\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff"} {
		p := []byte("x" + s + "y")
		for cut := 1; cut < len(p); cut++ {
			checkPieces(t, p, []int{cut})
		}
	}
	// Autobahn's incremental checks (case6_x_x.py, test_utf8_incremental):
	// the fail comes at the byte that makes the text impossible.
	var v wsproto.UTF8
	if !v.Write([]byte("µ@ßöäüàá")) || !v.Done() {
		t.Error("valid text refused")
	}
	v.Reset()
	if v.Write([]byte{0xf5}) {
		t.Error("0xf5 accepted")
	}
	v.Reset()
	if !v.Write([]byte("edited")) || v.Write([]byte{0xed, 0xa0, 0x80}) {
		t.Error("a surrogate after valid text accepted")
	}
	v.Reset()
	if !v.Write([]byte{0x65, 0x64, 0x69, 0x74, 0x65, 0x64, 0xed}) || v.Done() {
		t.Error("a cut sequence: want valid so far, not done")
	}
	if v.Write([]byte{0xa0, 0x80}) {
		t.Error("0xed 0xa0 across two writes accepted")
	}
}

// FuzzUTF8: in any pieces, the validator agrees with utf8.Valid and fails
// at the first piece after which the text cannot be valid.
func FuzzUTF8(f *testing.F) {
	f.Add([]byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited"), uint8(3))
	f.Add([]byte("hello\xf0\xa4\xad\xa2world"), uint8(1))
	f.Add([]byte("\xed\x9f\xbf\xed\xa0\x80"), uint8(2))
	f.Fuzz(func(t *testing.T, p []byte, step uint8) {
		size := int(step)%7 + 1
		var cuts []int
		for c := size; c < len(p); c += size {
			cuts = append(cuts, c)
		}
		checkPieces(t, p, cuts)
	})
}
