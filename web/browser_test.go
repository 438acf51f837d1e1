package web_test

// End-to-end tests of hub.js and the console page in a real headless Chromium,
// driven with chromedp against the fully assembled hub (modules.App) running
// in-process on 127.0.0.1. Without a Chromium they skip, unless
// HUB_REQUIRE_BROWSER=1, where they fail.
//
// The page under test is always the hub's own console page ("/"), so every
// script runs on the hub's origin (or a proxy's) and imports the client the
// hub serves: `await import("/client/hub.js")`. The page-side recorder
// (pageHarness) keeps everything it sees on window.__t; the Go side waits on
// conditions with chromedp.Poll and reads window.__t back.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/hubtest/app"
	"github.com/hubd/hub/modules"
)

func TestBrowser(t *testing.T) {
	b := startBrowser(t)
	t.Run("websocket receives broadcasts", func(t *testing.T) { testWebSocket(t, b) })
	t.Run("websocket compression from chromium", func(t *testing.T) { testWebSocketCompression(t, b) })
	t.Run("websocket refused falls back to sse", func(t *testing.T) { testSSEFallback(t, b) })
	t.Run("hub restart reconnects", func(t *testing.T) { testRestart(t, b) })
	t.Run("network drop resumes from history", func(t *testing.T) { testNetworkDrop(t, b) })
	t.Run("token refresh over websocket", func(t *testing.T) { testTokenRefresh(t, b, "websocket") })
	t.Run("token refresh over sse", func(t *testing.T) { testTokenRefresh(t, b, "sse") })
	t.Run("server disconnect over websocket ends the client", func(t *testing.T) { testDisconnect(t, b, "websocket") })
	t.Run("server disconnect over sse ends the client", func(t *testing.T) { testDisconnect(t, b, "sse") })
	t.Run("console page", func(t *testing.T) { testConsole(t, b) })
	t.Run("plain EventSource resumes from the position", func(t *testing.T) { testEventSourcePosition(t, b) })
}

// ---- scenarios ----------------------------------------------------------------

func testWebSocket(t *testing.T, b context.Context) {
	h := startHub(t, nil)
	p := openPage(t, b, h.URL)
	p.start(t, map[string]any{"token": hubtest.Token(t, "u1", time.Hour)})
	p.waitFor(t, "connected over websocket", `__hub.state === "connected" && __hub.transport === "websocket"`, 10*time.Second)

	type sent struct {
		typ     string
		payload string
	}
	give := []sent{
		{"DRAFT_UPDATED", `{"draftId":42}`},
		{"ORDER_CREATED", `[1,"two",{"three":3}]`},
		{"NOTE", `"plain string"`},
		{"COUNTER", `7`},
		{"NOTHING", `null`},
		{"FLAG", `true`},
	}
	var want []pageEvent
	for _, s := range give {
		id := h.publish(t, s.typ, json.RawMessage(s.payload), "u1")
		want = append(want, pageEvent{ID: id, Type: s.typ, Payload: json.RawMessage(s.payload)})
	}
	// One to everybody, and one for another user that must not arrive.
	h.publish(t, "NOT_FOR_U1", "x", "u2")
	allID := h.publishAll(t, "ANNOUNCEMENT", "maintenance at 22:00")
	want = append(want, pageEvent{ID: allID, Type: "ANNOUNCEMENT", Payload: json.RawMessage(`"maintenance at 22:00"`)})

	p.waitFor(t, "all events", fmt.Sprintf("__t.events.length >= %d", len(want)), 10*time.Second)
	got := p.events(t)
	assertEvents(t, got, want)
	if lid := evalT[string](t, p, "__hub.lastEventId"); lid != allID {
		t.Errorf("lastEventId = %q, want %q", lid, allID)
	}
	st := p.states(t)
	if names := stateNames(st); !slices.Equal(names, []string{"connecting", "connected"}) {
		t.Errorf("states = %v, want [connecting connected]", names)
	}
	if c := st[len(st)-1]; c.Recovered == nil || *c.Recovered || c.Missed == nil || *c.Missed != 0 {
		t.Errorf("first connect: recovered=%v missed=%v, want false, 0", deref(c.Recovered), deref(c.Missed))
	}
}

func testSSEFallback(t *testing.T, b context.Context) {
	h := startHub(t, nil)
	px := startRefuseWSProxy(t, h)
	p := openPage(t, b, px.URL)
	p.start(t, map[string]any{"token": hubtest.Token(t, "u1", time.Hour), "backoff": map[string]int{"baseMs": 20, "maxMs": 100}})
	p.waitFor(t, "connected over sse", `__hub.state === "connected"`, 10*time.Second)
	if tr := evalT[string](t, p, "__hub.transport"); tr != "sse" {
		t.Fatalf("transport = %q, want sse", tr)
	}
	if n := px.wsAttempts.Load(); n < 2 {
		t.Errorf("WebSocket attempts seen by the proxy = %d, want >= 2 before the fallback", n)
	}
	var want []pageEvent
	for i := range 5 {
		payload := json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))
		want = append(want, pageEvent{ID: h.publish(t, "SSE_EVENT", payload, "u1"), Type: "SSE_EVENT", Payload: payload})
	}
	p.waitFor(t, "all events", fmt.Sprintf("__t.events.length >= %d", len(want)), 10*time.Second)
	assertEvents(t, p.events(t), want)
	if c := p.connected(t); len(c) != 1 || c[0]["transport"] != "sse" {
		t.Errorf("hub.connected payloads = %v, want one with transport sse", c)
	}
}

func testRestart(t *testing.T, b context.Context) {
	addr := hubtest.FreeAddr(t)
	fixed := func(c *config.Config) { c.Addr = addr }
	a := startHub(t, fixed)
	p := openPage(t, b, a.URL)
	p.start(t, map[string]any{
		"token":            hubtest.Token(t, "u1", time.Hour),
		"backoff":          map[string]int{"baseMs": 50, "maxMs": 300},
		"shutdownJitterMs": 200,
	})
	p.waitFor(t, "first connect", `__hub.state === "connected"`, 10*time.Second)

	pub := startPublisher(t, a.URL, "u1")
	pub.waitCount(t, 5)
	pub.phase.Store(phaseStopping)
	a.stop()
	p.waitFor(t, "reconnecting after the stop", `__t.states.some((s) => s.state === "reconnecting")`, 10*time.Second)

	startHub(t, fixed) // same address, fresh in-memory history
	p.waitFor(t, "reconnect to the new hub", `__t.connected.length >= 2 && __hub.state === "connected"`, 15*time.Second)
	pub.phase.Store(phaseLive)
	pub.waitPhaseCount(t, phaseLive, 10)
	pub.stop()

	recs := pub.records()
	var mustArrive []string
	for _, r := range recs {
		// Accepted by hub A before its stop began (flushed before close
		// 1001), or published after the page's hub.connected from hub B.
		if (r.start == phaseRunning && r.end == phaseRunning) || r.start == phaseLive {
			mustArrive = append(mustArrive, r.id)
		}
	}
	last := mustArrive[len(mustArrive)-1]
	p.waitFor(t, "every event published after the reconnect", fmt.Sprintf(`__t.events.some((e) => e.id === %q)`, last), 10*time.Second)
	got := p.events(t)
	assertUniqueIDs(t, got)
	assertSubsequence(t, ids(got), mustArrive)

	c := p.connected(t)
	if c[1]["recovered"] != false {
		t.Errorf("after the restart hub.connected recovered = %v, want false (the in-memory history was lost)", c[1]["recovered"])
	}
	st := p.states(t)
	names := stateNames(st)
	i := slices.Index(names, "reconnecting")
	if i < 0 || !slices.Contains(names[i:], "connected") {
		t.Errorf("states = %v, want connected ... reconnecting ... connected", names)
	}
	if s := st[len(st)-1]; s.State != "connected" || s.Recovered == nil || *s.Recovered {
		t.Errorf("last state = %+v, want connected with recovered:false", s)
	}
}

func testNetworkDrop(t *testing.T, b context.Context) {
	h := startHub(t, nil)
	px := hubtest.StartProxy(t, h.Servers.Addr())
	p := openPage(t, b, "http://"+px.Addr())
	p.start(t, map[string]any{"token": hubtest.Token(t, "u1", time.Hour), "backoff": map[string]int{"baseMs": 50, "maxMs": 200}})
	p.waitFor(t, "connected", `__hub.state === "connected"`, 10*time.Second)

	var want []pageEvent
	pub := func(phase string, n int) {
		for i := range n {
			payload := json.RawMessage(fmt.Sprintf(`{"phase":%q,"n":%d}`, phase, i))
			want = append(want, pageEvent{ID: h.publish(t, "TICK", payload, "u1"), Type: "TICK", Payload: payload})
		}
	}
	pub("before", 3)
	p.waitFor(t, "events before the cut", `__t.events.length >= 3`, 10*time.Second)

	px.Cut()
	p.waitFor(t, "connection lost", `__hub.state === "reconnecting"`, 10*time.Second)
	const missed = 5
	pub("while cut", missed)
	px.Restore()
	p.waitFor(t, "reconnected", `__t.connected.length >= 2 && __hub.state === "connected"`, 15*time.Second)
	pub("after", 3)

	p.waitFor(t, "all events", fmt.Sprintf("__t.events.length >= %d", len(want)), 10*time.Second)
	assertEvents(t, p.events(t), want)
	c := p.connected(t)
	if got := c[len(c)-1]; got["recovered"] != true || got["missed"] != float64(missed) {
		t.Errorf("resumed hub.connected recovered=%v missed=%v, want true, %d", got["recovered"], got["missed"], missed)
	}
	st := p.states(t)
	if s := st[len(st)-1]; s.State != "connected" || s.Recovered == nil || !*s.Recovered || s.Missed == nil || *s.Missed != missed {
		t.Errorf("last state %s recovered=%v missed=%v, want connected, true, %d", s.State, deref(s.Recovered), deref(s.Missed), missed)
	}
}

func testTokenRefresh(t *testing.T, b context.Context, transport string) {
	h := startHub(t, func(c *config.Config) { c.JWTLeeway = 0 })
	p := openPage(t, b, h.URL)

	const ttl = 5 * time.Second
	t0 := time.Now()
	first := hubtest.Token(t, "u1", ttl) // refresh at 80 % (4 s), expiry at 5 s
	second := hubtest.Token(t, "u1", time.Hour)
	evalT[bool](t, p, fmt.Sprintf(`(window.__tokens = [%q, %q], true)`, first, second))
	p.start(t, map[string]any{"useTokens": true, "transports": []string{transport}})
	p.waitFor(t, "connected", `__hub.state === "connected"`, 10*time.Second)

	// Publish across the old token's expiry, until well after it.
	var want []pageEvent
	for i := 0; time.Since(t0) < ttl+1500*time.Millisecond; i++ {
		payload := json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))
		want = append(want, pageEvent{ID: h.publish(t, "TICK", payload, "u1"), Type: "TICK", Payload: payload})
		p.waitFor(t, fmt.Sprintf("event %d", i), fmt.Sprintf("__t.events.length >= %d", len(want)), 10*time.Second)
	}
	assertEvents(t, p.events(t), want)

	if n := evalT[int](t, p, "__t.tokenCalls"); n != 2 {
		t.Errorf("getToken calls = %d, want 2 (connect, refresh)", n)
	}
	if n := evalT[int](t, p, "__t.expired"); n != 0 {
		t.Errorf("hub.expired seen %d times: the token was not refreshed in time", n)
	}
	if names := stateNames(p.states(t)); !slices.Equal(names, []string{"connecting", "connected"}) {
		t.Errorf("states = %v, want [connecting connected] (a refresh is not a reconnect)", names)
	}
	c := p.connected(t)
	switch transport {
	case "websocket":
		if len(c) != 1 {
			t.Errorf("hub.connected %d times, want 1: the WebSocket must stay open across the refresh", len(c))
		}
		if n := evalT[int](t, p, "__t.refreshed"); n < 1 {
			t.Errorf("hub.refreshed not received")
		}
	case "sse":
		if len(c) != 2 {
			t.Fatalf("hub.connected %d times, want 2 (the refresh reconnects with the new token)", len(c))
		}
		if c[1]["recovered"] != true {
			t.Errorf("refresh reconnect recovered = %v, want true", c[1]["recovered"])
		}
		exp, _ := time.Parse(time.RFC3339, fmt.Sprint(c[1]["tokenExpiresAt"]))
		if time.Until(exp) < 30*time.Minute {
			t.Errorf("reconnected with tokenExpiresAt %v, want the new token's", c[1]["tokenExpiresAt"])
		}
	}
}

// testDisconnect: POST /api/users/{id}/disconnect closes with 4003 (a
// WebSocket close, or hub.closed on SSE), which ends the client for good.
func testDisconnect(t *testing.T, b context.Context, transport string) {
	h := startHub(t, nil)
	p := openPage(t, b, h.URL)
	p.start(t, map[string]any{"token": hubtest.Token(t, "u1", time.Hour), "transports": []string{transport}})
	p.waitFor(t, "connected", `__hub.state === "connected"`, 10*time.Second)
	if n := h.disconnect(t, "u1"); n != 1 {
		t.Fatalf("disconnect closed %d connections, want 1", n)
	}
	p.waitFor(t, "closed", `__hub.state === "closed"`, 10*time.Second)
	st := p.states(t)
	last := st[len(st)-1]
	if last.Error["code"] != float64(4003) || last.Error["reason"] != "disconnected by server" {
		t.Errorf("closed with error %v, want {code:4003 reason:\"disconnected by server\"}", last.Error)
	}
	if names := stateNames(st); slices.Contains(names, "reconnecting") {
		t.Errorf("states = %v: 4003 must not reconnect", names)
	}
}

func testConsole(t *testing.T, b context.Context) {
	prev := modules.DevOutput
	modules.DevOutput = io.Discard
	t.Cleanup(func() { modules.DevOutput = prev })
	h := startHub(t, func(c *config.Config) { c.JWTSecret, c.Dev = "", true }) // development mode

	p := openPage(t, b, h.URL)
	run(t, p, chromedp.EmulateViewport(1200, 800))
	p.waitFor(t, "development tokens filled in",
		`document.getElementById("token").value !== "" && document.getElementById("admin-token").value !== "" && document.getElementById("bc-users").value === "dev-user"`,
		10*time.Second)
	run(t, p, chromedp.Click(chromedp.ID("connect")))
	p.waitFor(t, "console connected", `document.getElementById("state").dataset.state === "connected"`, 10*time.Second)
	if s := evalT[string](t, p, `document.getElementById("state").textContent`); !strings.HasPrefix(s, "connected (websocket) recovered=false missed=0") {
		t.Errorf("state text = %q", s)
	}

	run(t, p, chromedp.Click(chromedp.ID("bc-send")))
	p.waitFor(t, "event listed", `document.querySelector('#events li[data-type="TEST_EVENT"]') !== null`, 10*time.Second)
	// the event may arrive over the socket before the page has read the API's answer
	p.waitFor(t, "broadcast answer shown", `document.getElementById("bc-result").textContent.startsWith("202")`, 10*time.Second)
	result := evalT[string](t, p, `document.getElementById("bc-result").textContent`)
	if !strings.HasPrefix(result, "202") {
		t.Fatalf("broadcast result = %q, want 202", result)
	}
	var answer struct {
		Events []struct {
			UserID, ID string
			Devices    int
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(result[strings.Index(result, "{"):]), &answer); err != nil || len(answer.Events) != 1 || answer.Events[0].Devices != 1 {
		t.Fatalf("broadcast answer %q: %v, want one event with 1 device", result, err)
	}
	// the page says how many devices got it live
	if s := evalT[string](t, p, `document.getElementById("bc-devices").textContent`); s != "dev-user: 1 device live" {
		t.Errorf("devices line = %q, want %q", s, "dev-user: 1 device live")
	}
	li := evalT[string](t, p, `document.querySelector('#events li[data-type="TEST_EVENT"]').textContent`)
	var env pageEvent
	if err := json.Unmarshal([]byte(li), &env); err != nil {
		t.Fatalf("listed event %q: %v", li, err)
	}
	if env.ID != answer.Events[0].ID || string(env.Payload) != `{"hello":"world"}` {
		t.Errorf("listed event = %s, want id %s and payload {\"hello\":\"world\"}", li, answer.Events[0].ID)
	}
	if n := evalT[int](t, p, `document.querySelectorAll("#events li[data-control]").length`); n != 1 {
		t.Errorf("%d control events listed, want 1 (hub.connected)", n)
	}

	run(t, p, chromedp.Click(chromedp.ID("stats-refresh")))
	p.waitFor(t, "stats shown", `document.getElementById("stats").textContent.startsWith("200")`, 10*time.Second)
	if s := evalT[string](t, p, `document.getElementById("stats").textContent`); !strings.Contains(s, `"totalConnections": 1`) {
		t.Errorf("stats = %q, want one connection", s)
	}

	// Shorten the (development) tokens on the picture, then take it.
	evalT[bool](t, p, `(document.querySelectorAll("#token, #admin-token").forEach((e) => (e.value = e.value.slice(0, 16) + "…")), true)`)
	png := run(t, p, chromedp.FullScreenshot(100))
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	// docs/screenshots/console.png is taken by this test; it is rewritten
	// when missing or with HUB_SCREENSHOTS=1, so that an ordinary run leaves
	// the work tree clean.
	dir := filepath.Join("..", "docs", "screenshots")
	if _, err := os.Stat(filepath.Join(dir, "console.png")); err == nil && os.Getenv("HUB_SCREENSHOTS") != "1" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "console.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// ---- the browser ------------------------------------------------------------------

// chromiumPath finds a Chromium or Chrome binary ($HUB_CHROMIUM first).
func chromiumPath() (string, bool) {
	if p := os.Getenv("HUB_CHROMIUM"); p != "" {
		return p, true
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, true
		}
	}
	return "", false
}

// startBrowser launches one headless Chromium for all subtests (each gets a
// tab of its own); it is closed, and its process waited for, at cleanup.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path, ok := chromiumPath()
	if !ok {
		if os.Getenv("HUB_REQUIRE_BROWSER") == "1" {
			t.Fatal("no chromium found (set HUB_CHROMIUM or put chromium on PATH) and HUB_REQUIRE_BROWSER=1")
		}
		t.Skip("no chromium found; set HUB_REQUIRE_BROWSER=1 to make this a failure")
	}
	// Not t.TempDir: Chromium's helpers may still write there for a moment
	// after the browser exits, so removal is retried below.
	dir, err := os.MkdirTemp("", "hub-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // tests may run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(dir),
	)
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		if err := chromedp.Cancel(cctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("closing chromium: %v", err)
		}
		ccancel()
		cancel()
		allocCancel() // waits for the browser process
		removeAllRetry(t, dir)
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return ctx
}

func removeAllRetry(t *testing.T, dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := os.RemoveAll(dir)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("remove %s: %v", dir, err)
			return
		}
		time.Sleep(50 * time.Millisecond) // polling the file system, not synchronising goroutines
	}
}

// page is one tab showing the console page of a hub (or of a proxy in front of it).
type page struct {
	ctx context.Context
}

// pageHarness defines window.__start(opts): it builds a Hub from the client
// the page's origin serves and records what it sees on window.__t. With
// opts.useTokens, getToken hands out window.__tokens one by one.
const pageHarness = `(() => {
  window.__start = async (opts) => {
    const { Hub } = await import("/client/hub.js");
    const T = (window.__t = { states: [], events: [], connected: [], refreshed: 0, expired: 0, tokenCalls: 0, errors: [] });
    const o = { ...opts };
    delete o.useTokens;
    if (opts.useTokens) {
      o.getToken = async () => {
        T.tokenCalls++;
        const tok = (window.__tokens || []).shift();
        if (!tok) throw new Error("no more test tokens");
        return tok;
      };
    }
    const hub = new Hub(o);
    window.__hub = hub;
    hub.on("hub.state", (s) => T.states.push({ state: s.state, transport: s.transport ?? null, recovered: s.recovered, missed: s.missed, error: s.error ?? null }));
    hub.on("*", (e) => T.events.push({ id: e.id, type: e.type, payload: e.payload }));
    hub.on("hub.connected", (e) => T.connected.push(e.payload));
    hub.on("hub.refreshed", () => T.refreshed++);
    hub.on("hub.expired", () => T.expired++);
    return true;
  };
  window.addEventListener("error", (e) => (window.__t ? window.__t.errors.push(String(e.message)) : 0));
  window.addEventListener("unhandledrejection", (e) => (window.__t ? window.__t.errors.push(String(e.reason)) : 0));
  return true;
})()`

// openPage opens a new tab on base + "/" with the harness installed; the tab
// closes (and its client with it) at cleanup.
func openPage(t *testing.T, browser context.Context, base string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		_, _ = chromedp.Run(cctx, chromedp.Evaluate[bool](`(window.__hub && window.__hub.close(), true)`))
		if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("close tab: %v", err)
		}
		cancel()
	})
	p := &page{ctx: ctx}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("navigate to %s: %v", base, err)
	}
	evalT[bool](t, p, pageHarness)
	return p
}

// start builds the page's Hub with opts (JSON).
func (p *page) start(t *testing.T, opts map[string]any) {
	t.Helper()
	b, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	evalT[bool](t, p, fmt.Sprintf("window.__start(%s)", b))
}

// run runs one action on the tab with a deadline.
func run[T any](t *testing.T, p *page, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v%s", err, p.dump(t))
	}
	return v
}

// evalT evaluates js in the page (awaiting a promise) and decodes the result.
func evalT[T any](t *testing.T, p *page, js string) T {
	t.Helper()
	return run(t, p, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// waitFor polls the JavaScript condition until it holds or timeout passes.
func (p *page) waitFor(t *testing.T, what, cond string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+cond+")",
		chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		t.Fatalf("waiting for %s (%s): %v%s", what, cond, err, p.dump(t))
	}
}

// dump shows the recorder's contents for a failure message.
func (p *page) dump(t *testing.T) string {
	ctx, cancel := context.WithTimeout(p.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`JSON.stringify({state: window.__hub && __hub.state, transport: window.__hub && __hub.transport, t: window.__t}, null, 1)`))
	if err != nil {
		return ""
	}
	if len(s) > 6000 {
		s = s[:3000] + "\n...\n" + s[len(s)-3000:]
	}
	return "\npage: " + s
}

// pageEvent is an application event as a listener saw it.
type pageEvent struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// pageState is a hub.state as a listener saw it.
type pageState struct {
	State     string         `json:"state"`
	Transport *string        `json:"transport"`
	Recovered *bool          `json:"recovered"`
	Missed    *int           `json:"missed"`
	Error     map[string]any `json:"error"`
}

func (p *page) events(t *testing.T) []pageEvent {
	t.Helper()
	return evalT[[]pageEvent](t, p, "__t.events")
}

func (p *page) states(t *testing.T) []pageState {
	t.Helper()
	return evalT[[]pageState](t, p, "__t.states")
}

func (p *page) connected(t *testing.T) []map[string]any {
	t.Helper()
	return evalT[[]map[string]any](t, p, "__t.connected")
}

func stateNames(st []pageState) []string {
	var n []string
	for _, s := range st {
		n = append(n, s.State)
	}
	return n
}

func ids(evs []pageEvent) []string {
	var s []string
	for _, e := range evs {
		s = append(s, e.ID)
	}
	return s
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// assertEvents checks that got is exactly want: same ids, types and
// payloads (compared as JSON), in order, each once.
func assertEvents(t *testing.T, got, want []pageEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d\n got ids %v\nwant ids %v", len(got), len(want), ids(got), ids(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Type != w.Type || !jsonEqual(g.Payload, w.Payload) {
			t.Errorf("event %d = {%s %s %s}, want {%s %s %s}", i, g.ID, g.Type, g.Payload, w.ID, w.Type, w.Payload)
		}
	}
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

func assertUniqueIDs(t *testing.T, evs []pageEvent) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.ID] {
			t.Errorf("event %s passed on twice", e.ID)
		}
		seen[e.ID] = true
	}
}

// assertSubsequence checks that every id of want occurs in got, in want's order.
func assertSubsequence(t *testing.T, got, want []string) {
	t.Helper()
	pos := map[string]int{}
	for i, id := range got {
		pos[id] = i
	}
	last := -1
	for _, id := range want {
		i, ok := pos[id]
		if !ok {
			t.Errorf("event %s never arrived", id)
			continue
		}
		if i < last {
			t.Errorf("event %s arrived out of order", id)
		}
		last = i
	}
}

// ---- the hub ----------------------------------------------------------------------

// testHub is the assembled hub (hubtest/app) with an HTTP client of its
// own for the service API.
type testHub struct {
	*app.App
	client *http.Client
}

// startHub starts the hub with the test configuration changed by mod.
func startHub(t *testing.T, mod func(*config.Config)) *testHub {
	t.Helper()
	h := &testHub{App: app.Start(t, mod), client: &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}}
	t.Cleanup(h.client.CloseIdleConnections)
	return h
}

// stop stops the hub before the test ends.
func (h *testHub) stop() {
	h.Stop()
	h.client.CloseIdleConnections()
}

// publish broadcasts to users with the API key and returns the first user's event id.
func (h *testHub) publish(t *testing.T, typ string, payload any, users ...string) string {
	t.Helper()
	ids, err := postBroadcast(context.Background(), h.client, h.API, map[string]any{"userIds": users, "type": typ, "payload": payload})
	if err != nil {
		t.Fatalf("broadcast: %v", err)
	}
	return ids[0]
}

// disconnect closes every connection of user through the API and returns how many.
func (h *testHub) disconnect(t *testing.T, user string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.API+"/api/users/"+url.PathEscape(user)+"/disconnect", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", hubtest.APIKey)
	res, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	defer res.Body.Close()
	var a struct {
		Closed int `json:"closed"`
	}
	if err := json.NewDecoder(res.Body).Decode(&a); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("disconnect: status %d, %v", res.StatusCode, err)
	}
	return a.Closed
}

// publishAll broadcasts to every user and returns the event id.
func (h *testHub) publishAll(t *testing.T, typ string, payload any) string {
	t.Helper()
	ids, err := postBroadcast(context.Background(), h.client, h.API, map[string]any{"all": true, "type": typ, "payload": payload})
	if err != nil {
		t.Fatalf("broadcast: %v", err)
	}
	return ids[0]
}

// postBroadcast posts a broadcast body and returns the event ids of the answer.
func postBroadcast(ctx context.Context, c *http.Client, api string, body any) ([]string, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api+"/api/broadcast", bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", hubtest.APIKey)
	res, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("post: %w", err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if res.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("status %d: %s", res.StatusCode, raw)
	}
	var a struct {
		ID     string `json:"id"`
		Events []struct {
			ID string `json:"id"`
		} `json:"events"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("decode answer %s: %w", raw, err)
	}
	if a.ID != "" {
		return []string{a.ID}, nil
	}
	var out []string
	for _, e := range a.Events {
		out = append(out, e.ID)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("answer without ids: %s", raw)
	}
	return out, nil
}

// ---- continuous publisher (restart test) ---------------------------------------------

// Phases of the restart test, recorded with each publish.
const (
	phaseRunning  int32 = iota // hub A up, page connected
	phaseStopping              // hub A stopping or down, hub B starting
	phaseLive                  // the page said hub.connected to hub B
)

type pubRecord struct {
	id         string
	start, end int32
}

// publisher broadcasts to one user every few milliseconds from a goroutine,
// ignoring failures (the hub may be down), and records each accepted id with
// the phase at the request's start and end.
type publisher struct {
	phase  atomic.Int32
	mu     sync.Mutex
	recs   []pubRecord
	cancel context.CancelFunc
	done   chan struct{}
	client *http.Client
}

func startPublisher(t *testing.T, base, user string) *publisher {
	ctx, cancel := context.WithCancel(context.Background())
	p := &publisher{cancel: cancel, done: make(chan struct{}), client: &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			start := p.phase.Load()
			got, err := postBroadcast(ctx, p.client, base, map[string]any{"userIds": []string{user}, "type": "TICK", "payload": map[string]int{"n": n}})
			if err == nil {
				p.mu.Lock()
				p.recs = append(p.recs, pubRecord{id: got[0], start: start, end: p.phase.Load()})
				p.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *publisher) stop() {
	p.cancel()
	<-p.done
	p.client.CloseIdleConnections()
}

func (p *publisher) records() []pubRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.recs)
}

func (p *publisher) waitCount(t *testing.T, n int) {
	t.Helper()
	p.waitPhaseCount(t, -1, n)
}

// waitPhaseCount waits until n events were published that started in phase
// (any phase for -1).
func (p *publisher) waitPhaseCount(t *testing.T, phase int32, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := 0
		for _, r := range p.records() {
			if phase < 0 || r.start == phase {
				c++
			}
		}
		if c >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("publisher: %d events in phase %d, want %d", c, phase, n)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// ---- proxies -------------------------------------------------------------------------

// refuseWSProxy forwards everything to the hub except the WebSocket path,
// which it answers with 404 (a network that breaks WebSocket).
type refuseWSProxy struct {
	URL        string
	wsAttempts atomic.Int32
}

func startRefuseWSProxy(t *testing.T, h *testHub) *refuseWSProxy {
	t.Helper()
	target, err := url.Parse(h.URL)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = tr
	rp.FlushInterval = -1 // stream SSE as it comes
	px := &refuseWSProxy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == h.Config.WSPath {
			px.wsAttempts.Add(1)
			http.Error(w, "no WebSocket here", http.StatusNotFound)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		tr.CloseIdleConnections()
	})
	px.URL = srv.URL
	return px
}
