package timeseries_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/metrics"
	"github.com/hubd/hub/internal/timeseries"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type sink struct{}

func (sink) Wake()            {}
func (sink) Abort(hub.Reason) {}
func (sink) Heartbeat(bool)   {}

// val shows a figure in a message.
func val(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// newHub is an in-memory hub with its metrics, as modules wires them.
func newHub(t *testing.T) (*hub.Hub, *metrics.Metrics) {
	t.Helper()
	m := metrics.New(nil)
	h := hub.New(hub.Options{Node: "n1", Observer: m})
	m.SetHub(h)
	t.Cleanup(func() {
		// the test's connections have no transport to close them: cut at once
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_ = h.Shutdown(ctx)
	})
	return h, m
}

func register(t *testing.T, h *hub.Hub, user, transport string) {
	t.Helper()
	if _, err := h.Register(hub.ConnInfo{UserID: user, Transport: transport}, sink{}); err != nil {
		t.Fatal(err)
	}
}

func TestSample(t *testing.T) {
	h, m := newHub(t)
	s := timeseries.New(timeseries.Options{Hub: h, Gatherer: m.Registry(), Size: 3})
	t0 := time.UnixMilli(1_000_000)

	s.Sample(t0)
	register(t, h, "u1", hub.TransportWebSocket)
	register(t, h, "u1", hub.TransportSSE)
	register(t, h, "u2", hub.TransportWebSocket)
	m.Published(10)
	// 100 deliveries in one batch: 50 after 0.6 ms, 49 after 3 ms, 1 after 2 s
	now := time.Now()
	accepted := make([]time.Time, 100)
	for i := range accepted {
		lat := 600 * time.Microsecond
		switch {
		case i == 99:
			lat = 2 * time.Second
		case i >= 50:
			lat = 3 * time.Millisecond
		}
		accepted[i] = now.Add(-lat)
	}
	m.Delivered(hub.TransportWebSocket, len(accepted), accepted)
	m.SlowConsumer(hub.TransportSSE)
	m.Handshake(hub.TransportWebSocket, metrics.OutcomeRefused, "too_many_connections")
	m.Handshake(hub.TransportSSE, metrics.OutcomeRefused, "overloaded")
	m.Handshake(hub.TransportSSE, metrics.OutcomeRefused, "invalid_token") // not a capacity refusal
	s.Sample(t0.Add(2 * time.Second))

	ps := s.Points(0)
	if len(ps) != 2 {
		t.Fatalf("%d points, want 2", len(ps))
	}
	first, p := ps[0], ps[1]
	if first.Deliveries != nil || first.Publishes != nil || first.LatencyP50Ms != nil {
		t.Errorf("first point has rates: %+v", first)
	}
	if p.T != t0.Add(2*time.Second).UnixMilli() || p.Users != 2 || p.Connections["websocket"] != 2 || p.Connections["sse"] != 1 {
		t.Errorf("point %+v", p)
	}
	if p.Nodes["n1"] != 3 || len(p.Nodes) != 1 {
		t.Errorf("nodes %v, want n1:3", p.Nodes)
	}
	if p.Broker != timeseries.BrokerNone {
		t.Errorf("broker %q, want none", p.Broker)
	}
	for name, c := range map[string]struct {
		got  *float64
		want float64
	}{
		"deliveries":    {p.Deliveries, 50},
		"publishes":     {p.Publishes, 5},
		"slowConsumers": {p.SlowConsumers, 0.5},
		"refusals":      {p.Refusals, 1},
	} {
		if c.got == nil || *c.got != c.want {
			t.Errorf("%s = %v, want %v", name, val(c.got), c.want)
		}
	}
	// p50: rank 50 of 100 in the bucket (0.5 ms, 1 ms] holding 50: its top.
	// p99: rank 99 in (2.5 ms, 5 ms] holding 49 (51..99): its top.
	if p.LatencyP50Ms == nil || math.Abs(*p.LatencyP50Ms-1) > 1e-9 {
		t.Errorf("p50 = %v ms, want 1", val(p.LatencyP50Ms))
	}
	if p.LatencyP99Ms == nil || math.Abs(*p.LatencyP99Ms-5) > 1e-9 {
		t.Errorf("p99 = %v ms, want 5", val(p.LatencyP99Ms))
	}

	// An interval without deliveries has no latency; rates are 0.
	s.Sample(t0.Add(3 * time.Second))
	last := s.Points(t0.Add(2 * time.Second).UnixMilli())
	if len(last) != 1 || last[0].LatencyP50Ms != nil || last[0].Deliveries == nil || *last[0].Deliveries != 0 {
		t.Errorf("quiet point %+v", last)
	}

	// The ring keeps Size points, oldest first.
	s.Sample(t0.Add(4 * time.Second))
	ps = s.Points(0)
	if len(ps) != 3 || ps[0].T != t0.Add(2*time.Second).UnixMilli() || ps[2].T != t0.Add(4*time.Second).UnixMilli() {
		var ts []int64
		for _, p := range ps {
			ts = append(ts, p.T)
		}
		t.Errorf("after wrapping: times %v", ts)
	}

	b, err := json.Marshal(ps[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"latencyP50Ms":null`, `"deliveries":0`, `"broker":"none"`, `"nodes":{"n1":3}`} {
		if !json.Valid(b) || !strings.Contains(string(b), key) {
			t.Errorf("json %s lacks %s", b, key)
		}
	}
}

func TestBrokerAndNodes(t *testing.T) {
	h, _ := newHub(t)
	health := errors.New("redis: i/o timeout")
	healthy := true
	calls := 0
	s := timeseries.New(timeseries.Options{
		Hub:    h,
		Logger: slog.New(slog.DiscardHandler),
		Broker: func() error {
			if healthy {
				return nil
			}
			return health
		},
		Nodes: func(ctx context.Context) ([]timeseries.NodeCount, error) {
			calls++
			if calls == 2 {
				return nil, errors.New("no answer")
			}
			return []timeseries.NodeCount{{Node: "n1", Connections: 3}, {Node: "n2", Connections: 4}}, nil
		},
	})
	s.Sample(time.UnixMilli(1000))
	s.Sample(time.UnixMilli(2000)) // Nodes fails
	healthy = false
	s.Sample(time.UnixMilli(3000)) // broker down: Nodes not asked
	ps := s.Points(0)
	if ps[0].Broker != timeseries.BrokerOK || ps[0].Nodes["n2"] != 4 || ps[0].Nodes["n1"] != 3 {
		t.Errorf("point 0 %+v", ps[0])
	}
	if len(ps[1].Nodes) != 0 {
		t.Errorf("point 1 nodes %v, want none after a failure", ps[1].Nodes)
	}
	if ps[2].Broker != timeseries.BrokerDown || ps[2].BrokerError != health.Error() || calls != 2 {
		t.Errorf("point 2 %+v (Nodes called %d times, want 2)", ps[2], calls)
	}
	if ps[0].Deliveries != nil {
		t.Error("rates without a gatherer")
	}
}

func TestStartClose(t *testing.T) {
	h, _ := newHub(t)
	s := timeseries.New(timeseries.Options{Hub: h, Interval: 10 * time.Millisecond})
	s.Close() // before Start: nothing to wait for
	s = timeseries.New(timeseries.Options{Hub: h, Interval: 10 * time.Millisecond})
	s.Start()
	hubtest.Eventually(t, 5*time.Second, "three points", func() bool { return len(s.Points(0)) >= 3 })
	s.Close()
	s.Close()
	n := len(s.Points(0))
	if n < 3 || s.Interval() != 10*time.Millisecond || s.Size() != timeseries.DefaultSize || s.Node() != "n1" {
		t.Errorf("points %d, interval %s, size %d, node %q", n, s.Interval(), s.Size(), s.Node())
	}
}
