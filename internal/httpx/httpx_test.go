package httpx

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
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
