package modules_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/hubtest/app"
)

// testHub is the assembled hub (hubtest/app) with the helpers of this
// package's tests; they fail t (see with).
type testHub struct {
	*app.App
	t *testing.T
}

// startHub starts the hub with the test configuration changed by mod.
func startHub(t *testing.T, mod func(*config.Config)) *testHub {
	t.Helper()
	return &testHub{App: app.Start(t, mod), t: t}
}

// token mints a token for sub with roles valid for ttl.
func (th *testHub) token(sub string, ttl time.Duration, roles ...string) string {
	th.t.Helper()
	return hubtest.Token(th.t, sub, ttl, roles...)
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
		map[string]string{"X-API-Key": hubtest.APIKey})
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
	Key       string          `json:"key"`
	Volatile  bool            `json:"volatile"`
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
