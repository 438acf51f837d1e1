package modules_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

// readyBound is what a /readyz answer may take in these tests: it answers
// from state (100 ms is the design's figure, logged as "slowest /readyz"),
// and one that waited on Redis would take the health probe's timeout, 1 s
// or more. The margin between the two absorbs a loaded machine's
// scheduling, which once made an answer take 100.8 ms (plus the race
// detector's slack, see schedSlack).
const readyBound = 500*time.Millisecond + schedSlack

// stallRedis is a redis-server of the test's own, without persistence,
// that the test can stop (SIGSTOP) and continue.
type stallRedis struct{ *hubtest.RedisServer }

func startStallRedis(t *testing.T) stallRedis { return stallRedis{hubtest.StartRedisServer(t)} }

func (r stallRedis) url() string { return r.URL() }

func (r stallRedis) signal(_ *testing.T, s syscall.Signal) { r.Signal(s) }

// readyProbe polls a node's /readyz until stopped, timing each answer.
type readyProbe struct {
	mu      sync.Mutex
	status  int           // last status (0: no answer)
	n503    int           // 503 answers
	slowest time.Duration // slowest answer
	slow    []string      // answers over readyBound
	wg      sync.WaitGroup
}

func probeReady(u string, stop <-chan struct{}) *readyProbe {
	p := &readyProbe{}
	client := &http.Client{Timeout: 2 * time.Second}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			status := 0
			if resp, err := client.Get(u); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			}
			took := time.Since(start)
			p.mu.Lock()
			p.status = status
			if status == http.StatusServiceUnavailable {
				p.n503++
			}
			p.slowest = max(p.slowest, took)
			if took > readyBound || status == 0 {
				p.slow = append(p.slow, fmt.Sprintf("%d after %v at %s", status, took, start.Format("15:04:05.000")))
			}
			p.mu.Unlock()
			time.Sleep(10 * time.Millisecond) // polling interval
		}
	}()
	return p
}

func (p *readyProbe) last() int { p.mu.Lock(); defer p.mu.Unlock(); return p.status }

func (p *readyProbe) count503() int { p.mu.Lock(); defer p.mu.Unlock(); return p.n503 }

// apiCall is the outcome of one POST /api/broadcast.
type apiCall struct {
	status int    // 0: no answer (connection closed)
	id     string // the event's id on 202
	took   time.Duration
}

// apiPublisher posts broadcasts to one user through a node, one after the
// other, call k with payload k and idempotencyKey "k-<k>".
type apiPublisher struct {
	mu    sync.Mutex
	calls map[int]*apiCall
}

func (p *apiPublisher) post(client *http.Client, th *testHub, user string, k int) *apiCall {
	body, _ := json.Marshal(map[string]any{"userIds": []string{user}, "type": "STALL", "payload": k, "idempotencyKey": "k-" + strconv.Itoa(k)})
	req, _ := http.NewRequest(http.MethodPost, th.API+"/api/broadcast", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", hubtest.APIKey)
	start := time.Now()
	c := &apiCall{}
	resp, err := client.Do(req)
	c.took = time.Since(start)
	if err != nil {
		return c
	}
	defer resp.Body.Close()
	c.status = resp.StatusCode
	var answer struct {
		Events []struct {
			ID string `json:"id"`
		} `json:"events"`
	}
	if json.NewDecoder(resp.Body).Decode(&answer) == nil && len(answer.Events) == 1 {
		c.id = answer.Events[0].ID
	}
	return c
}

func (p *apiPublisher) run(th *testHub, user string, first, step int, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	client := &http.Client{Timeout: 10 * time.Second}
	for k := first; ; k += step {
		select {
		case <-stop:
			return
		default:
		}
		c := p.post(client, th, user, k)
		p.mu.Lock()
		p.calls[k] = c
		p.mu.Unlock()
		time.Sleep(5 * time.Millisecond) // pacing, not synchronisation
	}
}

func (p *apiPublisher) count(status int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.calls {
		if c.status == status {
			n++
		}
	}
	return n
}

// TestClusterRedisStall stops the cluster's Redis (SIGSTOP) for 10 s under
// two nodes with devices connected while services publish through both:
// every publish is answered within HUB_PUBLISH_TIMEOUT (a 503 or, for a
// call in flight when Redis stopped, no answer), /readyz answers within
// 100 ms throughout, turning 503 during the stall and 200 after it; no
// event answered 503 is ever delivered, a call left without an answer and
// retried with its idempotencyKey publishes once, and every device gets
// every published event once, in order.
func TestClusterRedisStall(t *testing.T) {
	rs := startStallRedis(t)
	const timeout = time.Second
	mod := func(c *config.Config) { c.PublishTimeout = timeout }
	n1, n2 := startNode(t, rs.url(), "stall-1", mod), startNode(t, rs.url(), "stall-2", mod)
	for _, n := range []*testHub{n1, n2} {
		hubtest.Eventually(t, 10*time.Second, n.Config.NodeName+" ready", func() bool {
			st, _ := getStatus(n.URL+"/readyz", "")
			return st == http.StatusOK
		})
	}
	const user = "stall-user"
	tok := n1.token(user, time.Hour)
	// WebSocket devices only: an SSE stream quiet for longer than its write
	// timeout (10 s, as during this stall) is cut at its next write until
	// the fix of branch fix-sse-longhold is in.
	devs := map[string]device{"websocket on node 1": n1.mustWS(tok, ""), "websocket on node 2": n2.mustWS(tok, "")}
	for _, d := range devs {
		expectConnected(t, d, false, 0)
	}

	stop := make(chan struct{})
	probes := []*readyProbe{probeReady(n1.URL+"/readyz", stop), probeReady(n2.URL+"/readyz", stop)}
	pub := &apiPublisher{calls: map[int]*apiCall{}}
	var wg sync.WaitGroup
	wg.Add(2)
	go pub.run(n1, user, 1, 2, stop, &wg)
	go pub.run(n2, user, 2, 2, stop, &wg)
	stopAll := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
		for _, p := range probes {
			p.wg.Wait()
		}
	})
	t.Cleanup(stopAll)
	hubtest.Eventually(t, 10*time.Second, "publishes before the stall", func() bool { return pub.count(http.StatusAccepted) > 20 })

	rs.signal(t, syscall.SIGSTOP)
	stalled := time.Now()
	hubtest.Eventually(t, 5*time.Second, "/readyz 503 on both nodes", func() bool {
		return probes[0].last() == http.StatusServiceUnavailable && probes[1].last() == http.StatusServiceUnavailable
	})
	notReady := time.Since(stalled)
	refused := pub.count(http.StatusServiceUnavailable)
	hubtest.Eventually(t, 5*time.Second, "publishes refused during the stall", func() bool {
		return pub.count(http.StatusServiceUnavailable) > refused+20
	})
	for time.Since(stalled) < 10*time.Second { // the stall lasts 10 s
		for i, p := range probes {
			if p.last() == http.StatusOK {
				t.Fatalf("node %d /readyz 200 during the stall", i+1)
			}
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	rs.signal(t, syscall.SIGCONT)
	resumed := time.Now()
	hubtest.Eventually(t, 10*time.Second, "/readyz 200 on both nodes", func() bool {
		return probes[0].last() == http.StatusOK && probes[1].last() == http.StatusOK
	})
	ready := time.Since(resumed)
	accepted := pub.count(http.StatusAccepted)
	hubtest.Eventually(t, 10*time.Second, "publishes after the stall", func() bool { return pub.count(http.StatusAccepted) > accepted+20 })
	stopAll()

	for i, p := range probes {
		if len(p.slow) > 0 {
			t.Errorf("node %d: /readyz answers over %v: %v", i+1, readyBound, p.slow)
		}
	}

	// Every call was answered (or cut) within the bound; the cut ones are
	// retried with their idempotencyKey.
	final := map[int]string{}
	var slowest time.Duration
	var cut, refusedTotal int
	retry := &http.Client{Timeout: 10 * time.Second}
	for k, c := range pub.calls {
		slowest = max(slowest, c.took)
		if c.took > timeout+300*time.Millisecond+schedSlack {
			t.Errorf("call %d answered (%d) after %v, want at most %v", k, c.status, c.took, timeout)
		}
		switch c.status {
		case http.StatusAccepted:
			final[k] = c.id
		case http.StatusServiceUnavailable:
			refusedTotal++
		case 0:
			cut++
			n := n1
			if k%2 == 0 {
				n = n2
			}
			r := pub.post(retry, n, user, k)
			if r.status != http.StatusAccepted {
				t.Fatalf("retry of call %d: %d", k, r.status)
			}
			final[k] = r.id
		default:
			t.Errorf("call %d answered %d", k, c.status)
		}
	}
	var refusedTook []time.Duration
	for _, c := range pub.calls {
		if c.status == http.StatusServiceUnavailable {
			refusedTook = append(refusedTook, c.took)
		}
	}
	slices.Sort(refusedTook)
	t.Logf("stall of 10 s: /readyz 503 after %v, 200 again %v after SIGCONT (slowest /readyz %v / %v); "+
		"%d calls: %d accepted, %d refused (503: median %v, p99 %v), %d without an answer; slowest answer %v",
		notReady.Round(time.Millisecond), ready.Round(time.Millisecond),
		probes[0].slowest.Round(time.Millisecond), probes[1].slowest.Round(time.Millisecond),
		len(pub.calls), len(pub.calls)-refusedTotal-cut, refusedTotal,
		refusedTook[len(refusedTook)/2].Round(100*time.Microsecond), refusedTook[len(refusedTook)*99/100].Round(time.Millisecond),
		cut, slowest.Round(time.Millisecond))

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node 1 logs:\n%s\nnode 2 logs:\n%s", n1.Logs.String(), n2.Logs.String())
		}
	})
	for name, d := range devs {
		seen := map[int]bool{}
		last := ""
		for range len(final) {
			e := d.next(10 * time.Second)
			var k int
			if err := json.Unmarshal(e.Payload, &k); err != nil {
				t.Fatalf("%s: event %s: %v", name, e.raw, err)
			}
			id, ok := final[k]
			switch {
			case !ok:
				t.Fatalf("%s: event %s of call %d, which was answered 503", name, e.ID, k)
			case seen[k]:
				t.Fatalf("%s: call %d delivered twice (%s)", name, k, e.ID)
			case id != e.ID:
				t.Fatalf("%s: call %d delivered as %s, answered %s", name, k, e.ID, id)
			case last != "" && seqOf(e.ID) <= seqOf(last):
				t.Fatalf("%s: %s after %s", name, e.ID, last)
			}
			seen[k], last = true, e.ID
		}
	}
}

func seqOf(id string) uint64 {
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] == '-' {
			n, _ := strconv.ParseUint(id[i+1:], 10, 64)
			return n
		}
	}
	return 0
}

// TestPublishUnanswered sends a publish into a Redis that has just stopped
// (before the node noticed): the node cannot tell whether it was applied,
// so it leaves the call without an answer (a 503 would say it was not),
// within the publish timeout; a batch is answered within it too; Redis,
// continued, refuses the late scripts, so the device never gets those
// events.
func TestPublishUnanswered(t *testing.T) {
	rs := startStallRedis(t)
	const timeout = time.Second
	th := startNode(t, rs.url(), "unanswered-1", func(c *config.Config) { c.PublishTimeout = timeout })
	hubtest.Eventually(t, 10*time.Second, "ready", func() bool {
		st, _ := getStatus(th.URL+"/readyz", "")
		return st == http.StatusOK
	})
	const user = "unanswered-user"
	w := th.mustWS(th.token(user, time.Hour), "")
	expectConnected(t, w, false, 0)

	rs.signal(t, syscall.SIGSTOP)
	body, _ := json.Marshal(map[string]any{"userIds": []string{user}, "type": "LOST", "payload": 1})
	req, _ := http.NewRequest(http.MethodPost, th.API+"/api/broadcast", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", hubtest.APIKey)
	start := time.Now()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	took := time.Since(start)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("publish into the stopped Redis answered %d %s, want no answer", resp.StatusCode, b)
	}
	if took > timeout+300*time.Millisecond+schedSlack {
		t.Fatalf("publish given up after %v, want at most %v", took, timeout)
	}
	// A batch sent now, while the node may not have noticed the stall yet,
	// costs one publish timeout, not one per message, and every message
	// is refused (or the whole call left unanswered).
	msgs := make([]map[string]any, 50)
	for i := range msgs {
		msgs[i] = map[string]any{"userIds": []string{user}, "type": "LOST", "payload": i}
	}
	body, _ = json.Marshal(map[string]any{"messages": msgs})
	req, _ = http.NewRequest(http.MethodPost, th.API+"/api/broadcast/batch", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", hubtest.APIKey)
	start = time.Now()
	resp, err = (&http.Client{Timeout: 10 * time.Second}).Do(req)
	took = time.Since(start)
	if took > timeout+300*time.Millisecond+schedSlack {
		t.Fatalf("batch answered after %v, want at most %v", took, timeout)
	}
	if err == nil {
		var answer struct {
			Results []struct {
				Error *struct {
					Code string `json:"code"`
				} `json:"error"`
			} `json:"results"`
		}
		err := json.NewDecoder(resp.Body).Decode(&answer)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusAccepted || len(answer.Results) != len(msgs) {
			t.Fatalf("batch: %d %v %v", resp.StatusCode, answer, err)
		}
		for i, r := range answer.Results {
			if r.Error == nil || r.Error.Code != "unavailable" {
				t.Fatalf("batch message %d: %+v, want unavailable", i, r)
			}
		}
	}

	rs.signal(t, syscall.SIGCONT)
	hubtest.Eventually(t, 10*time.Second, "ready again", func() bool {
		st, _ := getStatus(th.URL+"/readyz", "")
		return st == http.StatusOK
	})
	id := th.publish("AFTER", nil, user)[user]
	expectIDs(t, w, []string{id}, "the event after the stall, and not the unanswered one")
}

// TestClusterSilentBackplane freezes every connection between node 1 and
// Redis (they stop answering without closing) while services publish
// through node 2: node 1 finds its Pub/Sub connection silent, redials
// Redis by itself and resyncs, its /readyz answers within 100 ms
// throughout and is 200 after the redial, and its device gets every event
// published meanwhile, once, in order.
func TestClusterSilentBackplane(t *testing.T) {
	rs := startStallRedis(t)
	px := hubtest.StartProxy(t, rs.Addr())
	n1 := startNode(t, "redis://"+px.Addr()+"/0", "silent-1", func(c *config.Config) { c.LogLevel = "info" })
	n2 := startNode(t, rs.url(), "silent-2", nil)
	for _, n := range []*testHub{n1, n2} {
		hubtest.Eventually(t, 10*time.Second, n.Config.NodeName+" ready", func() bool {
			st, _ := getStatus(n.URL+"/readyz", "")
			return st == http.StatusOK
		})
	}
	const user = "silent-user"
	w := n1.mustWS(n1.token(user, time.Hour), "")
	expectConnected(t, w, false, 0)

	stop := make(chan struct{})
	probe := probeReady(n1.URL+"/readyz", stop)
	pub := &apiPublisher{calls: map[int]*apiCall{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go pub.run(n2, user, 1, 1, stop, &wg)
	stopAll := sync.OnceFunc(func() { close(stop); wg.Wait(); probe.wg.Wait() })
	t.Cleanup(stopAll)
	hubtest.Eventually(t, 10*time.Second, "publishes before the freeze", func() bool { return pub.count(http.StatusAccepted) > 20 })

	px.Freeze()
	frozen := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last /readyz %d; node 1 logs:\n%s", probe.last(), n1.Logs.String())
		}
	})
	// The node is not ready only from the moment it finds the connection
	// silent until the redial (a new connection works at once): too short
	// a time for a poller to be sure to see; its logs tell.
	hubtest.Eventually(t, 10*time.Second, "node 1 to find its Pub/Sub connection silent", func() bool {
		return strings.Contains(n1.Logs.String(), "redis pubsub connection silent; redialling")
	})
	silent := time.Since(frozen)
	hubtest.Eventually(t, 10*time.Second, "node 1 to redial and resync", func() bool {
		return strings.Contains(n1.Logs.String(), "redis pubsub reconnected; resyncing")
	})
	hubtest.Eventually(t, 10*time.Second, "node 1 /readyz 200 after the redial", func() bool { return probe.last() == http.StatusOK })
	ready := time.Since(frozen)
	n := pub.count(http.StatusAccepted)
	hubtest.Eventually(t, 10*time.Second, "publishes after the redial", func() bool { return pub.count(http.StatusAccepted) > n+20 })
	stopAll()
	t.Logf("frozen backplane: found silent after %v, redialled and ready after %v (%d /readyz 503 seen; slowest /readyz %v)",
		silent.Round(time.Millisecond), ready.Round(time.Millisecond), probe.count503(), probe.slowest.Round(time.Millisecond))
	if len(probe.slow) > 0 {
		t.Errorf("/readyz answers over %v: %v", readyBound, probe.slow)
	}

	var ids []string
	for k := 1; k <= len(pub.calls); k++ {
		c := pub.calls[k]
		if c.status != http.StatusAccepted {
			t.Fatalf("call %d through node 2: %d", k, c.status)
		}
		ids = append(ids, c.id)
	}
	expectIDs(t, w, ids, "events published while node 1's backplane was frozen")
}
