package redisbroker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/metrics"
)

// gathered returns the value of the series of name whose labels include
// want in reg (a histogram's sample count), or -1 when there is none.
func gathered(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return hubtest.SeriesValue(f, want)
		}
	}
	return -1
}

// TestMetricsMove runs a broker with the hub's metrics on a Redis of its
// own and checks that the hub_broker_* series follow what happens: the
// subscribed users, a publish and a broadcast observed, a killed Pub/Sub
// connection counted as an error, a reconnection and a resync, and Redis
// gone counted as errors by operation.
func TestMetricsMove(t *testing.T) {
	rs := hubtest.StartRedisServer(t)
	m := metrics.New(nil)
	bm := m.Broker(redisbroker.Ops...)
	n := startWith(t,
		redisbroker.Options{URL: rs.URL(), Node: "a", HistorySize: 10, HistoryTTL: time.Minute, Metrics: bm,
			HealthInterval: 50 * time.Millisecond},
		hub.Options{Node: "a", HistorySize: 10, HistoryTTL: time.Minute})
	bm.SetSubscribedUsers(n.broker.SubscribedUsers)
	reg := m.Registry()
	val := func(name string, labels map[string]string) float64 { return gathered(t, reg, name, labels) }
	op := func(o string) map[string]string { return map[string]string{"op": o} }

	for _, o := range redisbroker.Ops {
		if v := val("hub_broker_errors_total", op(o)); v != 0 {
			t.Errorf("hub_broker_errors_total{op=%q} = %v at start, want 0", o, v)
		}
	}
	if v := val("hub_broker_subscribed_users", nil); v != 0 {
		t.Errorf("subscribed users %v before any connection", v)
	}
	u1 := connect(t, n.hub, "u1", "")
	connect(t, n.hub, "u1", "")
	connect(t, n.hub, "u2", "")
	if v := val("hub_broker_subscribed_users", nil); v != 2 {
		t.Errorf("subscribed users %v, want 2 (u1 twice, u2)", v)
	}

	if _, err := n.hub.Publish(bg(t), []string{"u1"}, "E", json.RawMessage(`1`)); err != nil {
		t.Fatal(err)
	}
	if _, err := n.hub.Broadcast(bg(t), "B", json.RawMessage(`2`)); err != nil {
		t.Fatal(err)
	}
	if v := val("hub_broker_publish_duration_seconds", op(redisbroker.OpPublish)); v != 1 {
		t.Errorf("publishes observed: %v, want 1", v)
	}
	if v := val("hub_broker_publish_duration_seconds", op(redisbroker.OpBroadcast)); v != 1 {
		t.Errorf("broadcasts observed: %v, want 1", v)
	}
	u1.waitEvents(2)

	// Redis drops the Pub/Sub connection: the broker counts the loss,
	// subscribes again and resyncs.
	c := hubtest.RedisClient(t, rs.URL())
	if k, err := c.ClientKillByFilter(bg(t), "TYPE", "pubsub").Result(); err != nil || k != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub: %d killed, %v", k, err)
	}
	hubtest.Eventually(t, 15*time.Second, "a reconnection and a resync counted", func() bool {
		return val("hub_broker_pubsub_reconnects_total", nil) == 1 && val("hub_broker_resyncs_total", nil) == 1
	})
	if v := val("hub_broker_errors_total", op(redisbroker.OpPubSub)); v < 1 {
		t.Errorf("pubsub errors %v after the kill, want at least 1", v)
	}
	hubtest.Eventually(t, 15*time.Second, "ready again", func() bool { return n.broker.Ready() == nil })

	// Redis gone: the health probes fail, and so do publishes and resumes.
	rs.Kill()
	hubtest.Eventually(t, 15*time.Second, "a failed health probe counted", func() bool {
		return val("hub_broker_errors_total", op(redisbroker.OpHealth)) >= 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := n.hub.Publish(ctx, []string{"u1"}, "E", json.RawMessage(`3`)); err == nil {
		t.Fatal("publish with Redis gone succeeded")
	}
	if _, _, err := n.broker.Since(ctx, "u1", "x-0", 10); err == nil {
		t.Fatal("Since with Redis gone succeeded")
	}
	if v := val("hub_broker_errors_total", op(redisbroker.OpPublish)); v != 1 {
		t.Errorf("publish errors %v, want 1", v)
	}
	if v := val("hub_broker_errors_total", op(redisbroker.OpHistory)); v != 1 {
		t.Errorf("history errors %v, want 1", v)
	}
	if v := val("hub_broker_publish_duration_seconds", op(redisbroker.OpPublish)); v != 1 {
		t.Errorf("publishes observed: %v, want still 1 (a failed one is an error only)", v)
	}
	rs.Start()
	hubtest.Eventually(t, 15*time.Second, "ready after Redis is back", func() bool { return n.broker.Ready() == nil })
	if v := val("hub_broker_pubsub_reconnects_total", nil); v != 2 {
		t.Errorf("reconnects %v after Redis came back, want 2", v)
	}
}
