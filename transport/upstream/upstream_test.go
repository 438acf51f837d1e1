package upstream_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/transport/upstream"
	"github.com/hubd/hub/transport/ws"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const upstreamSecret = "upstream-secret-42"

// call is one request the fake backend received.
type call struct {
	UserID         string          `json:"userId"`
	ConnectionID   *string         `json:"connectionId"`
	IdempotencyKey string          `json:"idempotencyKey"`
	Event          json.RawMessage `json:"event"`
	sigOK          bool
	contentType    string
}

// backend is a fake application backend that records every call, checks
// its signature and answers with reply (200 {"ok":true} by default).
type backend struct {
	srv *httptest.Server

	mu    sync.Mutex
	calls []call
	reply func(w http.ResponseWriter, r *http.Request, n int)
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var c call
		if err := json.Unmarshal(body, &c); err != nil {
			t.Errorf("backend got a non-JSON body %q", body)
		}
		m := hmac.New(sha256.New, []byte(upstreamSecret))
		m.Write(body)
		want := "sha256=" + hex.EncodeToString(m.Sum(nil))
		c.sigOK = hmac.Equal([]byte(r.Header.Get("X-Hub-Signature")), []byte(want))
		c.contentType = r.Header.Get("Content-Type")
		b.mu.Lock()
		b.calls = append(b.calls, c)
		n := len(b.calls)
		reply := b.reply
		b.mu.Unlock()
		if reply != nil {
			reply(w, r, n)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"ok":true,"n":%d}`, n)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) setReply(f func(w http.ResponseWriter, r *http.Request, n int)) {
	b.mu.Lock()
	b.reply = f
	b.mu.Unlock()
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.calls)
}

func (b *backend) call(t *testing.T, i int) call {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if i >= len(b.calls) {
		t.Fatalf("backend has %d calls, want call #%d", len(b.calls), i+1)
	}
	return b.calls[i]
}

// blockReplies makes the backend hold every call until release is closed
// (or the hub gives up on it) and then answer 200 {"ok":true}.
func (b *backend) blockReplies() (release func()) {
	ch := make(chan struct{})
	b.setReply(func(w http.ResponseWriter, r *http.Request, n int) {
		select {
		case <-ch:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"ok":true,"n":%d}`, n)
		case <-r.Context().Done():
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// env is a hub with the WebSocket endpoint and /api/send on a real server.
type env struct {
	srv *httptest.Server
	up  *upstream.Upstream
}

func newEnv(t *testing.T, be *backend, mod func(*upstream.Options)) *env {
	t.Helper()
	h := hub.New(hub.Options{Node: "n1", Logger: slog.New(slog.DiscardHandler)})
	h.Start()
	v, err := auth.New(context.Background(), auth.Options{Secret: hubtest.Secret})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	o := upstream.Options{
		Secret:     upstreamSecret,
		Timeout:    5 * time.Second,
		MaxPayload: 64 << 10,
		Auth:       v,
		Logger:     slog.New(slog.DiscardHandler),
	}
	if be != nil {
		o.URL = be.srv.URL
	}
	if mod != nil {
		mod(&o)
	}
	u := upstream.New(o)
	wsh := ws.New(ws.Options{Hub: h, Auth: v, OnMessage: u.HandleWS, MaxSendFrame: o.MaxPayload,
		Logger: slog.New(slog.DiscardHandler)})
	mux := http.NewServeMux()
	mux.Handle("/ws", wsh)
	mux.Handle("/api/send", u.SendHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = h.Shutdown(ctx)
		srv.Close()
		wsh.Wait()
		u.Close()
		h.Stop()
		v.Close()
	})
	return &env{srv: srv, up: u}
}

// wsClient is a WebSocket client of the hub.
type wsClient struct {
	t      *testing.T
	c      *websocket.Conn
	connID string
}

func (e *env) dial(t *testing.T, user string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/ws?token="+hubtest.Token(t, user, time.Hour), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.SetReadLimit(1 << 20)
	w := &wsClient{t: t, c: c}
	t.Cleanup(func() { _ = c.CloseNow() })
	f := w.next("hub.connected")
	var p struct {
		ConnectionID string `json:"connectionId"`
	}
	_ = json.Unmarshal(f.Payload, &p)
	w.connID = p.ConnectionID
	return w
}

type frame struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// next returns the next frame of one of types, skipping the others.
func (w *wsClient) next(types ...string) frame {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, data, err := w.c.Read(ctx)
		if err != nil {
			w.t.Fatalf("read (waiting for %v): %v", types, err)
		}
		var f frame
		if err := json.Unmarshal(data, &f); err != nil {
			w.t.Fatalf("frame %q: %v", data, err)
		}
		for _, typ := range types {
			if f.Type == typ {
				return f
			}
		}
	}
}

func (w *wsClient) sendRaw(v any) {
	w.t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		w.t.Fatalf("marshal: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, data); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

func sendFrame(ref, key, typ string, payload any) map[string]any {
	return map[string]any{"type": "hub.send", "ref": ref, "idempotencyKey": key,
		"event": map[string]any{"type": typ, "payload": payload}}
}

// answer is a hub.ack or hub.nack payload (or an /api/send body).
type answer struct {
	kind      string
	Ref       string          `json:"ref"`
	Status    int             `json:"status"`
	Result    json.RawMessage `json:"result"`
	Retryable bool            `json:"retryable"`
	Error     *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (a answer) code() string {
	if a.Error == nil {
		return ""
	}
	return a.Error.Code
}

// send sends one operation and returns its answer (answers to other refs
// are an error: the tests send one at a time).
func (w *wsClient) send(ref, key, typ string, payload any) answer {
	w.t.Helper()
	w.sendRaw(sendFrame(ref, key, typ, payload))
	return w.answer(ref)
}

func (w *wsClient) answer(ref string) answer {
	w.t.Helper()
	f := w.next("hub.ack", "hub.nack")
	a := answer{kind: f.Type}
	if err := json.Unmarshal(f.Payload, &a); err != nil {
		w.t.Fatalf("answer %s: %v", f.Payload, err)
	}
	if a.Ref != ref {
		w.t.Fatalf("answer ref = %q, want %q (%s)", a.Ref, ref, f.Payload)
	}
	return a
}

func TestWSAck(t *testing.T) {
	be := newBackend(t)
	e := newEnv(t, be, nil)
	c := e.dial(t, "u1")

	a := c.send("r1", "k-1", "ORDER_UPDATE", map[string]any{"id": 7})
	if a.kind != "hub.ack" || a.Status != 200 || string(a.Result) != `{"ok":true,"n":1}` {
		t.Fatalf("answer = %+v %s, want ack 200 with the backend's result", a, a.Result)
	}
	got := be.call(t, 0)
	if !got.sigOK {
		t.Error("the backend saw an invalid X-Hub-Signature")
	}
	if got.contentType != "application/json" {
		t.Errorf("Content-Type = %q", got.contentType)
	}
	if got.UserID != "u1" || got.IdempotencyKey != "k-1" {
		t.Errorf("call = %+v, want userId u1 and key k-1", got)
	}
	if got.ConnectionID == nil || *got.ConnectionID != c.connID || !strings.HasPrefix(c.connID, "c-") {
		t.Errorf("connectionId = %v, want %q", got.ConnectionID, c.connID)
	}
	var ev struct {
		Type    string         `json:"type"`
		Payload map[string]any `json:"payload"`
	}
	if err := json.Unmarshal(got.Event, &ev); err != nil || ev.Type != "ORDER_UPDATE" || ev.Payload["id"] != float64(7) {
		t.Errorf("event = %s, want ORDER_UPDATE {id:7}", got.Event)
	}
	if n := be.count(); n != 1 {
		t.Errorf("backend calls = %d, want 1", n)
	}
}

func TestWSBackendAnswers(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		wantKind   string
		wantCode   string
		wantRetry  bool
		wantResult string
		wantCalls  int // after the same key is sent twice
	}{
		{"200 json", 200, `{"id": "o-1"}`, "hub.ack", "", false, `{"id":"o-1"}`, 1},
		{"201 not json", 201, `created`, "hub.ack", "", false, `null`, 1},
		{"204 empty", 204, ``, "hub.ack", "", false, `null`, 1},
		{"400", 400, `{"reason":"bad"}`, "hub.nack", "upstream_rejected", false, `{"reason":"bad"}`, 1},
		{"409", 409, ``, "hub.nack", "upstream_rejected", false, ``, 1},
		{"500", 500, `oops`, "hub.nack", "upstream_error", true, ``, 2},
		{"503", 503, ``, "hub.nack", "upstream_error", true, ``, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newBackend(t)
			be.setReply(func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			e := newEnv(t, be, nil)
			c := e.dial(t, "u1")
			for i, ref := range []string{"r1", "r2"} {
				a := c.send(ref, "k-same", "ORDER_UPDATE", nil)
				if a.kind != tt.wantKind || a.code() != tt.wantCode || a.Retryable != tt.wantRetry {
					t.Fatalf("send %d: answer = %s %+v, want %s %q retryable=%v", i+1, a.kind, a, tt.wantKind, tt.wantCode, tt.wantRetry)
				}
				if a.Status != tt.status {
					t.Errorf("send %d: status = %d, want %d", i+1, a.Status, tt.status)
				}
				if tt.wantResult != "" && string(a.Result) != tt.wantResult {
					t.Errorf("send %d: result = %s, want %s", i+1, a.Result, tt.wantResult)
				}
				if a.kind == "hub.nack" && (a.Error.Message == "") {
					t.Errorf("send %d: nack without a message", i+1)
				}
			}
			if n := be.count(); n != tt.wantCalls {
				t.Errorf("backend calls = %d, want %d (final outcomes are remembered, retryable ones not)", n, tt.wantCalls)
			}
		})
	}
}

func TestWSTimeoutAndUnavailable(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		be := newBackend(t)
		release := be.blockReplies()
		defer release()
		e := newEnv(t, be, func(o *upstream.Options) { o.Timeout = 100 * time.Millisecond })
		c := e.dial(t, "u1")
		a := c.send("r1", "k-1", "ORDER_UPDATE", nil)
		if a.kind != "hub.nack" || a.code() != "upstream_timeout" || !a.Retryable {
			t.Fatalf("answer = %s %+v, want retryable upstream_timeout", a.kind, a)
		}
		release()
		be.setReply(nil)
		a = c.send("r2", "k-1", "ORDER_UPDATE", nil)
		if a.kind != "hub.ack" || be.count() != 2 {
			t.Fatalf("retry: answer = %s %+v with %d calls, want an ack from a second call", a.kind, a, be.count())
		}
	})
	t.Run("unavailable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		e := newEnv(t, nil, func(o *upstream.Options) { o.URL = "http://" + addr + "/ops" })
		c := e.dial(t, "u1")
		a := c.send("r1", "k-1", "ORDER_UPDATE", nil)
		if a.kind != "hub.nack" || a.code() != "upstream_unavailable" || !a.Retryable {
			t.Fatalf("answer = %s %+v, want retryable upstream_unavailable", a.kind, a)
		}
	})
}

func TestWSIdempotencyLostAck(t *testing.T) {
	be := newBackend(t)
	release := be.blockReplies()
	defer release()
	e := newEnv(t, be, nil)

	c := e.dial(t, "u1")
	c.sendRaw(sendFrame("r1", "k-lost", "ORDER_UPDATE", map[string]int{"n": 1}))
	hubtest.Eventually(t, 10*time.Second, "the backend to see the first send", func() bool { return be.count() == 1 })
	_ = c.c.CloseNow() // the ack is lost

	c2 := e.dial(t, "u1")
	c2.sendRaw(sendFrame("r2", "k-lost", "ORDER_UPDATE", map[string]int{"n": 1}))
	release() // the first call completes while the repeat waits for it
	a := c2.answer("r2")
	if a.kind != "hub.ack" || string(a.Result) != `{"ok":true,"n":1}` {
		t.Fatalf("repeat answer = %s %+v %s, want the first call's ack", a.kind, a, a.Result)
	}
	// once more, from memory
	a = c2.send("r3", "k-lost", "ORDER_UPDATE", map[string]int{"n": 1})
	if a.kind != "hub.ack" || string(a.Result) != `{"ok":true,"n":1}` {
		t.Fatalf("third answer = %s %+v, want the remembered ack", a.kind, a)
	}
	if n := be.count(); n != 1 {
		t.Fatalf("backend calls = %d, want 1", n)
	}
	// keys are per user
	c3 := e.dial(t, "u2")
	if a := c3.send("r1", "k-lost", "ORDER_UPDATE", nil); a.kind != "hub.ack" || be.count() != 2 || be.call(t, 1).UserID != "u2" {
		t.Fatalf("other user: %s %+v with %d calls, want a call of its own", a.kind, a, be.count())
	}
}

func TestWSLostAckAfterCompletion(t *testing.T) {
	be := newBackend(t)
	e := newEnv(t, be, nil)
	c := e.dial(t, "u1")
	c.sendRaw(sendFrame("r1", "k-1", "ORDER_UPDATE", nil))
	_ = c.c.CloseNow()
	hubtest.Eventually(t, 10*time.Second, "the backend to see the send", func() bool { return be.count() == 1 })
	c2 := e.dial(t, "u1")
	if a := c2.send("r2", "k-1", "ORDER_UPDATE", nil); a.kind != "hub.ack" || string(a.Result) != `{"ok":true,"n":1}` {
		t.Fatalf("answer = %s %+v, want the remembered ack", a.kind, a)
	}
	if n := be.count(); n != 1 {
		t.Fatalf("backend calls = %d, want 1", n)
	}
}

func TestWSValidation(t *testing.T) {
	be := newBackend(t)
	e := newEnv(t, be, nil)
	c := e.dial(t, "u1")
	ev := map[string]any{"type": "ORDER_UPDATE", "payload": 1}
	tests := []struct {
		name    string
		give    map[string]any
		wantRef string
	}{
		{"missing ref", map[string]any{"type": "hub.send", "idempotencyKey": "k", "event": ev}, ""},
		{"ref not a string", map[string]any{"type": "hub.send", "ref": 5, "idempotencyKey": "k", "event": ev}, ""},
		{"missing key", map[string]any{"type": "hub.send", "ref": "r1", "event": ev}, "r1"},
		{"empty key", map[string]any{"type": "hub.send", "ref": "r2", "idempotencyKey": "", "event": ev}, "r2"},
		{"key too long", map[string]any{"type": "hub.send", "ref": "r3", "idempotencyKey": strings.Repeat("k", 257), "event": ev}, "r3"},
		{"key not printable", map[string]any{"type": "hub.send", "ref": "r4", "idempotencyKey": "k\n1", "event": ev}, "r4"},
		{"key not ascii", map[string]any{"type": "hub.send", "ref": "r5", "idempotencyKey": "clé", "event": ev}, "r5"},
		{"missing event", map[string]any{"type": "hub.send", "ref": "r6", "idempotencyKey": "k"}, "r6"},
		{"event not an object", map[string]any{"type": "hub.send", "ref": "r7", "idempotencyKey": "k", "event": "x"}, "r7"},
		{"missing event type", map[string]any{"type": "hub.send", "ref": "r8", "idempotencyKey": "k", "event": map[string]any{"payload": 1}}, "r8"},
		{"reserved event type", map[string]any{"type": "hub.send", "ref": "r9", "idempotencyKey": "k", "event": map[string]any{"type": "hub.x"}}, "r9"},
		{"bad event type", map[string]any{"type": "hub.send", "ref": "r10", "idempotencyKey": "k", "event": map[string]any{"type": "a b"}}, "r10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			c.sendRaw(tt.give)
			a := c.answer(tt.wantRef)
			if a.kind != "hub.nack" || a.code() != "invalid_request" || a.Retryable {
				t.Fatalf("answer = %s %+v, want final invalid_request", a.kind, a)
			}
		})
	}
	c.t = t
	// a key of 256 printable bytes, spaces included, is fine
	if a := c.send("ok", strings.Repeat("k ", 128), "ORDER_UPDATE", nil); a.kind != "hub.ack" {
		t.Fatalf("valid key: %s %+v", a.kind, a)
	}
	if n := be.count(); n != 1 {
		t.Fatalf("backend calls = %d, want 1 (invalid sends never reach it)", n)
	}
}

func TestWSLargeFrame(t *testing.T) {
	be := newBackend(t)
	e := newEnv(t, be, func(o *upstream.Options) { o.MaxPayload = 32 << 10 })
	c := e.dial(t, "u1")
	big := strings.Repeat("x", 10<<10) // over the 4 KiB client frame limit
	a := c.send("r1", "k-1", "ORDER_UPDATE", map[string]string{"blob": big})
	if a.kind != "hub.ack" {
		t.Fatalf("answer = %s %+v, want ack", a.kind, a)
	}
	var ev struct {
		Payload struct {
			Blob string `json:"blob"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(be.call(t, 0).Event, &ev); err != nil || ev.Payload.Blob != big {
		t.Fatalf("backend payload lost its %d bytes", len(big))
	}
}

func TestWSRateLimit(t *testing.T) {
	t.Run("bucket", func(t *testing.T) {
		be := newBackend(t)
		e := newEnv(t, be, func(o *upstream.Options) { o.Rate = 0.001 }) // burst 1, no refill during the test
		c := e.dial(t, "u1")
		if a := c.send("r1", "k-1", "ORDER_UPDATE", nil); a.kind != "hub.ack" {
			t.Fatalf("first: %s %+v", a.kind, a)
		}
		a := c.send("r2", "k-2", "ORDER_UPDATE", nil)
		if a.kind != "hub.nack" || a.code() != "rate_limited" || !a.Retryable {
			t.Fatalf("second: %s %+v, want retryable rate_limited", a.kind, a)
		}
		// the limit is per connection
		c2 := e.dial(t, "u1")
		if a := c2.send("r3", "k-3", "ORDER_UPDATE", nil); a.kind != "hub.ack" {
			t.Fatalf("other connection: %s %+v", a.kind, a)
		}
		if n := be.count(); n != 2 {
			t.Fatalf("backend calls = %d, want 2", n)
		}
	})
	t.Run("in flight", func(t *testing.T) {
		be := newBackend(t)
		release := be.blockReplies()
		defer release()
		e := newEnv(t, be, func(o *upstream.Options) { o.Rate = -1 })
		c := e.dial(t, "u1")
		for i := range upstream.MaxInflightPerConn {
			c.sendRaw(sendFrame(fmt.Sprintf("r%d", i), fmt.Sprintf("k-%d", i), "ORDER_UPDATE", nil))
		}
		hubtest.Eventually(t, 10*time.Second, "every call to be in flight", func() bool { return be.count() == upstream.MaxInflightPerConn })
		a := c.send("over", "k-over", "ORDER_UPDATE", nil)
		if a.kind != "hub.nack" || a.code() != "rate_limited" || !a.Retryable {
			t.Fatalf("over the in-flight bound: %s %+v, want rate_limited", a.kind, a)
		}
		release()
		acks := 0
		for range upstream.MaxInflightPerConn {
			if f := c.next("hub.ack", "hub.nack"); f.Type == "hub.ack" {
				acks++
			}
		}
		if acks != upstream.MaxInflightPerConn {
			t.Fatalf("acks = %d, want %d", acks, upstream.MaxInflightPerConn)
		}
	})
}

func TestDisabled(t *testing.T) {
	e := newEnv(t, nil, nil)
	if e.up.Enabled() {
		t.Fatal("Enabled() = true without a URL")
	}
	c := e.dial(t, "u1")
	a := c.send("r1", "k-1", "ORDER_UPDATE", nil)
	if a.kind != "hub.nack" || a.code() != "upstream_disabled" || a.Retryable {
		t.Fatalf("ws: %s %+v, want final upstream_disabled", a.kind, a)
	}
	status, body := postSend(t, e, hubtest.Token(t, "u1", time.Hour), `{"idempotencyKey":"k-1","event":{"type":"ORDER_UPDATE"}}`)
	if status != http.StatusNotFound || body.code() != "upstream_disabled" {
		t.Fatalf("http: %d %+v, want 404 upstream_disabled", status, body)
	}
	// other client frames are not the Upstream's business
	if e.up.HandleWS(nil, "hub.other", []byte(`{}`)) {
		t.Fatal("HandleWS took a frame that is not hub.send")
	}
}

func postSend(t *testing.T, e *env, tok, body string) (int, answer) {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	return sendWith(t, e, "", h, strings.NewReader(body))
}

func TestHTTPSend(t *testing.T) {
	be := newBackend(t)
	e := newEnv(t, be, nil)
	tok := hubtest.Token(t, "u7", time.Hour)
	body := `{"ref":"h1","idempotencyKey":"k-h","event":{"type":"ORDER_UPDATE","payload":{"a":1}}}`

	status, a := postSend(t, e, tok, body)
	if status != 200 || a.Ref != "h1" || a.Status != 200 || string(a.Result) != `{"ok":true,"n":1}` || a.Error != nil {
		t.Fatalf("answer = %d %+v %s, want 200 with the ack payload", status, a, a.Result)
	}
	got := be.call(t, 0)
	if !got.sigOK || got.UserID != "u7" || got.ConnectionID != nil || got.IdempotencyKey != "k-h" {
		t.Fatalf("backend call = %+v, want a signed call for u7 without connectionId", got)
	}
	// repeated key: same answer, no new call
	status, a = postSend(t, e, tok, `{"idempotencyKey":"k-h","event":{"type":"ORDER_UPDATE","payload":{"a":1}}}`)
	if status != 200 || string(a.Result) != `{"ok":true,"n":1}` || be.count() != 1 {
		t.Fatalf("repeat = %d %+v with %d calls, want the remembered ack", status, a, be.count())
	}
	// the same key over WebSocket for the same user is the same operation
	c := e.dial(t, "u7")
	if a := c.send("w1", "k-h", "ORDER_UPDATE", nil); a.kind != "hub.ack" || be.count() != 1 {
		t.Fatalf("ws repeat = %s %+v with %d calls", a.kind, a, be.count())
	}
}

func TestHTTPSendErrors(t *testing.T) {
	be := newBackend(t)
	e := newEnv(t, be, func(o *upstream.Options) { o.MaxPayload = 1024; o.Timeout = 200 * time.Millisecond })
	tok := hubtest.Token(t, "u1", time.Hour)
	be.setReply(func(w http.ResponseWriter, r *http.Request, n int) {
		be.mu.Lock()
		key := be.calls[n-1].IdempotencyKey
		be.mu.Unlock()
		switch key {
		case "k-400":
			w.WriteHeader(400)
		case "k-500":
			w.WriteHeader(500)
		case "k-slow":
			<-r.Context().Done()
		}
	})
	op := func(key string) string {
		return `{"idempotencyKey":"` + key + `","event":{"type":"ORDER_UPDATE"}}`
	}
	tests := []struct {
		name       string
		tok        string
		give       string
		wantStatus int
		wantCode   string
		wantRetry  bool
	}{
		{"no token", "", op("k-1"), 401, "missing_token", false},
		{"bad json", tok, `{`, 400, "invalid_request", false},
		{"bad type", tok, `{"idempotencyKey":"k","event":{"type":"hub.x"}}`, 400, "invalid_request", false},
		{"too large", tok, `{"idempotencyKey":"k","event":{"type":"A","payload":"` + strings.Repeat("x", 2000) + `"}}`, 413, "payload_too_large", false},
		{"rejected", tok, op("k-400"), 422, "upstream_rejected", false},
		{"backend error", tok, op("k-500"), 502, "upstream_error", true},
		{"timeout", tok, op("k-slow"), 504, "upstream_timeout", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, a := postSend(t, e, tt.tok, tt.give)
			if status != tt.wantStatus || a.code() != tt.wantCode || a.Retryable != tt.wantRetry {
				t.Fatalf("answer = %d %+v, want %d %s retryable=%v", status, a, tt.wantStatus, tt.wantCode, tt.wantRetry)
			}
		})
	}
	resp, err := http.Get(e.srv.URL + "/api/send")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d, want 405", resp.StatusCode)
	}
}

func TestHTTPRateLimit(t *testing.T) {
	be := newBackend(t)
	e := newEnv(t, be, func(o *upstream.Options) { o.Rate = 0.001 })
	body := `{"idempotencyKey":"k-%d","event":{"type":"ORDER_UPDATE"}}`
	if status, a := postSend(t, e, hubtest.Token(t, "u1", time.Hour), fmt.Sprintf(body, 1)); status != 200 {
		t.Fatalf("first: %d %+v", status, a)
	}
	status, a := postSend(t, e, hubtest.Token(t, "u1", time.Hour), fmt.Sprintf(body, 2))
	if status != http.StatusTooManyRequests || a.code() != "rate_limited" || !a.Retryable {
		t.Fatalf("second: %d %+v, want 429 rate_limited", status, a)
	}
	if status, a := postSend(t, e, hubtest.Token(t, "u2", time.Hour), fmt.Sprintf(body, 3)); status != 200 {
		t.Fatalf("other user: %d %+v", status, a)
	}
}

func TestSign(t *testing.T) {
	body := []byte(`{"userId":"u1"}`)
	m := hmac.New(sha256.New, []byte("s"))
	m.Write(body)
	if got, want := upstream.Sign("s", body), "sha256="+hex.EncodeToString(m.Sum(nil)); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	if bytes.Equal([]byte(upstream.Sign("s", body)), []byte(upstream.Sign("t", body))) {
		t.Fatal("the signature does not depend on the secret")
	}
}
