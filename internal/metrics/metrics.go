// Package metrics exposes the hub's Prometheus metrics on a private registry.
//
// A *Metrics implements hub.Observer and offers the counters the transports
// feed (handshakes, deliveries, drops, queue depth, API requests, admission).
// Connection and user gauges are read from hub.Stats at scrape time, so the
// hot path never touches them. Labels only ever hold bounded values
// (transport names, outcomes, error codes, route patterns, status codes):
// never a user id, connection id or token.
//
// Every method is safe on a nil *Metrics (it does nothing), so a transport can
// hold a nil *Metrics when metrics are off.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hubd/hub/hub"
)

// Handshake outcomes.
const (
	OutcomeAccepted = "accepted"
	OutcomeRefused  = "refused"
)

// LatencyBuckets are the buckets of hub_delivery_latency_seconds, from 0.5 ms
// to 10 s.
var LatencyBuckets = []float64{
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// QueueDepthBuckets are the buckets of hub_queue_depth (1 to 1024 events,
// the default send queue).
var QueueDepthBuckets = prometheus.ExponentialBuckets(1, 2, 11)

// Metrics holds the hub's collectors and their private registry. Create it
// with New; the zero value is not usable, but a nil *Metrics is (no-ops).
type Metrics struct {
	reg *prometheus.Registry

	slow       *prometheus.CounterVec
	resumes    *prometheus.CounterVec
	recovered  prometheus.Counter
	notRecov   prometheus.Counter
	published  prometheus.Counter
	handshakes *prometheus.CounterVec
	delivered  *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	dropped    *prometheus.CounterVec
	depth      *prometheus.HistogramVec
	api        *prometheus.CounterVec
	admission  *prometheus.CounterVec

	// per-transport children, resolved once: the two known transports in
	// fields (no lookup on the hot path), any other in others.
	ws, sse *transportMetrics
	others  sync.Map // transport name -> *transportMetrics

	stats *statsCollector
}

// transportMetrics are the children of one transport label value.
type transportMetrics struct {
	slow      prometheus.Counter
	delivered prometheus.Counter
	latency   prometheus.Observer
	dropped   prometheus.Counter
	depth     prometheus.Observer
	accepted  prometheus.Counter
}

// New builds the metrics of h on a new private registry, with the Go runtime
// and process collectors. h may be nil: when the hub is built with the
// Metrics as its Observer, create the Metrics first with New(nil) and call
// SetHub once the hub exists (the connection gauges are absent until then).
func New(h *hub.Hub) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		slow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hub_slow_consumer_closes_total",
			Help: "Connections closed because their send queue was full.",
		}, []string{"transport"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hub_resumes_total",
			Help: "Connections that asked to resume, by whether the missed events were recovered.",
		}, []string{"outcome"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hub_events_published_total",
			Help: "Events accepted for publishing (one per target user; one per broadcast).",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hub_handshakes_total",
			Help: "Connection handshakes, by transport, outcome and error code (empty when accepted).",
		}, []string{"transport", "outcome", "code"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hub_events_delivered_total",
			Help: "Events written to connections.",
		}, []string{"transport"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hub_delivery_latency_seconds",
			Help:    "Time from the hub accepting an event to its write to a connection.",
			Buckets: LatencyBuckets,
		}, []string{"transport"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hub_events_dropped_total",
			Help: "Queued events lost because their connection was aborted.",
		}, []string{"transport"}),
		depth: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hub_queue_depth",
			Help:    "Number of events a connection writer found queued in one batch.",
			Buckets: QueueDepthBuckets,
		}, []string{"transport"}),
		api: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hub_api_requests_total",
			Help: "HTTP API requests, by route pattern and status code.",
		}, []string{"route", "code"}),
		admission: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hub_admission_total",
			Help: "Admission control decisions for new connections, by outcome.",
		}, []string{"outcome"}),
	}
	m.recovered = m.resumes.WithLabelValues("recovered")
	m.notRecov = m.resumes.WithLabelValues("not_recovered")
	m.ws = m.newTransport(hub.TransportWebSocket)
	m.sse = m.newTransport(hub.TransportSSE)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.slow, m.resumes, m.published, m.handshakes, m.delivered, m.latency,
		m.dropped, m.depth, m.api, m.admission,
	)
	m.stats = newStatsCollector()
	m.stats.h.Store(h)
	m.reg.MustRegister(m.stats)
	return m
}

// SetHub sets the hub whose Stats feed hub_connections, hub_users and
// hub_draining at scrape time, and whose HistoryMemory feeds
// hub_history_bytes and hub_history_evicted_total.
func (m *Metrics) SetHub(h *hub.Hub) {
	if m == nil {
		return
	}
	m.stats.h.Store(h)
}

func (m *Metrics) newTransport(name string) *transportMetrics {
	return &transportMetrics{
		slow:      m.slow.WithLabelValues(name),
		delivered: m.delivered.WithLabelValues(name),
		latency:   m.latency.WithLabelValues(name),
		dropped:   m.dropped.WithLabelValues(name),
		depth:     m.depth.WithLabelValues(name),
		accepted:  m.handshakes.WithLabelValues(name, OutcomeAccepted, ""),
	}
}

// transport returns the children of a transport label value without a map
// lookup for the two known transports.
func (m *Metrics) transport(name string) *transportMetrics {
	switch name {
	case hub.TransportWebSocket:
		return m.ws
	case hub.TransportSSE:
		return m.sse
	}
	if v, ok := m.others.Load(name); ok {
		return v.(*transportMetrics)
	}
	v, _ := m.others.LoadOrStore(name, m.newTransport(name))
	return v.(*transportMetrics)
}

// Registry returns the private registry, to register more collectors.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the registry in the Prometheus exposition format. On a nil
// *Metrics it answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// SlowConsumer counts a connection closed for a full send queue
// (hub.Observer).
func (m *Metrics) SlowConsumer(transport string) {
	if m == nil {
		return
	}
	m.transport(transport).slow.Inc()
}

// Resumed counts a resume attempt and whether it recovered the missed
// events (hub.Observer).
func (m *Metrics) Resumed(recovered bool) {
	if m == nil {
		return
	}
	if recovered {
		m.recovered.Inc()
	} else {
		m.notRecov.Inc()
	}
}

// Published counts n published events (hub.Observer).
func (m *Metrics) Published(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.published.Add(float64(n))
}

// Handshake counts a handshake of transport. outcome is OutcomeAccepted or
// OutcomeRefused; code is the contract's error code of a refusal ("" when
// accepted). Pass only the contract's fixed codes: every value becomes a
// time series.
func (m *Metrics) Handshake(transport, outcome, code string) {
	if m == nil {
		return
	}
	if outcome == OutcomeAccepted && code == "" {
		m.transport(transport).accepted.Inc()
		return
	}
	m.handshakes.WithLabelValues(transport, outcome, code).Inc()
}

// Delivered counts n events written to connections of transport and
// observes, for every non-zero time in accepted, the delivery latency (now
// minus accepted). It does not allocate.
func (m *Metrics) Delivered(transport string, n int, accepted []time.Time) {
	if m == nil {
		return
	}
	t := m.transport(transport)
	if n > 0 {
		t.delivered.Add(float64(n))
	}
	if len(accepted) == 0 {
		return
	}
	now := time.Now()
	for _, a := range accepted {
		if !a.IsZero() {
			t.latency.Observe(now.Sub(a).Seconds())
		}
	}
}

// DeliveredOne counts one event written to a connection of transport and,
// when accepted is not zero, observes its delivery latency.
func (m *Metrics) DeliveredOne(transport string, accepted time.Time) {
	if m == nil {
		return
	}
	t := m.transport(transport)
	t.delivered.Inc()
	if !accepted.IsZero() {
		t.latency.Observe(time.Since(accepted).Seconds())
	}
}

// DeliveredMessages is Delivered for a writer's batch as returned by
// hub.Conn.Next: it counts the events among msgs (control messages, which
// have no id, are not counted) and observes their delivery latency. It reads
// the clock once and does not allocate.
func (m *Metrics) DeliveredMessages(transport string, msgs []*hub.Message) {
	if m == nil || len(msgs) == 0 {
		return
	}
	t := m.transport(transport)
	var now time.Time
	n := 0
	for _, msg := range msgs {
		if msg == nil || msg.ID == "" {
			continue
		}
		n++
		if msg.Accepted.IsZero() {
			continue
		}
		if now.IsZero() {
			now = time.Now()
		}
		t.latency.Observe(now.Sub(msg.Accepted).Seconds())
	}
	if n > 0 {
		t.delivered.Add(float64(n))
	}
}

// Dropped counts n queued events lost when a connection of transport was
// aborted.
func (m *Metrics) Dropped(transport string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.transport(transport).dropped.Add(float64(n))
}

// QueueDepth observes the size of a batch a writer of transport took from
// its queue.
func (m *Metrics) QueueDepth(transport string, n int) {
	if m == nil {
		return
	}
	m.transport(transport).depth.Observe(float64(n))
}

// APIRequest counts an API request. route must be the route pattern (such
// as "/api/users/{userId}/disconnect", e.g. http.Request.Pattern), never the
// request path, which may hold a user id.
func (m *Metrics) APIRequest(route string, status int) {
	if m == nil {
		return
	}
	m.api.WithLabelValues(route, strconv.Itoa(status)).Inc()
}

// CountAPI returns h counting, in hub_api_requests_total, each request
// whose path is under /api/ (the service API, /api/send, the OpenAPI
// document) by route pattern and status. h must be the ServeMux, or pass
// the request on to it unchanged: the route is the pattern the mux
// matched (r.Pattern, its method left out), never the path, which may hold
// a user id; a path that no pattern matched counts as "unmatched". Other
// requests (WebSocket, SSE, pages, /metrics) go to h untouched, so their
// ResponseWriter keeps its Hijacker and Flusher. On a nil *Metrics it
// returns h itself.
func (m *Metrics) CountAPI(h http.Handler) http.Handler {
	if m == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/") {
			h.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			route := r.Pattern
			if _, p, ok := strings.Cut(route, " "); ok {
				route = p // "POST /api/broadcast" -> "/api/broadcast"
			}
			if route == "" {
				route = RouteUnmatched
			}
			m.APIRequest(route, sw.code())
		}()
		h.ServeHTTP(sw, r)
	})
}

// RouteUnmatched is the route label of an /api/ request that no route
// pattern matched (a 404).
const RouteUnmatched = "unmatched"

// statusWriter records the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 { // 1xx answers are not the final status
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// code is the status sent, 200 when the handler wrote nothing.
func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Admission counts an admission decision: "admitted", "rate_limited",
// "ip_limited" or "overloaded" (see package admit).
func (m *Metrics) Admission(outcome string) {
	if m == nil {
		return
	}
	m.admission.WithLabelValues(outcome).Inc()
}

var _ hub.Observer = (*Metrics)(nil)

// statsCollector reads hub.Stats once per scrape.
type statsCollector struct {
	h        atomic.Pointer[hub.Hub]
	conns    *prometheus.Desc
	users    *prometheus.Desc
	draining *prometheus.Desc
	histMem  *prometheus.Desc
	evicted  *prometheus.Desc
}

func newStatsCollector() *statsCollector {
	return &statsCollector{
		conns: prometheus.NewDesc("hub_connections",
			"Open connections on this node, by transport.", []string{"transport"}, nil),
		users: prometheus.NewDesc("hub_users",
			"Users with at least one open connection on this node.", nil, nil),
		draining: prometheus.NewDesc("hub_draining",
			"1 while the node is shutting down (readiness is 503), else 0.", nil, nil),
		histMem: prometheus.NewDesc("hub_history_bytes",
			"Memory of the node's history as HUB_HISTORY_TOTAL_BYTES counts it: envelopes once each, plus 32 bytes per place one is held.", nil, nil),
		evicted: prometheus.NewDesc("hub_history_evicted_total",
			"Events dropped from the node's history by HUB_HISTORY_TOTAL_BYTES.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.conns
	ch <- c.users
	ch <- c.draining
	ch <- c.histMem
	ch <- c.evicted
}

// Collect implements prometheus.Collector.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.h.Load()
	if h == nil {
		return
	}
	st := h.Stats()
	for tr, n := range st.Connections {
		ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(n), tr)
	}
	ch <- prometheus.MustNewConstMetric(c.users, prometheus.GaugeValue, float64(st.ActiveUsers))
	d := 0.0
	if h.Draining() {
		d = 1
	}
	ch <- prometheus.MustNewConstMetric(c.draining, prometheus.GaugeValue, d)
	hm := h.HistoryMemory()
	ch <- prometheus.MustNewConstMetric(c.histMem, prometheus.GaugeValue, float64(hm.Bytes))
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(hm.Evicted))
}
