package redisbroker_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/internal/hubtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(stopsCluster{m}) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type node struct {
	hub    *hub.Hub
	broker *redisbroker.Broker
}

// startNode starts a hub with a broker on url/prefix; both stop when t
// ends.
func startNode(t testing.TB, url, pfx, name string, size int, ttl time.Duration) node {
	t.Helper()
	return startWith(t,
		redisbroker.Options{URL: url, Prefix: pfx, Node: name, HistorySize: size, HistoryTTL: ttl},
		hub.Options{HistorySize: size, HistoryTTL: ttl, Node: name})
}

// startWith starts a hub of ho with a broker of bo (logging nowhere unless
// given a logger);
// both stop when t ends.
func startWith(t testing.TB, bo redisbroker.Options, ho hub.Options) node {
	t.Helper()
	if bo.Logger == nil {
		bo.Logger = quiet
	}
	if ho.Logger == nil {
		ho.Logger = quiet
	}
	b, err := redisbroker.New(bo)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ho.Broker = b
	h := hub.New(ho)
	h.Start()
	t.Cleanup(h.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Start(ctx, h); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return node{hub: h, broker: b}
}

// sink is a fake transport: it counts wakes and records aborts.
type sink struct {
	mu     sync.Mutex
	aborts []hub.Reason
}

func (s *sink) Wake()              {}
func (s *sink) Heartbeat(bool)     {}
func (s *sink) Abort(r hub.Reason) { s.mu.Lock(); s.aborts = append(s.aborts, r); s.mu.Unlock() }

// client is a registered connection and what it received so far.
type client struct {
	t    testing.TB
	h    *hub.Hub
	c    *hub.Conn
	sink *sink
	msgs []*hub.Message
	end  *hub.Reason // the close asked for, or the abort (a slow consumer)
}

func connect(t testing.TB, h *hub.Hub, user, last string) *client {
	t.Helper()
	sk := &sink{}
	c, err := h.Register(hub.ConnInfo{UserID: user, Transport: hub.TransportWebSocket, LastEventID: last}, sk)
	if err != nil {
		t.Fatalf("Register(%s): %v", user, err)
	}
	cl := &client{t: t, h: h, c: c, sink: sk}
	t.Cleanup(func() { h.Unregister(c) })
	return cl
}

// poll moves what is queued into cl.msgs.
func (cl *client) poll() {
	cl.sink.mu.Lock()
	if len(cl.sink.aborts) > 0 && cl.end == nil {
		r := cl.sink.aborts[0]
		cl.end = &r
	}
	cl.sink.mu.Unlock()
	for {
		n := len(cl.msgs)
		var r *hub.Reason
		cl.msgs, r = cl.c.Next(cl.msgs)
		if r != nil {
			cl.end = r
		}
		if len(cl.msgs) == n {
			return
		}
	}
}

// events returns the application events received so far.
func (cl *client) events() []*hub.Message {
	var out []*hub.Message
	for _, m := range cl.msgs {
		if !m.Control() {
			out = append(out, m)
		}
	}
	return out
}

// waitEvents polls until the client holds n application events.
func (cl *client) waitEvents(n int) []*hub.Message {
	cl.t.Helper()
	hubtest.Eventually(cl.t, 15*time.Second, "events", func() bool { cl.poll(); return len(cl.events()) >= n })
	return cl.events()
}

// connected decodes the hub.connected payload received first.
func (cl *client) connected() (recovered bool, missed int) {
	cl.t.Helper()
	hubtest.Eventually(cl.t, 15*time.Second, "hub.connected", func() bool { cl.poll(); return len(cl.msgs) > 0 })
	if cl.msgs[0].Type != "hub.connected" {
		cl.t.Fatalf("first message %q, want hub.connected", cl.msgs[0].Type)
	}
	var env struct {
		Payload struct {
			Recovered bool `json:"recovered"`
			Missed    int  `json:"missed"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(cl.msgs[0].Frame, &env); err != nil {
		cl.t.Fatal(err)
	}
	return env.Payload.Recovered, env.Payload.Missed
}

func idsOf(msgs []*hub.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}
