package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
)

// BenchmarkCrossNodeFanout: three nodes in one process share Redis, 1000
// connections spread over them; each op is one broadcast published on one
// node and delivered to every connection on every node.
func BenchmarkCrossNodeFanout(b *testing.B) {
	url := hubtest.RedisURL(b)
	pfx := hubtest.RedisPrefix(b, url)
	nodes := []node{
		startNode(b, url, pfx, "a", 1000, time.Minute),
		startNode(b, url, pfx, "b", 1000, time.Minute),
		startNode(b, url, pfx, "c", 1000, time.Minute),
	}
	const conns = 1000
	var cls []*hub.Conn
	for i := range conns {
		cl := connect(b, nodes[i%3].hub, fmt.Sprintf("u%d", i), "")
		cls = append(cls, cl.c)
	}
	buf := make([]*hub.Message, 0, 256)
	drainAll := func() int {
		n := 0
		for _, c := range cls {
			for {
				buf, _ = c.Next(buf[:0])
				if len(buf) == 0 {
					break
				}
				for _, m := range buf {
					if !m.Control() {
						n++
					}
				}
			}
		}
		return n
	}
	drainAll()
	b.ResetTimer()
	delivered := 0
	for i := 0; b.Loop(); i++ {
		if _, err := nodes[i%3].hub.Broadcast(context.Background(), "B", json.RawMessage(`{"k":1}`)); err != nil {
			b.Fatal(err)
		}
		if i%50 == 49 {
			delivered += drainAll()
		}
	}
	want := b.N * conns
	deadline := time.Now().Add(30 * time.Second)
	for delivered < want && time.Now().Before(deadline) {
		delivered += drainAll()
	}
	b.StopTimer()
	if delivered != want {
		b.Fatalf("delivered %d, want %d", delivered, want)
	}
	b.ReportMetric(float64(delivered)/b.Elapsed().Seconds(), "deliveries/s")
}
