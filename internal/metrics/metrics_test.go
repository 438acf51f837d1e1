package metrics_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nopSink struct{}

func (nopSink) Wake()               {}
func (nopSink) Abort(hub.Reason)    {}
func (nopSink) Heartbeat(idle bool) {}

// scrape GETs the handler through a real server and parses the text format.
func scrape(t *testing.T, h http.Handler) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape status = %d", resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read scrape: %v", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse scrape: %v\n%s", err, body)
	}
	return fams, string(body)
}

// value returns the value of the series of name whose labels include want:
// a counter's or gauge's value, a histogram's sample count; -1 when absent.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	return hubtest.SeriesValue(fams[name], want)
}

func lbl(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestMetricsMove(t *testing.T) {
	accepted := time.Now().Add(-time.Millisecond)
	tests := []struct {
		name   string
		give   func(m *metrics.Metrics)
		metric string
		labels map[string]string
		want   float64 // increase
	}{
		{"slow consumer", func(m *metrics.Metrics) { m.SlowConsumer(hub.TransportWebSocket) },
			"hub_slow_consumer_closes_total", lbl("transport", "websocket"), 1},
		{"resumed recovered", func(m *metrics.Metrics) { m.Resumed(true) },
			"hub_resumes_total", lbl("outcome", "recovered"), 1},
		{"resumed not recovered", func(m *metrics.Metrics) { m.Resumed(false); m.Resumed(false) },
			"hub_resumes_total", lbl("outcome", "not_recovered"), 2},
		{"published", func(m *metrics.Metrics) { m.Published(3) },
			"hub_events_published_total", nil, 3},
		{"handshake accepted", func(m *metrics.Metrics) { m.Handshake("sse", metrics.OutcomeAccepted, "") },
			"hub_handshakes_total", lbl("transport", "sse", "outcome", "accepted", "code", ""), 1},
		{"handshake refused", func(m *metrics.Metrics) { m.Handshake("websocket", metrics.OutcomeRefused, "invalid_token") },
			"hub_handshakes_total", lbl("transport", "websocket", "outcome", "refused", "code", "invalid_token"), 1},
		{"delivered count", func(m *metrics.Metrics) { m.Delivered("sse", 4, nil) },
			"hub_events_delivered_total", lbl("transport", "sse"), 4},
		{"delivered latency skips zero times", func(m *metrics.Metrics) {
			m.Delivered("websocket", 3, []time.Time{accepted, {}, accepted})
		}, "hub_delivery_latency_seconds", lbl("transport", "websocket"), 2},
		{"delivered one", func(m *metrics.Metrics) { m.DeliveredOne("sse", accepted) },
			"hub_events_delivered_total", lbl("transport", "sse"), 1},
		{"delivered one latency", func(m *metrics.Metrics) { m.DeliveredOne("sse", accepted) },
			"hub_delivery_latency_seconds", lbl("transport", "sse"), 1},
		{"delivered messages counts events only", func(m *metrics.Metrics) {
			m.DeliveredMessages("websocket", []*hub.Message{
				hub.Control("hub.connected", nil), {ID: "e-1", Accepted: accepted}, {ID: "e-2", Accepted: accepted},
			})
		}, "hub_events_delivered_total", lbl("transport", "websocket"), 2},
		{"delivered messages latency", func(m *metrics.Metrics) {
			m.DeliveredMessages("websocket", []*hub.Message{{ID: "e-1", Accepted: accepted}, {ID: "e-2"}})
		}, "hub_delivery_latency_seconds", lbl("transport", "websocket"), 1},
		{"other transport", func(m *metrics.Metrics) { m.Delivered("longpoll", 1, nil) },
			"hub_events_delivered_total", lbl("transport", "longpoll"), 1},
		{"dropped", func(m *metrics.Metrics) { m.Dropped("websocket", 5) },
			"hub_events_dropped_total", lbl("transport", "websocket"), 5},
		{"queue depth", func(m *metrics.Metrics) { m.QueueDepth("sse", 7) },
			"hub_queue_depth", lbl("transport", "sse"), 1},
		{"api request", func(m *metrics.Metrics) { m.APIRequest("/api/broadcast", 202) },
			"hub_api_requests_total", lbl("route", "/api/broadcast", "code", "202"), 1},
		{"admission", func(m *metrics.Metrics) { m.Admission("ip_limited") },
			"hub_admission_total", lbl("outcome", "ip_limited"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := metrics.New(nil)
			before, _ := scrape(t, m.Handler())
			b := max(value(before, tt.metric, tt.labels), 0)
			tt.give(m)
			after, _ := scrape(t, m.Handler())
			if got := value(after, tt.metric, tt.labels) - b; got != tt.want {
				t.Errorf("%s%v moved by %v, want %v", tt.metric, tt.labels, got, tt.want)
			}
		})
	}
}

func TestLatencyBuckets(t *testing.T) {
	m := metrics.New(nil)
	m.DeliveredOne("websocket", time.Now().Add(-3*time.Second))
	fams, _ := scrape(t, m.Handler())
	f := fams["hub_delivery_latency_seconds"]
	if f == nil {
		t.Fatal("no hub_delivery_latency_seconds")
	}
	var h *dto.Histogram
	for _, mm := range f.GetMetric() {
		for _, l := range mm.GetLabel() {
			if l.GetName() == "transport" && l.GetValue() == "websocket" {
				h = mm.GetHistogram()
			}
		}
	}
	if h == nil {
		t.Fatal("no websocket series")
	}
	if h.GetSampleSum() < 3 {
		t.Errorf("sum = %v, want >= 3", h.GetSampleSum())
	}
	bounds := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		bounds[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	if got, ok := bounds[0.0005]; !ok || got != 0 {
		t.Errorf("bucket 0.5ms = %v (present %v), want 0", got, ok)
	}
	if got, ok := bounds[2.5]; !ok || got != 0 {
		t.Errorf("bucket 2.5s = %v (present %v), want 0", got, ok)
	}
	if got, ok := bounds[10]; !ok || got != 1 {
		t.Errorf("bucket 10s = %v (present %v), want 1", got, ok)
	}
}

// TestHubGaugesAndNoUserIDs runs a real hub with the Metrics as its
// Observer: gauges follow Stats, resumes and publishes are counted, and the
// user id appears nowhere in the scrape.
func TestHubGaugesAndNoUserIDs(t *testing.T) {
	const secret = "secret-user-42"
	m := metrics.New(nil)
	h := hub.New(hub.Options{Node: "n1", HistorySize: 16, HistoryTTL: time.Minute, Observer: m})
	defer h.Stop()

	fams, _ := scrape(t, m.Handler())
	if v := value(fams, "hub_users", nil); v != -1 {
		t.Errorf("hub_users before SetHub = %v, want absent", v)
	}
	m.SetHub(h)

	c1, err := h.Register(hub.ConnInfo{UserID: secret, Transport: hub.TransportWebSocket}, nopSink{})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	c2, err := h.Register(hub.ConnInfo{UserID: "other", Transport: hub.TransportSSE}, nopSink{})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	evs, err := h.Publish(context.Background(), []string{secret}, "note", []byte(`{"to":"`+secret+`"}`))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	c3, err := h.Register(hub.ConnInfo{UserID: secret, Transport: hub.TransportSSE, LastEventID: evs[0].ID}, nopSink{})
	if err != nil {
		t.Fatalf("register resume: %v", err)
	}
	c4, err := h.Register(hub.ConnInfo{UserID: secret, Transport: hub.TransportSSE, LastEventID: "bogus"}, nopSink{})
	if err != nil {
		t.Fatalf("register resume: %v", err)
	}
	msgs, _ := c1.Next(nil)
	m.DeliveredMessages(c1.Transport(), msgs)
	m.QueueDepth(c1.Transport(), len(msgs))
	m.Handshake(hub.TransportWebSocket, metrics.OutcomeAccepted, "")
	m.APIRequest("/api/users/{userId}/disconnect", 200)

	fams, body := scrape(t, m.Handler())
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"hub_connections", lbl("transport", "websocket"), 1},
		{"hub_connections", lbl("transport", "sse"), 3},
		{"hub_users", nil, 2},
		{"hub_draining", nil, 0},
		{"hub_events_published_total", nil, 1},
		{"hub_resumes_total", lbl("outcome", "recovered"), 1},
		{"hub_resumes_total", lbl("outcome", "not_recovered"), 1},
		{"hub_events_delivered_total", lbl("transport", "websocket"), 1},
		{"hub_queue_depth", lbl("transport", "websocket"), 1},
		{"hub_history_bytes", nil, float64(h.HistoryMemory().Bytes)},
		{"hub_history_evicted_total", nil, 0},
	}
	if h.HistoryMemory().Bytes <= 32 {
		t.Errorf("history memory %d after one event held, want its envelope and 32", h.HistoryMemory().Bytes)
	}
	for _, c := range checks {
		if got := value(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if strings.Contains(body, secret) {
		t.Errorf("scrape holds the user id %q:\n%s", secret, body)
	}
	for _, must := range []string{"go_goroutines", "process_start_time_seconds"} {
		if !strings.Contains(body, must) {
			t.Errorf("scrape lacks %s", must)
		}
	}

	for _, c := range []*hub.Conn{c1, c2, c3, c4} {
		h.Unregister(c)
	}
	fams, _ = scrape(t, m.Handler())
	if got := value(fams, "hub_users", nil); got != 0 {
		t.Errorf("hub_users after unregister = %v, want 0", got)
	}
	if got := value(fams, "hub_connections", lbl("transport", "sse")); got != 0 {
		t.Errorf("hub_connections{sse} after unregister = %v, want 0", got)
	}
}

func TestNilMetrics(t *testing.T) {
	var m *metrics.Metrics
	m.SlowConsumer("websocket")
	m.Resumed(true)
	m.Published(1)
	m.Handshake("websocket", metrics.OutcomeRefused, "x")
	m.Delivered("websocket", 1, []time.Time{time.Now()})
	m.DeliveredOne("sse", time.Now())
	m.DeliveredMessages("sse", []*hub.Message{{ID: "e"}})
	m.Dropped("sse", 1)
	m.QueueDepth("sse", 1)
	m.APIRequest("/x", 200)
	m.Admission("admitted")
	h := http.NotFoundHandler()
	if got := m.CountAPI(h); got == nil {
		t.Error("CountAPI on a nil Metrics returned nil")
	}
	m.SetHub(nil)
	if m.Registry() != nil {
		t.Error("nil Metrics has a registry")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("nil handler status = %d, want 404", rec.Code)
	}
	var obs hub.Observer = m
	obs.Published(2) // a nil *Metrics is a usable Observer
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	m := metrics.New(nil)
	now := time.Now()
	msgs := []*hub.Message{{ID: "e-1", Accepted: now}, {ID: "e-2", Accepted: now}, hub.Control("hub.x", nil)}
	times := []time.Time{now, now}
	tests := []struct {
		name string
		give func()
	}{
		{"DeliveredMessages", func() { m.DeliveredMessages(hub.TransportWebSocket, msgs) }},
		{"Delivered", func() { m.Delivered(hub.TransportSSE, 2, times) }},
		{"DeliveredOne", func() { m.DeliveredOne(hub.TransportSSE, now) }},
		{"QueueDepth", func() { m.QueueDepth(hub.TransportWebSocket, 3) }},
		{"SlowConsumer", func() { m.SlowConsumer(hub.TransportWebSocket) }},
		{"Handshake accepted", func() { m.Handshake(hub.TransportSSE, metrics.OutcomeAccepted, "") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, tt.give); got != 0 {
				t.Errorf("allocs = %v, want 0", got)
			}
		})
	}
}

// TestCountAPI: requests under /api/ are counted by the pattern the mux
// matched and their status, never by path; other requests pass through
// with the server's own ResponseWriter (a WebSocket needs its Hijacker).
func TestCountAPI(t *testing.T) {
	m := metrics.New(nil)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/users/{userId}/disconnect", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"closed":0}`)) // no WriteHeader: 200
	})
	mux.HandleFunc("/api/users/{userId}/disconnect", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusMethodNotAllowed)
	})
	mux.HandleFunc("POST /api/broadcast", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		w.WriteHeader(http.StatusAccepted) // superfluous: the first status counts
	})
	hijackable := make(chan bool, 1)
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		_, ok := w.(http.Hijacker)
		hijackable <- ok
	})
	srv := httptest.NewServer(m.CountAPI(mux))
	defer srv.Close()
	do := func(method, path string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	do(http.MethodPost, "/api/users/user-secret-42/disconnect")
	do(http.MethodPost, "/api/users/user-secret-42/disconnect")
	do(http.MethodGet, "/api/users/user-secret-42/disconnect")
	do(http.MethodPost, "/api/broadcast")
	do(http.MethodGet, "/api/nope/user-secret-42")
	do(http.MethodGet, "/ws")
	if !<-hijackable {
		t.Error("a request outside /api/ lost its http.Hijacker")
	}

	fams, text := scrape(t, m.Handler())
	for _, tt := range []struct {
		route, code string
		want        float64
	}{
		{"/api/users/{userId}/disconnect", "200", 2},
		{"/api/users/{userId}/disconnect", "405", 1},
		{"/api/broadcast", "400", 1},
		{metrics.RouteUnmatched, "404", 1},
	} {
		if got := value(fams, "hub_api_requests_total", lbl("route", tt.route, "code", tt.code)); got != tt.want {
			t.Errorf("hub_api_requests_total{route=%q,code=%q} = %v, want %v", tt.route, tt.code, got, tt.want)
		}
	}
	if n := len(fams["hub_api_requests_total"].GetMetric()); n != 4 {
		t.Errorf("%d series of hub_api_requests_total, want 4 (/ws is not counted)", n)
	}
	if strings.Contains(text, "user-secret-42") {
		t.Error("a path (and its user id) reached a label")
	}
}
