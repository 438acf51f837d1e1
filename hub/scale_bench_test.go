package hub_test

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/netpoll"
)

// The scaling benchmarks run the hub as a server runs it: publishers on
// some goroutines, and writers (one per processor, as the transports'
// netpoll.Pool) draining the connections the hub woke. Run them with
// -cpu 1,2: with two processors the publishers and the writers run side
// by side (docs/DECISIONS.md, "Publishing across cores").

// benchWriters drains the woken connections with the transports' writer
// pool (netpoll.Pool: at most GOMAXPROCS writers, started on demand), each
// connection drained whole (Next until empty).
type benchWriters struct {
	pool      *netpoll.Pool
	wg        sync.WaitGroup
	delivered atomic.Int64
	target    atomic.Int64 // done is closed once delivered reaches it
	done      chan struct{}
	aborted   atomic.Int64
}

// poolSink is a connection of the pool; it ignores the Wake of its
// hub.connected (that comes inside Register, before c is set).
type poolSink struct {
	w     *benchWriters
	c     *hub.Conn
	buf   []*hub.Message
	ready atomic.Bool
}

func (s *poolSink) Wake() {
	if s.ready.Load() {
		s.w.pool.Push(s)
	}
}
func (s *poolSink) Abort(hub.Reason) { s.w.aborted.Add(1) }
func (s *poolSink) Heartbeat(bool)   {}

// Drain runs on a pool writer.
func (s *poolSink) Drain() {
	n := 0
	for {
		s.buf, _ = s.c.Next(s.buf[:0])
		if len(s.buf) == 0 {
			break
		}
		n += len(s.buf)
	}
	clear(s.buf[:cap(s.buf)])
	if d := s.w.delivered.Add(int64(n)); d == s.w.target.Load() {
		close(s.w.done)
	}
}

func newBenchWriters(h *hub.Hub) *benchWriters {
	w := &benchWriters{done: make(chan struct{})}
	w.target.Store(-1)
	w.pool = netpoll.NewPool(runtime.GOMAXPROCS(0), netpoll.WriterSlice, h.Activity, &w.wg)
	return w
}

func (w *benchWriters) close() { w.wg.Wait() }

// register connects n users (one connection each) whose queues w drains.
func (w *benchWriters) register(b *testing.B, h *hub.Hub, n int) [][]string {
	users := make([][]string, n)
	for i := range users {
		users[i] = []string{fmt.Sprintf("user-%05d", i)}
		s := &poolSink{w: w}
		c, err := h.Register(hub.ConnInfo{UserID: users[i][0], Transport: hub.TransportWebSocket}, s)
		if err != nil {
			b.Fatal(err)
		}
		s.c = c
		s.ready.Store(true)
		for { // hub.connected, and Next's empty answer: the next event wakes
			if msgs, _ := c.Next(nil); len(msgs) == 0 {
				break
			}
		}
	}
	return users
}

// wait waits until the writers have delivered want events (or fails the
// benchmark after a minute).
func (w *benchWriters) wait(b *testing.B, want int64) {
	w.target.Store(want)
	if w.delivered.Load() >= want {
		return
	}
	select {
	case <-w.done:
	case <-time.After(time.Minute):
		b.Fatalf("delivered %d of %d", w.delivered.Load(), want)
	}
}

func scaleHub() *hub.Hub { return scaleHubTotal(0) }

// scaleHubTotal is scaleHub with a node-wide history bound (0: none).
func scaleHubTotal(total int64) *hub.Hub {
	return hub.New(hub.Options{Node: "bench", Logger: slog.New(slog.DiscardHandler),
		HistorySize: 1000, HistoryTTL: 10 * time.Minute, SendQueue: 1 << 20,
		HistoryTotalBytes: total})
}

// BenchmarkFanoutScaling: one publisher broadcasts b.N events to 10,000
// connections; the writers drain them. ns/delivery is the wall time per
// delivery, publishing and draining together.
func BenchmarkFanoutScaling(b *testing.B) {
	const n = 10000
	h := scaleHub()
	defer h.Stop()
	w := newBenchWriters(h)
	defer w.close()
	w.register(b, h, n)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.Broadcast(ctx, "ANNOUNCEMENT", benchPayload); err != nil {
			b.Fatal(err)
		}
	}
	w.wait(b, int64(b.N)*n)
	b.StopTimer()
	if a := w.aborted.Load(); a > 0 {
		b.Fatalf("%d connections aborted", a)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/delivery")
}

// BenchmarkPublishScaling: GOMAXPROCS publishers (RunParallel) each
// publish to one user at a time, round robin over 10,000 connected users
// (each publisher its own); the writers drain them. One op is one publish
// and its delivery. The hub has no node-wide history bound.
func BenchmarkPublishScaling(b *testing.B) { benchPublishScaling(b, 0) }

// BenchmarkPublishScalingBounded is BenchmarkPublishScaling with the
// server's default node-wide history bound (history_total_bytes, 512 MiB):
// every publish then also lists its event for eviction, under one lock.
func BenchmarkPublishScalingBounded(b *testing.B) { benchPublishScaling(b, 512<<20) }

func benchPublishScaling(b *testing.B, total int64) {
	const n = 10000
	h := scaleHubTotal(total)
	defer h.Stop()
	w := newBenchWriters(h)
	defer w.close()
	users := w.register(b, h, n)
	procs := runtime.GOMAXPROCS(0)
	var next, published atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		g := int(next.Add(1) - 1)
		k := 0
		defer func() { published.Add(int64(k)) }()
		for pb.Next() {
			u := (g + k*procs*7919) % n
			if _, err := h.Publish(ctx, users[u], "DRAFT_UPDATED", benchPayload); err != nil {
				b.Error(err)
				return
			}
			k++
		}
	})
	w.wait(b, published.Load())
	b.StopTimer()
	if a := w.aborted.Load(); a > 0 {
		b.Fatalf("%d connections aborted", a)
	}
}
