package api

import (
	"strconv"
	"testing"
	"time"
)

// TestFailLimitWindow: the 20th failure within a minute blocks the address
// until the minute that began with its first failure has passed; then it
// starts afresh.
func TestFailLimitWindow(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newFailLimit()
	l.now = func() time.Time { return now }
	for i := range MaxCredentialFailures - 1 {
		l.fail("a")
		if l.blocked("a") != 0 {
			t.Fatalf("blocked after %d failures", i+1)
		}
		now = now.Add(time.Second)
	}
	l.fail("a") // the 20th, 19 s after the first
	if got := l.blocked("a"); got != 41*time.Second {
		t.Fatalf("blocked for %v after 20 failures, want 41s (the rest of the minute)", got)
	}
	if l.blocked("b") != 0 {
		t.Fatal("another address is blocked")
	}
	now = now.Add(41 * time.Second)
	if got := l.blocked("a"); got != 0 {
		t.Fatalf("still blocked for %v once the minute has passed", got)
	}
	l.fail("a")
	if l.blocked("a") != 0 || l.addrs["a"].n != 1 {
		t.Fatalf("a new window does not start afresh: %+v", l.addrs["a"])
	}
	// failures spread over more than a minute never block
	l = newFailLimit()
	l.now = func() time.Time { return now }
	for range 3 * MaxCredentialFailures {
		l.fail("slow")
		now = now.Add(4 * time.Second)
		if l.blocked("slow") != 0 {
			t.Fatal("15 failures a minute blocked the address")
		}
	}
}

// TestFailLimitBounded: the memory holds at most MaxFailingAddrs
// addresses; ended windows are swept, and when every window is live a
// blocked address is the last one forgotten.
func TestFailLimitBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newFailLimit()
	l.max = 100
	l.now = func() time.Time { return now }
	for range MaxCredentialFailures {
		l.fail("blocked")
	}
	for i := range 10 * l.max {
		l.fail("10.0.0." + strconv.Itoa(i))
		if len(l.addrs) > l.max {
			t.Fatalf("%d addresses remembered, max %d", len(l.addrs), l.max)
		}
	}
	if l.blocked("blocked") == 0 {
		t.Error("a flood of new addresses freed a blocked one")
	}
	now = now.Add(CredentialFailureWindow)
	l.fail("late")
	if len(l.addrs) != 1 {
		t.Errorf("%d addresses after the window, want 1 (the ended windows swept)", len(l.addrs))
	}
}
