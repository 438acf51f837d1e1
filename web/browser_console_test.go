package web_test

// The console page when the service API is on the internal listener
// (HUB_INTERNAL_ADDR): in development mode it uses the internal listener,
// which answers its CORS requests; otherwise it says in one line why it
// cannot, instead of showing 404s.

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/modules"
)

func TestConsoleInternalAPIBrowser(t *testing.T) {
	b := startBrowser(t)
	t.Run("development mode uses the internal listener", func(t *testing.T) {
		prev := modules.DevOutput
		modules.DevOutput = io.Discard
		t.Cleanup(func() { modules.DevOutput = prev })
		h := startHub(t, func(c *config.Config) { c.JWTSecret, c.Dev, c.InternalAddr = "", true, "127.0.0.1:0" })
		if h.API == h.URL {
			t.Fatal("the hub has no internal listener")
		}
		p := openPage(t, b, h.URL)
		p.waitFor(t, "development tokens filled in", `document.getElementById("admin-token").value !== ""`, 10*time.Second)
		where := evalT[string](t, p, `document.getElementById("api-where").textContent`)
		if !strings.Contains(where, h.API) || evalT[string](t, p, `document.getElementById("api-where").dataset.api`) != "internal" {
			t.Errorf("the page says %q, want the internal listener %s", where, h.API)
		}
		if href := evalT[string](t, p, `document.getElementById("admin-link").href`); href != h.API+"/admin" {
			t.Errorf("admin link %q, want %s/admin", href, h.API)
		}

		run(t, p, chromedp.Click(chromedp.ID("connect")))
		p.waitFor(t, "console connected", `document.getElementById("state").dataset.state === "connected"`, 10*time.Second)
		run(t, p, chromedp.Click(chromedp.ID("bc-send")))
		p.waitFor(t, "broadcast answer", `document.getElementById("bc-result").textContent.startsWith("202")`, 10*time.Second)
		p.waitFor(t, "event listed", `document.querySelector('#events li[data-type="TEST_EVENT"]') !== null`, 10*time.Second)
		run(t, p, chromedp.Click(chromedp.ID("stats-refresh")))
		p.waitFor(t, "stats shown", `document.getElementById("stats").textContent.startsWith("200")`, 10*time.Second)
		if s := evalT[string](t, p, `document.getElementById("stats").textContent`); !strings.Contains(s, `"totalConnections": 1`) {
			t.Errorf("stats = %q, want one connection", s)
		}

		// The internal listener answers CORS for the console's origin only.
		for _, tt := range []struct {
			origin  string
			allowed bool
		}{
			{h.URL, true},
			{strings.Replace(h.URL, "127.0.0.1", "localhost", 1), true},
			{"http://evil.example" + h.URL[strings.LastIndex(h.URL, ":"):], false},
			{"http://127.0.0.1:1", false},
			{strings.Replace(h.URL, "http:", "https:", 1), false},
		} {
			req, _ := http.NewRequest(http.MethodOptions, h.API+"/api/broadcast", nil)
			req.Header.Set("Origin", tt.origin)
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
			res, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			got := res.Header.Get("Access-Control-Allow-Origin")
			if (got == tt.origin) != tt.allowed || (!tt.allowed && got != "") {
				t.Errorf("preflight from %s: Access-Control-Allow-Origin %q, allowed want %v", tt.origin, got, tt.allowed)
			}
			if tt.allowed && !strings.Contains(res.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
				t.Errorf("preflight from %s: Access-Control-Allow-Headers %q", tt.origin, res.Header.Get("Access-Control-Allow-Headers"))
			}
		}
	})

	t.Run("outside development mode it says why it cannot", func(t *testing.T) {
		h := startHub(t, func(c *config.Config) { c.InternalAddr = "127.0.0.1:0" })
		p := openPage(t, b, h.URL)
		where := evalT[string](t, p, `document.getElementById("api-where").textContent`)
		if !strings.Contains(where, "internal listener (HUB_INTERNAL_ADDR)") || !strings.Contains(where, "hubctl") {
			t.Errorf("the page says %q, want why the API is out of its reach", where)
		}
		var st struct {
			API      string `json:"api"`
			Send     bool   `json:"send"`
			Stats    bool   `json:"stats"`
			AdminOff bool   `json:"adminOff"`
		}
		decodeEval(t, p, `JSON.stringify({api: document.getElementById("api-where").dataset.api,
		  send: document.getElementById("bc-send").disabled, stats: document.getElementById("stats-refresh").disabled,
		  adminOff: document.getElementById("admin-link").hidden})`, &st)
		if st != (struct {
			API      string `json:"api"`
			Send     bool   `json:"send"`
			Stats    bool   `json:"stats"`
			AdminOff bool   `json:"adminOff"`
		}{"unreachable", true, true, true}) {
			t.Errorf("page state %+v, want the API unreachable and its buttons disabled", st)
		}
		// and the internal listener answers no CORS outside development mode
		req, _ := http.NewRequest(http.MethodOptions, h.API+"/api/broadcast", nil)
		req.Header.Set("Origin", h.URL)
		req.Header.Set("Access-Control-Request-Method", "POST")
		res, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("Access-Control-Allow-Origin %q outside development mode", got)
		}
	})

	t.Run("without an internal listener the API is on the page's origin", func(t *testing.T) {
		h := startHub(t, nil)
		p := openPage(t, b, h.URL)
		var st struct{ API, Admin string }
		decodeEval(t, p, `JSON.stringify({API: document.getElementById("api-where").dataset.api, Admin: document.getElementById("admin-link").href})`, &st)
		if st.API != "same" || st.Admin != h.URL+"/admin" {
			t.Errorf("page state %+v, want same origin and %s/admin", st, h.URL)
		}
		// the dashboard is served there, behind its token
		res, err := h.client.Get(h.URL + "/admin")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(res.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Errorf("GET /admin: %d, CSP %q", res.StatusCode, res.Header.Get("Content-Security-Policy"))
		}
		res, err = h.client.Get(h.URL + "/api/admin/timeseries")
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error struct{ Code string } }
		_ = json.NewDecoder(res.Body).Decode(&e)
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized || e.Error.Code != "missing_token" {
			t.Errorf("GET /api/admin/timeseries without a token: %d %q, want 401 missing_token", res.StatusCode, e.Error.Code)
		}
	})
}
