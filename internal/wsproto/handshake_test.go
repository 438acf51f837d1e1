package wsproto_test

import (
	"bytes"
	"compress/flate"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hubd/hub/internal/wsproto"
)

func TestAcceptKey(t *testing.T) {
	// RFC 6455 §1.3's example.
	if got := wsproto.AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("AcceptKey = %q", got)
	}
}

func TestCheckRequest(t *testing.T) {
	good := func() http.Header {
		return http.Header{
			"Upgrade":               {"websocket"},
			"Connection":            {"Upgrade"},
			"Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
		}
	}
	with := func(k string, v ...string) http.Header {
		h := good()
		if v == nil {
			h.Del(k)
		} else {
			h[http.CanonicalHeaderKey(k)] = v
		}
		return h
	}
	for _, tt := range []struct {
		name   string
		method string
		minor  int
		header http.Header
		status int    // 0: accepted
		code   string // refusal code
		ext    string // accepted: the extensions answer
	}{
		{name: "RFC 6455 example", header: good()},
		{name: "tokens in lists, any case", header: with("Connection", "keep-alive, UPGRADE"), ext: ""},
		{name: "Upgrade on its own line among others", header: with("Upgrade", "h2c", "WebSocket")},
		{name: "Connection over two lines", header: with("Connection", "keep-alive", "Upgrade")},
		{name: "POST", method: "POST", header: good(), status: 405, code: "method_not_allowed"},
		{name: "no Upgrade", header: with("Upgrade"), status: 426, code: "upgrade_required"},
		{name: "Upgrade to something else", header: with("Upgrade", "h2c"), status: 426, code: "upgrade_required"},
		{name: "HTTP/1.0", minor: -1, header: good(), status: 400, code: "bad_handshake"},
		{name: "no Connection", header: with("Connection"), status: 400, code: "bad_handshake"},
		{name: "Connection without upgrade", header: with("Connection", "keep-alive"), status: 400, code: "bad_handshake"},
		{name: "Connection with upgrade as part of a token", header: with("Connection", "upgrades"), status: 400, code: "bad_handshake"},
		{name: "no version", header: with("Sec-WebSocket-Version"), status: 426, code: "upgrade_required"},
		{name: "version 8", header: with("Sec-WebSocket-Version", "8"), status: 426, code: "upgrade_required"},
		{name: "two versions", header: with("Sec-WebSocket-Version", "13", "8"), status: 426, code: "upgrade_required"},
		{name: "no key", header: with("Sec-WebSocket-Key"), status: 400, code: "bad_handshake"},
		{name: "empty key", header: with("Sec-WebSocket-Key", ""), status: 400, code: "bad_handshake"},
		{name: "key not base64", header: with("Sec-WebSocket-Key", "not base64 at all!!!!!!!"), status: 400, code: "bad_handshake"},
		{name: "key of 15 bytes", header: with("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA"), status: 400, code: "bad_handshake"},
		{name: "key of 17 bytes", header: with("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAA="), status: 400, code: "bad_handshake"},
		{name: "two keys", header: with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=="), status: 400, code: "bad_handshake"},
		{name: "permessage-deflate offered", header: with("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"), ext: wsproto.DeflateResponse},
		{name: "an offer the hub cannot honour", header: with("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=10")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.method == "" {
				tt.method = "GET"
			}
			r := wsproto.Request{Method: tt.method, ProtoMajor: 1, ProtoMinor: 1 + tt.minor, Header: tt.header}
			h, refusal := wsproto.CheckRequest(r, true)
			if tt.status == 0 {
				if refusal != nil {
					t.Fatalf("refused: %+v", refusal)
				}
				if h.Accept != wsproto.AcceptKey(strings.TrimSpace(tt.header.Get("Sec-WebSocket-Key"))) || h.Extensions != tt.ext || h.Deflate != (tt.ext != "") {
					t.Fatalf("accepted as %+v, want extensions %q", h, tt.ext)
				}
				return
			}
			if refusal == nil || refusal.Status != tt.status || refusal.Code != tt.code || refusal.Message == "" {
				t.Fatalf("got %+v, want %d %s", refusal, tt.status, tt.code)
			}
			if tt.code == "upgrade_required" && tt.header.Get("Upgrade") == "websocket" && !hasHeader(refusal.Header, "Sec-WebSocket-Version", "13") {
				t.Errorf("a version refusal without Sec-WebSocket-Version: 13: %+v", refusal.Header)
			}
		})
	}
	// Without deflate, an offer is not looked at.
	h, _ := wsproto.CheckRequest(wsproto.Request{Method: "GET", ProtoMajor: 1, ProtoMinor: 1,
		Header: with("Sec-WebSocket-Extensions", "permessage-deflate")}, false)
	if h.Deflate || h.Extensions != "" {
		t.Errorf("compression off, yet negotiated: %+v", h)
	}
}

func hasHeader(h [][2]string, k, v string) bool {
	for _, kv := range h {
		if kv[0] == k && kv[1] == v {
			return true
		}
	}
	return false
}

func TestAppendResponse(t *testing.T) {
	got := string(wsproto.AppendResponse(nil, wsproto.Handshake{Accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", Extensions: wsproto.DeflateResponse}))
	want := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" +
		"Sec-WebSocket-Extensions: " + wsproto.DeflateResponse + "\r\n\r\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestNegotiateDeflate(t *testing.T) {
	const resp = wsproto.DeflateResponse
	for _, tt := range []struct {
		give []string
		want string // "": declined
	}{
		{[]string{"permessage-deflate; client_max_window_bits"}, resp},                                 // Chromium's offer
		{[]string{"permessage-deflate"}, resp},                                                         // Firefox's
		{[]string{"permessage-deflate; client_no_context_takeover; server_no_context_takeover"}, resp}, // coder/websocket's
		{[]string{"permessage-deflate; client_max_window_bits=10"}, resp},
		{[]string{"permessage-deflate; server_max_window_bits=15"}, resp + "; server_max_window_bits=15"},
		{[]string{`permessage-deflate; server_max_window_bits="15"`}, resp + "; server_max_window_bits=15"},
		{[]string{"PerMessage-Deflate; Client_Max_Window_Bits"}, resp},
		{[]string{"x-webkit-deflate-frame", "permessage-deflate"}, resp},
		{[]string{"foo; bar=1, permessage-deflate"}, resp},
		{[]string{" , permessage-deflate ; client_max_window_bits , "}, resp},
		{[]string{"permessage-deflate; server_max_window_bits=8, permessage-deflate"}, resp},
		{[]string{"permessage-deflate; server_max_window_bits=14"}, ""},
		{[]string{"permessage-deflate; server_max_window_bits=8"}, ""},
		{[]string{"permessage-deflate; server_max_window_bits"}, ""},
		{[]string{"permessage-deflate; server_max_window_bits=16"}, ""},
		{[]string{"permessage-deflate; server_max_window_bits=015"}, ""},
		{[]string{"permessage-deflate; client_max_window_bits=7"}, ""},
		{[]string{"permessage-deflate; client_max_window_bits=abc"}, ""},
		{[]string{"permessage-deflate; server_no_context_takeover=1"}, ""},
		{[]string{"permessage-deflate; client_no_context_takeover; client_no_context_takeover"}, ""},
		{[]string{"permessage-deflate; unknown_param"}, ""},
		{[]string{"x-webkit-deflate-frame"}, ""},
		{[]string{"permessage-deflate; "}, ""},                // a parameter without a name: the header does not parse
		{[]string{`permessage-deflate; a="unterminated`}, ""}, // nor here
		{[]string{"permessage-deflate foo"}, ""},
		{nil, ""},
	} {
		got, ok := wsproto.NegotiateDeflate(tt.give)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("%q: got %q, %v; want %q", tt.give, got, ok, tt.want)
		}
	}
}

func TestClosePayload(t *testing.T) {
	if p := wsproto.ClosePayload(0, "x"); p != nil {
		t.Errorf("code 0: %q, want an empty body", p)
	}
	if p := wsproto.ClosePayload(1005, ""); p != nil {
		t.Errorf("code 1005: %q, want an empty body", p)
	}
	if p := wsproto.ClosePayload(4001, "token expired"); string(p) != "\x0f\xa1token expired" {
		t.Errorf("4001: %q", p)
	}
	// A reason longer than 123 bytes is cut on a rune boundary.
	long := strings.Repeat("é", 100) // 200 bytes
	p := wsproto.ClosePayload(1000, long)
	if len(p) > 125 || !utf8.Valid(p[2:]) || len(p) < 123 {
		t.Errorf("long reason: %d bytes, valid %v", len(p), utf8.Valid(p[2:]))
	}
	code, reason, err := wsproto.ParseClose(p)
	if err != nil || code != 1000 || !strings.HasPrefix(long, string(reason)) {
		t.Errorf("ParseClose of ClosePayload: %d %q %v", code, reason, err)
	}
}

func TestDeflate(t *testing.T) {
	for _, p := range [][]byte{nil, []byte("a"), []byte(strings.Repeat(`{"type":"EVENT","payload":{"k":"v"}}`, 40)), bytes.Repeat([]byte{0, 1, 2, 3, 250}, 20000)} {
		z := wsproto.Deflate([]byte("prefix"), p)
		if !bytes.HasPrefix(z, []byte("prefix")) {
			t.Fatal("Deflate wrote over dst")
		}
		z = z[len("prefix"):]
		if bytes.HasSuffix(z, []byte{0, 0, 0xff, 0xff}) {
			t.Errorf("%d bytes: the sync marker was not left out", len(p))
		}
		// An independent inflater, with the marker put back (RFC 7692 §7.2.2).
		got, err := io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(z), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff}))))
		if err != nil || !bytes.Equal(got, p) {
			t.Errorf("%d bytes: compress/flate read %d bytes back, %v", len(p), len(got), err)
		}
		back, werr := wsproto.Inflate([]byte("x"), z, int64(len(p)))
		if werr != nil || !bytes.Equal(back[1:], p) || back[0] != 'x' {
			t.Errorf("%d bytes: Inflate: %d bytes, %v", len(p), len(back), werr)
		}
		if len(p) > 0 {
			if _, werr := wsproto.Inflate(nil, z, int64(len(p)-1)); werr == nil || werr.Code != 1009 {
				t.Errorf("%d bytes with a limit one short: %v, want 1009", len(p), werr)
			}
		}
	}
}

func TestFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
		p := bytes.Repeat([]byte{'q'}, n)
		b := wsproto.AppendClientFrame(nil, true, false, wsproto.OpText, key, p)
		f, used, err := wsproto.ParseFrame(bytes.Clone(b), 1<<20, false)
		if err != nil || used != len(b) || !f.Fin || f.Op != wsproto.OpText || !bytes.Equal(f.Payload, p) {
			t.Fatalf("%d bytes: used %d, err %v, frame fin=%v op=%v len=%d", n, used, err, f.Fin, f.Op, len(f.Payload))
		}
		// every proper prefix is incomplete, not an error
		for _, k := range []int{0, 1, 2, 3, len(b) / 2, len(b) - 1} {
			if _, used, err := wsproto.ParseFrame(bytes.Clone(b[:k]), 1<<20, false); used != 0 || err != nil {
				t.Fatalf("%d bytes, prefix %d: used %d, err %v", n, k, used, err)
			}
		}
		// the server's frame has the minimal length form and no mask
		s := wsproto.AppendFrame([]byte("x"), wsproto.OpText, true, p)
		hdr := len(s) - 1 - n
		want := map[bool]int{n <= 125: 2, n > 125 && n <= 65535: 4, n > 65535: 10}[true]
		if hdr != want || s[1] != 0xc1 || s[2]&0x80 != 0 {
			t.Fatalf("%d bytes: server header of %d bytes % x, want %d, RSV1 and FIN", n, hdr, s[1:1+hdr], want)
		}
	}
}
