package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/hubd/hub/internal/hubtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// result is the outcome of one hubctl run.
type result struct {
	code           int
	stdout, stderr string
}

// hubctl runs the tool in-process with stdin.
func hubctl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut hubtest.Buffer
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
