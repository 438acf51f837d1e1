package main

import (
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/hubtest/app"
)

// TestWho lists a user's connections (a table, or JSON), says so when
// there are none, and follows the exit statuses: 0, 1 for an API error,
// 2 for a bad command line.
func TestWho(t *testing.T) {
	th := app.Start(t, nil)
	u1 := token(t, "u1")
	ws := startTail(t, "--url", th.URL, "--token", u1, "--transport", "ws")
	wsID := ws.waitType("hub.connected")["payload"].(map[string]any)["connectionId"].(string)
	sse := startTail(t, "--url", th.URL, "--token", u1, "--transport", "sse")
	sseID := sse.waitType("hub.connected")["payload"].(map[string]any)["connectionId"].(string)

	out := mustRun(t, "", "who", "u1", "--url", th.URL, "--api-key", hubtest.APIKey)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "CONNECTION") {
		t.Fatalf("who printed\n%s\nwant a header and two connections", out)
	}
	for _, want := range [][2]string{{wsID, "websocket"}, {sseID, "sse"}} {
		found := false
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) == 4 && f[0] == want[0] && f[1] == want[1] && f[2] == "hub-test" {
				if _, err := time.Parse(time.RFC3339, f[3]); err == nil {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("who printed\n%s\nwant a line for %s (%s) on hub-test", out, want[0], want[1])
		}
	}

	// flags first, --json
	out = mustRun(t, "", "who", "--url", th.URL, "--api-key", hubtest.APIKey, "--json", "u1")
	var ans struct {
		UserID      string `json:"userId"`
		Connections []struct {
			ConnectionID, Transport, Node string
			ConnectedAt                   time.Time
		} `json:"connections"`
	}
	decode(t, out, &ans)
	if ans.UserID != "u1" || len(ans.Connections) != 2 || ans.Connections[0].ConnectionID != wsID || ans.Connections[1].ConnectionID != sseID {
		t.Errorf("who --json printed %s", out)
	}

	// a device leaves
	ws.cancel()
	ws.exit()
	hubtest.Eventually(t, 5*time.Second, "the device that left to go", func() bool {
		r := hubctl(t, "", "who", "u1", "--url", th.URL, "--api-key", hubtest.APIKey)
		return r.code == exitOK && !strings.Contains(r.stdout, wsID) && strings.Contains(r.stdout, sseID)
	})
	if out := mustRun(t, "", "who", "nobody", "--url", th.URL, "--api-key", hubtest.APIKey); strings.TrimSpace(out) != "nobody has no live connection" {
		t.Errorf("who nobody printed %q", out)
	}
	if out := mustRun(t, "", "who", "--json", "nobody", "--url", th.URL, "--api-key", hubtest.APIKey); strings.TrimSpace(out) != `{"userId":"nobody","connections":[]}` {
		t.Errorf("who --json nobody printed %q", out)
	}

	t.Setenv("HUB_API_KEY", "")
	t.Setenv("HUB_API_KEYS", "")
	t.Setenv("HUB_TOKEN", "")
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
		stdout string
	}{
		{"user token", []string{"who", "u1", "--url", th.URL, "--token", u1}, exitError, "forbidden", ""},
		{"no hub", []string{"who", "u1", "--url", "http://127.0.0.1:1", "--api-key", hubtest.APIKey}, exitError, "connection refused", ""},
		{"no user", []string{"who", "--url", th.URL}, exitUsage, "the user is required", ""},
		{"two users", []string{"who", "u1", "u2"}, exitUsage, `unexpected argument "u2"`, ""},
		{"bad flag", []string{"who", "u1", "--nope"}, exitUsage, "flag provided but not defined", ""},
		{"help", []string{"who", "--help"}, exitOK, "", "Usage: hubctl who"},
		{"help command", []string{"help", "who"}, exitOK, "", "USER"},
		{"listed", []string{"--help"}, exitOK, "", "who"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := hubctl(t, "", tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) || !strings.Contains(r.stdout, tt.stdout) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", r.code, r.stdout, r.stderr, tt.code, tt.stdout, tt.stderr)
			}
			if strings.Contains(r.stdout+r.stderr, u1) {
				t.Error("the token was printed")
			}
		})
	}
}
