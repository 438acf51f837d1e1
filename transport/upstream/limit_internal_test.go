package upstream

import (
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                   { return &clock{t: time.Unix(1_700_000_000, 0)} }

func TestLimiter(t *testing.T) {
	c := newClock()
	l := newLimiter(2) // burst 4
	l.now = c.now
	for i := range 4 {
		if !l.acquire("a", 0) {
			t.Fatalf("send %d refused within the burst", i+1)
		}
	}
	if l.acquire("a", 0) {
		t.Fatal("send over the burst accepted")
	}
	if !l.acquire("b", 0) {
		t.Fatal("buckets are not per key")
	}
	c.advance(500 * time.Millisecond) // one token back
	if !l.acquire("a", 0) || l.acquire("a", 0) {
		t.Fatal("refill is not rate per second")
	}

	// in-flight slots
	if !l.acquire("c", 1) || l.acquire("c", 1) {
		t.Fatal("in-flight bound not applied")
	}
	l.release("c")
	if !l.acquire("c", 1) {
		t.Fatal("released slot not reusable")
	}
	l.release("c")

	// idle, full buckets are dropped
	c.advance(time.Minute)
	l.acquire("d", 0)
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("buckets after sweep = %d, want 1", n)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		give    string
		needRef bool
		wantErr bool
		wantRef string
	}{
		{`{"ref":"r","idempotencyKey":"k","event":{"type":"A","payload":[1]}}`, true, false, "r"},
		{`{"idempotencyKey":"k","event":{"type":"A"}}`, false, false, ""},
		{`{"idempotencyKey":"k","event":{"type":"A"}}`, true, true, ""},
		{`{"ref":null,"idempotencyKey":"k","event":{"type":"A"}}`, false, false, ""},
		{`[1]`, false, true, ""},
		{`{"ref":"r","idempotencyKey":7,"event":{"type":"A"}}`, true, true, "r"},
		{`{"ref":"r","idempotencyKey":"k","event":{"type":7}}`, true, true, "r"},
		{`{"ref":"r","idempotencyKey":"k","event":null}`, true, true, "r"},
	}
	for _, tt := range tests {
		req, bad := parse([]byte(tt.give), tt.needRef)
		if (bad != nil) != tt.wantErr || req.Ref != tt.wantRef {
			t.Errorf("parse(%s) = %+v, %+v; want error %v, ref %q", tt.give, req, bad, tt.wantErr, tt.wantRef)
		}
		if bad != nil && (bad.Code != CodeInvalidRequest || bad.Retryable) {
			t.Errorf("parse(%s): nack %+v, want final invalid_request", tt.give, bad)
		}
		if bad == nil && string(req.Payload) == "" {
			t.Errorf("parse(%s): empty payload, want null", tt.give)
		}
	}
}
