package modules_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/internal/hubtest"
)

const nginxBin = "/usr/sbin/nginx"

// nginxConf is the recommended reverse-proxy configuration of
// docs/OPERATIONS.md, with the test's paths and ports. The location has no
// SSE-specific tuning: the hub's X-Accel-Buffering: no makes SSE stream.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log info;
events { worker_connections 256; }
http {
    access_log {{dir}}/access.log;
    client_body_temp_path {{dir}}/client_body;
    proxy_temp_path {{dir}}/proxy;
    fastcgi_temp_path {{dir}}/fastcgi;
    uwsgi_temp_path {{dir}}/uwsgi;
    scgi_temp_path {{dir}}/scgi;

    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      close;
    }
    upstream hub {
        server {{upstream}};
        keepalive 16;
    }
    server {
        listen {{listen}};
        location / {
            proxy_pass http://hub;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
`

// startNginx runs nginx in front of upstream (host:port) and returns its
// base address (host:port). It skips when nginx is missing, unless
// HUB_REQUIRE_NGINX=1.
func startNginx(t *testing.T, upstream string) string {
	t.Helper()
	if _, err := os.Stat(nginxBin); err != nil {
		if os.Getenv("HUB_REQUIRE_NGINX") == "1" {
			t.Fatalf("nginx required (HUB_REQUIRE_NGINX=1) but missing: %v", err)
		}
		t.Skipf("nginx not installed (%v); set HUB_REQUIRE_NGINX=1 to make this a failure", err)
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := strings.NewReplacer("{{dir}}", dir, "{{upstream}}", upstream, "{{listen}}", addr).Replace(nginxConf)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginxBin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath)
	out := &hubtest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	errorLog := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return out.String() + string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("nginx exited at start:\n%s", errorLog())
		default:
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not serving /healthz: %v\n%s", err, errorLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
	http.DefaultClient.CloseIdleConnections()
	return addr
}

func TestBehindNginx(t *testing.T) {
	th := startHub(t, nil)
	proxy := startNginx(t, th.Servers.Addr())
	sseURL := "http://" + proxy + th.Config.SSEPath
	tok := th.token("alice", time.Hour)

	t.Run("sse streams each event as it is published", func(t *testing.T) {
		c, status, body, err := dialSSE(t, sseDial{URL: sseURL, Token: tok})
		if err != nil || c == nil {
			t.Fatalf("sse through nginx: %v %d %v", err, status, body)
		}
		if p := c.connected(); p["transport"] != "sse" {
			t.Fatalf("hub.connected %v", p)
		}
		var last string
		for i := range 5 {
			id := th.publish("NEWS", i, "alice")["alice"]
			// the event must come through on its own, before the next one is
			// published: nothing else would push it out of a proxy buffer
			if e := c.next(5 * time.Second); e.ID != id {
				t.Fatalf("event %d through nginx: got %s, want %s", i, e.raw, id)
			}
			last = id
		}
		c.close()
		// resume through the proxy: the Last-Event-ID header reaches the hub
		missed := th.publish("WHILE_AWAY", nil, "alice")["alice"]
		c, _, _, err = dialSSE(t, sseDial{URL: sseURL, Token: tok, LastID: last})
		if err != nil || c == nil {
			t.Fatalf("resume through nginx: %v", err)
		}
		expectConnected(t, c, true, 1)
		expectIDs(t, c, []string{missed}, "replay through nginx")
	})

	t.Run("websocket works through it", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, _, err := websocket.Dial(ctx, "ws://"+proxy+th.Config.WSPath+"?token="+tok, nil)
		if err != nil {
			t.Fatalf("websocket through nginx: %v", err)
		}
		w := &wsClient{t: t, c: conn, ch: make(chan envelope, 1000), done: make(chan struct{})}
		go readWS(w)
		defer func() { conn.CloseNow(); <-w.done }()
		if p := w.connected(); p["transport"] != "websocket" {
			t.Fatalf("hub.connected %v", p)
		}
		for i := range 3 {
			id := th.publish("NEWS", i, "alice")["alice"]
			if e := w.next(5 * time.Second); e.ID != id {
				t.Fatalf("event %d through nginx: got %s, want %s", i, e.raw, id)
			}
		}
		w.send(map[string]string{"type": "WHAT"})
		if e := w.next(5 * time.Second); e.Type != "hub.error" {
			t.Fatalf("client frame through nginx: got %s, want hub.error", e.raw)
		}
	})
}

// readWS is the reader loop of a wsClient made outside the harness.
func readWS(w *wsClient) {
	defer close(w.done)
	for {
		_, b, err := w.c.Read(context.Background())
		if err != nil {
			w.closeErr = err
			return
		}
		e, err := decodeEnvelope(b)
		if err != nil {
			w.closeErr = fmt.Errorf("decode frame: %w", err)
			return
		}
		w.ch <- e
	}
}
