package hub_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/internal/hubtest"
)

// brokerNode starts a hub on a Redis broker at url; both stop when t ends.
func brokerNode(t *testing.T, url, name string) (*hub.Hub, *redisbroker.Broker) {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := redisbroker.New(redisbroker.Options{URL: url, Node: name, HistorySize: 100, HistoryTTL: time.Minute, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New(hub.Options{HistorySize: 100, HistoryTTL: time.Minute, Node: name, Broker: b, Logger: quiet, BrokerTimeout: time.Minute})
	h.Start()
	t.Cleanup(h.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return h, b
}

// A backplane outage that begins and ends while a connection registers
// (after its position was read, before hub.connected): the node's Resync
// skips the connection, still pending, so the registration closes that gap
// itself, and the event published during the outage reaches the device.
func TestOutageWhileRegistering(t *testing.T) {
	rs := hubtest.StartRedisServer(t)
	px := hubtest.StartProxy(t, rs.Addr())
	a, ab := brokerNode(t, "redis://"+px.Addr()+"/0", "a")
	p, _ := brokerNode(t, rs.URL(), "p")

	var once sync.Once
	var during string
	a.SetAfterPosition(func() {
		once.Do(func() {
			px.Cut()
			hubtest.Eventually(t, 15*time.Second, "node a to lose Redis", func() bool { return ab.Ready() != nil })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			evs, err := p.Publish(ctx, []string{"u1"}, "E", json.RawMessage(`1`))
			if err != nil {
				t.Errorf("publish during the outage: %v", err)
				return
			}
			during = evs[0].ID
			px.Restore()
			// ready again: the Pub/Sub connection resubscribed and the
			// node's Resync ran (and skipped the pending connection)
			hubtest.Eventually(t, 15*time.Second, "node a to resync", func() bool { return ab.Ready() == nil })
		})
	})

	s := newSink()
	c, err := a.Register(hub.ConnInfo{UserID: "u1", Transport: hub.TransportWebSocket}, s)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Unregister(c)
	if during == "" {
		t.Fatal("nothing published during the outage")
	}
	var got []*hub.Message
	hubtest.Eventually(t, 15*time.Second, "the event published during the outage", func() bool {
		got, _ = c.Next(got)
		for _, m := range got {
			if m.ID == during {
				return true
			}
		}
		return false
	})
}
