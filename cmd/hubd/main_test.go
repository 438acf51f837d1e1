package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
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
	const unknownValue = "value-of-a-misspelt-variable"
	cmd := exec.Command(bin, "--dev")
	cmd.Env = cleanEnv("HUB_ADDR="+addr, "HUB_SHUTDOWN_TIMEOUT=2s", "HUB_SEND_QUEU="+unknownValue)
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer // read after Wait
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// the banner names the secret made for this run, a user token and an
	// admin token, and shows hubctl (which ships with the hub)
	sc := bufio.NewScanner(stdout)
	var lines []string
	var admin, secret string
	deadline := time.Now().Add(20 * time.Second)
	for sc.Scan() && time.Now().Before(deadline) {
		lines = append(lines, sc.Text())
		if len(lines) >= 2 && strings.Contains(lines[len(lines)-2], "admin token") {
			admin = strings.TrimSpace(sc.Text())
		}
		if len(lines) >= 2 && strings.Contains(lines[len(lines)-2], "secret (made for this run") {
			secret = strings.TrimSpace(sc.Text())
		}
		if strings.HasPrefix(strings.TrimSpace(sc.Text()), "curl -X POST") {
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	banner := strings.Join(lines, "\n")
	if admin == "" || strings.Count(admin, ".") != 2 {
		t.Fatalf("no admin token in the banner:\n%s", banner)
	}
	if len(secret) < 32 {
		t.Fatalf("no secret in the banner:\n%s", banner)
	}
	if !strings.Contains(banner, "hubctl tail --url") || !strings.Contains(banner, "hubctl token --secret "+secret) {
		t.Errorf("the banner shows no hubctl command:\n%s", banner)
	}
	// the printed admin token broadcasts
	broadcast := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/broadcast",
			strings.NewReader(`{"userIds":["dev-user"],"type":"HELLO","payload":{"text":"hello"}}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := broadcast(admin); code != http.StatusAccepted {
		t.Fatalf("broadcast with the printed admin token: %d", code)
	}
	// and a token minted with the printed secret (what hubctl token does) too
	if code := broadcast(mintHS256(t, secret, "ops", "admin")); code != http.StatusAccepted {
		t.Fatalf("broadcast with a token minted with the printed secret: %d", code)
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
	logs := stderr.String()
	if strings.Contains(logs, admin) || strings.Contains(logs, secret) {
		t.Fatal("the admin token or the secret was written to the logs")
	}
	if !strings.Contains(logs, "DEVELOPMENT MODE") {
		t.Errorf("no development mode warning in the logs:\n%s", logs)
	}
	// a misspelt variable is logged with the nearest key, without its value
	if !strings.Contains(logs, "HUB_SEND_QUEU is not a configuration key") || !strings.Contains(logs, "did you mean HUB_SEND_QUEUE?") {
		t.Errorf("no warning about HUB_SEND_QUEU in the logs:\n%s", logs)
	}
	if strings.Contains(logs, unknownValue) {
		t.Error("the value of an unknown variable was logged")
	}
}

// TestNoKeyNoDevExitsNamingTheKeys reproduces issue 15's first finding: a
// misspelt key, or API keys alone, started development mode and handed out
// admin tokens. Without a key and without --dev, hubd now exits 1 naming
// the keys that would configure one, and --dev; a misspelt variable is
// named with the key it resembles.
func TestNoKeyNoDevExitsNamingTheKeys(t *testing.T) {
	bin := buildHubd(t)
	const typoSecret = "a-misspelt-secret-0123456789abcdef-0123"
	tests := []struct {
		name string
		env  []string
		want []string
	}{
		{"nothing", nil, nil},
		{"misspelt secret", []string{"HUB_JWT_SECRETT=" + typoSecret}, []string{"HUB_JWT_SECRETT is not a configuration key", "did you mean HUB_JWT_SECRET?"}},
		{"api keys only", []string{"HUB_API_KEYS=service-key-0123456789"}, nil},
		{"HUB_DEV=false", []string{"HUB_DEV=false"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin)
			cmd.Env = cleanEnv(append(tt.env, "HUB_ADDR="+hubtest.FreeAddr(t))...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit %v, want 1\n%s", err, out)
			}
			for _, want := range append([]string{"HUB_JWT_SECRET", "HUB_JWT_PUBLIC_KEY_FILE", "HUB_JWT_JWKS_URL", "--dev"}, tt.want...) {
				if !strings.Contains(string(out), want) {
					t.Errorf("output does not name %s:\n%s", want, out)
				}
			}
			if strings.Contains(string(out), typoSecret) || strings.Contains(string(out), "service-key-0123456789") {
				t.Errorf("output shows a secret:\n%s", out)
			}
			if strings.Contains(string(out), "DEVELOPMENT MODE") || strings.Contains(string(out), "eyJ") {
				t.Errorf("development mode started:\n%s", out)
			}
		})
	}
}

// mintHS256 makes a JWT as hubctl token does: HS256 with secret, sub and
// roles, valid for an hour.
func mintHS256(t *testing.T, secret, sub string, roles ...string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	claims, err := json.Marshal(map[string]any{"sub": sub, "roles": roles, "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	signing := header + "." + enc.EncodeToString(claims)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

// TestStartupErrorsNameTheKey starts hubd with bad settings and checks
// that it exits 1 with a last line that names the key (or the cause) and
// is short: a configuration error is that one line alone, and an error of
// the app's start carries no fx dependency chain.
func TestStartupErrorsNameTheKey(t *testing.T) {
	bin := buildHubd(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	badPEM := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(badPEM, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const secret = "HUB_JWT_SECRET=x-secret-0123456789abcdef-0123456789"
	tests := []struct {
		name    string
		env     []string
		args    []string
		want    string
		oneLine bool // a configuration error: nothing else is printed
	}{
		{"bad duration", []string{"HUB_HEARTBEAT_INTERVAL=soon"}, nil, "HUB_HEARTBEAT_INTERVAL", false},
		{"bad size flag", nil, []string{"--max-payload", "lots"}, "max_payload", false},
		{"bad broker", []string{"HUB_BROKER=kafka"}, nil, "HUB_BROKER", false},
		{"busy port", []string{"HUB_ADDR=" + busy.Addr().String(), secret}, nil, "HUB_ADDR", false},
		{"bad redis database", []string{"HUB_BROKER=redis", "HUB_REDIS_URL=redis://127.0.0.1:6379/abc", secret}, nil,
			`hubd: config: HUB_REDIS_URL (redis_url): invalid value "redis://127.0.0.1:6379/abc": invalid database number: "abc"`, true},
		{"bad redis option", []string{"HUB_BROKER=redis", "HUB_REDIS_URL=redis://127.0.0.1:6379/0?pool=9", secret}, nil,
			"hubd: config: HUB_REDIS_URL (redis_url): invalid value", true},
		{"redis unreachable", []string{"HUB_BROKER=redis", "HUB_REDIS_URL=redis://" + hubtest.FreeAddr(t) + "/0", secret}, nil,
			"hubd: HUB_REDIS_URL: connect redis:", false},
		{"bad public key", []string{"HUB_JWT_PUBLIC_KEY_FILE=" + badPEM, "HUB_JWT_ALGORITHMS=RS256"}, nil,
			"hubd: auth: auth: no PEM public key", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tt.args...)
			cmd.Env = cleanEnv(append([]string{"HUB_ADDR=127.0.0.1:0"}, tt.env...)...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit %v, want 1\n%s", err, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Fatalf("message does not name %s:\n%s", tt.want, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "hubd: ") || len(last) > 200 {
				t.Errorf("last line is not hubd's short message:\n%s", out)
			}
			if tt.oneLine && len(lines) != 1 {
				t.Errorf("%d lines, want the message alone:\n%s", len(lines), out)
			}
			for _, fx := range []string{"could not build", "failed to build", "non-nil error from function", `"stack"`} {
				if strings.Contains(string(out), fx) {
					t.Errorf("output holds fx's dependency chain (%q):\n%s", fx, out)
				}
			}
		})
	}
}
