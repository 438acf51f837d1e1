package upstream_test

// Tests of issue 15's findings at POST /api/send, on a real loopback
// server with a real backend: the credentials it takes, the Origin check
// of cookie-authenticated requests, Content-Type and UTF-8.

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/transport/upstream"
)

// sendWith posts body to /api/send with exactly the headers h (and query)
// and returns the status and the decoded answer.
func sendWith(t *testing.T, e *env, query string, h http.Header, body io.Reader) (int, answer) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/api/send"+query, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /api/send: %v", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var a answer
	if err := json.Unmarshal(data, &a); err != nil || a.Error == nil && resp.StatusCode != 200 {
		t.Fatalf("status %d, body %q is not the JSON answer (%v)", resp.StatusCode, data, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	return resp.StatusCode, a
}

const sendBody = `{"idempotencyKey":"k-csrf","event":{"type":"TRANSFER","payload":{"to":"mallory"}}}`

// TestHTTPSendCookieOrigin is the cross-site request forgery: a
// POST with the victim's cookie, Origin https://evil.example and
// Content-Type text/plain (what an HTML form sends without a preflight)
// answered 200 and the backend got a signed call. Now a cookie-authenticated
// send from an origin that is not allowed is 403 origin_not_allowed and the
// backend is never called; without Origin, or from an allowed one, the
// cookie works; the header works from anywhere (a page on another origin
// cannot set it without CORS).
func TestHTTPSendCookieOrigin(t *testing.T) {
	be := newBackend(t)
	e := newEnv(t, be, func(o *upstream.Options) { o.AllowedOrigins = []string{"https://app.example"} })
	victim := hubtest.Token(t, "victim", time.Hour)
	cookie := auth.DefaultCookie + "=" + victim
	refused := []struct {
		name string
		h    http.Header
	}{
		{"form post", http.Header{"Cookie": {cookie}, "Origin": {"https://evil.example"}, "Content-Type": {"text/plain"}}},
		{"fetch with JSON", http.Header{"Cookie": {cookie}, "Origin": {"https://evil.example"}, "Content-Type": {"application/json"}}},
		{"origin null", http.Header{"Cookie": {cookie}, "Origin": {"null"}, "Content-Type": {"application/json"}}},
		{"allowed host, other scheme", http.Header{"Cookie": {cookie}, "Origin": {"http://app.example"}, "Content-Type": {"application/json"}}},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			status, a := sendWith(t, e, "", tt.h, strings.NewReader(sendBody))
			if status != http.StatusForbidden || a.code() != "origin_not_allowed" {
				t.Fatalf("got %d %+v, want 403 origin_not_allowed", status, a)
			}
		})
	}
	if n := be.count(); n != 0 {
		t.Fatalf("the backend got %d calls from refused requests", n)
	}
	accepted := []struct {
		name string
		h    http.Header
	}{
		{"cookie without Origin", http.Header{"Cookie": {cookie}, "Content-Type": {"application/json"}}},
		{"cookie from an allowed origin", http.Header{"Cookie": {cookie}, "Origin": {"https://app.example"}, "Content-Type": {"application/json"}}},
		{"header from another origin", http.Header{"Authorization": {"Bearer " + victim}, "Origin": {"https://evil.example"}, "Content-Type": {"application/json"}}},
	}
	for i, tt := range accepted {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Replace(sendBody, "k-csrf", "k-ok-"+tt.name, 1)
			status, a := sendWith(t, e, "", tt.h, strings.NewReader(body))
			if status != http.StatusOK || a.Error != nil {
				t.Fatalf("got %d %+v, want 200", status, a)
			}
			if c := be.call(t, i); c.UserID != "victim" {
				t.Errorf("backend call for %q, want victim", c.UserID)
			}
		})
	}
}

// TestHTTPSendCookieOriginDefault: with no HUB_ALLOWED_ORIGINS, the
// request's own host is the allowed origin.
func TestHTTPSendCookieOriginDefault(t *testing.T) {
	be := newBackend(t)
	e := newEnv(t, be, nil)
	cookie := auth.DefaultCookie + "=" + hubtest.Token(t, "victim", time.Hour)
	h := http.Header{"Cookie": {cookie}, "Origin": {e.srv.URL}, "Content-Type": {"application/json"}}
	if status, a := sendWith(t, e, "", h, strings.NewReader(sendBody)); status != 200 {
		t.Fatalf("same origin: %d %+v, want 200", status, a)
	}
	h.Set("Origin", "https://evil.example")
	if status, a := sendWith(t, e, "", h, strings.NewReader(strings.Replace(sendBody, "k-csrf", "k-2", 1))); status != 403 || a.code() != "origin_not_allowed" {
		t.Fatalf("other origin: %d %+v, want 403 origin_not_allowed", status, a)
	}
	if n := be.count(); n != 1 {
		t.Errorf("backend calls %d, want 1", n)
	}
}

// TestHTTPSendQueryTokenIgnored: /api/send takes the header and the
// cookie, not the token query parameter (it would land in logs and could
// be planted in a link): a request with only that is 401 missing_token.
func TestHTTPSendQueryTokenIgnored(t *testing.T) {
	be := newBackend(t)
	e := newEnv(t, be, nil)
	status, a := sendWith(t, e, "?token="+hubtest.Token(t, "u1", time.Hour), http.Header{"Content-Type": {"application/json"}}, strings.NewReader(sendBody))
	if status != http.StatusUnauthorized || a.code() != "missing_token" {
		t.Fatalf("got %d %+v, want 401 missing_token", status, a)
	}
	if strings.Contains(a.Error.Message, "query") {
		t.Errorf("message %q points at the query parameter", a.Error.Message)
	}
	if n := be.count(); n != 0 {
		t.Errorf("backend calls %d, want 0", n)
	}
}

// TestHTTPSendContentType: the body must be application/json (charset
// allowed, any case): else 415 unsupported_media_type with the JSON
// answer, and the backend is not called.
func TestHTTPSendContentType(t *testing.T) {
	be := newBackend(t)
	e := newEnv(t, be, nil)
	tok := "Bearer " + hubtest.Token(t, "u1", time.Hour)
	tests := []struct {
		name       string
		giveCT     string
		giveChunks bool
		wantStatus int
	}{
		{"text/plain, chunked", "text/plain", true, 415},
		{"form", "application/x-www-form-urlencoded", false, 415},
		{"none", "", false, 415},
		{"JSON with charset, chunked", "application/json;charset=UTF-8", true, 200},
	}
	calls := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Authorization": {tok}}
			if tt.giveCT != "" {
				h.Set("Content-Type", tt.giveCT)
			}
			var body io.Reader = strings.NewReader(strings.Replace(sendBody, "k-csrf", "k-"+tt.name, 1))
			if tt.giveChunks {
				body = struct{ io.Reader }{body} // no length: sent chunked
			}
			status, a := sendWith(t, e, "", h, body)
			if status != tt.wantStatus {
				t.Fatalf("got %d %+v, want %d", status, a, tt.wantStatus)
			}
			if status == 415 && (a.code() != "unsupported_media_type" || !strings.Contains(a.Error.Message, "application/json")) {
				t.Errorf("answer %+v, want unsupported_media_type naming application/json", a)
			}
			if status == 200 {
				calls++
			}
			if n := be.count(); n != calls {
				t.Errorf("backend calls %d, want %d", n, calls)
			}
		})
	}
}

// TestHTTPSendInvalidUTF8: a body that is not valid UTF-8 is 400
// invalid_json and never reaches the backend (encoding/json would have
// read it with U+FFFD while the raw payload went on as it was).
func TestHTTPSendInvalidUTF8(t *testing.T) {
	be := newBackend(t)
	e := newEnv(t, be, nil)
	h := http.Header{"Authorization": {"Bearer " + hubtest.Token(t, "u1", time.Hour)}, "Content-Type": {"application/json"}}
	for _, body := range []string{
		"{\"idempotencyKey\":\"k\",\"event\":{\"type\":\"A\",\"payload\":\"\xff\xfe\"}}",
		"{\"idempotencyKey\":\"k\",\"event\":{\"type\":\"A\",\"payload\":{\"\xff\":1}}}",
		"{\"ref\":\"\xc3\",\"idempotencyKey\":\"k\",\"event\":{\"type\":\"A\"}}",
	} {
		status, a := sendWith(t, e, "", h, strings.NewReader(body))
		if status != http.StatusBadRequest || a.code() != "invalid_json" || !strings.Contains(a.Error.Message, "UTF-8") {
			t.Errorf("body %q: %d %+v, want 400 invalid_json naming UTF-8", body, status, a)
		}
	}
	if n := be.count(); n != 0 {
		t.Errorf("backend calls %d, want 0", n)
	}
	// valid UTF-8 goes through as it is
	status, _ := sendWith(t, e, "", h, strings.NewReader(`{"idempotencyKey":"k","event":{"type":"A","payload":"café ✓"}}`))
	if c := be.call(t, 0); status != 200 || !strings.Contains(string(c.Event), "café ✓") {
		t.Errorf("valid UTF-8: %d, backend event %s", status, c.Event)
	}
}
