package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BrokerMetrics are the hub_broker_* collectors of the Redis backplane.
// *BrokerMetrics implements hub/redisbroker.Observer: pass it as the
// broker's Options.Metrics. Every method is safe on a nil *BrokerMetrics.
type BrokerMetrics struct {
	publish    *prometheus.HistogramVec
	reconnects prometheus.Counter
	resyncs    prometheus.Counter
	errors     *prometheus.CounterVec
	users      atomic.Pointer[func() int]
}

// Broker registers the hub_broker_* collectors on m's registry and returns
// them; call it once, and only with the Redis broker (a node without one
// serves no hub_broker_* series). ops are the values of the op label
// (redisbroker.Ops), whose error series are served from 0. On a nil
// *Metrics it returns nil.
func (m *Metrics) Broker(ops ...string) *BrokerMetrics {
	if m == nil {
		return nil
	}
	bm := &BrokerMetrics{
		publish: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hub_broker_publish_duration_seconds",
			Help:    "Time from a publish to Redis to its answer, by op (publish: to users, broadcast: to everyone); failed publishes count in hub_broker_errors_total only.",
			Buckets: LatencyBuckets,
		}, []string{"op"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hub_broker_pubsub_reconnects_total",
			Help: "Times the Redis Pub/Sub connection was subscribed again after it broke or went silent.",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hub_broker_resyncs_total",
			Help: "Resyncs of the node's connections from the Redis streams after a Pub/Sub reconnection.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hub_broker_errors_total",
			Help: "Redis calls of the broker that failed, by op.",
		}, []string{"op"}),
	}
	for _, op := range ops {
		bm.errors.WithLabelValues(op)
	}
	users := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "hub_broker_subscribed_users",
		Help: "Users whose Redis channel this node is subscribed to (those with a connection on it).",
	}, func() float64 {
		if f := bm.users.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	m.reg.MustRegister(bm.publish, bm.reconnects, bm.resyncs, bm.errors, users)
	return bm
}

// SetSubscribedUsers sets what hub_broker_subscribed_users reads at scrape
// time (the broker's SubscribedUsers).
func (bm *BrokerMetrics) SetSubscribedUsers(f func() int) {
	if bm == nil || f == nil {
		return
	}
	bm.users.Store(&f)
}

// PublishDone observes the duration of a publish that succeeded and counts
// one that failed as an error of op.
func (bm *BrokerMetrics) PublishDone(op string, d time.Duration, err error) {
	if bm == nil {
		return
	}
	if err != nil {
		bm.errors.WithLabelValues(op).Inc()
		return
	}
	bm.publish.WithLabelValues(op).Observe(d.Seconds())
}

// Reconnected counts a Pub/Sub reconnection.
func (bm *BrokerMetrics) Reconnected() {
	if bm != nil {
		bm.reconnects.Inc()
	}
}

// Resynced counts a resync after a reconnection.
func (bm *BrokerMetrics) Resynced() {
	if bm != nil {
		bm.resyncs.Inc()
	}
}

// Error counts a failed Redis call of op.
func (bm *BrokerMetrics) Error(op string) {
	if bm != nil {
		bm.errors.WithLabelValues(op).Inc()
	}
}
