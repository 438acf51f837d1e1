// Package web serves the browser side of the hub: the client library
// (/client/hub.js and its TypeScript types) and the console page at /.
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
	"net/http"
	"time"
)

//go:embed hub.js hub.d.ts index.html
var files embed.FS

// asset is one embedded file with its precomputed headers.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// routes maps request paths to embedded files and their content types.
var routes = map[string]struct{ file, contentType string }{
	"/":                {"index.html", "text/html; charset=utf-8"},
	"/index.html":      {"index.html", "text/html; charset=utf-8"},
	"/client/hub.js":   {"hub.js", "text/javascript; charset=utf-8"},
	"/client/hub.d.ts": {"hub.d.ts", "application/typescript; charset=utf-8"},
}

// Options configures NewHandler.
type Options struct {
	// AllowOrigin reports whether a cross-origin page may load the client
	// (CORS for /client/...); nil allows none. Wire it to HUB_ALLOWED_ORIGINS.
	AllowOrigin func(origin string) bool
}

// NewHandler serves GET and HEAD for "/" (the console page),
// "/client/hub.js" and "/client/hub.d.ts", with Cache-Control: no-cache and
// an ETag, and a JSON 404 for any other path. Mount it as the catch-all of
// the public listener.
func NewHandler(opts Options) http.Handler {
	assets := make(map[string]asset, len(routes))
	for path, r := range routes {
		body, err := files.ReadFile(r.file)
		if err != nil {
			// Unreachable: the embed directive above lists every file.
			panic("web: embedded file missing: " + r.file)
		}
		sum := sha256.Sum256(body)
		assets[path] = asset{body: body, contentType: r.contentType, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	}
	return &handler{assets: assets, opts: opts}
}

type handler struct {
	assets map[string]asset
	opts   Options
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
	hd := w.Header()
	hd.Set("Content-Type", a.contentType)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("ETag", a.etag)
	hd.Set("X-Content-Type-Options", "nosniff")
	if a.contentType == routes["/"].contentType {
		// The page URL may carry ?token=: never leak it in a Referer.
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
