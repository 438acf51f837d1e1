package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
)

// drainer is a connection whose sink drains its queue on a goroutine, like a
// transport's writer that writes nothing.
type drainer struct {
	conn *hub.Conn
	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	n    int
}

func (d *drainer) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}
func (d *drainer) Abort(hub.Reason)    {}
func (d *drainer) Heartbeat(idle bool) {}

func (d *drainer) run() {
	defer d.wg.Done()
	var buf []*hub.Message
	for {
		select {
		case <-d.stop:
			return
		case <-d.wake:
		}
		for {
			buf, _ = d.conn.Next(buf[:0])
			if len(buf) == 0 {
				break
			}
			d.mu.Lock()
			d.n += len(buf)
			d.mu.Unlock()
		}
	}
}

// BenchmarkBroadcastAPI measures POST /api/broadcast to one connected user
// over loopback with keep-alive connections, requests in parallel.
func BenchmarkBroadcastAPI(b *testing.B) {
	e := newEnv(b, nil)
	d := &drainer{wake: make(chan struct{}, 1), stop: make(chan struct{})}
	c, err := e.hub.Register(hub.ConnInfo{UserID: "u1", Transport: hub.TransportWebSocket}, d)
	if err != nil {
		b.Fatal(err)
	}
	d.conn = c
	d.wg.Add(1)
	go d.run()
	d.Wake()
	b.Cleanup(func() {
		close(d.stop)
		d.wg.Wait()
		e.hub.Unregister(c)
	})
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	const body = `{"userIds":["u1"],"type":"DRAFT_UPDATED","payload":{"draftId":42,"title":"hello"}}`

	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/broadcast", strings.NewReader(body))
			req.Header.Set("X-API-Key", apiKey)
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// The in-process API benchmarks: the handler is called directly (no
// socket, no HTTP client), with 10,000 connected users (one connection
// each) whose queues the benchmark drains itself, as the transports'
// writers would. Run them with -cpu 1,2: the goroutines of RunParallel
// publish to users of their own and drain their own connections, as the
// writer pool's writers (one per processor) do.

const inProcUsers = 10000

// inProcEnv registers inProcUsers connections with a sink that does
// nothing and returns the API's handler and the connections.
func inProcEnv(b *testing.B) (http.Handler, []*hub.Conn) {
	e := newEnv(b, nil)
	conns := make([]*hub.Conn, inProcUsers)
	for i := range conns {
		c, err := e.hub.Register(hub.ConnInfo{UserID: fmt.Sprintf("u%05d", i), Transport: hub.TransportWebSocket}, nopSink{})
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
		for { // hub.connected, and the empty answer after which the next event wakes
			if msgs, _ := c.Next(nil); len(msgs) == 0 {
				break
			}
		}
	}
	b.Cleanup(func() {
		for _, c := range conns {
			e.hub.Unregister(c)
		}
	})
	return e.srv.Config.Handler, conns
}

type nopSink struct{}

func (nopSink) Wake()            {}
func (nopSink) Abort(hub.Reason) {}
func (nopSink) Heartbeat(bool)   {}

// benchInProc runs RunParallel: each goroutine posts bodies built by body
// (from the users it owns, per of them per call) to path and drains its
// users' connections after every call. It reports ns per delivery.
func benchInProc(b *testing.B, path string, per int, body func(users []int, payload string) []byte) {
	h, conns := inProcEnv(b)
	procs := runtime.GOMAXPROCS(0)
	var next atomic.Int32
	var deliveries atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		g := int(next.Add(1)-1) % procs
		// this goroutine's users: g, g+procs, g+2*procs, ...
		var mine []int
		for u := g; u < inProcUsers; u += procs {
			mine = append(mine, u)
		}
		users := make([]int, per)
		var buf []*hub.Message
		k := 0
		for pb.Next() {
			for i := range users {
				users[i] = mine[(k*per+i*7919)%len(mine)]
			}
			k++
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body(users, `{"draftId":42,"title":"hello"}`)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-API-Key", apiKey)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusAccepted || bytes.Contains(rec.Body.Bytes(), []byte(`"error"`)) {
				b.Errorf("status %d: %s", rec.Code, rec.Body)
				return
			}
			n := 0
			for _, u := range users {
				buf, _ = conns[u].Next(buf[:0])
				n += len(buf)
			}
			deliveries.Add(int64(n))
		}
	})
	b.StopTimer()
	if d := deliveries.Load(); d > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(d), "ns/delivery")
	}
}

// BenchmarkBatchInProcess: POST /api/broadcast/batch of 100 messages, each
// to one user (the unicast benchmark's batch calls).
func BenchmarkBatchInProcess(b *testing.B) {
	benchInProc(b, "/api/broadcast/batch", 100, func(users []int, payload string) []byte {
		var w bytes.Buffer
		w.WriteString(`{"messages":[`)
		for i, u := range users {
			if i > 0 {
				w.WriteByte(',')
			}
			fmt.Fprintf(&w, `{"userIds":["u%05d"],"type":"BENCH","payload":%s}`, u, payload)
		}
		w.WriteString(`]}`)
		return w.Bytes()
	})
}

// BenchmarkBroadcastUsersInProcess: POST /api/broadcast of one event to
// 100 users (the unicast benchmark's broadcast calls).
func BenchmarkBroadcastUsersInProcess(b *testing.B) {
	benchInProc(b, "/api/broadcast", 100, func(users []int, payload string) []byte {
		var w bytes.Buffer
		w.WriteString(`{"userIds":[`)
		for i, u := range users {
			if i > 0 {
				w.WriteByte(',')
			}
			fmt.Fprintf(&w, `"u%05d"`, u)
		}
		fmt.Fprintf(&w, `],"type":"BENCH","payload":%s}`, payload)
		return w.Bytes()
	})
}
