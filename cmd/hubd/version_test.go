package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildRelease builds hubd the way the packaging does (docs/OPERATIONS.md,
// Dockerfile): static, -trimpath, the commit stamped when the source is a
// Git checkout.
func buildRelease(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hubd")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=auto", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestVersionFlagPrintsModuleCommitAndGo(t *testing.T) {
	bin := buildRelease(t)
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("hubd --version: %v\n%s", err, out)
	}
	got := string(out)
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if !strings.HasPrefix(lines[0], "hubd ") || len(lines[0]) <= len("hubd ") {
		t.Errorf("first line %q, want hubd and the module version", lines[0])
	}
	goVersion, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "go: " + strings.TrimSpace(string(goVersion)) + " "; !strings.Contains(got, want) {
		t.Errorf("--version does not name the Go version (%q):\n%s", want, got)
	}
	// The go command stamps vcs.revision when the module root holds a .git
	// directory (a fresh clone, as in CI; it does not for a linked work
	// tree, where .git is a file; -buildvcs=auto on the command line
	// overrides a -buildvcs=false in GOFLAGS).
	head, headErr := exec.Command("git", "rev-parse", "HEAD").Output()
	gitDir, statErr := os.Stat("../../.git")
	stamped := headErr == nil && statErr == nil && gitDir.IsDir()
	if stamped {
		if want := "commit: " + strings.TrimSpace(string(head)); !strings.Contains(got, want) {
			t.Errorf("--version does not name the commit (%q):\n%s", want, got)
		}
	} else {
		t.Logf("not a stamped build here (no .git directory: a linked work tree?); checking the fallback only")
		if !strings.Contains(got, "commit: ") {
			t.Errorf("--version has no commit line:\n%s", got)
		}
	}
}

func TestHelpShowsTypesAndDefaults(t *testing.T) {
	bin := buildRelease(t)
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("hubd --help exits %v\n%s", err, out)
	}
	help := string(out)
	for _, want := range []string{
		"  --shutdown-timeout duration  (HUB_SHUTDOWN_TIMEOUT, default 5s)",
		"  --max-connections-per-user int  (HUB_MAX_CONNECTIONS_PER_USER, default 32)",
		"  --max-payload size  (HUB_MAX_PAYLOAD, default 64KiB)",
		"  --version\n",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	if strings.Contains(help, " value ") || strings.Contains(help, " value\n") {
		t.Errorf("--help still shows a generic value type:\n%s", help)
	}
}
