//go:build unix

package modules_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
)

// idleConns is how many connections of each transport the idle test holds.
const idleConns = 2000

// TestIdleGoroutinesPerConnection holds idleConns idle connections of each
// transport and checks how many goroutines each costs the server once the
// hub is idle. The clients start no goroutine at all (they read the
// handshake and hub.connected synchronously, then just hold the socket), so
// the growth of runtime.NumGoroutine is the server's alone.
//
// The design figures: on Linux an idle WebSocket costs no goroutine (its
// socket waits in the endpoint's epoll instance, and a reader runs only
// while there is something to read; the writer only while the queue has
// something); elsewhere one, its reader. The same holds for an HTTP/1.1 SSE
// stream, which is taken over from net/http and its socket polled to notice
// the client leaving (an HTTP/2 stream, not measured here, keeps its
// handler as the writer). A writer or reader goroutine kept per idle
// connection would fail the test.
func TestIdleGoroutinesPerConnection(t *testing.T) {
	raiseFileLimit(t, 4*idleConns+1000)
	th := startHub(t, func(c *config.Config) {
		c.MaxConnectionsPerUser = 0
		c.LogLevel = "warn"
		c.HeartbeatInterval = time.Hour // no ping goroutine may run while counting
	})
	tests := []struct {
		give string // transport
		want int    // goroutines per idle connection, at most
	}{
		{give: "websocket", want: wsIdleGoroutines()},
		{give: "sse", want: wsIdleGoroutines()}, // HTTP/1.1 streams are taken over from net/http and polled like WebSockets
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			base := settledGoroutines(t, 2*time.Second)
			conns := openIdle(t, th, tt.give, idleConns)
			hubtest.Eventually(t, 10*time.Second, "every connection registered", func() bool {
				return th.Hub.Stats().Connections[tt.give] == idleConns
			})
			limit := base + tt.want*idleConns + 50 // slack for the hub's own short-lived goroutines
			var n int
			deadline := time.Now().Add(10 * time.Second)
			for {
				n = runtime.NumGoroutine()
				if n <= limit || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			per := float64(n-base) / idleConns
			t.Logf("%s: %d goroutines before, %d with %d idle connections: %.3f per connection",
				tt.give, base, n, idleConns, per)
			if n > limit {
				t.Errorf("%s: %.3f goroutines per idle connection, want at most %d", tt.give, per, tt.want)
			}
			for _, c := range conns {
				_ = c.Close()
			}
			hubtest.Eventually(t, 15*time.Second, "connections gone", func() bool {
				return th.Hub.Stats().TotalConnections == 0 && runtime.NumGoroutine() <= base+50
			})
		})
	}
}

// settledGoroutines waits until the goroutine count stops changing (or d
// passes) and returns it.
func settledGoroutines(t *testing.T, d time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(d)
	prev := runtime.NumGoroutine()
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n == prev {
			return n
		}
		prev = n
	}
	return prev
}

// raiseFileLimit makes sure the process may open need files.
func raiseFileLimit(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("get file limit: %v", err)
	}
	if lim.Cur >= need {
		return
	}
	if lim.Max < need {
		t.Skipf("file limit %d (hard %d) is below the %d this test needs", lim.Cur, lim.Max, need)
	}
	old := lim
	lim.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raise file limit: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// openIdle opens n connections of the transport, each as its own user, and
// returns once every one has read its hub.connected. The dialing goroutines
// have ended when it returns.
func openIdle(t *testing.T, th *testHub, transport string, n int) []net.Conn {
	t.Helper()
	u, err := url.Parse(th.URL)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	const dialers = 8
	for w := range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += dialers {
				tok, err := auth.Mint(hubtest.Secret, "HS256", fmt.Sprintf("idle-%s-%d", transport, i), nil, time.Hour)
				if err != nil {
					errs[i] = err
					continue
				}
				conns[i], errs[i] = dialIdle(u.Host, transport, th.Config, tok)
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	return conns
}

// dialIdle opens one raw connection, performs the handshake and reads up to
// and including hub.connected, synchronously; it starts no goroutine.
func dialIdle(host, transport string, cfg config.Config, token string) (net.Conn, error) {
	nc, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	ws := transport == "websocket"
	path := cfg.SSEPath
	if ws {
		path = cfg.WSPath
	}
	req := fmt.Sprintf("GET %s?token=%s HTTP/1.1\r\nHost: %s\r\n", path, url.QueryEscape(token), host)
	if ws {
		var key [16]byte
		_, _ = rand.Read(key[:])
		req += "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
			base64.StdEncoding.EncodeToString(key[:]) + "\r\n"
	} else {
		req += "Accept: text/event-stream\r\n"
	}
	if _, err := io.WriteString(nc, req+"\r\n"); err != nil {
		nc.Close()
		return nil, fmt.Errorf("write handshake: %w", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("read handshake: %w", err)
	}
	want := http.StatusOK
	if ws {
		want = http.StatusSwitchingProtocols
	}
	if resp.StatusCode != want {
		nc.Close()
		return nil, fmt.Errorf("handshake status %d, want %d", resp.StatusCode, want)
	}
	if ws {
		err = readWSConnected(br)
	} else {
		err = readSSEConnected(bufio.NewReader(resp.Body))
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, nil
}

var connectedType = []byte(`"type":"hub.connected"`)

// readWSConnected reads server frames (unmasked, unfragmented) until a text
// frame with hub.connected.
func readWSConnected(br *bufio.Reader) error {
	for {
		var h [8]byte
		if _, err := io.ReadFull(br, h[:2]); err != nil {
			return fmt.Errorf("read frame: %w", err)
		}
		op, n := h[0]&0x0f, uint64(h[1]&0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, h[:2]); err != nil {
				return fmt.Errorf("read frame: %w", err)
			}
			n = uint64(binary.BigEndian.Uint16(h[:2]))
		case 127:
			if _, err := io.ReadFull(br, h[:8]); err != nil {
				return fmt.Errorf("read frame: %w", err)
			}
			n = binary.BigEndian.Uint64(h[:8])
		}
		if n > 1<<16 {
			return fmt.Errorf("frame of %d bytes", n)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return fmt.Errorf("read frame: %w", err)
		}
		if op == 1 && bytes.Contains(b, connectedType) {
			return nil
		}
		if op == 8 {
			return fmt.Errorf("closed before hub.connected: %q", b)
		}
	}
}

// readSSEConnected reads stream lines until the data line of hub.connected.
func readSSEConnected(rd *bufio.Reader) error {
	for {
		line, err := rd.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("read stream: %w", err)
		}
		if bytes.HasPrefix(line, []byte("data: ")) && bytes.Contains(line, connectedType) {
			return nil
		}
	}
}

// wsIdleGoroutines is what an idle WebSocket or HTTP/1.1 SSE stream costs
// by design: no goroutine where the endpoints poll sockets themselves
// (Linux), else its reader.
func wsIdleGoroutines() int {
	if runtime.GOOS == "linux" {
		return 0
	}
	return 1
}
