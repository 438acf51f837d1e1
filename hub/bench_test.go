package hub_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
)

// noopSink is a transport that does nothing: the benchmarks drain the
// queues themselves with Next.
type noopSink struct{}

func (noopSink) Wake()            {}
func (noopSink) Abort(hub.Reason) {}
func (noopSink) Heartbeat(bool)   {}

var benchPayload = json.RawMessage(`{"draftId":42,"title":"hello, world","rev":7}`)

func benchHub(history bool) *hub.Hub {
	o := hub.Options{Node: "bench", Logger: slog.New(slog.DiscardHandler)}
	if history {
		o.HistorySize, o.HistoryTTL = 1000, 10*time.Minute
	}
	return hub.New(o)
}

func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// drainAll empties every queue the way a transport's writer does: Next until
// it returns nothing.
func drainAll(conns []*hub.Conn, buf []*hub.Message) []*hub.Message {
	for _, c := range conns {
		for {
			var msgs []*hub.Message
			msgs, _ = c.Next(buf[:0])
			if len(msgs) == 0 {
				break
			}
			buf = msgs
		}
	}
	return buf
}

// BenchmarkFanout10k broadcasts to 10,000 connections (one per user) and
// drains every queue after each broadcast. It also reports the heap held by
// the registry per idle connection.
func BenchmarkFanout10k(b *testing.B) {
	const n = 10000
	h := benchHub(true)
	defer h.Stop()
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("user-%05d", i)
	}
	conns := make([]*hub.Conn, n)
	before := heapAlloc()
	for i := range conns {
		c, err := h.Register(hub.ConnInfo{UserID: users[i], Transport: hub.TransportWebSocket}, noopSink{})
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
	}
	buf := drainAll(conns, make([]*hub.Message, 0, 16)) // hub.connected
	perConn := float64(heapAlloc()-before) / n
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.Broadcast(ctx, "ANNOUNCEMENT", benchPayload); err != nil {
			b.Fatal(err)
		}
		buf = drainAll(conns, buf)
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/delivery")
	// The event itself is allocated once per broadcast; the target is no
	// allocation per delivery (per connection reached).
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N)/n, "allocs/delivery")
	b.ReportMetric(perConn, "B/conn")
}

// benchmarkPublish publishes to one user at a time, round robin over 1000
// connected users, draining the queues every 1000 events.
func benchmarkPublish(b *testing.B, history bool) {
	const n = 1000
	h := benchHub(history)
	defer h.Stop()
	users := make([][]string, n)
	conns := make([]*hub.Conn, n)
	for i := range conns {
		users[i] = []string{fmt.Sprintf("user-%04d", i)}
		c, err := h.Register(hub.ConnInfo{UserID: users[i][0], Transport: hub.TransportSSE}, noopSink{})
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
	}
	buf := drainAll(conns, make([]*hub.Message, 0, 16))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.Publish(ctx, users[i%n], "DRAFT_UPDATED", benchPayload); err != nil {
			b.Fatal(err)
		}
		if i%n == n-1 {
			buf = drainAll(conns, buf)
		}
	}
}

func BenchmarkPublishHistoryOn(b *testing.B)  { benchmarkPublish(b, true) }
func BenchmarkPublishHistoryOff(b *testing.B) { benchmarkPublish(b, false) }

// BenchmarkHistoryMemory fills full per-user histories (1000 events per user,
// the default size, users not connected) and reports the heap they hold.
func BenchmarkHistoryMemory(b *testing.B) {
	const perUser = 1000
	h := benchHub(true)
	defer h.Stop()
	nUsers := max(1, b.N/perUser)
	users := make([][]string, nUsers)
	for i := range users {
		users[i] = []string{fmt.Sprintf("user-%05d", i)}
	}
	b.ReportAllocs()
	before := heapAlloc()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.Publish(ctx, users[i%nUsers], "DRAFT_UPDATED", benchPayload); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	held := heapAlloc() - before
	b.ReportMetric(float64(held)*1000/float64(b.N), "B/1000events")
	runtime.KeepAlive(h)
}

// TestBroadcastAllocatesPerEventNotPerDelivery keeps BenchmarkFanout10k's
// figure true: a broadcast to 2,000 connections, with every queue drained,
// allocates the event (a handful of objects), nothing per connection.
func TestBroadcastAllocatesPerEventNotPerDelivery(t *testing.T) {
	const n = 2000
	h := benchHub(true)
	defer h.Stop()
	conns := make([]*hub.Conn, n)
	for i := range conns {
		c, err := h.Register(hub.ConnInfo{UserID: fmt.Sprintf("user-%05d", i), Transport: hub.TransportWebSocket}, noopSink{})
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	buf := drainAll(conns, make([]*hub.Message, 0, 16))
	// warm up: queues and the drain buffer reach their steady size
	for range 3 {
		if _, err := h.Broadcast(ctx, "ANNOUNCEMENT", benchPayload); err != nil {
			t.Fatal(err)
		}
		buf = drainAll(conns, buf)
	}
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := h.Broadcast(ctx, "ANNOUNCEMENT", benchPayload); err != nil {
			t.Fatal(err)
		}
		buf = drainAll(conns, buf)
	})
	if allocs > 20 { // per broadcast, for 2,000 deliveries
		t.Fatalf("%.0f allocations per broadcast to %d connections: something allocates per delivery", allocs, n)
	}
	t.Logf("%.0f allocations per broadcast to %d connections", allocs, n)
}
