package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/goleak"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/modules"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testSecret = "test-secret-0123456789abcdef0123456789"
	testAPIKey = "test-api-key-0123456789" // 16 characters or more
)

// testHub is the assembled app (modules.App) on 127.0.0.1.
type testHub struct {
	t       *testing.T
	app     *fx.App
	URL     string
	stopped bool
}

func startHub(t *testing.T) *testHub {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.NodeName = "hub-test"
	cfg.JWTSecret = testSecret
	cfg.JWTAlgorithms = []string{"HS256"}
	cfg.APIKeys = []string{testAPIKey}
	cfg.ShutdownTimeout = 3 * time.Second
	cfg.LogFormat = "json"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	var srv *modules.Servers
	th := &testHub{t: t}
	th.app = fx.New(
		modules.App(cfg),
		fx.Replace(modules.NewLogger(cfg, &syncBuffer{})),
		fx.WithLogger(modules.FxLogger),
		fx.Populate(&srv),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := th.app.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	th.URL = "http://" + srv.Addr()
	t.Cleanup(th.stop)
	return th
}

func (th *testHub) stop() {
	if th.stopped {
		return
	}
	th.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := th.app.Stop(ctx); err != nil {
		th.t.Errorf("stop: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// result is the outcome of one hubctl run.
type result struct {
	code           int
	stdout, stderr string
}

// hubctl runs the tool in-process with stdin.
func hubctl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut syncBuffer
	code := runContext(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// mustRun runs hubctl and fails the test unless it exits 0.
func mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := hubctl(t, stdin, args...)
	if r.code != exitOK {
		t.Fatalf("hubctl %v: exit %d, stderr %q", args, r.code, r.stderr)
	}
	return r.stdout
}

// decode parses s as JSON into v.
func decode(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("output %q: %v", s, err)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
