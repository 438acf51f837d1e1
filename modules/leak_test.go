//go:build unix

package modules_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
)

// leakConnections is how many connections TestLeakConnections opens and
// closes: 10,000, or 4,000 under the race detector (which makes each
// handshake several times slower); see race_on_test.go.
func leakConnections() int {
	if raceEnabled {
		return 4000
	}
	return 10000
}

const (
	// leakConcurrency bounds the connections open at once.
	leakConcurrency = 200
	// leakGoroutineMargin is how many goroutines above the baseline still
	// count as none leaked (timers, the runtime, HTTP keep-alive readers
	// finishing); one leaked goroutine per connection would be thousands.
	leakGoroutineMargin = 10
	// leakHeapMargin bounds the heap growth; a leaked 1 KiB per
	// connection would be about 10 MiB (4 MiB under -race).
	leakHeapMargin = 3 << 20
)

// leakDialer opens and closes connections of both transports.
type leakDialer struct {
	th *testHub
	hc *http.Client // SSE: no keep-alive, so that every stream is a new connection
	wc *http.Client // WebSocket handshakes
}

// leakRaiseNoFile lifts RLIMIT_NOFILE to its hard limit when it is low.
func leakRaiseNoFile(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Logf("getrlimit: %v", err)
		return
	}
	if lim.Cur < 4096 && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Logf("setrlimit: %v", err)
		}
	}
}

// one opens connection i (WebSocket when i is even, SSE when odd), waits
// for hub.connected and closes it from the client side, cleanly for half
// of each transport and abruptly for the other half.
func (l *leakDialer) one(i int) error {
	tok, err := auth.Mint(hubtest.Secret, "HS256", fmt.Sprintf("leak-%d", i), nil, time.Hour)
	if err != nil {
		return fmt.Errorf("mint: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if i%2 == 0 {
		c, _, err := websocket.Dial(ctx, l.th.WSURL+"?token="+tok, &websocket.DialOptions{HTTPClient: l.wc})
		if err != nil {
			return fmt.Errorf("websocket %d: %w", i, err)
		}
		_, b, err := c.Read(ctx)
		if err != nil || !strings.Contains(string(b), `"hub.connected"`) {
			c.CloseNow()
			return fmt.Errorf("websocket %d: first frame %q: %v", i, b, err)
		}
		if i%4 == 0 {
			return c.Close(websocket.StatusNormalClosure, "")
		}
		return c.CloseNow()
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, l.th.SSEURL, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := l.hc.Do(req)
	if err != nil {
		return fmt.Errorf("sse %d: %w", i, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("sse %d: status %d", i, resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("sse %d: no hub.connected: %w", i, err)
		}
		if strings.HasPrefix(line, "event: hub.connected") {
			break
		}
	}
	if i%4 == 3 {
		cancel() // abrupt: the request's context ends the connection
	}
	return nil
}

// wave opens connections from..to-1 with at most leakConcurrency at once.
func (l *leakDialer) wave(from, to int) error {
	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, leakConcurrency)
		fails atomic.Int64
		first atomic.Value
	)
	for i := from; i < to; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := l.one(i); err != nil {
				fails.Add(1)
				first.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	if n := fails.Load(); n > 0 {
		return fmt.Errorf("%d of %d connections failed, first: %v", n, to-from, first.Load())
	}
	return nil
}

// leakBaseline waits until the hub holds no connection and the
// goroutine count stops falling, and returns it.
func leakBaseline(t *testing.T, th *testHub) int {
	t.Helper()
	hubtest.Eventually(t, 20*time.Second, "the hub to hold no connection", func() bool {
		return th.Hub.Stats().TotalConnections == 0
	})
	low, steady := runtime.NumGoroutine(), 0
	hubtest.Eventually(t, 20*time.Second, "the goroutine count to settle", func() bool {
		time.Sleep(20 * time.Millisecond) // sampling interval
		n := runtime.NumGoroutine()
		if n < low {
			low, steady = n, 0
			return false
		}
		steady++
		return steady >= 10
	})
	return low
}

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestLeakConnections opens and closes thousands of connections, half
// WebSocket and half SSE, in bounded waves, and checks that the process
// comes back to its baseline: no goroutine and no buffer is left behind
// per connection.
func TestLeakConnections(t *testing.T) {
	leakRaiseNoFile(t)
	th := startHub(t, func(c *config.Config) {
		c.LogLevel = "warn" // debug logs would grow the heap per connection
		c.MaxConnectionsPerUser = 0
	})
	tr := &http.Transport{DisableKeepAlives: true, DisableCompression: true, MaxConnsPerHost: 0}
	wtr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	defer wtr.CloseIdleConnections()
	l := &leakDialer{th: th, hc: &http.Client{Transport: tr}, wc: &http.Client{Transport: wtr}}

	// Warm-up: pools, buffers and lazily started goroutines settle.
	if err := l.wave(0, leakConcurrency); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	tr.CloseIdleConnections()
	wtr.CloseIdleConnections()
	baseG := leakBaseline(t, th)
	baseHeap := heapInuse()

	total := leakConnections()
	start := time.Now()
	for from := leakConcurrency; from < total+leakConcurrency; from += 1000 {
		if err := l.wave(from, min(from+1000, total+leakConcurrency)); err != nil {
			t.Fatal(err)
		}
	}
	opened := time.Since(start)
	tr.CloseIdleConnections()
	wtr.CloseIdleConnections()

	hubtest.Eventually(t, 20*time.Second, "the hub to hold no connection", func() bool {
		return th.Hub.Stats().TotalConnections == 0
	})
	var g int
	deadline := time.Now().Add(20 * time.Second)
	for {
		g = runtime.NumGoroutine()
		if g <= baseG+leakGoroutineMargin {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines after %d connections, baseline %d (+%d allowed); stacks:\n%s",
				g, total, baseG, leakGoroutineMargin, buf[:min(n, 64<<10)])
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	heap := heapInuse()
	growth := int64(heap) - int64(baseHeap)
	t.Logf("%d connections in %v: goroutines %d -> %d, heap in use %d KiB -> %d KiB (%+d KiB)",
		total, opened.Round(time.Millisecond), baseG, g, baseHeap>>10, heap>>10, growth>>10)
	if growth > leakHeapMargin {
		t.Fatalf("heap in use grew by %d KiB over %d connections (more than %d KiB)", growth>>10, total, leakHeapMargin>>10)
	}
}
