package modules_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

// backendNames are the brokers the multi-node tests run on: one Redis
// server, and a three-master Redis Cluster.
var backendNames = []string{"redis", "redis-cluster"}

// backend is the Redis under a test's hub nodes: one server
// (HUB_BROKER=redis, database clusterRedisDB, flushed) or a Redis Cluster
// of three masters of the test's own (HUB_BROKER=redis-cluster,
// hubtest.StartRedisCluster).
type backend struct {
	broker string
	url    string
	rc     *hubtest.RedisCluster // nil on one server
}

// newBackend starts (or, for one server, flushes) the Redis of broker.
func newBackend(t *testing.T, broker string) backend {
	t.Helper()
	switch broker {
	case "redis":
		return backend{broker: broker, url: clusterRedisURL(t)}
	case "redis-cluster":
		rc := hubtest.StartRedisCluster(t, 3)
		return backend{broker: broker, url: rc.URL(), rc: rc}
	}
	t.Fatalf("backend %q", broker)
	return backend{}
}

// node starts a hub node on the backend.
func (be backend) node(t *testing.T, name string, mod func(*config.Config)) *testHub {
	t.Helper()
	return startNode(t, be.url, name, func(c *config.Config) {
		c.Broker = be.broker
		if mod != nil {
			mod(c)
		}
	})
}

// users returns n user ids named after prefix. On a Redis Cluster user i's
// hash slot ({user}: its keys and channel) is on master i%masters, so that
// the users of a test are spread over every master.
func (be backend) users(t *testing.T, prefix string, n int) []string {
	t.Helper()
	out := make([]string, n)
	if be.rc == nil {
		for i := range out {
			out[i] = fmt.Sprintf("%s-%d", prefix, i)
		}
		return out
	}
	masters := len(be.rc.Addrs())
	byMaster := make([][]string, masters) // users found on each master
	for k, found := 0, 0; found < n; k++ {
		if k > 100*n+1000 {
			t.Fatalf("no %d users named %s-<k> spread over %d masters", n, prefix, masters)
		}
		u := fmt.Sprintf("%s-%d", prefix, k)
		m := be.rc.MasterOf("{" + u + "}")
		byMaster[m] = append(byMaster[m], u)
		found = 0
		for i := range out {
			if len(byMaster[i%masters]) > i/masters {
				found++
			}
		}
	}
	for i := range out {
		out[i] = byMaster[i%masters][i/masters]
	}
	return out
}

// waitReady waits until every node answers /readyz with 200.
func waitReady(t *testing.T, nodes ...*testHub) {
	t.Helper()
	for _, n := range nodes {
		hubtest.Eventually(t, 20*time.Second, n.Config.NodeName+" ready", func() bool {
			st, _ := getStatus(n.URL+"/readyz", "")
			return st == http.StatusOK
		})
	}
}

// withAll is with for every node.
func withAll(t *testing.T, nodes []*testHub) []*testHub {
	out := make([]*testHub, len(nodes))
	for i, n := range nodes {
		out[i] = n.with(t)
	}
	return out
}

// rcDevice is one device of TestRedisClusterMasterKilled.
type rcDevice struct {
	user  string
	node  *testHub
	tr    string
	d     device
	token string
}

func (x *rcDevice) String() string {
	return fmt.Sprintf("%s's %s on %s", x.user, x.tr, x.node.Config.NodeName)
}

// TestRedisClusterMasterKilled kills a master of a three-master Redis
// Cluster (no persistence, no replica) under two hub nodes while events
// flow, and restarts it empty once the cluster itself is down
// (cluster_state:fail). While it is down every node reports not ready
// and, once its health probe has found the master gone, the broadcast API
// refuses (503) every publish, whomever it names; once it is back the
// nodes are ready again. The devices (both transports, on
// both nodes) of the user whose hash slot was on the lost master are
// closed to resume (close 1001, hub.shutdown) and, resuming on the other
// node from their last event id, are told recovered:false; the devices of
// the users on the other masters keep their connections and get every
// event acknowledged before, during (posted again with its idempotency
// key until acknowledged) and after the outage exactly once, in order. The
// killed master is not the one of {all}, the broadcasts' slot.
func TestRedisClusterMasterKilled(t *testing.T) {
	// last, once the nodes have stopped: the publisher's keep-alive
	// connections (goleak counts their goroutines)
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	be := newBackend(t, "redis-cluster")
	rc := be.rc
	// The history must hold everything a surviving user is published
	// between the kill and the node's resync (about 1,100 events in all
	// here; the default 1,000 was sometimes short, and then the resync
	// rightly closed the device to resume with recovered:false).
	bigHistory := func(c *config.Config) { c.HistorySize = 10000 }
	a, b := be.node(t, "rck-a", bigHistory), be.node(t, "rck-b", bigHistory)
	nodes := []*testHub{a, b}
	waitReady(t, nodes...)

	lost := (rc.MasterOf("{all}") + 1) % 3
	users := be.users(t, "rck", 3) // users[m] is on master m
	lostUser := users[lost]
	var survivors []string
	for m, u := range users {
		if m != lost {
			survivors = append(survivors, u)
		}
	}
	t.Logf("masters %v; {all} on %d; killing %d (user %s)", rc.Addrs(), rc.MasterOf("{all}"), lost, lostUser)

	// each user has a device of each transport on each node
	var devs []*rcDevice
	for _, u := range users {
		tok := a.token(u, time.Hour)
		for _, n := range nodes {
			for _, tr := range transports {
				x := &rcDevice{user: u, node: n, tr: tr, token: tok, d: n.connect(tr, tok, "")}
				expectConnected(t, x.d, false, 0)
				devs = append(devs, x)
			}
		}
	}
	before := b.publish("BEFORE", nil, users...)
	beforeAll := a.publishAll("BEFORE_ALL", nil)
	for _, x := range devs {
		expectIDs(t, x.d, []string{before[x.user], beforeAll}, x.String()+" before the kill")
	}

	// A publisher goes on through the kill and the restart, alternating
	// the nodes: to the users of the surviving masters, every fourth event
	// to all. Each event carries an idempotency key and is posted again
	// with it, as the API tells clients to, after a refusal (503) or no
	// answer (a lost answer, or a publish that reached one master of two
	// while the cluster was coming back), until it is acknowledged: so
	// every event is published once and its id is known, and the
	// survivors must get each exactly once.
	var (
		mu      sync.Mutex
		acked   []string // ids, in the order acknowledged
		refused int      // 503 answers
		lostAns int      // no answer
	)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	stop := make(chan struct{})
	pubErr := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				pubErr <- nil
				return
			default:
			}
			body := map[string]any{"type": "FLOW", "payload": i, "idempotencyKey": fmt.Sprintf("rck-flow-%d", i)}
			if i%4 == 3 {
				body["all"] = true
			} else {
				body["userIds"] = survivors
			}
			n := nodes[i%2]
			for {
				if ctx.Err() != nil {
					pubErr <- fmt.Errorf("event %d never acknowledged: %v", i, ctx.Err())
					return
				}
				st, ans := n.postNoFatal("/api/broadcast", body)
				if st == http.StatusAccepted {
					id, err := ackedID(ans, survivors)
					if err != nil {
						pubErr <- fmt.Errorf("event %d: %v", i, err)
						return
					}
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
					break
				}
				e, _ := ans["error"].(map[string]any)
				switch {
				case st == http.StatusServiceUnavailable && e["code"] == "unavailable":
					mu.Lock()
					refused++
					mu.Unlock()
				case st == 0:
					mu.Lock()
					lostAns++
					mu.Unlock()
				default:
					pubErr <- fmt.Errorf("event %d through %s: %d %v, want 202, 503 unavailable or no answer", i, n.Config.NodeName, st, ans)
					return
				}
				time.Sleep(10 * time.Millisecond) // pacing while the cluster is down
			}
		}
	}()
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	hubtest.Eventually(t, 10*time.Second, "events acknowledged before the kill", func() bool { return ackedCount() >= 20 })

	atKill := ackedCount()
	rc.Kill(lost)
	for _, n := range nodes {
		hubtest.Eventually(t, 15*time.Second, n.Config.NodeName+" /readyz 503 not_ready", func() bool {
			st, body := getStatus(n.URL+"/readyz", "")
			e, _ := body["error"].(map[string]any)
			return st == http.StatusServiceUnavailable && e["code"] == "not_ready"
		})
	}
	// While the master is down the broadcast API refuses (503), through
	// either node, whom it names. Until a node's health probe has found
	// the master gone (a moment after its Pub/Sub connection broke and
	// readiness turned 503), what names only users of the surviving
	// masters, or all, may still be accepted: stored on masters that are
	// up, such an event must reach the survivors (exactly once, like the
	// others); an acceptance after the node refused once is a failure, as
	// is an acceptance naming the lost master's user.
	var early []string // DURING ids accepted before the first refusal
	for _, n := range nodes {
		for _, body := range []map[string]any{
			{"all": true, "type": "DURING"},
			{"userIds": []string{lostUser}, "type": "DURING"},
			{"userIds": survivors, "type": "DURING"},
		} {
			hubtest.Eventually(t, 15*time.Second, fmt.Sprintf("%s: broadcast %v refused", n.Config.NodeName, body), func() bool {
				st, ans := n.postNoFatal("/api/broadcast", body)
				e, _ := ans["error"].(map[string]any)
				switch {
				case st == http.StatusServiceUnavailable && e["code"] == "unavailable":
					return true
				case st == 0 && body["all"] == nil && slices.Equal(body["userIds"].([]string), []string{lostUser}):
					return true // no answer: the lost master never ran it
				case st == http.StatusAccepted && body["all"] == true || st == http.StatusAccepted && len(body["userIds"].([]string)) == 2:
					id, err := ackedID(ans, survivors)
					if err != nil {
						t.Fatal(err)
					}
					early = append(early, id)
					if len(early) > 1000 {
						t.Fatalf("%s: still accepting %v: %d DURING events acknowledged while a master is down", n.Config.NodeName, body, len(early))
					}
					return false
				}
				t.Fatalf("%s: broadcast %v while a master is down: %d %v, want 503 unavailable", n.Config.NodeName, body, st, ans)
				return false
			})
		}
		// refused once: now every publish is, until the master is back
		for _, body := range []map[string]any{
			{"all": true, "type": "DURING"},
			{"userIds": survivors, "type": "DURING"},
		} {
			st, ans := n.postNoFatal("/api/broadcast", body)
			if e, _ := ans["error"].(map[string]any); st != http.StatusServiceUnavailable || e["code"] != "unavailable" {
				t.Fatalf("%s: broadcast %v after a refusal, a master still down: %d %v, want 503 unavailable", n.Config.NodeName, body, st, ans)
			}
		}
	}
	t.Logf("%d DURING events accepted before the nodes found the master gone", len(early))
	duringKill := ackedCount()

	// The cluster itself finds the master failing (after its node timeout)
	// and refuses every key (CLUSTERDOWN): a restart after that is a real
	// outage of the cluster, not only of one master's connections.
	survivor := rc.NodeClient(rc.MasterOf("{all}"))
	hubtest.Eventually(t, 20*time.Second, "cluster_state:fail on the surviving masters", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		info, err := survivor.ClusterInfo(ctx).Result()
		return err == nil && strings.Contains(info, "cluster_state:fail")
	})
	for _, n := range nodes {
		st, body := getStatus(n.URL+"/readyz", "")
		if st != http.StatusServiceUnavailable {
			t.Fatalf("%s /readyz while the cluster is down: %d %v", n.Config.NodeName, st, body)
		}
		st, ans := n.postNoFatal("/api/broadcast", map[string]any{"all": true, "type": "DURING"})
		if e, _ := ans["error"].(map[string]any); st != http.StatusServiceUnavailable || e["code"] != "unavailable" {
			t.Fatalf("%s: broadcast to all while the cluster is down: %d %v, want 503 unavailable", n.Config.NodeName, st, ans)
		}
	}

	rc.Start(lost)
	waitReady(t, nodes...)
	hubtest.Eventually(t, 30*time.Second, "events acknowledged after the restart", func() bool { return ackedCount() >= duringKill+20 })
	close(stop) // the publisher ends once its current event is acknowledged
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	flow := slices.Clone(acked)
	t.Logf("%d events acknowledged (%d before the kill, %d when the refusals began), %d refusals, %d without an answer", len(flow), atKill, duringKill, refused, lostAns)
	mu.Unlock()

	// The lost master's user: every device is closed to resume and, back
	// on the other node from its last event id, told recovered:false.
	for _, x := range devs {
		if x.user != lostUser {
			continue
		}
		last := ""
		switch c := x.d.(type) {
		case *wsClient:
			if code, reason := c.closed(20 * time.Second); code != websocket.StatusGoingAway {
				t.Fatalf("%s: closed with %d %q, want 1001", x, code, reason)
			}
			for drained := false; !drained; {
				select {
				case e := <-c.ch:
					if e.ID != "" {
						last = e.ID
					}
				default:
					drained = true
				}
			}
		case *sseClient:
			evs := c.waitEnd(20 * time.Second)
			if len(evs) == 0 || evs[len(evs)-1].Type != "hub.shutdown" {
				t.Fatalf("%s: ended with %v, want hub.shutdown", x, evs)
			}
			last = c.lastEventID()
		}
		if last == "" {
			t.Fatalf("%s: no event id to resume from", x)
		}
		other := nodes[0]
		if x.node == other {
			other = nodes[1]
		}
		x.node = other
		x.d = other.connect(x.tr, x.token, last)
		expectConnected(t, x.d, false, 0)
	}

	// after the recovery, to every user, through each node
	after := a.publish("AFTER", nil, users...)
	final := b.publish("FINAL", nil, users...)
	for _, x := range devs {
		got, err := x.readUntil(final[x.user], 20*time.Second)
		if err != nil {
			t.Fatalf("%s: %v, after %d events", x, err, len(got))
		}
		want := []string{after[x.user], final[x.user]}
		if x.user != lostUser {
			want = append(slices.Clone(flow), want...)
		}
		// the DURING events accepted early, each once, anywhere among the
		// others (they were published beside the FLOW events)
		var others []string
		seen := map[string]int{}
		for _, e := range got {
			if e.Type == "DURING" {
				seen[e.ID]++
			} else {
				others = append(others, e.ID)
			}
		}
		if !slices.Equal(others, want) {
			t.Fatalf("%s: got %d events %s, want %d %s", x, len(others), brief(others), len(want), brief(want))
		}
		if x.user != lostUser {
			for _, id := range early {
				seen[id]--
			}
		}
		for id, n := range seen {
			if n != 0 {
				t.Fatalf("%s: DURING event %s received %+d times more than accepted", x, id, n)
			}
		}
	}
}

// readUntil reads the device's events (but hub.ping) until the one with
// id, or an error when the connection ends first or timeout passes.
func (x *rcDevice) readUntil(id string, timeout time.Duration) ([]envelope, error) {
	deadline := time.After(timeout)
	var out []envelope
	for {
		var e envelope
		switch c := x.d.(type) {
		case *wsClient:
			select {
			case e = <-c.ch:
			case <-c.done:
				select {
				case e = <-c.ch:
				default:
					return out, fmt.Errorf("closed before %s: %v", id, c.closeErr)
				}
			case <-deadline:
				return out, fmt.Errorf("no %s within %v", id, timeout)
			}
		case *sseClient:
			select {
			case r := <-c.ch:
				e = c.decode(r)
			case <-c.done:
				select {
				case r := <-c.ch:
					e = c.decode(r)
				default:
					return out, fmt.Errorf("ended before %s: %v", id, c.err)
				}
			case <-deadline:
				return out, fmt.Errorf("no %s within %v", id, timeout)
			}
		}
		if e.Type == "hub.ping" {
			continue
		}
		out = append(out, e)
		if e.ID == id {
			return out, nil
		}
	}
}

// brief shows a list of ids, its middle left out when it is long.
func brief(ids []string) string {
	if len(ids) <= 12 {
		return fmt.Sprint(ids)
	}
	return fmt.Sprintf("%v ... %v", ids[:6], ids[len(ids)-6:])
}

// ackedID is the id of a 202 answer to /api/broadcast: the broadcast's
// for all, else the one id every user in users was given.
func ackedID(ans map[string]any, users []string) (string, error) {
	if id, _ := ans["id"].(string); id != "" {
		return id, nil
	}
	evs, _ := ans["events"].([]any)
	id := ""
	for _, u := range users {
		found := false
		for _, e := range evs {
			m, _ := e.(map[string]any)
			if m["userId"] == u {
				eid, _ := m["id"].(string)
				if eid == "" || id != "" && eid != id {
					return "", fmt.Errorf("answer %v: ids differ", ans)
				}
				id, found = eid, true
			}
		}
		if !found {
			return "", fmt.Errorf("answer %v: no event for %s", ans, u)
		}
	}
	return id, nil
}

// holdRedisCluster: WebSocket and SSE streams on one node of two on a
// three-master Redis Cluster, users on every master; the late events are
// published through the other node's API (the disconnect, which counts
// the connections it closes on its node, through the streams' node).
func holdRedisCluster(t *testing.T, p holdProfile) {
	be := newBackend(t, "redis-cluster")
	a, b := be.node(t, "hold-rc-a", p.apply), be.node(t, "hold-rc-b", p.apply)
	waitReady(t, a, b)
	users := be.users(t, "hold-rc", 4) // masters 0, 1, 2, 0
	r := newHoldRun(t, a)
	r.api = b
	r.addWS("websocket on a cluster", users[0], a.WSURL, nil)
	r.addSSE("sse on a cluster", users[1], 1, sseDial{URL: a.SSEURL})
	r.addWS("websocket on a cluster (2)", users[2], a.WSURL, nil)
	r.addSSE("sse on a cluster (2)", users[3], 1, sseDial{URL: a.SSEURL})
	r.run(p)
}
