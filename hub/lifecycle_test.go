package hub_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
)

func TestHeartbeats(t *testing.T) {
	h := newHub(t, hub.Options{Heartbeat: 40 * time.Millisecond})
	busy, busySink := register(t, h, ws("busy"))
	quiet, quietSink := register(t, h, ws("quiet"))
	h.Start()
	hubtest.Eventually(t, 10*time.Second, "two heartbeats each", func() bool {
		return len(busySink.Beats()) >= 2 && len(quietSink.Beats()) >= 2
	})
	// hub.connected was queued in the first interval
	if b := busySink.Beats(); b[0] || !b[1] {
		t.Fatalf("busy beats %v, want [false true ...]", b)
	}
	n := len(busySink.Beats())
	if _, err := h.Publish(ctx, []string{"busy"}, "T", nil); err != nil {
		t.Fatal(err)
	}
	// the beat that follows the event says busy, the one after it idle
	hubtest.Eventually(t, 10*time.Second, "a busy beat and one more", func() bool {
		b := busySink.Beats()[n:]
		i := slices.Index(b, false)
		return i >= 0 && len(b) > i+1
	})
	b := busySink.Beats()[n:]
	if i := slices.Index(b, false); !b[i+1] {
		t.Fatalf("beats after an event %v, want idle again after the busy one", b)
	}
	if q := quietSink.Beats(); slices.Contains(q[1:], false) {
		t.Fatalf("quiet beats %v, want idle after the first", q)
	}
	drain(busy)
	drain(quiet)
}

func TestTokenExpiry(t *testing.T) {
	h := newHub(t, hub.Options{})
	exp := time.Now().Add(time.Hour)
	expiring, _ := register(t, h, hub.ConnInfo{UserID: "u1", Transport: hub.TransportWebSocket, TokenExpiresAt: exp})
	refreshed, _ := register(t, h, hub.ConnInfo{UserID: "u1", Transport: hub.TransportSSE, TokenExpiresAt: exp})
	forever, _ := register(t, h, ws("u2"))
	for _, c := range []*hub.Conn{expiring, refreshed, forever} {
		drain(c)
	}
	refreshed.SetTokenExpiry(exp.Add(time.Hour))

	h.MaintainAt(exp.Add(-time.Millisecond))
	for _, c := range []*hub.Conn{expiring, refreshed, forever} {
		if _, r := drain(c); r != nil {
			t.Fatalf("closed before expiry: %v", r)
		}
	}
	h.MaintainAt(exp)
	if _, r := drain(expiring); r == nil || *r != hub.ReasonTokenExpired {
		t.Fatalf("at expiry: reason %v, want 4001 token expired", r)
	}
	if _, r := drain(refreshed); r != nil {
		t.Fatalf("refreshed conn closed at the old expiry: %v", r)
	}
	h.MaintainAt(exp.Add(time.Hour))
	if _, r := drain(refreshed); r == nil || *r != hub.ReasonTokenExpired {
		t.Fatalf("at the new expiry: reason %v", r)
	}
	h.MaintainAt(exp.Add(100 * time.Hour))
	if _, r := drain(forever); r != nil {
		t.Fatalf("conn without expiry closed: %v", r)
	}
}

func TestTokenExpiryByMaintenanceLoop(t *testing.T) {
	h := newHub(t, hub.Options{Heartbeat: 40 * time.Millisecond})
	c, s := register(t, h, hub.ConnInfo{UserID: "u1", Transport: hub.TransportWebSocket, TokenExpiresAt: time.Now().Add(30 * time.Millisecond)})
	h.Start()
	var reason *hub.Reason
	hubtest.Eventually(t, 10*time.Second, "the token expiry close", func() bool {
		_, reason = drain(c)
		return reason != nil
	})
	if *reason != (hub.Reason{Code: 4001, Text: "token expired"}) {
		t.Fatalf("reason %v", reason)
	}
	if s.Wakes() < 2 {
		t.Errorf("close without a Wake (%d wakes)", s.Wakes())
	}
	h.Unregister(c)
}

func TestShutdownDrainsThenCloses(t *testing.T) {
	h := newHub(t, hub.Options{Heartbeat: 40 * time.Millisecond})
	h.Start()
	type conn struct {
		c *hub.Conn
		s *fakeSink
	}
	var conns []conn
	for i := 0; i < 6; i++ {
		c, s := register(t, h, hub.ConnInfo{UserID: fmt.Sprint("u", i%3), Transport: []string{hub.TransportWebSocket, hub.TransportSSE}[i%2]})
		conns = append(conns, conn{c, s})
	}
	for i := 0; i < 5; i++ {
		if _, err := h.Publish(ctx, []string{"u0", "u1", "u2"}, "T", nil); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- h.Shutdown(sctx) }()
	hubtest.Eventually(t, 10*time.Second, "draining", h.Draining)
	if c, err := h.Register(ws("late"), newSink()); !errors.Is(err, hub.ErrShuttingDown) {
		t.Fatalf("Register while draining = %v, %v; want ErrShuttingDown", c, err)
	}
	// the writers start only now: everything queued must come before the close
	var wg sync.WaitGroup
	for _, x := range conns {
		wg.Go(func() {
			msgs, r, aborted := serve(h, x.c, x.s)
			if aborted || r == nil || *r != hub.ReasonShutdown {
				t.Errorf("aborted %v reason %v; want 1001 server shutdown", aborted, r)
			}
			if len(msgs) != 6 {
				t.Errorf("got %v before the close, want hub.connected and 5 events", types(msgs))
			}
		})
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	wg.Wait()
	if st := h.Stats(); st.TotalConnections != 0 || st.ActiveUsers != 0 {
		t.Errorf("stats after shutdown %+v", st)
	}
	if _, err := h.Register(ws("later"), newSink()); !errors.Is(err, hub.ErrShuttingDown) {
		t.Fatalf("Register after Shutdown = %v", err)
	}
	if err := h.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
}

func TestShutdownAbortsLeftoversAtDeadline(t *testing.T) {
	h := newHub(t, hub.Options{})
	h.Start()
	stuck1, s1 := register(t, h, ws("u1"))
	stuck2, s2 := register(t, h, ws("u2"))
	good, gs := register(t, h, ws("u3"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, r, aborted := serve(h, good, gs); aborted || r == nil || *r != hub.ReasonShutdown {
			t.Errorf("served conn: aborted %v reason %v", aborted, r)
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	err := h.Shutdown(sctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want a deadline error", err)
	}
	<-done
	for _, s := range []*fakeSink{s1, s2} {
		if a := s.Aborts(); !slices.Equal(a, []hub.Reason{hub.ReasonShutdown}) {
			t.Errorf("leftover aborts %v, want one 1001", a)
		}
	}
	if a := gs.Aborts(); len(a) != 0 {
		t.Errorf("drained conn aborted: %v", a)
	}
	if msgs, r := drain(stuck1); len(msgs) != 0 || r != nil {
		t.Errorf("aborted conn yields %v, %v", types(msgs), r)
	}
	h.Unregister(stuck1)
	h.Unregister(stuck2)
}

func TestShutdownWithoutConnections(t *testing.T) {
	tests := []struct {
		name   string
		before func(h *hub.Hub)
	}{
		{name: "idle hub", before: func(*hub.Hub) {}},
		{name: "started", before: func(h *hub.Hub) { h.Start() }},
		{name: "after Stop", before: func(h *hub.Hub) { h.Start(); h.Stop() }},
		{name: "all unregistered", before: func(h *hub.Hub) {
			c, _ := h.Register(ws("u"), newSink())
			h.Unregister(c)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t, hub.Options{})
			tt.before(h)
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := h.Shutdown(sctx); err != nil {
				t.Fatalf("Shutdown = %v", err)
			}
		})
	}
}

// TestShutdownRacingRegister registers and unregisters from many goroutines
// while the hub shuts down: Shutdown must see the hub drained, whatever the
// interleaving, and never wait for its deadline.
func TestShutdownRacingRegister(t *testing.T) {
	for round := 0; round < 30; round++ {
		h := newHub(t, hub.Options{})
		start := make(chan struct{})
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Go(func() {
				<-start
				for i := 0; i < 50; i++ {
					c, err := h.Register(ws(fmt.Sprint("u", g)), newSink())
					if err != nil {
						if !errors.Is(err, hub.ErrShuttingDown) {
							t.Error(err)
						}
						return
					}
					h.Unregister(c)
				}
			})
		}
		close(start)
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := h.Shutdown(sctx)
		cancel()
		wg.Wait()
		if err != nil {
			t.Fatalf("round %d: Shutdown = %v", round, err)
		}
	}
}
