package web_test

// The admin dashboard (/admin) in a real Chromium against the assembled hub,
// under a load of real connections and publishes: its charts move, a user
// lookup and a disconnect work, a token without the admin role is refused.
// Screenshots go to docs/screenshots/ (see saveScreenshot).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
)

func TestAdminBrowser(t *testing.T) {
	b := startBrowser(t)
	t.Run("charts move under load, user lookup and disconnect", func(t *testing.T) { testAdminLoad(t, b) })
	t.Run("a token without the admin role is refused", func(t *testing.T) { testAdminRefused(t, b) })
	t.Run("cluster of two nodes", func(t *testing.T) { testAdminCluster(t, b) })
}

// adminLoadConfig: the API on the internal listener (where /admin is
// served), three connections per user at most (a fourth is refused), a
// short send queue (a silent connection is cut quickly).
func adminLoadConfig(c *config.Config) {
	c.InternalAddr = "127.0.0.1:0"
	c.MaxConnectionsPerUser = 3
	c.SendQueue = 32
	c.MaxPayload = 1 << 20
}

func testAdminLoad(t *testing.T, b context.Context) {
	h := startHub(t, adminLoadConfig)
	if h.API == h.URL {
		t.Fatal("the hub has no internal listener")
	}
	p := openAdmin(t, b, h.API)
	login(t, p, hubtest.Token(t, "ops", time.Hour, auth.RoleAdmin))
	p.waitFor(t, "the first points", `hubAdmin.polls >= 1 && hubAdmin.data.t.length >= 1`, 10*time.Second)
	if s := evalT[string](t, p, `document.getElementById("live").dataset.state`); s != "live" {
		t.Errorf("live state %q, want live", s)
	}
	if n := evalT[string](t, p, `document.getElementById("tile-connections").textContent`); n != "0" {
		t.Errorf("connections before the load: %q, want 0", n)
	}
	pointsBefore := evalT[int](t, p, `hubAdmin.charts.transports.data[0].length`)

	// The load: six users with two WebSockets and one SSE stream each, that
	// read everything; a fourth connection of three of them is refused; a
	// broadcast to everybody every 20 ms; a silent WebSocket cut as a slow
	// consumer.
	l := startLoad(t, h)
	for i := range 6 {
		user := fmt.Sprintf("u%d", i)
		l.websocket(user)
		l.websocket(user)
		l.sse(user)
	}
	hubtest.Eventually(t, 10*time.Second, "18 connections", func() bool { return h.Hub.Stats().TotalConnections == 18 })
	for i := range 3 {
		l.refused(fmt.Sprintf("u%d", i))
	}
	l.publishAll(20 * time.Millisecond)
	l.slowConsumer()

	p.waitFor(t, "18 connections charted", `hubAdmin.last.connections.websocket === 12 && hubAdmin.last.connections.sse === 6`, 10*time.Second)
	p.waitFor(t, "deliveries and publishes charted", `hubAdmin.last.deliveries > 0 && hubAdmin.last.publishes > 0 && hubAdmin.last.latencyP99Ms !== null`, 10*time.Second)
	p.waitFor(t, "refusals and slow-consumer closes charted",
		`hubAdmin.data.refusals.some((v) => v > 0) && hubAdmin.data.slow.some((v) => v > 0)`, 15*time.Second)
	// a few more seconds of load, so that the picture shows its shape
	p.waitFor(t, "more points", fmt.Sprintf(`hubAdmin.charts.transports.data[0].length >= %d`, pointsBefore+6), 15*time.Second)

	// The charts moved: more points, and their last values are the load's.
	var charts struct {
		Points      int       `json:"points"`
		WebSocket   float64   `json:"websocket"`
		SSE         float64   `json:"sse"`
		Deliveries  []float64 `json:"deliveries"`
		NodeSeries  []string  `json:"nodeSeries"`
		LastNode    float64   `json:"lastNode"`
		Connections string    `json:"connections"`
		Users       string    `json:"users"`
		Broker      string    `json:"broker"`
	}
	decodeEval(t, p, `(() => {
	  const c = hubAdmin.charts, last = (a) => a[a.length - 1];
	  return JSON.stringify({
	    points: c.transports.data[0].length,
	    websocket: last(c.transports.data[1]), sse: last(c.transports.data[2]),
	    deliveries: c.rates.data[1].filter((v) => v !== null),
	    nodeSeries: c.nodes.series.slice(1).map((s) => s.label),
	    lastNode: last(c.nodes.data[1]),
	    connections: document.getElementById("tile-connections").textContent,
	    users: document.getElementById("tile-users").textContent,
	    broker: document.getElementById("tile-broker").dataset.state,
	  });
	})()`, &charts)
	if charts.Points <= pointsBefore || charts.WebSocket != 12 || charts.SSE != 6 {
		t.Errorf("connections chart: %d points (before the load %d), last websocket %v sse %v; want more points, 12 and 6",
			charts.Points, pointsBefore, charts.WebSocket, charts.SSE)
	}
	if maxOf(charts.Deliveries) < 100 {
		t.Errorf("deliveries/s chart %v: want a point above 100/s (18 connections, 50 broadcasts a second)", charts.Deliveries)
	}
	if len(charts.NodeSeries) != 1 || charts.NodeSeries[0] != "hub-test" || charts.LastNode != 18 {
		t.Errorf("node chart: series %v, last %v; want hub-test at 18", charts.NodeSeries, charts.LastNode)
	}
	if charts.Connections != "18" || charts.Users != "6" || charts.Broker != "none" {
		t.Errorf("tiles: connections %q users %q broker %q; want 18, 6, none", charts.Connections, charts.Users, charts.Broker)
	}
	p.waitFor(t, "the node table", `document.querySelector('#nodes tbody tr[data-node="hub-test"]') !== null && document.querySelector('#nodes tbody tr[data-node="hub-test"] td:nth-child(4)').textContent === "18"`, 10*time.Second)

	// A user's connections: the endpoint is GET /api/users/{id}/connections.
	// Where this hub does not serve it yet, the page shows the 404.
	status, listed := userConnections(t, h, "u1")
	run(t, p, chromedp.SetValue(chromedp.ID("user-id"), "u1"))
	run(t, p, chromedp.Click(chromedp.ID("user-lookup")))
	p.waitFor(t, "the lookup's answer", `!document.getElementById("user-result").textContent.startsWith("Looking up")
	  && document.getElementById("user-result").textContent !== ""`, 10*time.Second)
	result := evalT[string](t, p, `document.getElementById("user-result").textContent`)
	switch status {
	case http.StatusOK:
		rows := evalT[int](t, p, `document.querySelectorAll("#user-connections tbody tr").length`)
		if listed != 3 || rows != 3 || !strings.Contains(result, "3 connections") {
			t.Errorf("lookup of u1: the API lists %d, the page %d rows and says %q; want 3", listed, rows, result)
		}
	case http.StatusNotFound:
		if !strings.Contains(result, "404 not_found") {
			t.Errorf("lookup of u1 where the endpoint is missing: page says %q, want the 404", result)
		}
	default:
		t.Fatalf("GET /api/users/u1/connections: status %d", status)
	}
	saveScreenshot(t, p, "admin.png", 1280, 900)

	// Disconnect: every connection of u1 closes (4003 on WebSocket, the
	// stream's end on SSE), and the page says how many.
	run(t, p, chromedp.Click(chromedp.ID("user-disconnect")))
	p.waitFor(t, "the disconnect's answer", `document.getElementById("user-result").textContent.startsWith("Disconnected u1")`, 10*time.Second)
	if r := evalT[string](t, p, `document.getElementById("user-result").textContent`); !strings.Contains(r, "3 connections closed") {
		t.Errorf("disconnect says %q, want 3 connections closed", r)
	}
	l.waitClosed(t, "u1", 3)
	p.waitFor(t, "15 connections charted", `hubAdmin.last.connections.websocket === 10 && hubAdmin.last.connections.sse === 5`, 10*time.Second)
}

func testAdminRefused(t *testing.T, b context.Context) {
	h := startHub(t, func(c *config.Config) { c.InternalAddr = "127.0.0.1:0" })
	p := openAdmin(t, b, h.API)
	tests := []struct {
		name  string
		token string
		want  string
	}{
		{"service JWT", hubtest.Token(t, "svc", time.Hour, auth.RoleService), "This token is not an admin token (403 forbidden"},
		{"user JWT", hubtest.Token(t, "u1", time.Hour), "This token is not an admin token (403 forbidden"},
		{"expired admin JWT", hubtest.ExpiredToken(t, "ops", auth.RoleAdmin), "The hub refused this token (401 token_expired"},
	}
	for _, tt := range tests {
		login(t, p, tt.token)
		p.waitFor(t, tt.name+" refused", `document.getElementById("live").dataset.state === "error"`, 10*time.Second)
		if m := evalT[string](t, p, `document.getElementById("message").textContent`); !strings.HasPrefix(m, tt.want) {
			t.Errorf("%s: message %q, want it to start with %q", tt.name, m, tt.want)
		}
		if kept := evalT[bool](t, p, `sessionStorage.getItem("hub.admin.token") !== null`); kept {
			t.Errorf("%s: the refused token is kept in sessionStorage", tt.name)
		}
		if n := evalT[int](t, p, `hubAdmin.data.t.length`); n != 0 {
			t.Errorf("%s: %d points charted with a refused token", tt.name, n)
		}
	}

	// An admin JWT then works, and is kept for the tab: a reload uses it.
	login(t, p, hubtest.Token(t, "ops", time.Hour, auth.RoleAdmin))
	p.waitFor(t, "live with the admin token", `document.getElementById("live").dataset.state === "live" && hubAdmin.data.t.length > 0`, 10*time.Second)
	run(t, p, chromedp.Reload())
	p.waitFor(t, "live again after a reload", `window.hubAdmin && hubAdmin.polls >= 1 && document.getElementById("live").dataset.state === "live"`, 10*time.Second)
	run(t, p, chromedp.Click(chromedp.ID("forget-token")))
	if kept := evalT[bool](t, p, `sessionStorage.getItem("hub.admin.token") !== null`); kept {
		t.Error("Forget left the token in sessionStorage")
	}
}

func testAdminCluster(t *testing.T, b context.Context) {
	// a redis-server of the test's own: skipped without one, unless HUB_REQUIRE_REDIS=1
	redisURL := hubtest.StartRedisServer(t).URL()
	cluster := func(name string) func(*config.Config) {
		return func(c *config.Config) {
			c.NodeName = name
			c.Broker = "redis"
			c.RedisURL = redisURL
		}
	}
	h1 := startHub(t, cluster("hub-1"))
	h2 := startHub(t, cluster("hub-2"))
	l1, l2 := startLoad(t, h1), startLoad(t, h2)
	for i := range 4 {
		l1.websocket(fmt.Sprintf("u%d", i))
		l2.sse(fmt.Sprintf("u%d", i))
		l2.websocket(fmt.Sprintf("v%d", i))
	}
	hubtest.Eventually(t, 10*time.Second, "connections on both nodes", func() bool {
		return h1.Hub.Stats().TotalConnections == 4 && h2.Hub.Stats().TotalConnections == 8
	})
	l1.publishAll(50 * time.Millisecond)

	p := openAdmin(t, b, h1.API)
	login(t, p, hubtest.Token(t, "ops", time.Hour, auth.RoleAdmin))
	p.waitFor(t, "both nodes charted", `(() => { const n = hubAdmin.data.nodes;
	  return n.has("hub-1") && n.has("hub-2") && n.get("hub-1").at(-1) === 4 && n.get("hub-2").at(-1) === 8; })()`, 15*time.Second)
	p.waitFor(t, "the broker reachable", `hubAdmin.last.broker === "ok" && document.getElementById("tile-broker").dataset.state === "ok"`, 10*time.Second)
	p.waitFor(t, "two rows in the node table", `document.querySelectorAll("#nodes tbody tr").length === 2
	  && document.querySelector('#nodes tbody tr[data-node="hub-2"] td:nth-child(4)').textContent === "8"`, 10*time.Second)
	p.waitFor(t, "a few points", `hubAdmin.data.t.length >= 6`, 15*time.Second)
	if labels := evalT[[]string](t, p, `hubAdmin.charts.nodes.series.slice(1).map((s) => s.label)`); strings.Join(labels, ",") != "hub-1,hub-2" {
		t.Errorf("node chart series %v, want hub-1, hub-2", labels)
	}
	if hidden := evalT[bool](t, p, `document.getElementById("chart-broker").hidden`); hidden {
		t.Error("the broker chart is hidden on a cluster")
	}
	saveScreenshot(t, p, "admin-cluster.png", 1280, 900)
}

// ---- the page ----------------------------------------------------------------------------

// openAdmin opens a tab on base + "/admin"; it closes at cleanup.
func openAdmin(t *testing.T, browser context.Context, base string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(func() {
		if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("close tab: %v", err)
		}
		cancel()
	})
	p := &page{ctx: ctx}
	// The first action on the tab's own context (not one derived from it,
	// whose end would close the tab) creates the tab.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(base+"/admin")); err != nil {
		t.Fatalf("navigate to %s/admin: %v", base, err)
	}
	p.waitFor(t, "the dashboard's script", `window.hubAdmin !== undefined && typeof uPlot === "function"`, 10*time.Second)
	return p
}

// login enters token in the page's form.
func login(t *testing.T, p *page, token string) {
	t.Helper()
	run(t, p, chromedp.SetValue(chromedp.ID("admin-token"), token))
	run(t, p, chromedp.Click(chromedp.ID("use-token")))
}

// saveScreenshot takes a full-page screenshot at width x height into
// docs/screenshots/name, rewritten when missing or with HUB_SCREENSHOTS=1
// (into a temporary directory otherwise, so that an ordinary run leaves the
// work tree clean).
func saveScreenshot(t *testing.T, p *page, name string, width, height int64) {
	t.Helper()
	run(t, p, chromedp.EmulateViewport(width, height))
	png := run(t, p, chromedp.FullScreenshot(100))
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	dir := filepath.Join("..", "docs", "screenshots")
	if _, err := os.Stat(filepath.Join(dir, name)); err == nil && os.Getenv("HUB_SCREENSHOTS") != "1" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// userConnections asks the API for a user's connections with an admin JWT:
// the status and, on 200, how many are listed.
func userConnections(t *testing.T, h *testHub, user string) (int, int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.API+"/api/users/"+url.PathEscape(user)+"/connections", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+hubtest.Token(t, "ops", time.Hour, auth.RoleAdmin))
	res, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var a struct {
		Connections []json.RawMessage `json:"connections"`
	}
	if res.StatusCode == http.StatusOK {
		if err := json.NewDecoder(res.Body).Decode(&a); err != nil {
			t.Fatal(err)
		}
	}
	return res.StatusCode, len(a.Connections)
}

func maxOf(vs []float64) float64 {
	m := 0.0
	for _, v := range vs {
		m = max(m, v)
	}
	return m
}

// ---- the load ------------------------------------------------------------------------------

// load holds real connections to a hub that read everything they get, and
// background publishers; everything stops (and is waited for) at cleanup,
// before the hub stops.
type load struct {
	t      *testing.T
	h      *testHub
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed map[string]int // connections of a user that ended
}

func startLoad(t *testing.T, h *testHub) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{t: t, h: h, ctx: ctx, cancel: cancel, closed: map[string]int{}}
	t.Cleanup(func() {
		cancel()
		l.wg.Wait()
	})
	return l
}

func (l *load) ended(user string) {
	l.mu.Lock()
	l.closed[user]++
	l.mu.Unlock()
}

// waitClosed waits until n connections of user have ended.
func (l *load) waitClosed(t *testing.T, user string, n int) {
	t.Helper()
	hubtest.Eventually(t, 10*time.Second, fmt.Sprintf("%d connections of %s closed", n, user), func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.closed[user] == n
	})
}

// websocket opens a WebSocket of user that reads until it is closed.
func (l *load) websocket(user string) {
	l.t.Helper()
	c, _, err := websocket.Dial(l.ctx, l.h.WSURL, &websocket.DialOptions{
		HTTPClient: l.h.client,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + hubtest.Token(l.t, user, time.Hour)}},
	})
	if err != nil {
		l.t.Fatalf("websocket of %s: %v", user, err)
	}
	c.SetReadLimit(1 << 20)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer c.CloseNow()
		for {
			if _, _, err := c.Read(l.ctx); err != nil {
				if l.ctx.Err() == nil {
					l.ended(user)
				}
				return
			}
		}
	}()
}

// sse opens an SSE stream of user that reads until it ends.
func (l *load) sse(user string) {
	l.t.Helper()
	req, err := http.NewRequestWithContext(l.ctx, http.MethodGet, l.h.SSEURL, nil)
	if err != nil {
		l.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+hubtest.Token(l.t, user, time.Hour))
	req.Header.Set("Accept", "text/event-stream")
	res, err := l.h.client.Do(req)
	if err != nil || res.StatusCode != http.StatusOK {
		l.t.Fatalf("sse of %s: %v %v", user, err, res)
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, res.Body)
		if l.ctx.Err() == nil {
			l.ended(user)
		}
	}()
}

// refused tries one more WebSocket of user, which must be refused with
// 429 too_many_connections (the per-user limit).
func (l *load) refused(user string) {
	l.t.Helper()
	c, res, err := websocket.Dial(l.ctx, l.h.WSURL, &websocket.DialOptions{
		HTTPClient: l.h.client,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + hubtest.Token(l.t, user, time.Hour)}},
	})
	if err == nil {
		c.CloseNow()
		l.t.Fatalf("a fourth connection of %s was accepted", user)
	}
	if res == nil || res.StatusCode != http.StatusTooManyRequests {
		l.t.Fatalf("a fourth connection of %s: %v, want 429", user, err)
	}
}

// publishAll broadcasts to everybody every interval until cleanup.
func (l *load) publishAll(every time.Duration) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-l.ctx.Done():
				return
			case <-tick.C:
			}
			_, _ = postBroadcast(l.ctx, l.h.client, l.h.API, map[string]any{"all": true, "type": "TICK", "payload": map[string]int{"n": n}})
		}
	}()
}

// slowConsumer opens a WebSocket of user "slow" with a tiny receive
// buffer that never reads, and publishes 32 KiB events to it until the hub
// counts it as a slow consumer (its close may take longer: the socket is
// full).
func (l *load) slowConsumer() {
	l.t.Helper()
	addr := strings.TrimPrefix(l.h.URL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		l.t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
		l.h.Config.WSPath, addr, hubtest.Token(l.t, "slow", time.Hour))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		l.t.Fatalf("silent websocket: %v %v", err, res)
	}
	big := strings.Repeat("x", 32<<10)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if time.Now().After(deadline) {
			l.t.Fatal("the silent connection was never cut")
		}
		if _, err := postBroadcast(l.ctx, l.h.client, l.h.API, map[string]any{"userIds": []string{"slow"}, "type": "BIG", "payload": big}); err != nil {
			l.t.Fatal(err)
		}
		if l.counter("hub_slow_consumer_closes_total") > 0 {
			return
		}
	}
}

// counter sums a counter family of the hub's /metrics over its labels.
func (l *load) counter(family string) float64 {
	l.t.Helper()
	res, err := l.h.client.Get(l.h.API + "/metrics")
	if err != nil {
		l.t.Fatal(err)
	}
	defer res.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if name, _, _ = strings.Cut(name, "{"); ok && name == family {
			var v float64
			if _, err := fmt.Sscan(value, &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}
