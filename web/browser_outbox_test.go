package web_test

// End-to-end tests of hub.send's outbox in a real headless Chromium, through
// the assembled hub with an upstream backend (an httptest server that checks
// every call's signature and records it). They reuse the browser, hub and
// page helpers of browser_test.go (and hubtest's cuttable proxy), and skip
// or fail without a Chromium in the same way.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

const upstreamSecret = "browser-test-upstream-secret-0123456789"

func TestOutboxBrowser(t *testing.T) {
	b := startBrowser(t)
	t.Run("websocket offline sends flush in order", func(t *testing.T) { testOutboxOffline(t, b, "websocket") })
	t.Run("sse offline sends flush in order", func(t *testing.T) { testOutboxOffline(t, b, "sse") })
	t.Run("local outbox survives a reload", func(t *testing.T) { testOutboxReload(t, b) })
	t.Run("final nack over websocket rejects", func(t *testing.T) { testOutboxNack(t, b, "websocket") })
	t.Run("final nack over sse rejects", func(t *testing.T) { testOutboxNack(t, b, "sse") })
}

// ---- scenarios ----------------------------------------------------------------

// testOutboxOffline: five sends made while the network is cut wait in the
// outbox and reach the backend once each, in order, when it is back; every
// promise resolves with the backend's answer.
func testOutboxOffline(t *testing.T, b context.Context, transport string) {
	be := startBackend(t)
	h := startHub(t, be.configure)
	px := hubtest.StartProxy(t, h.Servers.Addr())
	p := openPage(t, b, "http://"+px.Addr())
	p.start(t, map[string]any{
		"token":      hubtest.Token(t, "u1", time.Hour),
		"transports": []string{transport},
		"backoff":    map[string]int{"baseMs": 50, "maxMs": 200},
	})
	evalT[bool](t, p, outboxHarness)
	p.waitFor(t, "connected", `__hub.state === "connected"`, 10*time.Second)

	px.Cut()
	p.waitFor(t, "connection lost", `__hub.state === "reconnecting"`, 10*time.Second)
	const n = 5
	pending := evalT[int](t, p, fmt.Sprintf(`(() => { for (let i = 1; i <= %d; i++) __send("ORDER_UPDATE", { n: i }); return __hub.pendingSends; })()`, n))
	if pending != n {
		t.Fatalf("pendingSends = %d while offline, want %d", pending, n)
	}
	if c := be.calls(); len(c) != 0 {
		t.Fatalf("backend called %d times while the page was offline", len(c))
	}

	px.Restore()
	p.waitFor(t, "every send settled", `__t.sends.every((s) => s.state !== "pending")`, 15*time.Second)
	if tr := evalT[string](t, p, "__hub.transport"); tr != transport {
		t.Errorf("transport = %q, want %q", tr, transport)
	}
	sends := p.sends(t)
	for i, s := range sends {
		a := s.ack(t)
		if a.Status != http.StatusOK || !jsonEqual(a.Result, json.RawMessage(fmt.Sprintf(`{"ok":true,"n":%d}`, i+1))) {
			t.Errorf("send %d (%s) resolved with status %d result %s, want 200 {\"ok\":true,\"n\":%d}", i+1, s.Payload, a.Status, a.Result, i+1)
		}
	}
	if n := evalT[int](t, p, "__hub.pendingSends"); n != 0 {
		t.Errorf("pendingSends = %d after every ack, want 0", n)
	}
	assertCalls(t, be.calls(), "u1", transport == "websocket", numbered(n))
	assertNoPageErrors(t, p)
}

// testOutboxReload: with outbox "local", sends made offline survive a reload
// and a new Hub on the same URL delivers them once each, in order, with the
// same idempotency keys. The page itself is served by the hub directly (so it
// can reload while the forwarder is cut) and talks to the hub through it.
func testOutboxReload(t *testing.T, b context.Context) {
	be := startBackend(t)
	h := startHub(t, func(c *config.Config) {
		be.configure(c)
		c.AllowedOrigins = []string{"127.0.0.1"} // the page's origin is not the forwarder's
	})
	px := hubtest.StartProxy(t, h.Servers.Addr())
	hubURL := "http://" + px.Addr()
	opts := map[string]any{
		"url":        hubURL,
		"token":      hubtest.Token(t, "u1", time.Hour),
		"transports": []string{"websocket"},
		"outbox":     "local",
		"backoff":    map[string]int{"baseMs": 50, "maxMs": 200},
	}
	storageKey := fmt.Sprintf("%q", "hub.outbox:"+hubURL)

	p := openPage(t, b, h.URL)
	evalT[bool](t, p, fmt.Sprintf("(localStorage.removeItem(%s), true)", storageKey))
	p.start(t, opts)
	evalT[bool](t, p, outboxHarness)
	p.waitFor(t, "connected", `__hub.state === "connected"`, 10*time.Second)

	px.Cut()
	p.waitFor(t, "connection lost", `__hub.state === "reconnecting"`, 10*time.Second)
	const n = 3
	evalT[bool](t, p, fmt.Sprintf(`(() => { for (let i = 1; i <= %d; i++) __send("ORDER_UPDATE", { n: i }); return true; })()`, n))
	keys := evalT[[]string](t, p, fmt.Sprintf(`JSON.parse(localStorage.getItem(%s) || "[]").map((e) => e.key)`, storageKey))
	if len(keys) != n {
		t.Fatalf("stored outbox holds %d keys before the reload, want %d", len(keys), n)
	}

	run(t, p, chromedp.Reload())
	evalT[bool](t, p, pageHarness)
	p.start(t, opts)
	evalT[bool](t, p, outboxHarness)
	if pending := evalT[int](t, p, "__hub.pendingSends"); pending != n {
		t.Fatalf("pendingSends = %d after the reload, want %d restored", pending, n)
	}
	if c := be.calls(); len(c) != 0 {
		t.Fatalf("backend called %d times while the page was offline", len(c))
	}

	px.Restore()
	p.waitFor(t, "restored sends acknowledged", fmt.Sprintf(`__t.acks.length >= %d && __hub.pendingSends === 0`, n), 15*time.Second)
	acks := evalT[[]sendAck](t, p, "__t.acks")
	for i, a := range acks {
		if a.Status != http.StatusOK || !jsonEqual(a.Result, json.RawMessage(fmt.Sprintf(`{"ok":true,"n":%d}`, i+1))) {
			t.Errorf("hub.ack %d = status %d result %s, want 200 {\"ok\":true,\"n\":%d}", i+1, a.Status, a.Result, i+1)
		}
	}
	if stored := evalT[bool](t, p, fmt.Sprintf("localStorage.getItem(%s) !== null", storageKey)); stored {
		t.Errorf("the stored outbox is still there after every ack")
	}
	calls := be.calls()
	assertCalls(t, calls, "u1", true, numbered(n))
	if got := callKeys(calls); !slices.Equal(got, keys) {
		t.Errorf("backend saw idempotency keys %v, want the stored %v", got, keys)
	}
	assertNoPageErrors(t, p)
}

// testOutboxNack: a 4xx from the backend is a final nack: the promise rejects
// with upstream_rejected, the operation is not retried, and the next send in
// the outbox still goes out.
func testOutboxNack(t *testing.T, b context.Context, transport string) {
	be := startBackend(t)
	h := startHub(t, be.configure)
	p := openPage(t, b, h.URL)
	p.start(t, map[string]any{
		"token":      hubtest.Token(t, "u1", time.Hour),
		"transports": []string{transport},
		"backoff":    map[string]int{"baseMs": 50, "maxMs": 200},
	})
	evalT[bool](t, p, outboxHarness)
	p.waitFor(t, "connected", `__hub.state === "connected"`, 10*time.Second)

	evalT[bool](t, p, `(__send("ORDER_UPDATE", { reject: true }), __send("ORDER_UPDATE", { n: 2 }), true)`)
	p.waitFor(t, "both sends settled", `__t.sends.length === 2 && __t.sends.every((s) => s.state !== "pending")`, 10*time.Second)
	sends := p.sends(t)
	rej := sends[0]
	if rej.State != "rejected" || rej.Code != "upstream_rejected" {
		t.Fatalf("send {reject:true}: state %s code %q, want rejected with upstream_rejected", rej.State, rej.Code)
	}
	var nack struct {
		Retryable *bool `json:"retryable"`
		Error     struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(rej.Value, &nack); err != nil || nack.Retryable == nil || *nack.Retryable || nack.Error.Code != "upstream_rejected" {
		t.Errorf("rejection payload = %s (%v), want a final nack with code upstream_rejected", rej.Value, err)
	}
	if a := sends[1].ack(t); a.Status != http.StatusOK || !jsonEqual(a.Result, json.RawMessage(`{"ok":true,"n":2}`)) {
		t.Errorf("the send after the nack resolved with status %d result %s, want 200 {\"ok\":true,\"n\":2}", a.Status, a.Result)
	}
	assertCalls(t, be.calls(), "u1", transport == "websocket", []string{`{"reject":true}`, `{"n":2}`})
	assertNoPageErrors(t, p)
}

// ---- the page side ------------------------------------------------------------------

// outboxHarness (run after __start) defines window.__send(type, payload),
// which records each send's promise outcome on __t.sends, and records every
// hub.ack / hub.nack control event on __t.acks / __t.nacks.
const outboxHarness = `(() => {
  const T = window.__t;
  T.sends = [];
  T.acks = [];
  T.nacks = [];
  __hub.on("hub.ack", (e) => T.acks.push(e.payload));
  __hub.on("hub.nack", (e) => T.nacks.push(e.payload));
  window.__send = (type, payload) => {
    const r = { payload, state: "pending", code: null, value: null };
    T.sends.push(r);
    __hub.send(type, payload).then(
      (v) => { r.state = "ok"; r.value = v; },
      (e) => { r.state = "rejected"; r.code = String((e && e.code) || e); r.value = (e && e.payload) ?? null; },
    );
    return true;
  };
  return true;
})()`

// pageSend is one __send as the page saw it settle.
type pageSend struct {
	Payload json.RawMessage `json:"payload"`
	State   string          `json:"state"` // pending, ok, rejected
	Code    string          `json:"code"`
	Value   json.RawMessage `json:"value"` // the ack payload, or the nack payload of a rejection
}

// sendAck is a hub.ack payload.
type sendAck struct {
	Ref    string          `json:"ref"`
	Status int             `json:"status"`
	Result json.RawMessage `json:"result"`
}

func (p *page) sends(t *testing.T) []pageSend {
	t.Helper()
	return evalT[[]pageSend](t, p, "__t.sends")
}

// ack decodes a resolved send's value, failing the test for anything else.
func (s pageSend) ack(t *testing.T) sendAck {
	t.Helper()
	var a sendAck
	if s.State != "ok" {
		t.Errorf("send %s: state %s code %q value %s, want resolved", s.Payload, s.State, s.Code, s.Value)
		return a
	}
	if err := json.Unmarshal(s.Value, &a); err != nil {
		t.Errorf("send %s resolved with %s: %v", s.Payload, s.Value, err)
	}
	return a
}

func assertNoPageErrors(t *testing.T, p *page) {
	t.Helper()
	if errs := evalT[[]string](t, p, "__t.errors"); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
}

// numbered returns the payloads {"n":1} .. {"n":n}.
func numbered(n int) []string {
	var s []string
	for i := 1; i <= n; i++ {
		s = append(s, fmt.Sprintf(`{"n":%d}`, i))
	}
	return s
}

// ---- the backend --------------------------------------------------------------------

// upstreamCall is one call the backend received, in arrival order.
type upstreamCall struct {
	UserID       string
	ConnectionID *string // nil when the body has no connectionId member
	Key          string
	Type         string
	Payload      json.RawMessage
	SignatureOK  bool
	ContentType  string
}

// backend is the application behind the hub: it checks X-Hub-Signature,
// records every call, answers 422 to a payload {"reject":true} and
// 200 {"ok":true,"n":<calls so far>} to anything else.
type backend struct {
	srv *httptest.Server
	mu  sync.Mutex
	log []upstreamCall
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	be := &backend{}
	be.srv = httptest.NewServer(http.HandlerFunc(be.serve))
	t.Cleanup(func() {
		be.srv.CloseClientConnections()
		be.srv.Close()
	})
	return be
}

// configure points the hub's upstream at the backend.
func (be *backend) configure(c *config.Config) {
	c.UpstreamURL = be.srv.URL + "/ops"
	c.UpstreamSecret = upstreamSecret
}

func (be *backend) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	m := hmac.New(sha256.New, []byte(upstreamSecret))
	m.Write(body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	var op struct {
		UserID         string  `json:"userId"`
		ConnectionID   *string `json:"connectionId"`
		IdempotencyKey string  `json:"idempotencyKey"`
		Event          struct {
			Type    string          `json:"type"`
			Payload json.RawMessage `json:"payload"`
		} `json:"event"`
	}
	_ = json.Unmarshal(body, &op) // a bad body shows up as empty fields in the record
	c := upstreamCall{
		UserID:       op.UserID,
		ConnectionID: op.ConnectionID,
		Key:          op.IdempotencyKey,
		Type:         op.Event.Type,
		Payload:      op.Event.Payload,
		SignatureOK:  hmac.Equal([]byte(r.Header.Get("X-Hub-Signature")), []byte(want)),
		ContentType:  r.Header.Get("Content-Type"),
	}
	be.mu.Lock()
	be.log = append(be.log, c)
	n := len(be.log)
	be.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	switch {
	case !c.SignatureOK:
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"bad signature"}`)
	case jsonEqual(c.Payload, json.RawMessage(`{"reject":true}`)):
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = io.WriteString(w, `{"error":"rejected"}`)
	default:
		_, _ = fmt.Fprintf(w, `{"ok":true,"n":%d}`, n)
	}
}

func (be *backend) calls() []upstreamCall {
	be.mu.Lock()
	defer be.mu.Unlock()
	return slices.Clone(be.log)
}

func callKeys(calls []upstreamCall) []string {
	var k []string
	for _, c := range calls {
		k = append(k, c.Key)
	}
	return k
}

// assertCalls checks that the backend saw exactly one signed ORDER_UPDATE
// call per payload of want, in that order, for user, each with its own
// idempotency key, and a connectionId exactly when the send came over a
// WebSocket.
func assertCalls(t *testing.T, calls []upstreamCall, user string, ws bool, want []string) {
	t.Helper()
	if len(calls) != len(want) {
		var got []string
		for _, c := range calls {
			got = append(got, string(c.Payload))
		}
		t.Fatalf("backend received %d calls %v, want %d %v", len(calls), got, len(want), want)
	}
	seen := map[string]bool{}
	for i, c := range calls {
		if !c.SignatureOK {
			t.Errorf("call %d: X-Hub-Signature does not match the body", i)
		}
		if c.ContentType != "application/json" {
			t.Errorf("call %d: Content-Type %q, want application/json", i, c.ContentType)
		}
		if c.UserID != user || c.Type != "ORDER_UPDATE" || !jsonEqual(c.Payload, json.RawMessage(want[i])) {
			t.Errorf("call %d = {user %q type %q payload %s}, want {%q ORDER_UPDATE %s}", i, c.UserID, c.Type, c.Payload, user, want[i])
		}
		if c.Key == "" || seen[c.Key] {
			t.Errorf("call %d: idempotency key %q is empty or repeated", i, c.Key)
		}
		seen[c.Key] = true
		switch {
		case ws && (c.ConnectionID == nil || *c.ConnectionID == ""):
			t.Errorf("call %d: no connectionId for a send over WebSocket", i)
		case !ws && c.ConnectionID != nil:
			t.Errorf("call %d: connectionId %q for a send over /api/send, want none", i, *c.ConnectionID)
		}
	}
}
