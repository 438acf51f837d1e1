package web_test

// A real Chromium, a victim who holds the hub's token cookie, and a page on
// another origin that tries to act with it (issue 15: cross-site request
// forgery with the cookie). A second httptest server on another port is
// another origin, but the same site: the browser sends the cookie (which is
// per host, not per port) with the page's requests, as it would for a
// sibling subdomain. A page on an origin that HUB_ALLOWED_ORIGINS allows
// is the control: there the cookie works, which shows that the browser
// does send it.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
)

func TestCrossSiteCookieBrowser(t *testing.T) {
	b := startBrowser(t)
	be := startBackend(t)
	friendly, evil := startOriginPage(t), startOriginPage(t)
	addr := hubtest.FreeAddr(t)
	h := startHub(t, func(c *config.Config) {
		be.configure(c)
		c.Addr = addr
		// the hub's own console and the friendly application, not the evil page
		c.AllowedOrigins = []string{"http://" + addr, friendly.URL}
	})

	// The victim is logged in: the cookie holds a token with every role.
	tok := hubtest.Token(t, "victim", time.Hour, auth.RoleAdmin, auth.RoleService)
	victim := openPage(t, b, h.URL)
	evalT[bool](t, victim, fmt.Sprintf(`(document.cookie = "hub_token=%s; path=/; SameSite=Lax", true)`, tok))
	victim.start(t, map[string]any{"token": tok})
	victim.waitFor(t, "victim connected", `__hub.state === "connected"`, 10*time.Second)

	// Control: the allowed origin uses the cookie on SSE and /api/send.
	ctl := openPage(t, b, friendly.URL)
	var control struct {
		SSE  string `json:"sse"`
		Send int    `json:"send"`
	}
	decodeEval(t, ctl, fmt.Sprintf(friendlyScript, h.URL), &control)
	if control.SSE != "victim" || control.Send != http.StatusOK {
		t.Fatalf("allowed origin with the cookie: sse %q, send %d; want victim, 200 (does the browser send the cookie?)", control.SSE, control.Send)
	}

	// The attack, from a page on another origin.
	p := openPage(t, b, evil.URL)
	var got struct {
		SSE struct {
			Opened, Connected bool
			ReadyState        int
		}
		WS struct {
			Opened bool
			Code   int
		}
		SendPlain, SendJSON, BroadcastPlain, BroadcastJSON, Disconnect fetchResult
		FormSend, FormBroadcast                                        bool
	}
	decodeEval(t, p, fmt.Sprintf(evilScript, h.URL), &got)
	t.Logf("attack results: %+v", got)
	if got.SSE.Opened || got.SSE.Connected || got.SSE.ReadyState != 2 {
		t.Errorf("SSE from another origin with the cookie: %+v, want refused (closed, never opened)", got.SSE)
	}
	if got.WS.Opened {
		t.Errorf("WebSocket from another origin with the cookie opened")
	}
	for name, r := range map[string]fetchResult{"send": got.SendJSON, "broadcast": got.BroadcastJSON} {
		if r.Error == "" {
			t.Errorf("%s with JSON and credentials from another origin: %+v, want blocked by the preflight", name, r)
		}
	}
	for name, r := range map[string]fetchResult{"send": got.SendPlain, "broadcast": got.BroadcastPlain, "disconnect": got.Disconnect} {
		if r.Error != "" || r.Type != "opaque" {
			t.Errorf("%s as a simple request: %+v, want an opaque answer (the request was sent)", name, r)
		}
	}
	if !got.FormSend || !got.FormBroadcast {
		t.Errorf("form posts did not complete: send %v, broadcast %v", got.FormSend, got.FormBroadcast)
	}

	// What the hub answered to the requests that reached it (its access
	// log: each line is written before the answer leaves).
	reqs := accessLog(t, h)
	// the streams that opened (the victim's WebSocket, the control's SSE)
	// are logged as 101 or 200 (a stream taken over from net/http counts as
	// hijacked) whenever their handler returns: only the refusals count
	opened := without(reqs, http.StatusOK, http.StatusSwitchingProtocols)
	expectStatuses(t, opened, "GET", "/sse/realtime", 403)
	expectStatuses(t, opened, "GET", "/ws/realtime", 403)
	expectStatuses(t, reqs, "POST", "/api/send", 200, 403, 403) // the control's, the fetch, the form
	expectStatuses(t, reqs, "POST", "/api/broadcast", 401, 401) // no cookie on the service API
	expectStatuses(t, reqs, "POST", "/api/users/victim/disconnect", 401)

	// The backend got the control's call only, and the hub never acted:
	// the victim is still connected and gets nothing before a marker.
	if calls := be.calls(); len(calls) != 1 || calls[0].Key != "friendly-1" {
		t.Errorf("backend calls %+v, want only the allowed origin's (friendly-1)", calls)
	}
	marker := h.publish(t, "MARKER", nil, "victim")
	victim.waitFor(t, "the marker", fmt.Sprintf(`__t.events.some((e) => e.id === %q)`, marker), 10*time.Second)
	if evs := victim.events(t); len(evs) != 1 {
		t.Errorf("victim got %d events, want only the marker: %+v", len(evs), evs)
	}
	if names := stateNames(victim.states(t)); !slices.Equal(names, []string{"connecting", "connected"}) {
		t.Errorf("victim states %v, want [connecting connected] (never disconnected)", names)
	}
}

// fetchResult is what a fetch gave the page: an error, or the answer's type
// and status (an opaque answer shows neither status nor body).
type fetchResult struct {
	Error  string `json:"error"`
	Type   string `json:"type"`
	Status int    `json:"status"`
}

// startOriginPage serves a blank page: another origin for the browser.
func startOriginPage(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!doctype html><title>another origin</title><body></body>"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// decodeEval runs script (an async expression giving a JSON string) and
// decodes its result into v.
func decodeEval(t *testing.T, p *page, script string, v any) {
	t.Helper()
	s := evalT[string](t, p, script)
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("page result %q: %v", s, err)
	}
}

// friendlyScript, with the hub's URL: an allowed origin opens an
// EventSource with credentials (the cookie) and posts to /api/send.
const friendlyScript = `(async (hub) => {
  const sse = await new Promise((resolve) => {
    const es = new EventSource(hub + "/sse/realtime", { withCredentials: true });
    es.addEventListener("hub.connected", (e) => { es.close(); resolve(JSON.parse(e.data).payload.userId); });
    es.onerror = () => { es.close(); resolve("error"); };
  });
  const r = await fetch(hub + "/api/send", {
    method: "POST", credentials: "include", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ idempotencyKey: "friendly-1", event: { type: "ORDER_UPDATE", payload: { ok: 1 } } }),
  });
  return JSON.stringify({ sse, send: r.status });
})(%q)`

// evilScript, with the hub's URL: everything a page on another origin can
// do with the victim's cookie without knowing the token.
const evilScript = `(async (hub) => {
  const out = {};
  out.sse = await new Promise((resolve) => {
    const es = new EventSource(hub + "/sse/realtime", { withCredentials: true });
    let opened = false;
    es.onopen = () => { opened = true; };
    es.addEventListener("hub.connected", () => { es.close(); resolve({ opened, connected: true, readyState: es.readyState }); });
    es.onerror = () => { const readyState = es.readyState; es.close(); resolve({ opened, connected: false, readyState }); };
  });
  out.ws = await new Promise((resolve) => {
    const ws = new WebSocket(hub.replace(/^http/, "ws") + "/ws/realtime");
    let opened = false;
    ws.onopen = () => { opened = true; ws.close(); };
    ws.onclose = (e) => resolve({ opened, code: e.code });
  });
  const simple = async (path, body) => {
    try {
      const init = { method: "POST", mode: "no-cors", credentials: "include" };
      if (body !== undefined) { init.headers = { "Content-Type": "text/plain" }; init.body = body; }
      const r = await fetch(hub + path, init);
      return { type: r.type, status: r.status };
    } catch (e) { return { error: String(e) }; }
  };
  const withJSON = async (path, body) => {
    try {
      const r = await fetch(hub + path, { method: "POST", credentials: "include", headers: { "Content-Type": "application/json" }, body });
      return { type: r.type, status: r.status };
    } catch (e) { return { error: String(e) }; }
  };
  const send = JSON.stringify({ idempotencyKey: "evil-1", event: { type: "TRANSFER", payload: { to: "mallory" } } });
  const broadcast = JSON.stringify({ all: true, type: "PWNED", payload: "owned" });
  out.sendPlain = await simple("/api/send", send);
  out.sendJSON = await withJSON("/api/send", send);
  out.broadcastPlain = await simple("/api/broadcast", broadcast);
  out.broadcastJSON = await withJSON("/api/broadcast", broadcast);
  out.disconnect = await simple("/api/users/victim/disconnect");
  // A plain HTML form, which needs no script: enctype text/plain makes the
  // body name=value, here a JSON object.
  const form = (path, name, value) => new Promise((resolve) => {
    const frame = document.createElement("iframe");
    frame.name = "sink-" + Math.random().toString(36).slice(2);
    document.body.appendChild(frame);
    frame.onload = () => {
      try { frame.contentWindow.location.href; } catch { resolve(true); } // the hub's answer (another origin) has loaded
    };
    const f = document.createElement("form");
    f.method = "POST"; f.action = hub + path; f.enctype = "text/plain"; f.target = frame.name;
    const i = document.createElement("input");
    i.name = name; i.value = value;
    f.appendChild(i);
    document.body.appendChild(f);
    f.submit();
  });
  out.formSend = await form("/api/send", '{"idempotencyKey":"evil-form","event":{"type":"TRANSFER","payload":{"x":"', '"}}}');
  out.formBroadcast = await form("/api/broadcast", '{"all":true,"type":"PWNED","payload":"', '"}');
  return JSON.stringify(out);
})(%q)`

// loggedRequest is one line of the hub's access log.
type loggedRequest struct {
	Msg    string `json:"msg"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Status int    `json:"status"`
}

// accessLog reads the hub's access log (JSON lines at debug level).
func accessLog(t *testing.T, h *testHub) []loggedRequest {
	t.Helper()
	var out []loggedRequest
	sc := bufio.NewScanner(strings.NewReader(h.Logs.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var r loggedRequest
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Msg == "request" {
			out = append(out, r)
		}
	}
	return out
}

// without drops the requests answered one of statuses.
func without(reqs []loggedRequest, statuses ...int) []loggedRequest {
	return slices.DeleteFunc(slices.Clone(reqs), func(r loggedRequest) bool { return slices.Contains(statuses, r.Status) })
}

// expectStatuses checks the statuses the hub answered to method and path,
// in order.
func expectStatuses(t *testing.T, reqs []loggedRequest, method, path string, want ...int) {
	t.Helper()
	var got []int
	for _, r := range reqs {
		if r.Method == method && r.Path == path {
			got = append(got, r.Status)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s %s answered %v, want %v", method, path, got, want)
	}
}
