package httpx

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestWriteJSON(t *testing.T) {
	tests := []struct {
		name       string
		give       any
		giveStatus int
		wantStatus int
		wantBody   string
	}{
		{name: "object", give: map[string]int{"closed": 2}, giveStatus: 200, wantStatus: 200, wantBody: `{"closed":2}` + "\n"},
		{name: "accepted", give: []string{"a"}, giveStatus: 202, wantStatus: 202, wantBody: `["a"]` + "\n"},
		{name: "unencodable", give: math.NaN(), giveStatus: 200, wantStatus: 500,
			wantBody: `{"error":{"code":"internal_error","message":"could not encode the response"}}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			WriteJSON(rec, tt.giveStatus, tt.give)
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			if got := rec.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
			if got := rec.Body.String(); got != tt.wantBody {
				t.Errorf("body = %q, want %q", got, tt.wantBody)
			}
		})
	}
}

func TestWriteError(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, http.StatusUnauthorized, "invalid_token", `bad "token"`)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("status = %d, want 401", rec.Code)
	}
	if got := rec.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	var got struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
	if got.Error.Code != "invalid_token" || got.Error.Message != `bad "token"` {
		t.Errorf("error = %+v", got.Error)
	}
}

func TestClientIP(t *testing.T) {
	tests := []struct {
		name       string
		giveRemote string
		giveXFF    string
		want       string
	}{
		{name: "ipv4", giveRemote: "192.0.2.7:5555", want: "192.0.2.7"},
		{name: "ipv6", giveRemote: "[2001:db8::1]:443", want: "2001:db8::1"},
		{name: "no port", giveRemote: "192.0.2.8", want: "192.0.2.8"},
		{name: "forwarded header ignored", giveRemote: "10.0.0.1:1", giveXFF: "203.0.113.9", want: "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.giveRemote
			if tt.giveXFF != "" {
				r.Header.Set("X-Forwarded-For", tt.giveXFF)
			}
			if got := ClientIP(r); got != tt.want {
				t.Errorf("ClientIP = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNewClientIP(t *testing.T) {
	trusted := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("fd00::/8"),
		netip.MustParsePrefix("192.0.2.1/32"),
	}
	tests := []struct {
		name       string
		giveRemote string
		giveXFF    []string // header lines, in order
		want       string
	}{
		{name: "untrusted peer, header ignored", giveRemote: "198.51.100.4:1234", giveXFF: []string{"203.0.113.9"}, want: "198.51.100.4"},
		{name: "untrusted peer without port", giveRemote: "198.51.100.4", giveXFF: []string{"203.0.113.9"}, want: "198.51.100.4"},
		{name: "trusted peer without header", giveRemote: "10.0.0.1:1234", want: "10.0.0.1"},
		{name: "trusted peer, empty header", giveRemote: "10.0.0.1:1234", giveXFF: []string{""}, want: "10.0.0.1"},
		{name: "one proxy", giveRemote: "10.0.0.1:1234", giveXFF: []string{"203.0.113.9"}, want: "203.0.113.9"},
		{name: "single trusted address", giveRemote: "192.0.2.1:1234", giveXFF: []string{"203.0.113.9"}, want: "203.0.113.9"},
		{name: "next address to a trusted one is not trusted", giveRemote: "192.0.2.2:1234", giveXFF: []string{"203.0.113.9"}, want: "192.0.2.2"},
		{name: "spoofed leftmost entries", giveRemote: "10.0.0.1:1234", giveXFF: []string{"1.1.1.1, 8.8.8.8, 203.0.113.9"}, want: "203.0.113.9"},
		{name: "spoofed trusted-looking entry on the left", giveRemote: "10.0.0.1:1234", giveXFF: []string{"10.9.9.9, 203.0.113.9"}, want: "203.0.113.9"},
		{name: "chain of proxies", giveRemote: "10.0.0.4:1234", giveXFF: []string{"1.1.1.1, 203.0.113.9, 10.0.0.2, 10.0.0.3"}, want: "203.0.113.9"},
		{name: "chain over several lines", giveRemote: "10.0.0.4:1234", giveXFF: []string{"1.1.1.1, 203.0.113.9", "10.0.0.2", "10.0.0.3"}, want: "203.0.113.9"},
		{name: "client on the earlier line", giveRemote: "10.0.0.4:1234", giveXFF: []string{"203.0.113.9", "10.0.0.2,10.0.0.3"}, want: "203.0.113.9"},
		{name: "all trusted: the leftmost", giveRemote: "10.0.0.1:1234", giveXFF: []string{"10.0.0.3, 10.0.0.2"}, want: "10.0.0.3"},
		{name: "white space", giveRemote: "10.0.0.1:1234", giveXFF: []string{"  203.0.113.9 ,\t10.0.0.2  "}, want: "203.0.113.9"},
		{name: "malformed rightmost: the peer", giveRemote: "10.0.0.1:1234", giveXFF: []string{"203.0.113.9, garbage"}, want: "10.0.0.1"},
		{name: "malformed after a trusted hop: that hop", giveRemote: "10.0.0.1:1234", giveXFF: []string{"203.0.113.9, unknown, 10.0.0.2"}, want: "10.0.0.2"},
		{name: "empty item", giveRemote: "10.0.0.1:1234", giveXFF: []string{"203.0.113.9,,10.0.0.2"}, want: "10.0.0.2"},
		{name: "trailing comma", giveRemote: "10.0.0.1:1234", giveXFF: []string{"203.0.113.9,"}, want: "10.0.0.1"},
		{name: "host name", giveRemote: "10.0.0.1:1234", giveXFF: []string{"client.example"}, want: "10.0.0.1"},
		{name: "out of range octet", giveRemote: "10.0.0.1:1234", giveXFF: []string{"203.0.113.256"}, want: "10.0.0.1"},
		{name: "ipv4 with port", giveRemote: "10.0.0.1:1234", giveXFF: []string{"203.0.113.9:5555"}, want: "203.0.113.9"},
		{name: "ipv4 with bad port", giveRemote: "10.0.0.1:1234", giveXFF: []string{"203.0.113.9:http"}, want: "10.0.0.1"},
		{name: "ipv4 with too large port", giveRemote: "10.0.0.1:1234", giveXFF: []string{"203.0.113.9:70000"}, want: "10.0.0.1"},
		{name: "ipv4 with empty port", giveRemote: "10.0.0.1:1234", giveXFF: []string{"203.0.113.9:"}, want: "10.0.0.1"},
		{name: "ipv6", giveRemote: "10.0.0.1:1234", giveXFF: []string{"2001:db8::7"}, want: "2001:db8::7"},
		{name: "ipv6 in brackets", giveRemote: "10.0.0.1:1234", giveXFF: []string{"[2001:db8::7]"}, want: "2001:db8::7"},
		{name: "ipv6 with port", giveRemote: "10.0.0.1:1234", giveXFF: []string{"[2001:db8::7]:443"}, want: "2001:db8::7"},
		{name: "ipv6 bracket unclosed", giveRemote: "10.0.0.1:1234", giveXFF: []string{"[2001:db8::7"}, want: "10.0.0.1"},
		{name: "ipv6 junk after bracket", giveRemote: "10.0.0.1:1234", giveXFF: []string{"[2001:db8::7]x"}, want: "10.0.0.1"},
		{name: "ipv6 with zone", giveRemote: "10.0.0.1:1234", giveXFF: []string{"fe80::1%eth0"}, want: "10.0.0.1"},
		{name: "ipv6 spelled long", giveRemote: "10.0.0.1:1234", giveXFF: []string{"2001:0db8:0000:0000:0000:0000:0000:0007"}, want: "2001:db8::7"},
		{name: "ipv4-mapped client", giveRemote: "10.0.0.1:1234", giveXFF: []string{"::ffff:203.0.113.9"}, want: "203.0.113.9"},
		{name: "ipv4-mapped trusted hop", giveRemote: "10.0.0.1:1234", giveXFF: []string{"203.0.113.9, ::ffff:10.0.0.2"}, want: "203.0.113.9"},
		{name: "trusted ipv6 peer", giveRemote: "[fd00::1]:443", giveXFF: []string{"203.0.113.9"}, want: "203.0.113.9"},
		{name: "trusted ipv6 chain", giveRemote: "[fd00::1]:443", giveXFF: []string{"2001:db8::7, fd00::2"}, want: "2001:db8::7"},
		{name: "ipv4-mapped trusted peer", giveRemote: "[::ffff:10.0.0.1]:443", giveXFF: []string{"203.0.113.9"}, want: "203.0.113.9"},
		{name: "untrusted ipv6 peer", giveRemote: "[2001:db8::1]:443", giveXFF: []string{"203.0.113.9"}, want: "2001:db8::1"},
		{name: "unparsable peer", giveRemote: "@", giveXFF: []string{"203.0.113.9"}, want: "@"},
	}
	clientIP := NewClientIP(trusted)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.giveRemote
			for _, v := range tt.giveXFF {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientIP(r); got != tt.want {
				t.Errorf("client IP = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNewClientIPWithoutTrustIsClientIP(t *testing.T) {
	for _, trusted := range [][]netip.Prefix{nil, {}} {
		clientIP := NewClientIP(trusted)
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = "10.0.0.1:1"
		r.Header.Set("X-Forwarded-For", "203.0.113.9")
		if got := clientIP(r); got != "10.0.0.1" {
			t.Errorf("NewClientIP(%v) = %q, want the peer", trusted, got)
		}
	}
}

func TestNewClientIPCopiesPrefixes(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	clientIP := NewClientIP(trusted)
	trusted[0] = netip.MustParsePrefix("192.0.2.0/24")
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "10.0.0.1:1"
	r.Header.Set("X-Forwarded-For", "203.0.113.9")
	if got := clientIP(r); got != "203.0.113.9" {
		t.Errorf("client IP = %q after the caller changed its slice, want 203.0.113.9", got)
	}
}
func TestIsJSON(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"Application/JSON;charset=UTF-8", true},
		{"", false},
		{"text/plain", false},
		{"text/plain; application/json", false},
		{"application/x-www-form-urlencoded", false},
		{"multipart/form-data; boundary=x", false},
		{"application/jsonp", false},
		{"application/json-seq", false},
		{"application/merge-patch+json", false},
		{"application/json; charset", false}, // a broken parameter
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.give != "" {
			h.Set("Content-Type", tt.give)
		}
		if got := IsJSON(h); got != tt.want {
			t.Errorf("IsJSON(%q) = %v, want %v", tt.give, got, tt.want)
		}
	}
}
