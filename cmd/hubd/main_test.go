package main_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
)

// buildHubd compiles the server once per test binary.
func buildHubd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hubd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// cleanEnv is the environment without any HUB_ variable of the caller.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HUB_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

func TestDevModeRunsPrintsTokensAndExitsZeroOnSIGTERM(t *testing.T) {
	bin := buildHubd(t)
	addr := hubtest.FreeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = cleanEnv("HUB_ADDR="+addr, "HUB_SHUTDOWN_TIMEOUT=2s")
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// the banner names a user token and an admin token
	sc := bufio.NewScanner(stdout)
	var lines []string
	var admin string
	deadline := time.Now().Add(20 * time.Second)
	for sc.Scan() && time.Now().Before(deadline) {
		lines = append(lines, sc.Text())
		if len(lines) >= 2 && strings.Contains(lines[len(lines)-2], "admin token") {
			admin = strings.TrimSpace(sc.Text())
		}
		if strings.HasPrefix(strings.TrimSpace(sc.Text()), "curl -X POST") {
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	if admin == "" || strings.Count(admin, ".") != 2 {
		t.Fatalf("no admin token in the banner:\n%s", strings.Join(lines, "\n"))
	}
	// the printed admin token broadcasts
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/broadcast",
		strings.NewReader(`{"userIds":["dev-user"],"type":"HELLO","payload":{"text":"hello"}}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("broadcast with the printed admin token: %d", resp.StatusCode)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("hubd did not exit after SIGTERM")
	}
	if strings.Contains(stderr.String(), admin) {
		t.Fatal("the admin token was written to the logs")
	}
}

func TestStartupErrorsNameTheKey(t *testing.T) {
	bin := buildHubd(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"bad duration", []string{"HUB_HEARTBEAT_INTERVAL=soon"}, nil, "HUB_HEARTBEAT_INTERVAL"},
		{"bad size flag", nil, []string{"--max-payload", "lots"}, "max_payload"},
		{"bad broker", []string{"HUB_BROKER=kafka"}, nil, "HUB_BROKER"},
		{"busy port", []string{"HUB_ADDR=" + busy.Addr().String(), "HUB_JWT_SECRET=x-secret-0123456789"}, nil, "HUB_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tt.args...)
			cmd.Env = cleanEnv(tt.env...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit %v, want 1\n%s", err, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Fatalf("message does not name %s:\n%s", tt.want, out)
			}
		})
	}
}
