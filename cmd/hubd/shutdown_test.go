package main_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
)

// stuckClient opens a connection that completes its handshake and then
// never reads, with a tiny receive buffer so that the hub's writes back up.
func stuckClient(t *testing.T, addr, request string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: nil}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := c.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestShutdownWithinTimeout: with clients that never read (a WebSocket and
// an SSE stream whose socket buffers are full), SIGTERM makes the process
// exit 0 at most one second after HUB_SHUTDOWN_TIMEOUT.
func TestShutdownWithinTimeout(t *testing.T) {
	bin := buildHubd(t)
	addr := hubtest.FreeAddr(t)
	const timeout = 2 * time.Second
	cmd := exec.Command(bin)
	cmd.Env = cleanEnv("HUB_ADDR="+addr, "HUB_JWT_SECRET="+hubtest.Secret, "HUB_API_KEYS="+hubtest.APIKey,
		"HUB_SHUTDOWN_TIMEOUT="+timeout.String(), "HUB_LOG_LEVEL=warn")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("hubd not ready: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling a process we started, with a deadline
	}

	tok := hubtest.Token(t, "stuck", time.Hour)
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	stuckClient(t, addr, "GET /ws/realtime?token="+tok+" HTTP/1.1\r\nHost: "+addr+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "+key+"\r\n\r\n")
	stuckClient(t, addr, "GET /sse/realtime HTTP/1.1\r\nHost: "+addr+"\r\nAccept: text/event-stream\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
	// both devices are registered once the user has two connections
	waitConnections(t, addr, 2, deadline)

	// 8 MB for each device: far more than the socket buffers hold, far
	// fewer events than the send queue (so neither counts as slow)
	payload := `"` + strings.Repeat("x", 60000) + `"`
	for range 140 {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/broadcast",
			strings.NewReader(`{"userIds":["stuck"],"type":"BIG","payload":`+payload+`}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", hubtest.APIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("broadcast: %d", resp.StatusCode)
		}
	}

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	limit := timeout + time.Second
	select {
	case err := <-done:
		took := time.Since(start)
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
		if took > limit {
			t.Fatalf("exited %v after SIGTERM, want at most %v (HUB_SHUTDOWN_TIMEOUT + 1s)\n%s", took, limit, stderr.String())
		}
		t.Logf("exited %v after SIGTERM", took.Round(time.Millisecond))
	case <-time.After(limit + 10*time.Second):
		t.Fatalf("hubd still running %v after SIGTERM\n%s", limit+10*time.Second, stderr.String())
	}
}

// waitConnections waits until stuck's connections are n, through the
// connections count of the admin stats... of the user limit: it asks the
// disconnect-free way, by publishing nothing and polling stats.
func waitConnections(t *testing.T, addr string, n int, deadline time.Time) {
	t.Helper()
	admin := hubtest.Token(t, "admin", time.Hour, "admin")
	for {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/websocket/stats", nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		var body bytes.Buffer
		if err == nil {
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if strings.Contains(body.String(), fmt.Sprintf(`"totalConnections":%d`, n)) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections never reached %d: %v %s", n, err, body.String())
		}
		time.Sleep(20 * time.Millisecond) // polling a process we started, with a deadline
	}
}
