// Package timeseries samples the figures the admin dashboard charts (GET
// /admin, served by package web) once a second into a bounded ring, so that
// the dashboard needs no Prometheus: connections by transport and by node,
// deliveries and publishes per second, the delivery latency's p50 and p99,
// slow-consumer closes and refused handshakes per second, and the broker's
// health. The API serves the ring at GET /api/admin/timeseries.
//
// Rates and latencies come from the hub's own Prometheus registry (package
// metrics), read with Gather: a point's rate is the counter's increase since
// the previous point divided by the time between them, and its latency
// quantiles are interpolated within the buckets of
// hub_delivery_latency_seconds that grew in that interval, as Prometheus's
// histogram_quantile does. A Sampler's goroutine is started by Start and
// stopped by Close; Points may be called from any goroutine.
package timeseries

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubd/hub/hub"
)

// Defaults of Options.
const (
	DefaultInterval = time.Second
	DefaultSize     = 600 // ten minutes at one point a second
	// nodesTimeout bounds the Nodes callback of one sample.
	nodesTimeout = 500 * time.Millisecond
)

// Metric families read from the registry. They are the names documented
// in docs/METRICS.md; a family that is absent leaves its figure null.
const (
	familyDelivered = "hub_events_delivered_total"
	familyPublished = "hub_events_published_total"
	familySlow      = "hub_slow_consumer_closes_total"
	familyHandshake = "hub_handshakes_total"
	familyLatency   = "hub_delivery_latency_seconds"
)

// refusalCodes are the handshake refusals counted as refused for capacity:
// a per-user, per-node or per-address limit (429) and the node's
// connection rate (503 overloaded).
var refusalCodes = []string{"too_many_connections", "overloaded"}

// Broker health values of Point.Broker.
const (
	BrokerNone = "none" // no broker: a single in-memory node
	BrokerOK   = "ok"
	BrokerDown = "down"
)

// NodeCount is a node's connection count, as Options.Nodes reports it.
type NodeCount struct {
	Node        string
	Connections int
}

// Options configure a Sampler. Hub is required.
type Options struct {
	// Hub gives this node's connections and users.
	Hub *hub.Hub
	// Gatherer is the hub's metrics registry; nil leaves the rates and
	// latencies null.
	Gatherer prometheus.Gatherer
	// Broker reports the broker's health (nil error: healthy); nil means
	// there is no broker.
	Broker func() error
	// Nodes reports the connections of every node of a cluster; nil means
	// this node alone. A failed or slow call (over 500 ms) leaves the
	// point's nodes empty.
	Nodes func(ctx context.Context) ([]NodeCount, error)
	// Interval is the time between points (default DefaultInterval).
	Interval time.Duration
	// Size is the number of points kept (default DefaultSize).
	Size int
	// Logger receives a warning when Nodes fails (once until it succeeds
	// again); default slog.Default().
	Logger *slog.Logger
}

// Point is one sample. Rates are per second over the interval that ends at
// T; a nil figure is unknown (the first point has no rates, an interval
// without deliveries has no latency).
type Point struct {
	// T is the time of the sample in Unix milliseconds.
	T int64 `json:"t"`
	// Connections are this node's connections by transport.
	Connections map[string]int `json:"connections"`
	// Users is the number of users with a connection on this node.
	Users int `json:"users"`
	// Nodes are the connections of each node: every node of the cluster
	// (from their last reports, at most a few seconds old) when there is a
	// broker, else this node.
	Nodes map[string]int `json:"nodes"`
	// Deliveries is events written to connections per second.
	Deliveries *float64 `json:"deliveries"`
	// Publishes is events accepted for publishing per second.
	Publishes *float64 `json:"publishes"`
	// LatencyP50Ms and LatencyP99Ms are the delivery latency's quantiles
	// over the interval, in milliseconds.
	LatencyP50Ms *float64 `json:"latencyP50Ms"`
	LatencyP99Ms *float64 `json:"latencyP99Ms"`
	// SlowConsumers is connections closed per second for a full queue.
	SlowConsumers *float64 `json:"slowConsumers"`
	// Refusals is handshakes refused per second for capacity
	// (too_many_connections, overloaded).
	Refusals *float64 `json:"refusals"`
	// Broker is BrokerNone, BrokerOK or BrokerDown.
	Broker string `json:"broker"`
	// BrokerError says why the broker is down ("" otherwise).
	BrokerError string `json:"brokerError,omitempty"`
}

// Sampler samples the hub's figures into a ring of points.
type Sampler struct {
	o    Options
	node string

	mu     sync.Mutex
	ring   []Point // oldest first once full: ring[next:] then ring[:next]
	next   int
	full   bool
	prev   counters
	prevAt time.Time

	nodesFailing atomic.Bool // Nodes failed at the last sample

	started atomic.Bool
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// New builds a Sampler; it samples nothing until Start.
func New(o Options) *Sampler {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Size <= 0 {
		o.Size = DefaultSize
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Sampler{
		o:    o,
		node: o.Hub.Stats().Node,
		ring: make([]Point, o.Size),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
}

// Interval is the time between points.
func (s *Sampler) Interval() time.Duration { return s.o.Interval }

// Size is the number of points kept.
func (s *Sampler) Size() int { return s.o.Size }

// Node is this node's name.
func (s *Sampler) Node() string { return s.node }

// Start takes a first point and starts sampling every Interval until
// Close. It does not block.
// Start must be called at most once.
func (s *Sampler) Start() {
	s.Sample(time.Now())
	s.started.Store(true)
	go s.loop()
}

// Close stops the sampling and waits for its goroutine. It may be called
// more than once, and without Start.
func (s *Sampler) Close() {
	s.once.Do(func() { close(s.stop) })
	if s.started.Load() {
		<-s.done
	}
}

func (s *Sampler) loop() {
	defer close(s.done)
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.Sample(now)
		}
	}
}

// Points returns the points taken after since (Unix milliseconds; 0 for
// all of them), oldest first.
func (s *Sampler) Points(since int64) []Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Point
	add := func(ps []Point) {
		for _, p := range ps {
			if p.T > since {
				out = append(out, p)
			}
		}
	}
	if s.full {
		add(s.ring[s.next:])
	}
	add(s.ring[:s.next])
	return out
}

// Sample takes one point at now. The sampling goroutine calls it every
// Interval; tests may call it directly to take points at the times they
// choose.
func (s *Sampler) Sample(now time.Time) {
	st := s.o.Hub.Stats()
	p := Point{
		T:           now.UnixMilli(),
		Connections: st.Connections,
		Users:       st.ActiveUsers,
		Nodes:       map[string]int{st.Node: st.TotalConnections},
		Broker:      BrokerNone,
	}
	if s.o.Broker != nil {
		p.Broker = BrokerOK
		if err := s.o.Broker(); err != nil {
			p.Broker, p.BrokerError = BrokerDown, err.Error()
		}
	}
	if s.o.Nodes != nil {
		p.Nodes = s.nodes(p.Broker != BrokerDown)
	}
	var cur counters
	if s.o.Gatherer != nil {
		cur = readCounters(s.o.Gatherer)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.o.Gatherer != nil && !s.prevAt.IsZero() {
		if secs := now.Sub(s.prevAt).Seconds(); secs > 0 {
			cur.rates(s.prev, secs, &p)
		}
	}
	s.prev, s.prevAt = cur, now
	s.ring[s.next] = p
	s.next++
	if s.next == len(s.ring) {
		s.next, s.full = 0, true
	}
}

// nodes asks Options.Nodes for the cluster's counts; an empty map when the
// broker is down (try is false) or the call fails.
func (s *Sampler) nodes(try bool) map[string]int {
	out := map[string]int{}
	if !try {
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), nodesTimeout)
	defer cancel()
	ns, err := s.o.Nodes(ctx)
	if err != nil {
		if !s.nodesFailing.Swap(true) {
			s.o.Logger.Warn("dashboard: cluster node counts unavailable", "err", err)
		}
		return out
	}
	s.nodesFailing.Store(false)
	for _, n := range ns {
		out[n.Node] = n.Connections
	}
	return out
}

// counters are the cumulative values read from the registry at one sample.
type counters struct {
	ok                                          bool
	delivered, published, slow, refused         float64
	latencyCount                                uint64
	latencyBounds                               []float64 // upper bounds, without +Inf
	latencyCumulative                           []uint64  // per bound, summed over the label sets
	hasDelivered, hasPublished, hasSlow, hasRef bool
}

// readCounters gathers the registry and sums each family over its labels.
func readCounters(g prometheus.Gatherer) counters {
	mfs, _ := g.Gather() // a partial result still has the families that worked
	c := counters{ok: true}
	for _, mf := range mfs {
		switch mf.GetName() {
		case familyDelivered:
			c.hasDelivered = true
			for _, m := range mf.GetMetric() {
				c.delivered += m.GetCounter().GetValue()
			}
		case familyPublished:
			c.hasPublished = true
			for _, m := range mf.GetMetric() {
				c.published += m.GetCounter().GetValue()
			}
		case familySlow:
			c.hasSlow = true
			for _, m := range mf.GetMetric() {
				c.slow += m.GetCounter().GetValue()
			}
		case familyHandshake:
			c.hasRef = true
			for _, m := range mf.GetMetric() {
				var outcome, code string
				for _, l := range m.GetLabel() {
					switch l.GetName() {
					case "outcome":
						outcome = l.GetValue()
					case "code":
						code = l.GetValue()
					}
				}
				if outcome == "refused" && slices.Contains(refusalCodes, code) {
					c.refused += m.GetCounter().GetValue()
				}
			}
		case familyLatency:
			for _, m := range mf.GetMetric() {
				h := m.GetHistogram()
				c.latencyCount += h.GetSampleCount()
				bs := h.GetBucket()
				if c.latencyBounds == nil {
					c.latencyBounds = make([]float64, 0, len(bs))
					c.latencyCumulative = make([]uint64, len(bs))
					for _, b := range bs {
						c.latencyBounds = append(c.latencyBounds, b.GetUpperBound())
					}
				}
				for i, b := range bs {
					if i < len(c.latencyCumulative) && b.GetUpperBound() == c.latencyBounds[i] {
						c.latencyCumulative[i] += b.GetCumulativeCount()
					}
				}
			}
		}
	}
	return c
}

// rates sets p's rates and latencies from the increase between prev and c
// over secs seconds.
func (c counters) rates(prev counters, secs float64, p *Point) {
	if !c.ok || !prev.ok {
		return
	}
	rate := func(has bool, cur, old float64) *float64 {
		if !has {
			return nil
		}
		d := cur - old
		if d < 0 { // a counter never goes down; a reset counts from zero
			d = cur
		}
		v := d / secs
		return &v
	}
	p.Deliveries = rate(c.hasDelivered, c.delivered, prev.delivered)
	p.Publishes = rate(c.hasPublished, c.published, prev.published)
	p.SlowConsumers = rate(c.hasSlow, c.slow, prev.slow)
	p.Refusals = rate(c.hasRef, c.refused, prev.refused)
	if c.latencyCount > prev.latencyCount && len(c.latencyBounds) == len(prev.latencyBounds) {
		n := c.latencyCount - prev.latencyCount
		delta := make([]uint64, len(c.latencyCumulative))
		for i := range delta {
			delta[i] = c.latencyCumulative[i] - min(prev.latencyCumulative[i], c.latencyCumulative[i])
		}
		p.LatencyP50Ms = ms(quantile(0.5, c.latencyBounds, delta, n))
		p.LatencyP99Ms = ms(quantile(0.99, c.latencyBounds, delta, n))
	}
}

func ms(seconds float64) *float64 {
	if math.IsNaN(seconds) {
		return nil
	}
	v := seconds * 1000
	return &v
}

// quantile estimates the q-quantile of n observations from cumulative
// bucket counts (upper bounds without +Inf) by linear interpolation within
// the bucket that holds it, as Prometheus's histogram_quantile does: the
// first bucket starts at 0, and a quantile in the +Inf bucket is the
// highest finite bound.
func quantile(q float64, bounds []float64, cumulative []uint64, n uint64) float64 {
	if n == 0 || len(bounds) == 0 {
		return math.NaN()
	}
	rank := q * float64(n)
	var lower float64
	var below uint64
	for i, ub := range bounds {
		if float64(cumulative[i]) >= rank {
			inBucket := cumulative[i] - below
			if inBucket == 0 {
				return ub
			}
			return lower + (ub-lower)*(rank-float64(below))/float64(inBucket)
		}
		lower, below = ub, cumulative[i]
	}
	return bounds[len(bounds)-1]
}
