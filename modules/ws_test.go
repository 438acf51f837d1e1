package modules_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

func TestWSConnectedAndDelivery(t *testing.T) {
	th := startHub(t, nil)
	a1 := th.mustWS(th.token("alice", time.Hour), "")
	a2 := th.mustWS(th.token("alice", time.Hour), "")
	b := th.mustWS(th.token("bob", time.Hour), "")
	p1 := a1.connected()
	p2 := a2.connected()
	b.connected()
	for k, want := range map[string]any{"userId": "alice", "transport": "websocket", "heartbeatSeconds": 25.0,
		"recovered": false, "missed": 0.0, "node": "hub-test"} {
		if p1[k] != want {
			t.Errorf("hub.connected %s = %v, want %v", k, p1[k], want)
		}
	}
	if p1["connectionId"] == p2["connectionId"] || !strings.HasPrefix(p1["connectionId"].(string), "c-") {
		t.Errorf("connection ids %v and %v", p1["connectionId"], p2["connectionId"])
	}
	if _, err := time.Parse(time.RFC3339, p1["tokenExpiresAt"].(string)); err != nil {
		t.Errorf("tokenExpiresAt: %v", err)
	}
	var ids []string
	for i := range 20 {
		ids = append(ids, th.publish("DRAFT_UPDATED", map[string]any{"draftId": i}, "alice")["alice"])
	}
	for _, c := range []*wsClient{a1, a2} {
		for i, id := range ids {
			e := c.next(5 * time.Second)
			if e.ID != id || e.Type != "DRAFT_UPDATED" || string(e.Payload) != fmt.Sprintf(`{"draftId":%d}`, i) {
				t.Fatalf("event %d = %s, want id %s", i, e.raw, id)
			}
			ts, err := time.Parse(time.RFC3339, e.Timestamp)
			if err != nil || !strings.HasSuffix(e.Timestamp, "Z") || len(e.Timestamp) != len("2006-01-02T15:04:05.000Z") || ts.IsZero() {
				t.Fatalf("timestamp %q", e.Timestamp)
			}
		}
	}
	// bob got nothing of alice's; a broadcast to all reaches everyone with one id
	status, body := th.post("/api/broadcast", map[string]any{"all": true, "type": "ANNOUNCEMENT", "payload": "maintenance"},
		map[string]string{"X-API-Key": hubtest.APIKey})
	if status != http.StatusAccepted {
		t.Fatalf("broadcast all: %d %v", status, body)
	}
	for _, c := range []*wsClient{a1, a2, b} {
		e := c.next(5 * time.Second)
		if e.Type != "ANNOUNCEMENT" || e.ID != body["id"] {
			t.Fatalf("got %s, want ANNOUNCEMENT %v", e.raw, body["id"])
		}
	}
}

func TestWSHandshakeFailures(t *testing.T) {
	th := startHub(t, func(c *config.Config) { c.AllowedOrigins = []string{"https://app.example"} })
	expired := hubtest.ExpiredToken(t, "alice")
	tests := []struct {
		name   string
		url    string
		hdr    http.Header
		status int
		code   string
	}{
		{"missing", th.WSURL, nil, 401, "missing_token"},
		{"garbage", th.WSURL + "?token=abc.def.ghi", nil, 401, "invalid_token"},
		{"wrong key", th.WSURL + "?token=" + hubtest.TokenWith(t, "other-secret-0123456789", "alice", time.Hour), nil, 401, "invalid_token"},
		{"expired", th.WSURL + "?token=" + expired, nil, 401, "token_expired"},
		{"bad origin", th.WSURL + "?token=" + th.token("alice", time.Hour), http.Header{"Origin": {"https://evil.example"}}, 403, "origin_not_allowed"},
		{"scheme mismatch", th.WSURL + "?token=" + th.token("alice", time.Hour), http.Header{"Origin": {"http://app.example"}}, 403, "origin_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http"+strings.TrimPrefix(tt.url, "ws"), nil)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			for k, v := range tt.hdr {
				req.Header[k] = v
			}
			status, body := do(t, req)
			if status != tt.status {
				t.Fatalf("status %d, want %d (%v)", status, tt.status, body)
			}
			e, _ := body["error"].(map[string]any)
			if e["code"] != tt.code || e["message"] == "" {
				t.Fatalf("error body %v, want code %s", body, tt.code)
			}
		})
	}
	// allowed origin, header and cookie tokens work
	w, _, err := th.dialWS(th.token("alice", time.Hour), "", http.Header{"Origin": {"https://app.example"}})
	if err != nil {
		t.Fatalf("allowed origin: %v", err)
	}
	w.connected()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, th.WSURL, &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"hub_token=" + th.token("carol", time.Hour)}}})
	if err != nil {
		t.Fatalf("cookie token: %v", err)
	}
	c.CloseNow()
	c, _, err = websocket.Dial(ctx, th.WSURL, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + th.token("carol", time.Hour)}}})
	if err != nil {
		t.Fatalf("header token: %v", err)
	}
	c.CloseNow()
}

func TestWSClientFrames(t *testing.T) {
	th := startHub(t, nil)
	tok := th.token("alice", time.Hour)
	t.Run("garbage and unknown get hub.error, connection stays", func(t *testing.T) {
		w := th.mustWS(tok, "")
		w.connected()
		for _, f := range []string{`not json`, `{"type":"WHAT"}`, `[1,2]`, `{"type":"hub.pong"}`} {
			if err := w.c.Write(context.Background(), websocket.MessageText, []byte(f)); err != nil {
				t.Fatal(err)
			}
		}
		for range 3 {
			if e := w.next(5 * time.Second); e.Type != "hub.error" {
				t.Fatalf("got %s, want hub.error", e.raw)
			}
		}
		id := th.publish("STILL_OPEN", nil, "alice")["alice"]
		if e := w.next(5 * time.Second); e.ID != id {
			t.Fatalf("got %s", e.raw)
		}
	})
	t.Run("binary closes 1003", func(t *testing.T) {
		w := th.mustWS(tok, "")
		w.connected()
		_ = w.c.Write(context.Background(), websocket.MessageBinary, []byte("x"))
		if code, _ := w.closed(5 * time.Second); code != websocket.StatusUnsupportedData {
			t.Fatalf("close %d, want 1003", code)
		}
	})
	t.Run("oversized closes 1009", func(t *testing.T) {
		w := th.mustWS(tok, "")
		w.connected()
		_ = w.c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"hub.pong","x":"`+strings.Repeat("a", 5000)+`"}`))
		if code, _ := w.closed(5 * time.Second); code != websocket.StatusMessageTooBig {
			t.Fatalf("close %d, want 1009", code)
		}
	})
	t.Run("refresh extends, wrong user closes 4001", func(t *testing.T) {
		w := th.mustWS(tok, "")
		w.connected()
		w.send(map[string]string{"type": "hub.refresh", "token": th.token("alice", 2*time.Hour)})
		e := w.next(5 * time.Second)
		var p map[string]string
		_ = json.Unmarshal(e.Payload, &p)
		if e.Type != "hub.refreshed" || p["tokenExpiresAt"] == "" {
			t.Fatalf("got %s, want hub.refreshed", e.raw)
		}
		w.send(map[string]string{"type": "hub.refresh", "token": th.token("mallory", time.Hour)})
		if code, reason := w.closed(5 * time.Second); code != 4001 || reason != "unauthorized" {
			t.Fatalf("close %d %q, want 4001 unauthorized", code, reason)
		}
	})
}

func TestWSTokenExpiry(t *testing.T) {
	th := startHub(t, func(c *config.Config) { c.JWTLeeway = 0; c.HeartbeatInterval = 200 * time.Millisecond })
	w := th.mustWS(th.token("alice", 1500*time.Millisecond), "")
	w.connected()
	if code, reason := w.closed(10 * time.Second); code != 4001 || reason != "token expired" {
		t.Fatalf("close %d %q, want 4001 token expired", code, reason)
	}
	// a refreshed connection outlives its first token
	w = th.mustWS(th.token("alice", 1500*time.Millisecond), "")
	w.connected()
	w.send(map[string]string{"type": "hub.refresh", "token": th.token("alice", time.Hour)})
	if e := w.next(5 * time.Second); e.Type != "hub.refreshed" {
		t.Fatalf("got %s", e.raw)
	}
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) {
		select {
		case <-w.done:
			t.Fatalf("refreshed connection closed: %v", w.closeErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestWSHeartbeatPing(t *testing.T) {
	th := startHub(t, func(c *config.Config) { c.HeartbeatInterval = 100 * time.Millisecond })
	w := th.mustWS(th.token("alice", time.Hour), "")
	if p := w.connected(); p["heartbeatSeconds"] != 0.0 {
		// 100ms rounds to 0 s: the field reports whole seconds
		t.Logf("heartbeatSeconds %v", p["heartbeatSeconds"])
	}
	select {
	case e := <-w.ch:
		if e.Type != "hub.ping" {
			t.Fatalf("got %s, want hub.ping", e.raw)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no hub.ping on an idle connection")
	}
}

func TestWSLimits(t *testing.T) {
	th := startHub(t, func(c *config.Config) { c.MaxConnectionsPerUser = 2; c.MaxConnections = 3 })
	for range 2 {
		th.mustWS(th.token("alice", time.Hour), "").connected()
	}
	_, resp, err := th.dialWS(th.token("alice", time.Hour), "", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third connection of a user: err %v resp %v", err, resp)
	}
	th.mustWS(th.token("bob", time.Hour), "").connected()
	_, resp, err = th.dialWS(th.token("carol", time.Hour), "", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("node limit: err %v resp %v", err, resp)
	}
}

func TestWSDisconnectAPI(t *testing.T) {
	th := startHub(t, nil)
	w1 := th.mustWS(th.token("alice", time.Hour), "")
	w2 := th.mustWS(th.token("alice", time.Hour), "")
	other := th.mustWS(th.token("bob", time.Hour), "")
	w1.connected()
	w2.connected()
	other.connected()
	status, body := th.post("/api/users/alice/disconnect", "", map[string]string{"X-API-Key": hubtest.APIKey})
	if status != 200 || body["closed"] != 2.0 {
		t.Fatalf("disconnect: %d %v", status, body)
	}
	for _, w := range []*wsClient{w1, w2} {
		if code, reason := w.closed(5 * time.Second); code != 4003 || reason != "disconnected by server" {
			t.Fatalf("close %d %q", code, reason)
		}
	}
	id := th.publish("X", nil, "bob")["bob"]
	if e := other.next(5 * time.Second); e.ID != id {
		t.Fatalf("bob got %s", e.raw)
	}
}

// rawWS opens a WebSocket that never reads, with a tiny receive buffer.
func rawWS(t *testing.T, addr, path, token string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: nil}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(c, "GET %s?token=%s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", path, token, addr)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw upgrade: %v %v", err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestWSSlowConsumer(t *testing.T) {
	th := startHub(t, func(c *config.Config) { c.SendQueue = 16; c.MaxPayload = 1 << 20 })
	good := th.mustWS(th.token("alice", time.Hour), "")
	good.connected()
	rawWS(t, th.Servers.Addr(), th.Config.WSPath, th.token("alice", time.Hour))
	hubtest.Eventually(t, 5*time.Second, "two connections", func() bool { return th.Hub.Stats().TotalConnections == 2 })
	big := strings.Repeat("x", 32<<10)
	var ids []string
	go func() {
		for {
			select {
			case <-good.ch:
			case <-good.done:
				return
			}
		}
	}()
	// Publish until the silent connection is cut; publishing must not block.
	deadline := time.Now().Add(20 * time.Second)
	for th.Hub.Stats().TotalConnections == 2 {
		if time.Now().After(deadline) {
			t.Fatal("slow consumer never closed")
		}
		ids = append(ids, th.publish("BIG", big, "alice")["alice"])
	}
	if len(ids) < 2 {
		t.Fatalf("closed after %d events", len(ids))
	}
}

func TestWSGracefulShutdown(t *testing.T) {
	th := startHub(t, func(c *config.Config) { c.ShutdownTimeout = 4 * time.Second })
	var clients []*wsClient
	for i := range 30 {
		w := th.mustWS(th.token(fmt.Sprintf("u%d", i%10), time.Hour), "")
		w.connected()
		clients = append(clients, w)
	}
	want := map[string][]string{}
	for i := range 10 {
		u := fmt.Sprintf("u%d", i)
		for range 5 {
			want[u] = append(want[u], th.publish("LAST", nil, u)[u])
		}
	}
	stopped := make(chan struct{})
	go func() { th.Stop(); close(stopped) }()
	for i, w := range clients {
		u := fmt.Sprintf("u%d", i%10)
		for _, id := range want[u] {
			if e := w.next(10 * time.Second); e.ID != id {
				t.Fatalf("client %d got %s, want %s", i, e.raw, id)
			}
		}
		if code, reason := w.closed(10 * time.Second); code != websocket.StatusGoingAway || reason != "server shutdown" {
			t.Fatalf("client %d close %d %q", i, code, reason)
		}
	}
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("stop did not return")
	}
	drainedBeforeCut(t, th.Logs.String())
}

// drainedBeforeCut fails t when the app's logs say that its drain ran
// into HUB_SHUTDOWN_TIMEOUT: every client answered the drain (close 1001
// echoed, the SSE stream read to its end), so the hub must have drained
// before the timeout's cut, and no endpoint goroutine may outlive it.
func drainedBeforeCut(t *testing.T, logs string) {
	t.Helper()
	for line := range strings.Lines(logs) {
		if strings.Contains(line, "drain timeout") || strings.Contains(line, "endpoint goroutines still running") {
			t.Errorf("every client answered the drain, yet the app logged %s", line)
		}
	}
}

func TestNoTokenInLogs(t *testing.T) {
	th := startHub(t, nil)
	tok := th.token("alice", time.Hour)
	w := th.mustWS(tok, "")
	w.connected()
	_, _, _ = th.dialWS("bad."+tok, "", nil)
	th.publish("X", nil, "alice")
	w.next(5 * time.Second)
	req, _ := http.NewRequest(http.MethodGet, th.API+"/api/websocket/stats?token="+tok, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	do(t, req)
	th.Stop()
	logs := th.Logs.String()
	if logs == "" {
		t.Fatal("no logs captured")
	}
	sig := tok[strings.LastIndexByte(tok, '.')+1:]
	if strings.Contains(logs, tok) || strings.Contains(logs, sig) || strings.Contains(logs, hubtest.APIKey) {
		t.Fatalf("a token leaked into the logs:\n%s", logs)
	}
}

// TestWSCompressionSetting: HUB_WS_COMPRESSION reaches the endpoint (an
// offer is accepted by default, ignored when off), and
// HUB_WS_COMPRESSION_MIN decides which events go compressed (a raw
// reader sees RSV1).
func TestWSCompressionSetting(t *testing.T) {
	for _, tt := range []struct {
		name string
		mod  func(*config.Config)
		want string
	}{
		{"default", nil, "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
		{"off", func(c *config.Config) { c.WSCompression = false }, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			th := startHub(t, tt.mod)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, th.WSURL+"?token="+th.token("alice", time.Hour), &websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != tt.want {
				t.Fatalf("extensions %q, want %q", got, tt.want)
			}
		})
	}
	// HUB_WS_COMPRESSION_MIN: at 0 every event (hub.connected too) goes
	// compressed; at the default, hub.connected and a small event go plain
	// and a large one compressed.
	for _, tt := range []struct {
		min  int
		want []bool // RSV1 of hub.connected, a small event, a large one
	}{
		{0, []bool{true, true, true}},
		{512, []bool{false, false, true}},
	} {
		t.Run(fmt.Sprintf("minimum %d", tt.min), func(t *testing.T) {
			th := startHub(t, func(c *config.Config) { c.WSCompressionMin = tt.min })
			nc, err := net.Dial("tcp", strings.TrimPrefix(th.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(nc, "GET %s?token=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n", th.Config.WSPath, th.token("alice", time.Hour))
			br := bufio.NewReader(nc)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("%v %v", resp, err)
			}
			rsv1 := func() bool { // reads one text frame
				var h [4]byte
				if _, err := io.ReadFull(br, h[:2]); err != nil || h[0]&0x0f != 1 || h[1] > 126 {
					t.Fatalf("frame header % x: %v", h[:2], err)
				}
				n := int64(h[1])
				if n == 126 {
					if _, err := io.ReadFull(br, h[2:4]); err != nil {
						t.Fatal(err)
					}
					n = int64(h[2])<<8 | int64(h[3])
				}
				if _, err := io.CopyN(io.Discard, br, n); err != nil {
					t.Fatal(err)
				}
				return h[0]&0x40 != 0
			}
			var got []bool
			got = append(got, rsv1())
			ctx := context.Background()
			// the small one is compressible: at 0 it shrinks, so it goes compressed
			for _, p := range []string{`"` + strings.Repeat("a", 40) + `"`, `"` + strings.Repeat("abc", 300) + `"`} {
				if _, err := th.Hub.Publish(ctx, []string{"alice"}, "T", json.RawMessage(p)); err != nil {
					t.Fatal(err)
				}
				got = append(got, rsv1())
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("compressed (hub.connected, small, large) = %v, want %v", got, tt.want)
			}
		})
	}
}
