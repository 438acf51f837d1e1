package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(NewHandler(Options{}))
	t.Cleanup(srv.Close)

	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantType   string
		wantBody   string // substring; empty for HEAD
		wantCode   string // JSON error code
	}{
		{name: "console page", method: "GET", path: "/", wantStatus: 200, wantType: "text/html; charset=utf-8", wantBody: `import { Hub } from "/client/hub.js"`},
		{name: "console page head", method: "HEAD", path: "/", wantStatus: 200, wantType: "text/html; charset=utf-8"},
		{name: "client", method: "GET", path: "/client/hub.js", wantStatus: 200, wantType: "text/javascript; charset=utf-8", wantBody: "export class Hub"},
		{name: "client head", method: "HEAD", path: "/client/hub.js", wantStatus: 200, wantType: "text/javascript; charset=utf-8"},
		{name: "types", method: "GET", path: "/client/hub.d.ts", wantStatus: 200, wantType: "application/typescript; charset=utf-8", wantBody: "export class Hub"},
		{name: "unknown under client", method: "GET", path: "/client/other.js", wantStatus: 404, wantType: "application/json", wantCode: "not_found"},
		{name: "unknown page", method: "GET", path: "/nope", wantStatus: 404, wantType: "application/json", wantCode: "not_found"},
		{name: "post", method: "POST", path: "/client/hub.js", wantStatus: 405, wantType: "application/json", wantCode: "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if got := res.Header.Get("Content-Type"); got != tt.wantType {
				t.Errorf("Content-Type = %q, want %q", got, tt.wantType)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control = %q, want no-cache", got)
			}
			if tt.method == "HEAD" {
				if len(body) != 0 {
					t.Errorf("HEAD body has %d bytes", len(body))
				}
				if res.ContentLength <= 0 {
					t.Errorf("HEAD Content-Length = %d", res.ContentLength)
				}
			}
			if tt.wantBody != "" && !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("body does not contain %q", tt.wantBody)
			}
			if tt.wantCode != "" {
				var e struct {
					Error struct{ Code, Message string }
				}
				if err := json.Unmarshal(body, &e); err != nil {
					t.Fatalf("error body %q: %v", body, err)
				}
				if e.Error.Code != tt.wantCode || e.Error.Message == "" {
					t.Errorf("error = %+v, want code %q and a message", e.Error, tt.wantCode)
				}
			}
		})
	}
}

func TestHandlerETag(t *testing.T) {
	h := NewHandler(Options{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/client/hub.js", nil))
	etag := rec.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	req := httptest.NewRequest("GET", "/client/hub.js", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Fatalf("status = %d, want 304", rec.Code)
	}
}

func TestNewHandlerCORS(t *testing.T) {
	h := NewHandler(Options{AllowOrigin: func(o string) bool { return o == "https://app.test" }})
	tests := []struct {
		give string
		want string
	}{
		{give: "https://app.test", want: "https://app.test"},
		{give: "https://evil.test", want: ""},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", "/client/hub.js", nil)
		req.Header.Set("Origin", tt.give)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := rec.Header().Get("Access-Control-Allow-Origin"); got != tt.want {
			t.Errorf("origin %s: Access-Control-Allow-Origin = %q, want %q", tt.give, got, tt.want)
		}
	}
	// Handler allows no other origin.
	req := httptest.NewRequest("GET", "/client/hub.js", nil)
	req.Header.Set("Origin", "https://app.test")
	rec := httptest.NewRecorder()
	NewHandler(Options{}).ServeHTTP(rec, req)
	if got := rec.Header().Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("Handler: Access-Control-Allow-Origin = %q, want none", got)
	}
}

// TestConsoleIDs keeps the element ids that browser tests rely on.
func TestConsoleIDs(t *testing.T) {
	page, err := files.ReadFile("index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"token", "admin-token", "transport", "connect", "disconnect", "state", "events",
		"bc-users", "bc-all", "bc-type", "bc-payload", "bc-send", "bc-devices", "bc-result", "stats", "stats-refresh", "api-where", "admin-link"} {
		if !strings.Contains(string(page), `id="`+id+`"`) {
			t.Errorf("index.html has no element #%s", id)
		}
	}
}

func TestAdminHandler(t *testing.T) {
	srv := httptest.NewServer(NewAdminHandler())
	t.Cleanup(srv.Close)
	tests := []struct {
		method, path string
		wantStatus   int
		wantType     string
		wantBody     string
	}{
		{"GET", "/admin", 200, "text/html; charset=utf-8", `<script src="/admin/admin.js" defer></script>`},
		{"GET", "/admin/", 200, "text/html; charset=utf-8", `id="chart-latency"`},
		{"HEAD", "/admin", 200, "text/html; charset=utf-8", ""},
		{"GET", "/admin/admin.js", 200, "text/javascript; charset=utf-8", `"/api/admin/timeseries"`},
		{"GET", "/admin/admin.css", 200, "text/css; charset=utf-8", "#tiles"},
		{"GET", "/admin/uplot.iife.min.js", 200, "text/javascript; charset=utf-8", "The MIT License (MIT)"},
		{"GET", "/admin/uplot.min.css", 200, "text/css; charset=utf-8", "Copyright (c) 2022 Leon Sorokin"},
		{"GET", "/admin/nope.js", 404, "application/json", `"not_found"`},
		{"POST", "/admin", 405, "application/json", `"method_not_allowed"`},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, nil)
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.wantStatus || res.Header.Get("Content-Type") != tt.wantType || !strings.Contains(string(body), tt.wantBody) {
				t.Fatalf("got %d %q (%d bytes), want %d %q containing %q", res.StatusCode, res.Header.Get("Content-Type"), len(body), tt.wantStatus, tt.wantType, tt.wantBody)
			}
			if tt.wantStatus != 200 {
				return
			}
			for h, want := range map[string]string{
				"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'",
				"X-Frame-Options":         "DENY",
				"Referrer-Policy":         "no-referrer",
				"X-Content-Type-Options":  "nosniff",
			} {
				if got := res.Header.Get(h); !strings.HasPrefix(got, want) {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
		})
	}
}

func TestConsoleAPI(t *testing.T) {
	get := func(h http.Handler) (string, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		return rec.Body.String(), rec.Header().Get("ETag")
	}
	plain, plainTag := get(NewHandler(Options{}))
	if !strings.Contains(plain, `<meta name="hub-api" content="">`) {
		t.Fatal("the console page has no hub-api placeholder")
	}
	same, sameTag := get(NewHandler(Options{ConsoleAPI: func(*http.Request) string { return "" }}))
	if same != plain || sameTag != plainTag {
		t.Error(`ConsoleAPI "" changed the page`)
	}
	base, baseTag := get(NewHandler(Options{ConsoleAPI: func(*http.Request) string { return `http://127.0.0.1:9091"><x` }}))
	if !strings.Contains(base, `<meta name="hub-api" content="http://127.0.0.1:9091&#34;&gt;&lt;x">`) || baseTag == plainTag {
		t.Errorf("ConsoleAPI base URL: ETag %s (plain %s), page head:\n%.600s", baseTag, plainTag, base)
	}
	off, _ := get(NewHandler(Options{ConsoleAPI: func(*http.Request) string { return APIUnreachable }}))
	if !strings.Contains(off, `<meta name="hub-api" content="internal">`) {
		t.Error("APIUnreachable is not in the page")
	}
}
