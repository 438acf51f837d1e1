package httpx

import (
	"net/url"
	"strings"
	"testing"
)

// TestQueryValue: the same answer as url.ParseQuery(q).Get(key).
func TestQueryValue(t *testing.T) {
	queries := []string{
		"", "token=abc", "a=1&token=x.y.z&last_event_id=5", "token=a&token=b", "token", "token=",
		"t%6Fken=esc", "token=%41%42", "token=a+b", "token=%zz&token=ok", "tok;en=1&token=2",
		"token=1;x&token=2", "&&token=3&", "%zz=1&token=4", "token=a%2Bb", "=x&token=5", strings.Repeat("a=1&", 1200) + "token=6",
	}
	for _, q := range queries {
		for _, key := range []string{"token", "last_event_id", "a", ""} {
			want, _ := url.ParseQuery(q)
			if got := QueryValue(q, key); got != want.Get(key) {
				t.Errorf("QueryValue(%.40q, %q) = %q, want %q", q, key, got, want.Get(key))
			}
		}
	}
}

// FuzzQueryValue: the same answer as url.ParseQuery(q).Get(key), always.
func FuzzQueryValue(f *testing.F) {
	f.Add("token=a%20b&x=1", "token")
	f.Add("t%6Fken=1;&token=2", "token")
	f.Fuzz(func(t *testing.T, q, key string) {
		want, _ := url.ParseQuery(q)
		if got := QueryValue(q, key); got != want.Get(key) {
			t.Fatalf("QueryValue(%q, %q) = %q, want %q", q, key, got, want.Get(key))
		}
	})
}
