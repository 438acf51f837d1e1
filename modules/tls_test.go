package modules_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with the given
// common name and returns its DER bytes.
func writeCert(t *testing.T, dir, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return der
}

func TestTLSHTTP2SSEAndWebSocket(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, "first")
	th := startHub(t, func(c *config.Config) {
		c.TLSCertFile = filepath.Join(dir, "cert.pem")
		c.TLSKeyFile = filepath.Join(dir, "key.pem")
	})
	base := "https://" + th.Servers.Addr()
	insecure := &tls.Config{InsecureSkipVerify: true}

	// SSE over HTTP/2
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
	defer h2.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+th.Config.SSEPath, nil)
	req.Header.Set("Authorization", "Bearer "+th.token("alice", time.Hour))
	req.Header.Set("Accept", "text/event-stream")
	resp, err := h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("proto %s, content type %q", resp.Proto, resp.Header.Get("Content-Type"))
	}
	events := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events <- d
			}
		}
		close(events)
	}()
	if d := <-events; !strings.Contains(d, `"hub.connected"`) {
		t.Fatalf("first SSE event %s", d)
	}

	// WebSocket over TLS (HTTP/1.1 upgrade)
	wsCtx, wsCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wsCancel()
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer h1.CloseIdleConnections()
	c, _, err := websocket.Dial(wsCtx, "wss://"+th.Servers.Addr()+th.Config.WSPath+"?token="+th.token("alice", time.Hour),
		&websocket.DialOptions{HTTPClient: h1})
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	defer c.CloseNow()
	if _, b, err := c.Read(wsCtx); err != nil || !strings.Contains(string(b), `"hub.connected"`) {
		t.Fatalf("wss first frame %s %v", b, err)
	}

	// SSE over TLS with HTTP/1.1: the stream is taken over from net/http on
	// a TLS connection (no raw socket: written and read on goroutines).
	req1, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+th.Config.SSEPath, nil)
	req1.Header.Set("Authorization", "Bearer "+th.token("alice", time.Hour))
	resp1, err := h1.Do(req1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp1.Body.Close()
	if resp1.ProtoMajor != 1 {
		t.Fatalf("SSE over HTTP/1.1 TLS: proto %s", resp1.Proto)
	}
	events1 := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(resp1.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events1 <- d
			}
		}
		close(events1)
	}()
	if d := <-events1; !strings.Contains(d, `"hub.connected"`) {
		t.Fatalf("first SSE (HTTP/1.1 TLS) event %s", d)
	}

	// Publish over the (plain or TLS) API and receive on all three.
	status, body := postTLS(t, h1, base+"/api/broadcast", `{"userIds":["alice"],"type":"OVER_TLS","payload":1}`)
	if status != http.StatusAccepted {
		t.Fatalf("broadcast over TLS: %d %v", status, body)
	}
	if d := <-events; !strings.Contains(d, `"OVER_TLS"`) {
		t.Fatalf("SSE over h2 got %s", d)
	}
	if d := <-events1; !strings.Contains(d, `"OVER_TLS"`) {
		t.Fatalf("SSE over HTTP/1.1 TLS got %s", d)
	}
	if _, b, err := c.Read(wsCtx); err != nil || !strings.Contains(string(b), `"OVER_TLS"`) {
		t.Fatalf("wss got %s %v", b, err)
	}

	// SIGHUP reloads a replaced certificate.
	der := writeCert(t, dir, "second")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, "the new certificate to be served", func() bool {
		conn, err := tls.Dial("tcp", th.Servers.Addr(), insecure)
		if err != nil {
			return false
		}
		defer conn.Close()
		return string(conn.ConnectionState().PeerCertificates[0].Raw) == string(der)
	})

	// A disconnect ends the HTTP/1.1 TLS stream with hub.closed, then EOF.
	status, body = postTLS(t, h1, base+"/api/users/alice/disconnect", "")
	if status != http.StatusOK && status != http.StatusAccepted {
		t.Fatalf("disconnect over TLS: %d %v", status, body)
	}
	sawClosed := false
	for d := range events1 {
		sawClosed = sawClosed || strings.Contains(d, `"hub.closed"`)
	}
	if !sawClosed {
		t.Fatal("the HTTP/1.1 TLS stream ended without hub.closed")
	}
}

func postTLS(t *testing.T, c *http.Client, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("X-API-Key", hubtest.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}
