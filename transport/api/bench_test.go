package api_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
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
