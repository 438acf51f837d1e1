package auth

import (
	"strings"
	"testing"
	"time"
)

func TestRedact(t *testing.T) {
	tok, err := Mint(testSecret, "HS256", "u1", []string{"admin"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		give string
		want string
	}{
		{name: "URL with token=", give: "GET /ws/realtime?token=" + tok + "&last_event_id=42",
			want: "GET /ws/realtime?token=[REDACTED]&last_event_id=42"},
		{name: "token= not JWT-shaped", give: "/sse/realtime?last_event_id=1&token=opaque-value",
			want: "/sse/realtime?last_event_id=1&token=[REDACTED]"},
		{name: "bare JWT", give: "refresh with " + tok + " failed", want: "refresh with [REDACTED] failed"},
		{name: "bearer header", give: "Authorization: Bearer " + tok, want: "Authorization: Bearer [REDACTED]"},
		{name: "alg none token", give: "got eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.", want: "got [REDACTED]"},
		{name: "host names untouched", give: "dial api.example.com:443 v1.2.3", want: "dial api.example.com:443 v1.2.3"},
		{name: "plain", give: "user u1 connected", want: "user u1 connected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Redact(tt.give)
			if got != tt.want {
				t.Errorf("Redact = %q, want %q", got, tt.want)
			}
			if strings.Contains(got, tok) {
				t.Error("token still present")
			}
		})
	}
}
