// Package web serves the browser side of the hub: the client library
// (/client/hub.js and its TypeScript types), the console page at / and
// the admin dashboard at /admin (its charts drawn by uPlot, vendored in
// vendor/ with its MIT license).
//
// The files are embedded in the binary with go:embed; there is no build step.
// hub.js is also tested on its own with Node's test runner (web/test), and
// hub.js with hub.d.ts is the npm package @hubd/client (package.json,
// README.md; npm_test.go packs, installs and type-checks it).
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"html"
	"net/http"
	"time"
)

//go:embed hub.js hub.d.ts index.html admin.html admin.js admin.css vendor/uplot.iife.min.js vendor/uplot.min.css
var files embed.FS

// asset is one embedded file with its precomputed headers.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// route is the embedded file served at a path and its content type.
type route struct{ file, contentType string }

const (
	typeHTML = "text/html; charset=utf-8"
	typeJS   = "text/javascript; charset=utf-8"
	typeCSS  = "text/css; charset=utf-8"
)

// routes maps request paths to embedded files and their content types.
var routes = map[string]route{
	"/":                {"index.html", typeHTML},
	"/index.html":      {"index.html", typeHTML},
	"/client/hub.js":   {"hub.js", typeJS},
	"/client/hub.d.ts": {"hub.d.ts", "application/typescript; charset=utf-8"},
}

// adminRoutes are the admin dashboard's page and assets.
var adminRoutes = map[string]route{
	"/admin":                   {"admin.html", typeHTML},
	"/admin/":                  {"admin.html", typeHTML},
	"/admin/admin.js":          {"admin.js", typeJS},
	"/admin/admin.css":         {"admin.css", typeCSS},
	"/admin/uplot.iife.min.js": {"vendor/uplot.iife.min.js", typeJS},
	"/admin/uplot.min.css":     {"vendor/uplot.min.css", typeCSS},
}

// adminCSP is the dashboard's Content-Security-Policy: its own scripts,
// styles and API only, no inline script or style, never in a frame (its
// buttons disconnect users).
const adminCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// APIUnreachable is the value of Options.ConsoleAPI that says the service
// API is on a listener the console page cannot use.
const APIUnreachable = "internal"

// consoleAPIMeta is the console page's placeholder for Options.ConsoleAPI.
const consoleAPIMeta = `<meta name="hub-api" content="">`

// Options configures NewHandler.
type Options struct {
	// AllowOrigin reports whether a cross-origin page may load the client
	// (CORS for /client/...); nil allows none. Wire it to HUB_ALLOWED_ORIGINS.
	AllowOrigin func(origin string) bool
	// ConsoleAPI tells the console page, for each request of it, where the
	// service API (broadcast, stats) is: "" on the page's own origin (also
	// when ConsoleAPI is nil), an absolute base URL such as
	// "http://127.0.0.1:9091" (which must answer the page's CORS requests),
	// or APIUnreachable when the API is on a listener the page cannot use.
	// The page shows where the API is and uses it, or says why it cannot.
	ConsoleAPI func(r *http.Request) string
}

// NewHandler serves GET and HEAD for "/" (the console page),
// "/client/hub.js" and "/client/hub.d.ts", with Cache-Control: no-cache and
// an ETag, and a JSON 404 for any other path. Mount it as the catch-all of
// the public listener.
func NewHandler(opts Options) http.Handler {
	return &handler{assets: load(routes), opts: opts}
}

// NewAdminHandler serves the admin dashboard: GET and HEAD for "/admin"
// (and "/admin/") and its assets under "/admin/", with a strict
// Content-Security-Policy, no framing and no Referer; a JSON 404 for any
// other path under "/admin/". Mount it at "/admin" and "/admin/" of the
// listener that serves the service API (the internal one when there is
// one): the page calls the API on its own origin, with an admin JWT that
// it asks for.
func NewAdminHandler() http.Handler {
	return &handler{assets: load(adminRoutes), admin: true}
}

// load reads the files of rs and precomputes their headers.
func load(rs map[string]route) map[string]asset {
	assets := make(map[string]asset, len(rs))
	for path, r := range rs {
		body, err := files.ReadFile(r.file)
		if err != nil {
			// Unreachable: the embed directive above lists every file.
			panic("web: embedded file missing: " + r.file)
		}
		assets[path] = asset{body: body, contentType: r.contentType, etag: etagOf(body)}
	}
	return assets
}

func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

type handler struct {
	assets map[string]asset
	opts   Options
	admin  bool
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a, ok := h.assets[r.URL.Path]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such page: "+r.URL.Path)
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" && h.opts.AllowOrigin != nil && h.opts.AllowOrigin(origin) {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Add("Vary", "Origin")
		if r.Method == http.MethodOptions {
			w.Header().Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET or HEAD")
		return
	}
	if !h.admin && a.contentType == typeHTML && h.opts.ConsoleAPI != nil {
		if api := h.opts.ConsoleAPI(r); api != "" {
			body := bytes.Replace(a.body, []byte(consoleAPIMeta),
				[]byte(`<meta name="hub-api" content="`+html.EscapeString(api)+`">`), 1)
			a = asset{body: body, contentType: a.contentType, etag: etagOf(body)}
		}
	}
	hd := w.Header()
	hd.Set("Content-Type", a.contentType)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("ETag", a.etag)
	hd.Set("X-Content-Type-Options", "nosniff")
	if a.contentType == typeHTML {
		// The page URL may carry ?token=: never leak it in a Referer.
		hd.Set("Referrer-Policy", "no-referrer")
	}
	if h.admin {
		hd.Set("Content-Security-Policy", adminCSP)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
	}
	// ServeContent handles HEAD, If-None-Match (304) and ranges.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// writeError writes the hub's JSON error body.
func writeError(w http.ResponseWriter, status int, code, message string) {
	body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": message}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
