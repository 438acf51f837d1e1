package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/hubtest/app"
)

// TestBench runs each scenario of `hubctl bench` against a real hub, small,
// and checks its one JSON line: every connection connected and every
// delivery arrived once.
func TestBench(t *testing.T) {
	th := app.Start(t, nil)
	for _, tt := range []struct {
		name string
		args []string
		want int // deliveries (0 for idle)
	}{
		{"idle ws", []string{"--scenario", "idle", "--transport", "ws", "--conns", "30", "--settle", "100ms"}, 0},
		{"idle sse", []string{"--scenario", "idle", "--transport", "sse", "--conns", "30", "--settle", "100ms"}, 0},
		{"fanout ws", []string{"--scenario", "fanout", "--transport", "ws", "--conns", "20", "--events", "5"}, 100},
		{"fanout sse", []string{"--scenario", "fanout", "--transport", "sse", "--conns", "20", "--events", "5"}, 100},
		{"unicast batched", []string{"--scenario", "unicast", "--transport", "ws", "--conns", "20", "--events", "40", "--batch", "10"}, 40},
		{"unicast, 10 users per broadcast call", []string{"--scenario", "unicast", "--transport", "ws", "--conns", "20", "--events", "40", "--batch", "10", "--unicast-api", "broadcast"}, 40},
		{"fanout ws compressed, JSON payloads", []string{"--scenario", "fanout", "--transport", "ws", "--conns", "20", "--events", "5",
			"--compression", "--payload-kind", "json", "--payload-bytes", "1024"}, 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"bench", "--url", th.URL, "--secret", hubtest.Secret, "--api-key", hubtest.APIKey, "--timeout", "1m"}, tt.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			if code := runContext(ctx, args, strings.NewReader(""), &out, &errOut); code != exitOK {
				t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
			}
			if strings.Count(out.String(), "\n") != 1 {
				t.Fatalf("want one JSON line, got %q", out.String())
			}
			var res struct {
				Conns, Connected                       int
				Deliveries, ExpectedDeliveries         int64
				Missing, Extra                         int64
				ConnectsPerSecond, DeliveriesPerSecond float64
				Compression                            bool
				BytesPerDelivery                       float64
				PayloadBytes                           int
			}
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("%v: %s", err, out.String())
			}
			if res.Connected != res.Conns || res.Conns == 0 || res.ConnectsPerSecond <= 0 {
				t.Fatalf("connected %d of %d (%.0f/s)", res.Connected, res.Conns, res.ConnectsPerSecond)
			}
			if res.Deliveries != int64(tt.want) || res.Missing != 0 || res.Extra != 0 {
				t.Fatalf("deliveries %d (want %d), missing %d, extra %d", res.Deliveries, tt.want, res.Missing, res.Extra)
			}
			if tt.want > 0 && (res.ExpectedDeliveries != int64(tt.want) || res.DeliveriesPerSecond <= 0) {
				t.Fatalf("expected %d, rate %v", res.ExpectedDeliveries, res.DeliveriesPerSecond)
			}
			if res.Compression && (res.BytesPerDelivery <= 0 || res.BytesPerDelivery*1.5 > float64(res.PayloadBytes)) {
				t.Fatalf("compressed: %.0f bytes per delivery of a %d-byte payload", res.BytesPerDelivery, res.PayloadBytes)
			}
		})
	}
	t.Run("usage", func(t *testing.T) {
		var out, errOut bytes.Buffer
		code := runContext(context.Background(), []string{"bench", "--conns", "0", "--secret", "s"}, strings.NewReader(""), &out, &errOut)
		if code != exitUsage || !strings.Contains(errOut.String(), "--conns") {
			t.Fatalf("exit %d, %q", code, errOut.String())
		}
	})
}

// TestBenchTLSAndRefusals: hubbench connects over TLS (https:// with
// --insecure; without it the self-signed certificate is refused), and a
// refused handshake is reported with its status.
func TestBenchTLSAndRefusals(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	tlsHub := app.Start(t, func(c *config.Config) {
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
	})
	plain := app.Start(t, nil)
	run := func(t *testing.T, url, secret string, extra ...string) (int, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		args := append([]string{"bench", "--url", url, "--secret", secret, "--timeout", "1m", "--settle", "100ms", "--conns", "10"}, extra...)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		code := runContext(ctx, args, strings.NewReader(""), &out, &errOut)
		return code, out.String() + errOut.String()
	}
	https := "https://" + tlsHub.Servers.Addr()
	for _, tr := range []string{"ws", "sse"} {
		t.Run("TLS "+tr, func(t *testing.T) {
			code, out := run(t, https, hubtest.Secret, "--insecure", "--transport", tr)
			var res struct{ Conns, Connected int }
			_ = json.Unmarshal([]byte(out[:strings.IndexByte(out, '\n')+1]), &res)
			if code != exitOK || res.Connected != 10 {
				t.Fatalf("exit %d, connected %d: %s", code, res.Connected, out)
			}
		})
	}
	t.Run("TLS certificate verified without --insecure", func(t *testing.T) {
		code, out := run(t, https, hubtest.Secret)
		if code == exitOK || !strings.Contains(out, "certificate") {
			t.Fatalf("exit %d: %s", code, out)
		}
	})
	t.Run("refused handshake", func(t *testing.T) {
		for _, tr := range []string{"ws", "sse"} {
			code, out := run(t, plain.URL, "another-secret-0123456789abcdef0123", "--transport", tr)
			if code == exitOK || !strings.Contains(out, "status 401") {
				t.Fatalf("%s: exit %d: %s", tr, code, out)
			}
		}
	})
}

// writeSelfSigned writes a self-signed ECDSA certificate for 127.0.0.1 and
// its key, and returns the two paths.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for f, b := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: kb}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}
