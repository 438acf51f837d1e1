package web

import (
	"os"
	"os/exec"
	"testing"
)

// TestNodeClient runs hub.js's own tests (web/test/*.test.mjs) with Node's
// built-in runner. Without node on PATH it skips, unless HUB_REQUIRE_BROWSER=1.
func TestNodeClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("HUB_REQUIRE_BROWSER") == "1" {
			t.Fatal("node not found on PATH and HUB_REQUIRE_BROWSER=1")
		}
		t.Skip("node not found on PATH")
	}
	cmd := exec.CommandContext(t.Context(), node, "--test", "test/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test test/: %v\n%s", err, out)
	}
}
