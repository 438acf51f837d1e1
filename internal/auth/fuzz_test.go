package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzTokenFromRequest feeds arbitrary header, query and cookie values:
// TokenFromRequest never panics and returns one of the values it was given
// (the Bearer credential, the query value or the cookie value), in the
// contract's order; Authenticate then refuses every one of them with a 401.
func FuzzTokenFromRequest(f *testing.F) {
	for _, s := range [][3]string{
		{"Bearer h", "q", "c"},
		{"bearer  h ", "", ""},
		{"Basic dTpw", "q", "c"},
		{"Bearer", "", "c"},
		{"Bearer a b", "q", ""},
		{"Bearer\th", "", `"quoted"`},
		{"", "", "a;b=c"},
		{"", "q&token=r", ""},
		{" ", "\x00", "\xff"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	v := newFuzzVerifier(f)
	f.Fuzz(func(t *testing.T, header, query, cookie string) {
		r := &http.Request{
			Method: http.MethodGet,
			URL:    &url.URL{Path: "/ws/realtime", RawQuery: url.Values{"token": {query}}.Encode()},
			Header: http.Header{},
		}
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		if cookie != "" {
			r.Header.Set("Cookie", DefaultCookie+"="+cookie)
		}
		var fromCookie string
		if c, err := r.Cookie(DefaultCookie); err == nil {
			fromCookie = c.Value
		}
		got := TokenFromRequest(r, "")
		fromHeader := got != "" && strings.Contains(header, got) && !strings.ContainsAny(got, " \t") &&
			strings.HasPrefix(strings.ToLower(strings.TrimSpace(header)), "bearer ")
		switch {
		case got == "":
			if query != "" || fromCookie != "" {
				t.Fatalf("TokenFromRequest = \"\" with query %q and cookie %q present", query, fromCookie)
			}
		case fromHeader:
		case got == query:
		case got == fromCookie && query == "":
		default:
			t.Fatalf("TokenFromRequest(header %q, query %q, cookie %q) = %q: not one of the given values in order", header, query, cookie, got)
		}
		_, e := v.Authenticate(r)
		if e == nil {
			t.Fatalf("Authenticate accepted header %q, query %q, cookie %q", header, query, cookie)
		}
		if e.Status != http.StatusUnauthorized || (e.Code != CodeMissingToken && e.Code != CodeInvalidToken) {
			t.Fatalf("Authenticate error %d %s, want 401 missing_token or invalid_token", e.Status, e.Code)
		}
		if (e.Code == CodeMissingToken) != (got == "" && strings.TrimSpace(header) == "") {
			t.Fatalf("Authenticate = %s with token %q and header %q", e.Code, got, header)
		}
		checkNoSecret(t, e, got)
	})
}

// FuzzVerify checks arbitrary strings and mutations of valid tokens: an
// identity comes only from an HS256 signature made with the secret over a
// payload with a valid sub and a future exp; every refusal is a 401 with a
// contract code whose message does not contain the token.
func FuzzVerify(f *testing.F) {
	for _, s := range []struct {
		token, sub string
		pos        uint16
		b          byte
	}{
		{"", "u1", 0, 'e'},
		{"a.b.c", "u1", 10, 'x'},
		{"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.", "u1", 5, '.'},
		{"eyJhbGciOiJIUzI1NiJ9.e30.", "user-with-a-longer-name", 200, 'A'},
		{"...", "u2", 1, '='},
		{"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2ln", "\u00e9", 0xffff, 0},
		{strings.Repeat("A", 100), strings.Repeat("s", 256), 30, '_'},
	} {
		f.Add(s.token, s.sub, s.pos, s.b)
	}
	v := newFuzzVerifier(f)
	f.Fuzz(func(t *testing.T, token, sub string, pos uint16, b byte) {
		checkVerify(t, v, token)
		if !utf8.ValidString(sub) {
			return // JSON would change it: the round trip below needs it intact
		}
		good, err := Mint(testSecret, "HS256", sub, []string{"r"}, time.Hour)
		if err != nil {
			if sub != "" && len(sub) <= maxSubjectLen {
				t.Fatalf("Mint(%q): %v", sub, err)
			}
			return
		}
		id, e := v.Verify(good)
		if e != nil || id.UserID != sub {
			t.Fatalf("Verify(valid token for %q) = %+v, %v", sub, id, e)
		}
		mut := []byte(good)
		mut[int(pos)%len(mut)] = b
		checkVerify(t, v, string(mut))
	})
}

func newFuzzVerifier(f *testing.F) *Verifier {
	v, err := New(f.Context(), Options{Secret: testSecret})
	if err != nil {
		f.Fatalf("New: %v", err)
	}
	f.Cleanup(v.Close)
	return v
}

// checkVerify verifies token and checks the outcome independently.
func checkVerify(t *testing.T, v *Verifier, token string) {
	t.Helper()
	id, e := v.Verify(token)
	if e != nil {
		if id != nil {
			t.Fatalf("Verify returned both an identity and %v", e)
		}
		if e.Status != http.StatusUnauthorized || (e.Code != CodeInvalidToken && e.Code != CodeTokenExpired) {
			t.Fatalf("Verify(%q) error %d %s, want 401 invalid_token or token_expired", token, e.Status, e.Code)
		}
		checkNoSecret(t, e, token)
		return
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("Verify accepted %q, which is not three segments", token)
	}
	var hdr struct{ Alg string }
	if err := json.Unmarshal(lenientB64(t, parts[0]), &hdr); err != nil || hdr.Alg != "HS256" {
		t.Fatalf("Verify accepted %q with header alg %q (%v), only HS256 is configured", token, hdr.Alg, err)
	}
	mac := hmac.New(sha256.New, []byte(testSecret))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(mac.Sum(nil), lenientB64(t, parts[2])) {
		t.Fatalf("Verify accepted %q whose signature is not the secret's", token)
	}
	var claims struct {
		Sub any
		Exp any
	}
	if err := json.Unmarshal(lenientB64(t, parts[1]), &claims); err != nil {
		t.Fatalf("Verify accepted %q whose payload is not JSON: %v", token, err)
	}
	if s, ok := claims.Sub.(string); !ok || s == "" || len(s) > maxSubjectLen || s != id.UserID {
		t.Fatalf("Verify accepted %q with sub %#v as user %q", token, claims.Sub, id.UserID)
	}
	exp, ok := claims.Exp.(float64)
	if !ok || time.Unix(int64(exp), 0).Before(time.Now().Add(-time.Second)) {
		t.Fatalf("Verify accepted %q with exp %#v", token, claims.Exp)
	}
}

// lenientB64 decodes a JWT segment the ways a JOSE library may accept.
func lenientB64(t *testing.T, s string) []byte {
	t.Helper()
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b
		}
	}
	t.Fatalf("segment %q of an accepted token is not base64", s)
	return nil
}

// checkNoSecret fails when the error message repeats the token or any long
// segment of it (the fixed messages are shorter than 16 bytes' worth of any
// base64 segment a fuzzer is likely to hit).
func checkNoSecret(t *testing.T, e *Error, token string) {
	t.Helper()
	if token == "" {
		return
	}
	if len(token) >= 16 && strings.Contains(e.Message, token) {
		t.Fatalf("error message %q contains the token", e.Message)
	}
	for _, p := range strings.Split(token, ".") {
		if len(p) >= 16 && strings.Contains(e.Message, p) {
			t.Fatalf("error message %q contains the token segment %q", e.Message, p)
		}
	}
}
