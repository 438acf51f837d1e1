package api_test

// Tests of issue 15's findings at the service API, each on a real loopback
// server: the credentials the endpoints take, Content-Type, UTF-8, the
// reserved type prefix in any case, the failed-credential limit and
// idempotency keys scoped by the whole credential.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/transport/api"
)

// serviceEndpoints are the service and admin endpoints with a body each
// accepts and the status of success with an admin JWT.
var serviceEndpoints = []struct {
	method, path, body string
	ok                 int
}{
	{http.MethodPost, "/api/broadcast", `{"userIds":["u1"],"type":"CSRF"}`, http.StatusAccepted},
	{http.MethodPost, "/api/broadcast/batch", `{"messages":[{"userIds":["u1"],"type":"CSRF"}]}`, http.StatusAccepted},
	{http.MethodGet, "/api/users/u1/connections", ``, http.StatusOK},
	{http.MethodPost, "/api/users/u1/disconnect", ``, http.StatusOK},
	{http.MethodGet, "/api/websocket/stats", ``, http.StatusOK},
}

// raw sends one request as given: no header is added.
func (e *env) raw(t testing.TB, c *http.Client, method, path string, h http.Header, body io.Reader) (response, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if c == nil {
		c = e.srv.Client()
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	return response{status: resp.StatusCode, body: b}, resp.Header
}

// sentinel publishes a marker to u1 with the API key and returns the
// events u1 got before it: what the requests before it published.
func (e *env) sentinel(t testing.TB, u1 *client) []*hub.Message {
	t.Helper()
	typ := "SENTINEL_" + strconv.FormatInt(time.Now().UnixNano(), 10)
	if r := e.post(t, "/api/broadcast", keyCred, `{"userIds":["u1"],"type":"`+typ+`"}`); r.status != http.StatusAccepted {
		t.Fatalf("sentinel: %d %s", r.status, r.body)
	}
	before := u1.waitType(t, typ)
	u1.events = nil
	return before
}

// TestServiceIgnoresCookieAndQuery: the service and admin endpoints take
// the Authorization header or X-API-Key only. An admin token in the cookie
// (the cross-site form: Origin of another site, text/plain) or in
// the query is no credential there: 401 missing_token, nothing published,
// nobody disconnected.
func TestServiceIgnoresCookieAndQuery(t *testing.T) {
	e := newEnv(t, nil)
	u1 := e.connect(t, "u1", hub.TransportWebSocket)
	admin := mint(t, "root", "admin", "service")
	for _, ep := range serviceEndpoints {
		tests := []struct {
			name string
			path string
			h    http.Header
		}{
			{"cookie, cross-site form", ep.path, http.Header{
				"Cookie": {"hub_token=" + admin}, "Origin": {"https://evil.example"}, "Content-Type": {"text/plain"}}},
			{"cookie, JSON", ep.path, http.Header{"Cookie": {"hub_token=" + admin}, "Content-Type": {"application/json"}}},
			{"query token", ep.path + "?token=" + admin, http.Header{"Content-Type": {"application/json"}}},
		}
		for _, tt := range tests {
			t.Run(ep.path+"/"+tt.name, func(t *testing.T) {
				got, _ := e.raw(t, nil, ep.method, tt.path, tt.h, strings.NewReader(ep.body))
				if code, _ := got.errorCode(t); got.status != http.StatusUnauthorized || code != "missing_token" {
					t.Fatalf("got %d %s, want 401 missing_token", got.status, got.body)
				}
			})
		}
		// the same request with the header works
		got, _ := e.raw(t, nil, ep.method, ep.path, http.Header{"Authorization": {"Bearer " + admin}, "Content-Type": {"application/json"}},
			strings.NewReader(ep.body))
		if got.status != ep.ok {
			t.Fatalf("%s with the header: %d %s, want %d", ep.path, got.status, got.body, ep.ok)
		}
		if ep.path == "/api/users/u1/disconnect" {
			break // u1 is gone now; what came before is checked below
		}
	}
	u1.poll(t, "the header's disconnect", func() bool { return u1.reason != nil })
	// only the two header requests published (one event each)
	if n := len(u1.events); n != 2 {
		t.Errorf("u1 got %d events, want 2 (the header requests')", n)
	}
}

// TestContentType: every POST with a body must be application/json
// (parameters allowed, any case): else 415 unsupported_media_type and
// nothing is published. A disconnect without a body needs no Content-Type.
func TestContentType(t *testing.T) {
	e := newEnv(t, nil)
	u1 := e.connect(t, "u1", hub.TransportWebSocket)
	for _, ep := range serviceEndpoints[:2] {
		tests := []struct {
			name       string
			giveCT     string
			giveChunks bool
			wantStatus int
		}{
			// the media types themselves: internal/httpx's TestIsJSON
			{"text/plain", "text/plain", false, 415},
			{"form, chunked", "application/x-www-form-urlencoded", true, 415},
			{"none", "", false, 415},
			{"JSON with charset", "application/json; charset=utf-8", false, 202},
			{"JSON upper case, chunked", "APPLICATION/JSON", true, 202},
		}
		for _, tt := range tests {
			t.Run(ep.path+"/"+tt.name, func(t *testing.T) {
				h := http.Header{"X-Api-Key": {apiKey}}
				if tt.giveCT != "" {
					h.Set("Content-Type", tt.giveCT)
				}
				var body io.Reader = strings.NewReader(ep.body)
				if tt.giveChunks {
					body = chunked{body}
				}
				got, _ := e.raw(t, nil, ep.method, ep.path, h, body)
				if got.status != tt.wantStatus {
					t.Fatalf("status %d %s, want %d", got.status, got.body, tt.wantStatus)
				}
				if tt.wantStatus == 415 {
					if code, msg := got.errorCode(t); code != "unsupported_media_type" || !strings.Contains(msg, "application/json") {
						t.Errorf("got %s %q, want unsupported_media_type naming application/json", code, msg)
					}
				}
			})
		}
	}
	if got := len(e.sentinel(t, u1)); got != 4 {
		t.Errorf("u1 got %d events, want 4 (the accepted requests')", got)
	}

	// a disconnect with a body needs the type too; one without none
	d := "/api/users/nobody/disconnect"
	if got, _ := e.raw(t, nil, http.MethodPost, d, http.Header{"X-Api-Key": {apiKey}, "Content-Type": {"text/plain"}}, strings.NewReader("x")); got.status != 415 {
		t.Errorf("disconnect with a text body: %d %s, want 415", got.status, got.body)
	}
	if got, _ := e.raw(t, nil, http.MethodPost, d, http.Header{"X-Api-Key": {apiKey}}, nil); got.status != 200 {
		t.Errorf("disconnect without a body: %d %s, want 200", got.status, got.body)
	}
	if got, _ := e.raw(t, nil, http.MethodPost, d, http.Header{"X-Api-Key": {apiKey}, "Content-Type": {"application/json"}}, strings.NewReader("{}")); got.status != 200 {
		t.Errorf("disconnect with a JSON body: %d %s, want 200", got.status, got.body)
	}
}

// TestInvalidUTF8: a body that is not valid UTF-8 (raw FF FE in a payload
// string, a type or a user id) is 400 invalid_json, whatever path it would
// take (the fast paths included), and nothing is published, so nothing
// poisons the history.
func TestInvalidUTF8(t *testing.T) {
	e := newEnv(t, nil)
	u1 := e.connect(t, "u1", hub.TransportWebSocket)
	tests := []struct{ name, path, body string }{
		{"payload string", "/api/broadcast", "{\"userIds\":[\"u1\"],\"type\":\"T\",\"payload\":\"a\xff\xfeb\"}"},
		{"payload object key", "/api/broadcast", "{\"userIds\":[\"u1\"],\"type\":\"T\",\"payload\":{\"\xff\":1}}"},
		{"to all", "/api/broadcast", "{\"all\":true,\"type\":\"T\",\"payload\":[\"\xfe\"]}"},
		{"user id", "/api/broadcast", "{\"userIds\":[\"u1\xff\"],\"type\":\"T\"}"},
		{"type", "/api/broadcast", "{\"userIds\":[\"u1\"],\"type\":\"T\xff\"}"},
		{"idempotency key", "/api/broadcast", "{\"userIds\":[\"u1\"],\"type\":\"T\",\"idempotencyKey\":\"\xff\"}"},
		{"truncated sequence", "/api/broadcast", "{\"userIds\":[\"u1\"],\"type\":\"T\",\"payload\":\"\xe2\x82\"}"},
		{"surrogate encoded", "/api/broadcast", "{\"userIds\":[\"u1\"],\"type\":\"T\",\"payload\":\"\xed\xa0\x80\"}"},
		{"batch payload", "/api/broadcast/batch", "{\"messages\":[{\"userIds\":[\"u1\"],\"type\":\"T\",\"payload\":\"ok\"},{\"userIds\":[\"u1\"],\"type\":\"T\",\"payload\":\"\xff\xfe\"}]}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.post(t, tt.path, keyCred, tt.body)
			if code, msg := got.errorCode(t); got.status != 400 || code != "invalid_json" || !strings.Contains(msg, "UTF-8") {
				t.Fatalf("got %d %s, want 400 invalid_json naming UTF-8", got.status, got.body)
			}
		})
	}
	if before := e.sentinel(t, u1); len(before) != 0 {
		t.Errorf("u1 got %d events from refused bodies", len(before))
	}
	// valid UTF-8 beyond ASCII passes through as it is
	if got := e.post(t, "/api/broadcast", keyCred, `{"userIds":["u1"],"type":"T","payload":"café ✓ 😀"}`); got.status != 202 {
		t.Fatalf("valid UTF-8: %d %s", got.status, got.body)
	}
	evs := u1.waitEvents(t, 1)
	if _, _, p := envelope(t, evs[0]); string(p) != `"café ✓ 😀"` || !utf8.Valid(evs[0].Frame) {
		t.Errorf("payload %s, frame valid UTF-8: %v", p, utf8.Valid(evs[0].Frame))
	}
}

// TestReservedTypeAnyCase: "hub." is reserved in any letter case.
func TestReservedTypeAnyCase(t *testing.T) {
	e := newEnv(t, nil)
	u1 := e.connect(t, "u1", hub.TransportWebSocket)
	for _, typ := range []string{"hub.shutdown", "HUB.shutdown", "Hub.connected", "hUB.x"} {
		for _, tt := range []struct{ path, body string }{
			{"/api/broadcast", `{"userIds":["u1"],"type":"` + typ + `"}`},
			{"/api/broadcast/batch", `{"messages":[{"all":true,"type":"` + typ + `"}]}`},
		} {
			got := e.post(t, tt.path, keyCred, tt.body)
			if tt.path == "/api/broadcast/batch" {
				var b struct{ Results []json.RawMessage }
				if err := json.Unmarshal(got.body, &b); err != nil || len(b.Results) != 1 {
					t.Fatalf("batch %s: %d %s", typ, got.status, got.body)
				}
				got = response{status: 400, body: b.Results[0]}
			}
			if code, msg := got.errorCode(t); got.status != 400 || code != "invalid_request" || !strings.Contains(msg, "reserved") {
				t.Errorf("%s %s: %d %s, want 400 invalid_request (reserved)", tt.path, typ, got.status, got.body)
			}
		}
	}
	if before := e.sentinel(t, u1); len(before) != 0 {
		t.Errorf("u1 got %d events with reserved types", len(before))
	}
}

// clientFrom is an HTTP client whose connections come from the loopback
// address ip (any 127.0.0.0/8 address is the loopback on Linux), so that
// the API sees another client address.
func clientFrom(t testing.TB, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestCredentialFailureLimit: the issue guessed a short API key online in
// 610 tries. A client address that fails the credential check 20 times
// within a minute now gets 429 rate_limited with Retry-After from every
// service and admin endpoint, its valid key included; another address is
// not affected, and 403s (a valid token without the role) do not count.
func TestCredentialFailureLimit(t *testing.T) {
	e := newEnv(t, nil)
	guesser, other, user := clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.3"), clientFrom(t, "127.0.0.4")
	good := http.Header{"X-Api-Key": {apiKey}, "Content-Type": {"application/json"}}
	body := `{"userIds":["u1"],"type":"T"}`
	for i := range api.MaxCredentialFailures {
		h := http.Header{"X-Api-Key": {"key-guess-" + strconv.Itoa(i)}, "Content-Type": {"application/json"}}
		if i%4 == 3 { // a missing credential is a 401 too
			h.Del("X-Api-Key")
		}
		got, _ := e.raw(t, guesser, http.MethodPost, "/api/broadcast", h, strings.NewReader(body))
		if got.status != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d %s, want 401", i, got.status, got.body)
		}
	}
	for _, ep := range serviceEndpoints {
		h := good.Clone()
		if ep.path == "/api/websocket/stats" {
			h = http.Header{"Authorization": {"Bearer " + mint(t, "root", "admin")}}
		}
		got, hdr := e.raw(t, guesser, ep.method, ep.path, h, strings.NewReader(ep.body))
		code, _ := got.errorCode(t)
		if got.status != http.StatusTooManyRequests || code != "rate_limited" {
			t.Fatalf("%s with a valid credential after 20 failures: %d %s, want 429 rate_limited", ep.path, got.status, got.body)
		}
		if s, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || s < 1 || s > 60 {
			t.Errorf("%s: Retry-After %q, want 1 to 60 seconds", ep.path, hdr.Get("Retry-After"))
		}
	}
	if got, _ := e.raw(t, other, http.MethodPost, "/api/broadcast", good, strings.NewReader(body)); got.status != http.StatusAccepted {
		t.Errorf("another address: %d %s, want 202", got.status, got.body)
	}
	// 403s are no failures: a user token, refused for its role, many times
	userTok := http.Header{"Authorization": {"Bearer " + mint(t, "u9")}, "Content-Type": {"application/json"}}
	for i := range api.MaxCredentialFailures + 5 {
		if got, _ := e.raw(t, user, http.MethodPost, "/api/broadcast", userTok, strings.NewReader(body)); got.status != http.StatusForbidden {
			t.Fatalf("user token %d: %d %s, want 403", i, got.status, got.body)
		}
	}
	if got, _ := e.raw(t, user, http.MethodPost, "/api/broadcast", good, strings.NewReader(body)); got.status != http.StatusAccepted {
		t.Errorf("after 403s: %d %s, want 202", got.status, got.body)
	}
}

// TestCredentialFailureLimitClientIP: the client address comes from the
// ClientIP option (HUB_TRUSTED_PROXIES plugs in there).
func TestCredentialFailureLimitClientIP(t *testing.T) {
	e := newEnv(t, func(o *api.Options) {
		o.ClientIP = func(r *http.Request) string { return r.Header.Get("X-Test-Client") }
	})
	bad := http.Header{"X-Api-Key": {"wrong-key-0123456789"}, "X-Test-Client": {"203.0.113.7"}}
	for range api.MaxCredentialFailures {
		e.raw(t, nil, http.MethodGet, "/api/websocket/stats", bad, nil)
	}
	admin := "Bearer " + mint(t, "root", "admin")
	if got, _ := e.raw(t, nil, http.MethodGet, "/api/websocket/stats", http.Header{"Authorization": {admin}, "X-Test-Client": {"203.0.113.7"}}, nil); got.status != 429 {
		t.Errorf("same client: %d, want 429", got.status)
	}
	if got, _ := e.raw(t, nil, http.MethodGet, "/api/websocket/stats", http.Header{"Authorization": {admin}, "X-Test-Client": {"203.0.113.8"}}, nil); got.status != 200 {
		t.Errorf("other client on the same socket address: %d, want 200", got.status)
	}
}

// TestIdempotencyScopedByWholeKey: two services whose keys share their
// first characters ("key-") each publish with the same idempotencyKey:
// both publish, each gets its own answer (the issue: the second was
// dropped and received the first one's recipients).
func TestIdempotencyScopedByWholeKey(t *testing.T) {
	e := newEnv(t, nil)
	u1 := e.connect(t, "u1", hub.TransportWebSocket)
	const body = `{"userIds":["u1"],"type":"ORDER","idempotencyKey":"order-42"}`
	a := e.post(t, "/api/broadcast", keyCred, body)
	b := e.post(t, "/api/broadcast", cred{apiKey: samePrefixKey}, body)
	if a.status != 202 || b.status != 202 {
		t.Fatalf("statuses %d %d, want 202 202", a.status, b.status)
	}
	if string(a.body) == string(b.body) {
		t.Errorf("the second key got the first one's answer %s", a.body)
	}
	// each key's repeat is still answered from its own first call
	if r := e.post(t, "/api/broadcast", cred{apiKey: samePrefixKey}, body); string(r.body) != string(b.body) {
		t.Errorf("repeat of the second key: %s, want %s", r.body, b.body)
	}
	if got := len(e.sentinel(t, u1)); got != 2 {
		t.Errorf("u1 got %d events, want 2 (one per service)", got)
	}
	// a service token is scoped by its sub
	svcA, svcB := bearer(mint(t, "billing", "service")), bearer(mint(t, "shipping", "service"))
	if x, y := e.post(t, "/api/broadcast", svcA, body), e.post(t, "/api/broadcast", svcB, body); string(x.body) == string(y.body) {
		t.Errorf("two subs share an idempotency namespace: %s", x.body)
	}
	if got := len(e.sentinel(t, u1)); got != 2 {
		t.Errorf("u1 got %d events from two service tokens, want 2", got)
	}
}

// signRaw signs a raw JWT header and payload (JSON text) with the test
// secret under HS256.
func signRaw(header, payload string) string {
	enc := base64.RawURLEncoding
	in := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	m := hmac.New(sha256.New, []byte(hubtest.Secret))
	m.Write([]byte(in))
	return in + "." + enc.EncodeToString(m.Sum(nil))
}

// TestStrictTokens: a service token with a crit header, or with exp, nbf
// or iat given as a string, is refused (401 invalid_token) at the API.
func TestStrictTokens(t *testing.T) {
	e := newEnv(t, nil)
	exp := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	past := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	claims := `"sub":"svc","roles":["service"]`
	tests := []struct {
		name, header, payload string
		wantStatus            int
	}{
		{"valid", `{"alg":"HS256","typ":"JWT"}`, `{` + claims + `,"exp":` + exp + `}`, 202},
		{"crit", `{"alg":"HS256","crit":["exp"]}`, `{` + claims + `,"exp":` + exp + `}`, 401},
		{"string exp", `{"alg":"HS256"}`, `{` + claims + `,"exp":"` + exp + `"}`, 401},
		{"string nbf", `{"alg":"HS256"}`, `{` + claims + `,"exp":` + exp + `,"nbf":"` + past + `"}`, 401},
		{"string iat", `{"alg":"HS256"}`, `{` + claims + `,"exp":` + exp + `,"iat":"` + past + `"}`, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.post(t, "/api/broadcast", bearer(signRaw(tt.header, tt.payload)), `{"all":true,"type":"T"}`)
			if got.status != tt.wantStatus {
				t.Fatalf("status %d %s, want %d", got.status, got.body, tt.wantStatus)
			}
			if tt.wantStatus == 401 {
				if code, _ := got.errorCode(t); code != "invalid_token" {
					t.Errorf("code %q, want invalid_token", code)
				}
			}
		})
	}
}
