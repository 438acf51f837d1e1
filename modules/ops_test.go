package modules_test

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/hubd/hub/config"
)

// TestPprofServesNoCmdline: /debug/pprof/cmdline printed the command line,
// --jwt-secret and --api-keys included (issue 15); it is now 404 on the
// internal listener, where the rest of pprof still works.
func TestPprofServesNoCmdline(t *testing.T) {
	th := startHub(t, func(c *config.Config) {
		c.Pprof = true
		c.InternalAddr = "127.0.0.1:0"
	})
	if th.API == th.URL {
		t.Fatal("no separate internal listener")
	}
	get := func(base, path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/debug/pprof/cmdline", "/debug/pprof/cmdline?debug=1", "/debug/pprof/cmdline/"} {
		if status, body := get(th.API, path); status != http.StatusNotFound || strings.Contains(body, os.Args[0]) {
			t.Errorf("GET %s: %d %q, want 404", path, status, body)
		}
	}
	if status, body := get(th.API, "/debug/pprof/"); status != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("GET /debug/pprof/: %d, want the index (%.200q)", status, body)
	}
	if status, body := get(th.API, "/debug/pprof/goroutine?debug=1"); status != http.StatusOK || !strings.Contains(body, "goroutine profile") {
		t.Errorf("GET /debug/pprof/goroutine: %d, want the profile (%.200q)", status, body)
	}
	if status, _ := get(th.URL, "/debug/pprof/"); status != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ on the public listener: %d, want 404", status)
	}
}
