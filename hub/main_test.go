package hub_test

import (
	"encoding/json"
	"log/slog"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/hubd/hub/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSink records what the hub asks of a connection's transport. It pokes
// signal (buffered, non-blocking) on every Wake and Abort so that a test
// writer loop never misses one.
type fakeSink struct {
	mu     sync.Mutex
	wakes  int
	aborts []hub.Reason
	beats  []bool
	signal chan struct{}
}

func newSink() *fakeSink { return &fakeSink{signal: make(chan struct{}, 1)} }

func (s *fakeSink) Wake() {
	s.mu.Lock()
	s.wakes++
	s.mu.Unlock()
	s.poke()
}

func (s *fakeSink) Abort(r hub.Reason) {
	s.mu.Lock()
	s.aborts = append(s.aborts, r)
	s.mu.Unlock()
	s.poke()
}

func (s *fakeSink) Heartbeat(idle bool) {
	s.mu.Lock()
	s.beats = append(s.beats, idle)
	s.mu.Unlock()
}

func (s *fakeSink) poke() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

func (s *fakeSink) Wakes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wakes
}

func (s *fakeSink) Aborts() []hub.Reason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]hub.Reason(nil), s.aborts...)
}

func (s *fakeSink) Beats() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bool(nil), s.beats...)
}

// newHub builds a hub with a silent logger, stopped when the test ends.
func newHub(t testing.TB, o hub.Options) *hub.Hub {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	h := hub.New(o)
	t.Cleanup(h.Stop)
	return h
}

func ws(user string) hub.ConnInfo {
	return hub.ConnInfo{UserID: user, Transport: hub.TransportWebSocket}
}

func resumeFrom(user, last string) hub.ConnInfo {
	return hub.ConnInfo{UserID: user, Transport: hub.TransportWebSocket, LastEventID: last}
}

func register(t testing.TB, h *hub.Hub, info hub.ConnInfo) (*hub.Conn, *fakeSink) {
	t.Helper()
	s := newSink()
	c, err := h.Register(info, s)
	if err != nil {
		t.Fatalf("Register(%+v): %v", info, err)
	}
	return c, s
}

// drain calls Next until the queue is empty, without any goroutine. It
// returns the messages and the close reason handed out by the empty call.
func drain(c *hub.Conn) ([]*hub.Message, *hub.Reason) { return drainInto(c, nil) }

func drainInto(c *hub.Conn, out []*hub.Message) ([]*hub.Message, *hub.Reason) {
	for {
		n := len(out)
		var r *hub.Reason
		out, r = c.Next(out)
		if len(out) == n {
			return out, r
		}
	}
}

// serve plays a transport's single writer: it drains c on every Wake until a
// close reason or an abort, then unregisters c.
func serve(h *hub.Hub, c *hub.Conn, s *fakeSink) (msgs []*hub.Message, reason *hub.Reason, aborted bool) {
	defer h.Unregister(c)
	for {
		msgs, reason = drainInto(c, msgs)
		if reason != nil {
			return msgs, reason, false
		}
		if len(s.Aborts()) > 0 {
			return msgs, nil, true
		}
		<-s.signal
	}
}

type envelope struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Payload   json.RawMessage `json:"payload"`
	Timestamp string          `json:"timestamp"`
}

func decode(t testing.TB, m *hub.Message) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(m.Frame, &e); err != nil {
		t.Fatalf("frame %q is not JSON: %v", m.Frame, err)
	}
	return e
}

type connectedPayload struct {
	ConnectionID     string  `json:"connectionId"`
	UserID           string  `json:"userId"`
	Transport        string  `json:"transport"`
	HeartbeatSeconds int     `json:"heartbeatSeconds"`
	Recovered        bool    `json:"recovered"`
	Missed           int     `json:"missed"`
	Node             string  `json:"node"`
	TokenExpiresAt   string  `json:"tokenExpiresAt"`
	Position         *string `json:"position"`
}

// connected checks that msgs starts with hub.connected and decodes it.
func connected(t testing.TB, msgs []*hub.Message) connectedPayload {
	t.Helper()
	if len(msgs) == 0 || msgs[0].Type != "hub.connected" {
		t.Fatalf("first message is not hub.connected: %v", types(msgs))
	}
	var env struct {
		Type    string           `json:"type"`
		Payload connectedPayload `json:"payload"`
	}
	if err := json.Unmarshal(msgs[0].Frame, &env); err != nil {
		t.Fatalf("hub.connected %q: %v", msgs[0].Frame, err)
	}
	return env.Payload
}

func types(msgs []*hub.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Type
	}
	return out
}

// ids returns the ids of the application events in msgs.
func ids(msgs []*hub.Message) []string {
	var out []string
	for _, m := range msgs {
		if !m.Control() {
			out = append(out, m.ID)
		}
	}
	return out
}

func seqOf(t testing.TB, id string) uint64 {
	t.Helper()
	_, seq, ok := hub.ParseID(id)
	if !ok {
		t.Fatalf("ParseID(%q) failed", id)
	}
	return seq
}
