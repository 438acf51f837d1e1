package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/transport/api"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	apiKey = "key-abcdefghijklmnop"
	// samePrefixKey starts like apiKey: another service's key.
	samePrefixKey = "key-zyxwvutsrqponmlk"
)

// env is a hub, a verifier and the API on a real loopback server.
type env struct {
	hub *hub.Hub
	srv *httptest.Server
}

func newEnv(t testing.TB, mod func(*api.Options)) *env {
	t.Helper()
	h := hub.New(hub.Options{Node: "hub-1", HistorySize: 100, HistoryTTL: time.Minute, SendQueue: 1 << 16})
	h.Start()
	v, err := auth.New(context.Background(), auth.Options{Secret: hubtest.Secret, APIKeys: []string{apiKey, "other-key-0123456789", samePrefixKey}})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	o := api.Options{Hub: h, Auth: v, Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&o)
	}
	a := api.New(o)
	mux := http.NewServeMux()
	a.RegisterPublic(mux)
	a.RegisterInternal(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		h.Stop()
		v.Close()
	})
	return &env{hub: h, srv: srv}
}

// mint is hubtest.Token for an hour: the tokens of the API's callers.
func mint(t testing.TB, sub string, roles ...string) string {
	t.Helper()
	return hubtest.Token(t, sub, time.Hour, roles...)
}

// cred is how a request authenticates.
type cred struct {
	bearer string
	apiKey string
	cookie string // a hub_token cookie
	origin string // an Origin header
}

func bearer(tok string) cred { return cred{bearer: tok} }

var keyCred = cred{apiKey: apiKey}

type response struct {
	status int
	body   []byte
}

// errorCode returns the body's error.code and error.message.
func (r response) errorCode(t testing.TB) (string, string) {
	t.Helper()
	var b struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return b.Error.Code, b.Error.Message
}

func (e *env) do(t testing.TB, method, path string, c cred, body io.Reader) response {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	if c.apiKey != "" {
		req.Header.Set("X-API-Key", c.apiKey)
	}
	if c.cookie != "" {
		req.AddCookie(&http.Cookie{Name: auth.DefaultCookie, Value: c.cookie})
	}
	if c.origin != "" {
		req.Header.Set("Origin", c.origin)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if ct := resp.Header.Get("Content-Type"); len(b) > 0 && !strings.HasPrefix(ct, "application/json") && path != "/metrics" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	return response{status: resp.StatusCode, body: b}
}

func (e *env) post(t testing.TB, path string, c cred, body string) response {
	t.Helper()
	return e.do(t, http.MethodPost, path, c, strings.NewReader(body))
}

// sink is a hub.Sink that only signals wake-ups; the test drains Next.
type sink struct{ wake chan struct{} }

func (s *sink) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
func (s *sink) Abort(hub.Reason)    {}
func (s *sink) Heartbeat(idle bool) {}

// client is a registered connection read by the test.
type client struct {
	conn   *hub.Conn
	sink   *sink
	events []*hub.Message // application events received so far
	reason *hub.Reason
}

func (e *env) connect(t testing.TB, user, transport string) *client {
	t.Helper()
	s := &sink{wake: make(chan struct{}, 1)}
	c, err := e.hub.Register(hub.ConnInfo{UserID: user, Transport: transport}, s)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	t.Cleanup(func() { e.hub.Unregister(c) })
	return &client{conn: c, sink: s}
}

// poll drains the queue until cond holds or the deadline passes.
func (c *client) poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	var buf []*hub.Message
	for {
		var r *hub.Reason
		buf, r = c.conn.Next(buf[:0])
		for _, m := range buf {
			if !m.Control() {
				c.events = append(c.events, m)
			}
		}
		if r != nil {
			c.reason = r
		}
		if cond() {
			return
		}
		if len(buf) > 0 || r != nil {
			continue
		}
		select {
		case <-c.sink.wake:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s (have %d events)", what, len(c.events))
		}
	}
}

// waitEvents waits until n application events have arrived.
func (c *client) waitEvents(t testing.TB, n int) []*hub.Message {
	t.Helper()
	c.poll(t, fmt.Sprintf("%d events", n), func() bool { return len(c.events) >= n })
	return c.events
}

// waitType waits for an event of type typ and returns every event before it.
func (c *client) waitType(t testing.TB, typ string) []*hub.Message {
	t.Helper()
	c.poll(t, "event "+typ, func() bool {
		return slices.ContainsFunc(c.events, func(m *hub.Message) bool { return m.Type == typ })
	})
	i := slices.IndexFunc(c.events, func(m *hub.Message) bool { return m.Type == typ })
	return c.events[:i]
}

// envelope decodes an event's frame.
func envelope(t testing.TB, m *hub.Message) (id, typ string, payload json.RawMessage) {
	t.Helper()
	var env struct {
		ID      string          `json:"id"`
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(m.Frame, &env); err != nil {
		t.Fatalf("frame %q: %v", m.Frame, err)
	}
	return env.ID, env.Type, env.Payload
}

type usersAnswer struct {
	Events []struct {
		UserID  string `json:"userId"`
		ID      string `json:"id"`
		Devices int    `json:"devices"`
	} `json:"events"`
}

func TestServiceAuth(t *testing.T) {
	endpoints := []struct {
		method, path, body string
		ok                 int
	}{
		{http.MethodPost, "/api/broadcast", `{"userIds":["u1"],"type":"T"}`, http.StatusAccepted},
		{http.MethodPost, "/api/broadcast/batch", `{"messages":[{"all":true,"type":"T"}]}`, http.StatusAccepted},
		{http.MethodPost, "/api/users/u1/disconnect", ``, http.StatusOK},
		{http.MethodGet, "/api/users/u1/connections", ``, http.StatusOK},
	}
	otherTok := hubtest.TokenWith(t, "another-secret-0123456789abcdef", "svc", time.Hour, "service")
	tests := []struct {
		name       string
		give       cred
		wantStatus int // 0: the endpoint's success status
		wantCode   string
	}{
		{"no credentials", cred{}, 401, "missing_token"},
		{"garbage token", bearer("not-a-jwt"), 401, "invalid_token"},
		{"wrong signature", bearer(otherTok), 401, "invalid_token"},
		{"expired", bearer(hubtest.ExpiredToken(t, "svc", "service")), 401, "token_expired"},
		{"user JWT", bearer(mint(t, "u1")), 403, "forbidden"},
		{"user JWT with other role", bearer(mint(t, "u1", "editor")), 403, "forbidden"},
		{"wrong API key", cred{apiKey: "nope-nope-nope"}, 401, "invalid_token"},
		{"API key", keyCred, 0, ""},
		{"service JWT", bearer(mint(t, "svc", "service")), 0, ""},
		{"admin JWT", bearer(mint(t, "root", "admin")), 0, ""},
	}
	for _, ep := range endpoints {
		e := newEnv(t, nil) // each its own failed-credential count
		for _, tt := range tests {
			t.Run(ep.path+"/"+tt.name, func(t *testing.T) {
				got := e.do(t, ep.method, ep.path, tt.give, strings.NewReader(ep.body))
				want := tt.wantStatus
				if want == 0 {
					want = ep.ok
				}
				if got.status != want {
					t.Fatalf("status %d (%s), want %d", got.status, got.body, want)
				}
				if tt.wantCode != "" {
					if code, _ := got.errorCode(t); code != tt.wantCode {
						t.Errorf("code %q, want %q", code, tt.wantCode)
					}
				}
			})
		}
	}
}

func TestStatsAuth(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name       string
		give       cred
		wantStatus int
		wantCode   string
	}{
		{"no credentials", cred{}, 401, "missing_token"},
		{"bad token", bearer("x.y.z"), 401, "invalid_token"},
		{"expired admin", bearer(hubtest.ExpiredToken(t, "svc", "admin")), 401, "token_expired"},
		{"API key", keyCred, 403, "forbidden"},
		{"user JWT", bearer(mint(t, "u1")), 403, "forbidden"},
		{"service JWT", bearer(mint(t, "svc", "service")), 403, "forbidden"},
		{"admin JWT", bearer(mint(t, "root", "admin")), 200, ""},
		// the service and admin endpoints take the header only
		{"admin JWT in query", cred{}, 401, "missing_token"},  // set below
		{"admin JWT in cookie", cred{}, 401, "missing_token"}, // set below
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := "/api/websocket/stats"
			if tt.name == "admin JWT in query" {
				path += "?token=" + mint(t, "root", "admin", "service")
			}
			if tt.name == "admin JWT in cookie" {
				tt.give.cookie = mint(t, "root", "admin", "service")
			}
			got := e.do(t, http.MethodGet, path, tt.give, nil)
			if got.status != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", got.status, got.body, tt.wantStatus)
			}
			if tt.wantCode != "" {
				if code, _ := got.errorCode(t); code != tt.wantCode {
					t.Errorf("code %q, want %q", code, tt.wantCode)
				}
			}
		})
	}
}

func TestBroadcastToUsers(t *testing.T) {
	e := newEnv(t, nil)
	u1a, u1b, u2, u3 := e.connect(t, "u1", hub.TransportWebSocket), e.connect(t, "u1", hub.TransportSSE),
		e.connect(t, "u2", hub.TransportWebSocket), e.connect(t, "u3", hub.TransportWebSocket)

	got := e.post(t, "/api/broadcast", keyCred,
		`{"userIds":["u1","u2","u1"],"type":"DRAFT_UPDATED","payload":{"draftId": 42}}`)
	if got.status != http.StatusAccepted {
		t.Fatalf("status %d (%s), want 202", got.status, got.body)
	}
	var ans usersAnswer
	if err := json.Unmarshal(got.body, &ans); err != nil {
		t.Fatalf("body %s: %v", got.body, err)
	}
	// one request is one event: one id for u1 and u2; u1 has two devices
	if len(ans.Events) != 2 || ans.Events[0].UserID != "u1" || ans.Events[1].UserID != "u2" ||
		ans.Events[0].ID == "" || ans.Events[0].ID != ans.Events[1].ID ||
		ans.Events[0].Devices != 2 || ans.Events[1].Devices != 1 {
		t.Fatalf("events %+v, want u1 (2 devices) then u2 (1), one id", ans.Events)
	}
	if !strings.Contains(string(got.body), `"devices":2`) {
		t.Errorf("body %s has no devices field", got.body)
	}
	ids := map[string]string{"u1": ans.Events[0].ID, "u2": ans.Events[1].ID}
	for _, c := range []*client{u1a, u1b, u2} {
		m := c.waitEvents(t, 1)[0]
		id, typ, payload := envelope(t, m)
		if want := ids[c.conn.UserID()]; id != want || typ != "DRAFT_UPDATED" || string(payload) != `{"draftId":42}` {
			t.Errorf("%s got id=%s type=%s payload=%s, want id=%s", c.conn.UserID(), id, typ, payload, want)
		}
	}
	// u3 was not named: a broadcast to all reaches it first.
	if got := e.post(t, "/api/broadcast", keyCred, `{"all":true,"type":"SENTINEL"}`); got.status != 202 {
		t.Fatalf("sentinel: %d %s", got.status, got.body)
	}
	if before := u3.waitType(t, "SENTINEL"); len(before) != 0 {
		t.Errorf("u3 got %d events before the sentinel, want 0", len(before))
	}
	// u1's connection saw its event exactly once (duplicate id in userIds).
	if before := u1a.waitType(t, "SENTINEL"); len(before) != 1 {
		t.Errorf("u1 got %d events before the sentinel, want 1", len(before))
	}
}

func TestBroadcastAll(t *testing.T) {
	e := newEnv(t, nil)
	clients := []*client{e.connect(t, "u1", hub.TransportWebSocket), e.connect(t, "u2", hub.TransportSSE), e.connect(t, "u3", hub.TransportWebSocket)}
	tests := []struct {
		name, give, wantPayload string
	}{
		{"string payload", `{"all":true,"type":"ANNOUNCEMENT","payload":"maintenance at 22:00"}`, `"maintenance at 22:00"`},
		{"missing payload is null", `{"all":true,"type":"PING"}`, `null`},
		{"array payload, userIds null", `{"all":true,"userIds":null,"type":"A:b.c-d_e","payload":[1,2]}`, `[1,2]`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.post(t, "/api/broadcast", bearer(mint(t, "svc", "service")), tt.give)
			if got.status != http.StatusAccepted {
				t.Fatalf("status %d (%s), want 202", got.status, got.body)
			}
			var ans map[string]any
			if err := json.Unmarshal(got.body, &ans); err != nil {
				t.Fatal(err)
			}
			id, _ := ans["id"].(string)
			if len(ans) != 2 || id == "" || ans["devices"] != float64(len(clients)) {
				t.Fatalf("body %s, want {\"id\":...,\"devices\":%d}", got.body, len(clients))
			}
			for _, c := range clients {
				gotID, _, payload := envelope(t, c.waitEvents(t, i+1)[i])
				if gotID != id || string(payload) != tt.wantPayload {
					t.Errorf("%s got id %s payload %s, want %s %s", c.conn.UserID(), gotID, payload, id, tt.wantPayload)
				}
			}
		})
	}
}

func TestBroadcastInvalid(t *testing.T) {
	e := newEnv(t, func(o *api.Options) { o.MaxPayload = 1 << 20 }) // room for 10,001 ids
	u1 := e.connect(t, "u1", hub.TransportWebSocket)
	many := make([]string, api.MaxUserIDs+1)
	for i := range many {
		many[i] = fmt.Sprintf("u%d", i)
	}
	manyJSON, _ := json.Marshal(many)
	tests := []struct {
		name      string
		give      string
		wantCode  string
		wantField string // must appear in the message
	}{
		{"empty body", ``, "invalid_json", "empty"},
		{"not JSON", `{"userIds":`, "invalid_json", ""},
		{"trailing garbage", `{"all":true,"type":"T"} x`, "invalid_json", ""},
		{"two objects", `{"all":true,"type":"T"}{"all":true,"type":"T"}`, "invalid_json", ""},
		{"array body", `[{"all":true,"type":"T"}]`, "invalid_request", "object"},
		{"null body", `null`, "invalid_request", "object"},
		{"userIds and all", `{"userIds":["u1"],"all":true,"type":"T"}`, "invalid_request", "userIds"},
		{"userIds and all names all", `{"userIds":["u1"],"all":true,"type":"T"}`, "invalid_request", "all"},
		{"neither", `{"type":"T","payload":1}`, "invalid_request", "userIds"},
		{"all false", `{"all":false,"type":"T"}`, "invalid_request", "userIds"},
		{"all not bool", `{"all":"yes","type":"T"}`, "invalid_request", "all"},
		{"empty userIds", `{"userIds":[],"type":"T"}`, "invalid_request", "userIds"},
		{"too many userIds", `{"userIds":` + string(manyJSON) + `,"type":"T"}`, "invalid_request", "userIds"},
		{"empty id", `{"userIds":["u1",""],"type":"T"}`, "invalid_request", "userIds[1]"},
		{"long id", `{"userIds":["` + strings.Repeat("a", 257) + `"],"type":"T"}`, "invalid_request", "userIds[0]"},
		{"id not string", `{"userIds":["u1",7],"type":"T"}`, "invalid_request", "userIds[1]"},
		{"userIds not array", `{"userIds":"u1","type":"T"}`, "invalid_request", "userIds"},
		{"missing type", `{"userIds":["u1"]}`, "invalid_request", "type"},
		{"empty type", `{"userIds":["u1"],"type":""}`, "invalid_request", "type"},
		{"bad type chars", `{"userIds":["u1"],"type":"has space"}`, "invalid_request", "type"},
		{"type too long", `{"userIds":["u1"],"type":"` + strings.Repeat("T", 129) + `"}`, "invalid_request", "type"},
		{"reserved type", `{"userIds":["u1"],"type":"hub.connected"}`, "invalid_request", "type"},
		{"type not string", `{"userIds":["u1"],"type":5}`, "invalid_request", "type"},
		{"unknown field", `{"userIds":["u1"],"type":"T","extra":1}`, "invalid_request", "extra"},
		{"wrong case field", `{"UserIds":["u1"],"type":"T"}`, "invalid_request", "UserIds"},
		{"empty idempotencyKey", `{"userIds":["u1"],"type":"T","idempotencyKey":""}`, "invalid_request", "idempotencyKey"},
		{"long idempotencyKey", `{"userIds":["u1"],"type":"T","idempotencyKey":"` + strings.Repeat("k", 257) + `"}`, "invalid_request", "idempotencyKey"},
		{"idempotencyKey not string", `{"userIds":["u1"],"type":"T","idempotencyKey":1}`, "invalid_request", "idempotencyKey"},
		{"key not string", `{"userIds":["u1"],"type":"T","key":1}`, "invalid_request", "key"},
		{"empty key", `{"userIds":["u1"],"type":"T","key":""}`, "invalid_request", "key"},
		{"bad key chars", `{"userIds":["u1"],"type":"T","key":"draft 42"}`, "invalid_request", "key"},
		{"key too long", `{"userIds":["u1"],"type":"T","key":"` + strings.Repeat("k", 129) + `"}`, "invalid_request", "key"},
		{"key and volatile", `{"userIds":["u1"],"type":"T","key":"draft:42","volatile":true}`, "invalid_request", "volatile"},
		{"key and volatile names key", `{"all":true,"type":"T","key":"draft:42","volatile":true}`, "invalid_request", "key"},
		{"volatile not bool", `{"userIds":["u1"],"type":"T","volatile":"yes"}`, "invalid_request", "volatile"},
		{"volatile a number", `{"userIds":["u1"],"type":"T","volatile":1}`, "invalid_request", "volatile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.post(t, "/api/broadcast", keyCred, tt.give)
			if got.status != http.StatusBadRequest {
				t.Fatalf("status %d (%s), want 400", got.status, got.body)
			}
			code, msg := got.errorCode(t)
			if code != tt.wantCode || !strings.Contains(msg, tt.wantField) {
				t.Errorf("got %s %q, want %s naming %q", code, msg, tt.wantCode, tt.wantField)
			}
		})
	}
	// nothing was published to u1 by any of them
	if got := e.post(t, "/api/broadcast", keyCred, `{"userIds":["u1"],"type":"SENTINEL"}`); got.status != 202 {
		t.Fatalf("sentinel: %d %s", got.status, got.body)
	}
	if before := u1.waitType(t, "SENTINEL"); len(before) != 0 {
		t.Errorf("u1 got %d events from refused requests", len(before))
	}
}

// chunked hides the length of a body so that it is sent chunked.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestPayloadTooLarge(t *testing.T) {
	const limit = 1024
	e := newEnv(t, func(o *api.Options) { o.MaxPayload = limit })
	body := func(payloadLen int) string {
		return `{"all":true,"type":"T","payload":"` + strings.Repeat("x", payloadLen) + `"}`
	}
	fits := body(limit - len(body(0)))
	over := body(limit - len(body(0)) + 1)
	tests := []struct {
		name       string
		give       func() io.Reader
		wantStatus int
	}{
		{"exactly the limit", func() io.Reader { return strings.NewReader(fits) }, 202},
		{"one byte over", func() io.Reader { return strings.NewReader(over) }, 413},
		{"one byte over, chunked", func() io.Reader { return chunked{strings.NewReader(over)} }, 413},
		{"far over, chunked", func() io.Reader { return chunked{strings.NewReader(body(10 * limit))} }, 413},
	}
	for _, path := range []string{"/api/broadcast", "/api/broadcast/batch"} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				if path == "/api/broadcast/batch" && tt.wantStatus == 202 {
					t.Skip("the batch wrapper makes it larger")
				}
				got := e.do(t, http.MethodPost, path, keyCred, tt.give())
				if got.status != tt.wantStatus {
					t.Fatalf("status %d (%s), want %d", got.status, got.body, tt.wantStatus)
				}
				if tt.wantStatus == 413 {
					if code, _ := got.errorCode(t); code != "payload_too_large" {
						t.Errorf("code %q, want payload_too_large", code)
					}
				}
			})
		}
	}
	// the default limit is 64 KiB
	d := newEnv(t, nil)
	if got := d.post(t, "/api/broadcast", keyCred, body(64<<10)); got.status != 413 {
		t.Errorf("default limit: status %d, want 413", got.status)
	}
	if got := d.post(t, "/api/broadcast", keyCred, body(60<<10)); got.status != 202 {
		t.Errorf("under the default limit: status %d (%s), want 202", got.status, got.body)
	}
}

func TestBatch(t *testing.T) {
	e := newEnv(t, nil)
	u1 := e.connect(t, "u1", hub.TransportWebSocket)
	u2 := e.connect(t, "u2", hub.TransportWebSocket)
	got := e.post(t, "/api/broadcast/batch", keyCred, `{"messages":[
		{"userIds":["u1"],"type":"FIRST","payload":1},
		{"userIds":["u1"],"type":"hub.bad","payload":2},
		{"all":true,"type":"THIRD","payload":3},
		"not an object",
		{"userIds":["u1"],"all":true,"type":"T"},
		{"userIds":["u1","u2"],"type":"SIXTH","payload":6,"extra":true},
		{"userIds":["u2"],"type":"SEVENTH","payload":7}
	]}`)
	if got.status != http.StatusAccepted {
		t.Fatalf("status %d (%s), want 202", got.status, got.body)
	}
	var ans struct {
		Results []struct {
			Events []struct{ UserID, ID string }   `json:"events"`
			ID     string                          `json:"id"`
			Error  *struct{ Code, Message string } `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(got.body, &ans); err != nil {
		t.Fatalf("body %s: %v", got.body, err)
	}
	if len(ans.Results) != 7 {
		t.Fatalf("%d results, want 7: %s", len(ans.Results), got.body)
	}
	r := ans.Results
	if len(r[0].Events) != 1 || r[0].Events[0].UserID != "u1" || r[0].Error != nil {
		t.Errorf("result 0: %+v", r[0])
	}
	wantErrs := map[int]string{1: "messages[1].type", 3: "messages[3]", 4: "messages[4].userIds", 5: "messages[5].\"extra\""}
	for i, field := range wantErrs {
		if r[i].Error == nil || r[i].Error.Code != "invalid_request" || !strings.Contains(r[i].Error.Message, field) {
			t.Errorf("result %d: %+v, want invalid_request naming %s", i, r[i].Error, field)
		}
	}
	if r[2].ID == "" || r[2].Error != nil {
		t.Errorf("result 2: %+v, want an id", r[2])
	}
	if len(r[6].Events) != 1 || r[6].Events[0].UserID != "u2" {
		t.Errorf("result 6: %+v", r[6])
	}
	// applied in order, refused ones skipped
	for _, c := range []struct {
		c    *client
		want []string // ids
	}{
		{u1, []string{r[0].Events[0].ID, r[2].ID}},
		{u2, []string{r[2].ID, r[6].Events[0].ID}},
	} {
		var ids []string
		for _, m := range c.c.waitEvents(t, len(c.want)) {
			ids = append(ids, m.ID)
		}
		if !slices.Equal(ids, c.want) {
			t.Errorf("%s got %v, want %v", c.c.conn.UserID(), ids, c.want)
		}
	}
}

func TestBatchInvalid(t *testing.T) {
	e := newEnv(t, nil)
	msgs := make([]string, api.MaxBatch+1)
	for i := range msgs {
		msgs[i] = `{"all":true,"type":"T"}`
	}
	tests := []struct {
		name      string
		give      string
		wantCode  string
		wantField string
	}{
		{"1001 messages", `{"messages":[` + strings.Join(msgs, ",") + `]}`, "invalid_request", "messages"},
		{"no messages", `{"messages":[]}`, "invalid_request", "messages"},
		{"missing messages", `{}`, "invalid_request", "messages"},
		{"messages not array", `{"messages":{}}`, "invalid_request", "messages"},
		{"unknown field", `{"messages":[{"all":true,"type":"T"}],"x":1}`, "invalid_request", "x"},
		{"bad JSON", `{"messages":[`, "invalid_json", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.post(t, "/api/broadcast/batch", keyCred, tt.give)
			if got.status != http.StatusBadRequest {
				t.Fatalf("status %d (%s), want 400", got.status, got.body)
			}
			code, msg := got.errorCode(t)
			if code != tt.wantCode || !strings.Contains(msg, tt.wantField) {
				t.Errorf("got %s %q, want %s naming %q", code, msg, tt.wantCode, tt.wantField)
			}
		})
	}
	// exactly 1000 is fine
	got := e.post(t, "/api/broadcast/batch", keyCred, `{"messages":[`+strings.Join(msgs[:api.MaxBatch], ",")+`]}`)
	if got.status != http.StatusAccepted {
		t.Fatalf("1000 messages: status %d, want 202", got.status)
	}
}

func TestDisconnect(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.connect(t, "u1", hub.TransportWebSocket), e.connect(t, "u1", hub.TransportSSE)
	other := e.connect(t, "u2", hub.TransportWebSocket)
	tests := []struct {
		name       string
		givePath   string
		wantStatus int
		wantBody   string
	}{
		{"two connections", "/api/users/u1/disconnect", 200, `{"closed":2}`},
		{"unknown user", "/api/users/nobody/disconnect", 200, `{"closed":0}`},
		{"escaped id", "/api/users/a%2Fb/disconnect", 200, `{"closed":0}`},
		{"id too long", "/api/users/" + strings.Repeat("x", 257) + "/disconnect", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.post(t, tt.givePath, keyCred, "")
			if got.status != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", got.status, got.body, tt.wantStatus)
			}
			if tt.wantBody != "" && strings.TrimSpace(string(got.body)) != tt.wantBody {
				t.Errorf("body %s, want %s", got.body, tt.wantBody)
			}
			if tt.wantStatus == 400 {
				if code, msg := got.errorCode(t); code != "invalid_request" || !strings.Contains(msg, "userId") {
					t.Errorf("got %s %q", code, msg)
				}
			}
		})
	}
	for _, c := range []*client{a, b} {
		c.poll(t, "close reason", func() bool { return c.reason != nil })
		if *c.reason != hub.ReasonDisconnected {
			t.Errorf("reason %v, want %v", *c.reason, hub.ReasonDisconnected)
		}
	}
	// u2 is untouched: it still gets events
	if got := e.post(t, "/api/broadcast", keyCred, `{"userIds":["u2"],"type":"SENTINEL"}`); got.status != 202 {
		t.Fatalf("sentinel: %d", got.status)
	}
	other.waitType(t, "SENTINEL")
	if other.reason != nil {
		t.Errorf("u2 closed with %v", *other.reason)
	}
}

// TestConnections lists a user's connections: 200 with their fields
// (connectedAt RFC 3339 with milliseconds, UTC), [] for none, 400 for an
// id that is too long, and each endpoint's own method only.
func TestConnections(t *testing.T) {
	e := newEnv(t, nil)
	before := time.Now().Add(-time.Second)
	a := e.connect(t, "u1", hub.TransportWebSocket)
	b := e.connect(t, "u1", hub.TransportSSE)
	e.connect(t, "u2", hub.TransportWebSocket)
	got := e.do(t, http.MethodGet, "/api/users/u1/connections", keyCred, nil)
	if got.status != http.StatusOK {
		t.Fatalf("status %d (%s)", got.status, got.body)
	}
	var body struct {
		UserID      string `json:"userId"`
		Connections []struct {
			ConnectionID string `json:"connectionId"`
			Transport    string `json:"transport"`
			Node         string `json:"node"`
			ConnectedAt  string `json:"connectedAt"`
		} `json:"connections"`
	}
	if err := json.Unmarshal(got.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.UserID != "u1" || len(body.Connections) != 2 {
		t.Fatalf("body %s, want u1 with 2 connections", got.body)
	}
	for i, want := range []struct {
		c  *client
		tr string
	}{{a, "websocket"}, {b, "sse"}} {
		c := body.Connections[i]
		at, err := time.Parse(time.RFC3339, c.ConnectedAt)
		if c.ConnectionID != want.c.conn.ID() || c.Transport != want.tr || c.Node != "hub-1" || err != nil ||
			len(c.ConnectedAt) != len(hub.TimeFormat) || at.Before(before) || at.After(time.Now()) {
			t.Errorf("connection %d = %+v, want %s %s on hub-1 connected since the test began", i, c, want.c.conn.ID(), want.tr)
		}
	}
	if got := e.do(t, http.MethodGet, "/api/users/nobody/connections", keyCred, nil); got.status != 200 ||
		strings.TrimSpace(string(got.body)) != `{"userId":"nobody","connections":[]}` {
		t.Errorf("a user with none: %d %s", got.status, got.body)
	}
	if got := e.do(t, http.MethodGet, "/api/users/"+strings.Repeat("x", 257)+"/connections", keyCred, nil); got.status != 400 {
		t.Errorf("id too long: %d %s", got.status, got.body)
	}
	if got := e.post(t, "/api/users/u1/connections", keyCred, ""); got.status != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d %s, want 405", got.status, got.body)
	}
	e.hub.Unregister(a.conn)
	if got := e.do(t, http.MethodGet, "/api/users/u1/connections", keyCred, nil); !strings.Contains(string(got.body), b.conn.ID()) ||
		strings.Contains(string(got.body), a.conn.ID()) {
		t.Errorf("after one left: %s", got.body)
	}
}

func TestStats(t *testing.T) {
	admin := bearer(mint(t, "root", "admin"))
	tests := []struct {
		name        string
		giveCluster func(context.Context) (any, error)
		wantCluster any
	}{
		{"node only", nil, nil},
		{"with cluster", func(context.Context) (any, error) {
			return map[string]int{"totalConnections": 10}, nil
		}, map[string]any{"totalConnections": float64(10)}},
		{"cluster unavailable", func(context.Context) (any, error) {
			return nil, errors.New("redis down")
		}, map[string]any{"error": map[string]any{"code": "unavailable", "message": "cluster stats unavailable"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(o *api.Options) { o.Cluster = tt.giveCluster })
			e.connect(t, "u1", hub.TransportWebSocket)
			e.connect(t, "u1", hub.TransportSSE)
			e.connect(t, "u2", hub.TransportWebSocket)
			got := e.do(t, http.MethodGet, "/api/websocket/stats", admin, nil)
			if got.status != 200 {
				t.Fatalf("status %d (%s)", got.status, got.body)
			}
			var body map[string]any
			if err := json.Unmarshal(got.body, &body); err != nil {
				t.Fatal(err)
			}
			up, ok := body["uptimeSeconds"].(float64)
			if !ok || up < 0 {
				t.Errorf("uptimeSeconds %v", body["uptimeSeconds"])
			}
			delete(body, "uptimeSeconds")
			want := map[string]any{
				"totalConnections": float64(3),
				"activeUsers":      float64(2),
				"connections":      map[string]any{"websocket": float64(2), "sse": float64(1)},
				"node":             "hub-1",
			}
			if tt.wantCluster != nil {
				want["cluster"] = tt.wantCluster
			}
			gotJSON, _ := json.Marshal(body)
			wantJSON, _ := json.Marshal(want)
			if !bytes.Equal(gotJSON, wantJSON) {
				t.Errorf("stats %s, want %s (+uptimeSeconds)", gotJSON, wantJSON)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	var mu sync.Mutex
	var readyErr error
	e := newEnv(t, func(o *api.Options) {
		o.Ready = func() error { mu.Lock(); defer mu.Unlock(); return readyErr }
	})
	setReady := func(err error) { mu.Lock(); readyErr = err; mu.Unlock() }
	tests := []struct {
		name       string
		setup      func()
		path       string
		wantStatus int
		wantBody   string
		wantCode   string
	}{
		{"healthz", nil, "/healthz", 200, `{"status":"ok"}`, ""},
		{"ready", nil, "/readyz", 200, `{"status":"ready"}`, ""},
		{"not ready", func() { setReady(errors.New("broker unreachable")) }, "/readyz", 503, "", "not_ready"},
		{"healthz while not ready", nil, "/healthz", 200, `{"status":"ok"}`, ""},
		{"ready again", func() { setReady(nil) }, "/readyz", 200, `{"status":"ready"}`, ""},
		{"draining", func() {
			if err := e.hub.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
		}, "/readyz", 503, "", "shutting_down"},
		{"healthz while draining", nil, "/healthz", 200, `{"status":"ok"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			got := e.do(t, http.MethodGet, tt.path, cred{}, nil)
			if got.status != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", got.status, got.body, tt.wantStatus)
			}
			if tt.wantBody != "" && strings.TrimSpace(string(got.body)) != tt.wantBody {
				t.Errorf("body %s, want %s", got.body, tt.wantBody)
			}
			if tt.wantCode != "" {
				if code, _ := got.errorCode(t); code != tt.wantCode {
					t.Errorf("code %q, want %q", code, tt.wantCode)
				}
			}
		})
	}
	// publishing while draining still answers (the node keeps the history)
	if got := e.post(t, "/api/broadcast", keyCred, `{"all":true,"type":"T"}`); got.status != 202 {
		t.Errorf("broadcast while draining: %d %s", got.status, got.body)
	}
}

func TestRoutes(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, "hub_up 1\n")
	})
	tests := []struct {
		name       string
		mod        func(*api.Options)
		method     string
		path       string
		wantStatus int
		wantBody   string
	}{
		{"metrics", func(o *api.Options) { o.Metrics = metrics }, "GET", "/metrics", 200, "hub_up 1"},
		{"no metrics", nil, "GET", "/metrics", 404, ""},
		{"dev tokens", func(o *api.Options) {
			o.DevTokens = func() any { return map[string]string{"user": "u-tok", "admin": "a-tok"} }
		}, "GET", "/api/dev/tokens", 200, `{"admin":"a-tok","user":"u-tok"}`},
		{"no dev tokens", nil, "GET", "/api/dev/tokens", 404, ""},
		{"GET broadcast", nil, "GET", "/api/broadcast", 405, `"method_not_allowed"`},
		{"POST healthz", nil, "POST", "/healthz", 405, `"method_not_allowed"`},
		{"HEAD healthz", nil, "HEAD", "/healthz", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.mod)
			req, _ := http.NewRequest(tt.method, e.srv.URL+tt.path, nil)
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

func TestIdempotency(t *testing.T) {
	e := newEnv(t, nil)
	u1 := e.connect(t, "u1", hub.TransportWebSocket)
	svc := bearer(mint(t, "svc", "service"))
	const body = `{"userIds":["u1"],"type":"ONCE","payload":1,"idempotencyKey":"k-1"}`

	first := e.post(t, "/api/broadcast", svc, body)
	if first.status != 202 {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	tests := []struct {
		name      string
		give      cred
		giveBody  string
		wantSame  bool
		wantEvent bool
	}{
		{"same caller, same key", svc, body, true, false},
		{"same caller, other token", bearer(mint(t, "svc", "admin")), body, true, false},
		{"same caller, same key, other body", svc, `{"all":true,"type":"OTHER","idempotencyKey":"k-1"}`, true, false},
		{"other caller, same key", keyCred, body, false, true},
		{"same caller, other key", svc, strings.Replace(body, "k-1", "k-2", 1), false, true},
		{"no key", svc, `{"userIds":["u1"],"type":"ONCE","payload":1}`, false, true},
	}
	u1.waitEvents(t, 1)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.post(t, "/api/broadcast", tt.give, tt.giveBody)
			if got.status != 202 {
				t.Fatalf("status %d %s", got.status, got.body)
			}
			if same := bytes.Equal(got.body, first.body); same != tt.wantSame {
				t.Errorf("body %s, first %s: same=%v, want %v", got.body, first.body, same, tt.wantSame)
			}
			// count what u1 got up to a sentinel
			n := len(u1.events)
			sentinel := fmt.Sprintf("S-%d", time.Now().UnixNano())
			if r := e.post(t, "/api/broadcast", keyCred, `{"userIds":["u1"],"type":"`+sentinel+`"}`); r.status != 202 {
				t.Fatalf("sentinel: %d", r.status)
			}
			newEvents := len(u1.waitType(t, sentinel)) - n
			if want := map[bool]int{false: 0, true: 1}[tt.wantEvent]; newEvents != want {
				t.Errorf("%d new events, want %d", newEvents, want)
			}
		})
	}
}

func TestIdempotencyConcurrent(t *testing.T) {
	e := newEnv(t, nil)
	u1 := e.connect(t, "u1", hub.TransportWebSocket)
	const n = 32
	bodies := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			path, body := "/api/broadcast", `{"userIds":["u1"],"type":"ONCE","idempotencyKey":"race"}`
			if i%2 == 1 {
				path, body = "/api/broadcast/batch", `{"messages":[`+body+`]}`
			}
			r := e.post(t, path, keyCred, body)
			if r.status != 202 {
				t.Errorf("request %d: %d %s", i, r.status, r.body)
				return
			}
			if i%2 == 1 {
				var b struct{ Results []json.RawMessage }
				if err := json.Unmarshal(r.body, &b); err != nil || len(b.Results) != 1 {
					t.Errorf("batch body %s", r.body)
					return
				}
				r.body = b.Results[0]
			}
			bodies[i] = bytes.TrimSpace(r.body)
		})
	}
	wg.Wait()
	for i := range bodies {
		if !bytes.Equal(bodies[i], bodies[0]) {
			t.Errorf("answer %d %s differs from %s", i, bodies[i], bodies[0])
		}
	}
	if r := e.post(t, "/api/broadcast", keyCred, `{"userIds":["u1"],"type":"SENTINEL"}`); r.status != 202 {
		t.Fatalf("sentinel: %d", r.status)
	}
	if before := u1.waitType(t, "SENTINEL"); len(before) != 1 {
		t.Errorf("%d events published, want 1", len(before))
	}
}

func Example() {
	h := hub.New(hub.Options{Node: "hub-1"})
	h.Start()
	defer h.Stop()
	v, err := auth.New(context.Background(), auth.Options{Secret: "example-secret-example-secret-32", APIKeys: []string{"example-key"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	a := api.New(api.Options{Hub: h, Auth: v})
	mux := http.NewServeMux()
	a.RegisterPublic(mux)
	a.RegisterInternal(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	req, _ := http.NewRequest("POST", srv.URL+"/api/broadcast", strings.NewReader(`{"userIds":["u1"],"type":"HELLO"}`))
	req.Header.Set("X-API-Key", "example-key")
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode)
	// Output: 202
}

// TestDevicesInAnswers: every broadcast answer carries devices (per user,
// for all, in each batch result), and a repeated idempotencyKey answers
// the first count even when the user's devices changed since.
func TestDevicesInAnswers(t *testing.T) {
	e := newEnv(t, nil)
	e.connect(t, "u1", hub.TransportWebSocket)
	e.connect(t, "u2", hub.TransportSSE)
	body := `{"userIds":["u1","u3"],"type":"T","idempotencyKey":"k-devices"}`
	first := e.post(t, "/api/broadcast", keyCred, body)
	var ans usersAnswer
	if err := json.Unmarshal(first.body, &ans); err != nil || first.status != 202 ||
		ans.Events[0].Devices != 1 || ans.Events[1].Devices != 0 {
		t.Fatalf("first answer %d %s, want u1 1 device and u3 none", first.status, first.body)
	}
	e.connect(t, "u1", hub.TransportSSE)
	if again := e.post(t, "/api/broadcast", keyCred, body); string(again.body) != string(first.body) {
		t.Fatalf("repeated key answered %s, want the first answer %s", again.body, first.body)
	}
	got := e.post(t, "/api/broadcast/batch", keyCred,
		`{"messages":[{"userIds":["u1"],"type":"T"},{"all":true,"type":"T"},{"userIds":["u1","u3"],"type":"T","idempotencyKey":"k-devices"}]}`)
	var batch struct {
		Results []json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(got.body, &batch); err != nil || got.status != 202 || len(batch.Results) != 3 {
		t.Fatalf("batch %d %s", got.status, got.body)
	}
	if !strings.Contains(string(batch.Results[0]), `"devices":2}`) {
		t.Errorf("batch result 0 = %s, want u1 with 2 devices", batch.Results[0])
	}
	if !strings.Contains(string(batch.Results[1]), `"devices":3}`) {
		t.Errorf("batch result 1 = %s, want all with 3 devices", batch.Results[1])
	}
	if string(batch.Results[2])+"\n" != string(first.body) {
		t.Errorf("batch result 2 = %s, want the first answer of its key %s", batch.Results[2], first.body)
	}
}
