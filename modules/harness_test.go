package modules_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/modules"
)

const (
	testSecret = "test-secret-0123456789abcdef0123456789"
	testAPIKey = "test-api-key-0123456789" // 16 characters or more
)

// testHub is a running, fully assembled hub on 127.0.0.1.
type testHub struct {
	t       *testing.T
	app     *fx.App
	cfg     config.Config
	srv     *modules.Servers
	hub     *hub.Hub
	URL     string // public base URL
	API     string // internal base URL
	WSURL   string
	logs    *syncBuffer
	stopped bool
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startHub assembles modules.App with a test configuration changed by mod.
func startHub(t *testing.T, mod func(*config.Config)) *testHub {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.NodeName = "hub-test"
	cfg.JWTSecret = testSecret
	cfg.JWTAlgorithms = []string{"HS256"}
	cfg.APIKeys = []string{testAPIKey}
	cfg.ShutdownTimeout = 3 * time.Second
	cfg.LogLevel = "debug"
	cfg.LogFormat = "json"
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	th := &testHub{t: t, cfg: cfg, logs: &syncBuffer{}}
	th.app = fx.New(
		modules.App(cfg),
		fx.Replace(modules.NewLogger(cfg, th.logs)),
		fx.WithLogger(modules.FxLogger),
		fx.Populate(&th.srv, &th.hub),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := th.app.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	th.URL = "http://" + th.srv.Addr()
	th.API = "http://" + th.srv.InternalAddr()
	th.WSURL = "ws://" + th.srv.Addr() + cfg.WSPath
	t.Cleanup(th.stop)
	return th
}

func (th *testHub) stop() {
	if th.stopped {
		return
	}
	th.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := th.app.Stop(ctx); err != nil {
		th.t.Errorf("stop: %v", err)
	}
}

// token mints a token for sub with roles valid for ttl.
func (th *testHub) token(sub string, ttl time.Duration, roles ...string) string {
	th.t.Helper()
	tok, err := auth.Mint(testSecret, "HS256", sub, roles, ttl)
	if err != nil {
		th.t.Fatal(err)
	}
	return tok
}

// post sends a JSON body with headers and returns status and decoded body.
func (th *testHub) post(path string, body any, hdr map[string]string) (int, map[string]any) {
	th.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(http.MethodPost, th.API+path, rd)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return do(th.t, req)
}

func do(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: status %d, body not JSON: %q", req.Method, req.URL.Path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, m
}

// publish broadcasts to users with the API key and returns the ids by user.
func (th *testHub) publish(typ string, payload any, users ...string) map[string]string {
	th.t.Helper()
	status, body := th.post("/api/broadcast", map[string]any{"userIds": users, "type": typ, "payload": payload},
		map[string]string{"X-API-Key": testAPIKey})
	if status != http.StatusAccepted {
		th.t.Fatalf("broadcast: %d %v", status, body)
	}
	ids := map[string]string{}
	for _, e := range body["events"].([]any) {
		m := e.(map[string]any)
		ids[m["userId"].(string)] = m["id"].(string)
	}
	return ids
}

// envelope is a decoded event or control event.
type envelope struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Payload   json.RawMessage `json:"payload"`
	Timestamp string          `json:"timestamp"`
	raw       []byte
}

// wsClient is a WebSocket device.
type wsClient struct {
	t  *testing.T
	c  *websocket.Conn
	ch chan envelope
	// closeErr is the read error that ended the connection.
	done     chan struct{}
	closeErr error
}

func (th *testHub) dialWS(token, lastID string, hdr http.Header) (*wsClient, *http.Response, error) {
	u := th.WSURL + "?token=" + token
	if lastID != "" {
		u += "&last_event_id=" + lastID
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(1 << 20)
	w := &wsClient{t: th.t, c: c, ch: make(chan envelope, 100000), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				w.closeErr = err
				return
			}
			var e envelope
			if err := json.Unmarshal(b, &e); err != nil {
				w.closeErr = err
				return
			}
			e.raw = b
			w.ch <- e
		}
	}()
	th.t.Cleanup(func() { c.CloseNow(); <-w.done })
	return w, resp, nil
}

func (th *testHub) mustWS(token, lastID string) *wsClient {
	th.t.Helper()
	w, resp, err := th.dialWS(token, lastID, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		th.t.Fatalf("dial: %v (status %d)", err, status)
	}
	return w
}

// next returns the next envelope, skipping hub.ping, within the deadline.
func (w *wsClient) next(timeout time.Duration) envelope {
	w.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e := <-w.ch:
			if e.Type == "hub.ping" {
				continue
			}
			return e
		case <-deadline:
			w.t.Fatalf("no event within %v (closed: %v)", timeout, w.closeErr)
		}
	}
}

// connected reads hub.connected and returns its payload.
func (w *wsClient) connected() map[string]any {
	w.t.Helper()
	e := w.next(5 * time.Second)
	if e.Type != "hub.connected" {
		w.t.Fatalf("first event %q, want hub.connected", e.Type)
	}
	var p map[string]any
	if err := json.Unmarshal(e.Payload, &p); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// closed waits for the connection to end and returns its close status.
func (w *wsClient) closed(timeout time.Duration) (websocket.StatusCode, string) {
	w.t.Helper()
	select {
	case <-w.done:
	case <-time.After(timeout):
		w.t.Fatalf("connection not closed within %v", timeout)
	}
	var ce websocket.CloseError
	if errors.As(w.closeErr, &ce) {
		return ce.Code, ce.Reason
	}
	return -1, ""
}

func (w *wsClient) send(v any) {
	w.t.Helper()
	b, _ := json.Marshal(v)
	if err := w.c.Write(context.Background(), websocket.MessageText, b); err != nil {
		w.t.Fatal(err)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustMint(t *testing.T, secret, sub string) string {
	t.Helper()
	tok, err := auth.Mint(secret, "HS256", sub, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// mintWith signs a token for sub whose exp is now+ttl (ttl may be negative).
func mintWith(t *testing.T, sub string, ttl time.Duration) (string, error) {
	t.Helper()
	tok := jwt.New()
	_ = tok.Set(jwt.SubjectKey, sub)
	_ = tok.Set(jwt.IssuedAtKey, time.Now().Add(-2*time.Hour))
	_ = tok.Set(jwt.ExpirationKey, time.Now().Add(ttl))
	b, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256, []byte(testSecret)))
	return string(b), err
}
