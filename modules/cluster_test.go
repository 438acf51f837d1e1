package modules_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

// clusterRedisDB is the Redis database of this package's cluster tests;
// other packages use database 0 with their own prefixes, and the hub's
// prefix is fixed, so the cluster tests keep to a database of their own.
const clusterRedisDB = 7

// clusterRedisURL returns the test Redis (hubtest.RedisURL: skipped, or
// failed with HUB_REQUIRE_REDIS=1, without it) pointed at database 7,
// flushed so that the shared epoch and sequence start clean.
func clusterRedisURL(t *testing.T) string {
	t.Helper()
	return hubtest.RedisDB(t, hubtest.RedisURL(t), clusterRedisDB)
}

// optionalRedisURL is clusterRedisURL that answers "" instead of skipping
// when Redis cannot be reached (it still fails with HUB_REQUIRE_REDIS=1).
func optionalRedisURL(t *testing.T) string {
	t.Helper()
	u := hubtest.OptionalRedisURL(t)
	if u == "" {
		return ""
	}
	return hubtest.RedisDB(t, u, clusterRedisDB)
}

// startNode starts a hub node of a Redis cluster.
func startNode(t *testing.T, redisURL, name string, mod func(*config.Config)) *testHub {
	t.Helper()
	return startHub(t, func(c *config.Config) {
		c.Broker = "redis"
		c.RedisURL = redisURL
		c.NodeName = name
		c.LogLevel = "warn"
		if mod != nil {
			mod(c)
		}
	})
}

// getStatus answers the status and decoded body of a GET; bearer, when set,
// goes in Authorization. It may be called from any goroutine.
func getStatus(u, bearer string) (int, map[string]any) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return doNoFatal(req)
}

// TestClusterThreeNodes runs three nodes on each backend (backendNames:
// one Redis, and a three-master Redis Cluster of the test's own) and
// checks, through the assembled app, that publishing, broadcasting,
// resuming and disconnecting work across nodes, that the devices counts
// and the connections endpoint see every node, and that stats and
// readiness report the cluster. On the Redis Cluster the users of each
// subtest are spread over every master (backend.users).
func TestClusterThreeNodes(t *testing.T) {
	for _, name := range backendNames {
		t.Run(name, func(t *testing.T) { clusterThreeNodes(t, newBackend(t, name)) })
	}
}

func clusterThreeNodes(t *testing.T, be backend) {
	var nodes [3]*testHub
	for i := range nodes {
		nodes[i] = be.node(t, fmt.Sprintf("node-%d", i+1), nil)
	}
	waitReady(t, nodes[:]...)

	// First, while no other connection counts: the devices counts (of
	// everyone's for all) and the connections endpoint, through every node.
	t.Run("devices and connections across nodes", func(t *testing.T) {
		testDevices(t, withAll(t, nodes[:]))
	})

	t.Run("publish reaches every node", func(t *testing.T) {
		users := be.users(t, "cl-pub", 3)
		devs := map[string][]device{}
		for _, user := range users {
			tok := nodes[0].token(user, time.Hour)
			for i, tr := range []string{"websocket", "sse", "sse", "websocket"} {
				n := nodes[i%3].with(t)
				d := n.connect(tr, tok, "")
				p := d.connected()
				if p["node"] != n.Config.NodeName || p["recovered"] != false {
					t.Fatalf("hub.connected on %s: %v", n.Config.NodeName, p)
				}
				devs[user] = append(devs[user], d)
			}
		}
		// one publish names every user (on a cluster: a user on each master)
		ids := map[string][]string{}
		for i := range 5 {
			for user, id := range nodes[i%3].with(t).publish("CLUSTER", i, users...) {
				ids[user] = append(ids[user], id)
			}
		}
		for _, user := range users {
			for i, d := range devs[user] {
				expectIDs(t, d, ids[user], fmt.Sprintf("%s's device %d", user, i))
			}
		}
	})

	t.Run("broadcast all from node 2", func(t *testing.T) {
		var devs []device
		for i, user := range be.users(t, "cl-all", 6) {
			n := nodes[i%3].with(t)
			d := n.connect(transports[i%2], n.token(user, time.Hour), "")
			expectConnected(t, d, false, 0)
			devs = append(devs, d)
		}
		id := nodes[1].with(t).publishAll("ANNOUNCEMENT", "hello")
		for i, d := range devs {
			expectIDs(t, d, []string{id}, fmt.Sprintf("device %d", i))
		}
	})

	t.Run("resume on another node", func(t *testing.T) {
		combos := [][2]string{{"websocket", "sse"}, {"sse", "websocket"}, {"websocket", "websocket"}}
		users := be.users(t, "cl-resume", len(combos))
		for j, tr := range combos {
			user := users[j]
			a, b, c := nodes[0].with(t), nodes[1].with(t), nodes[2].with(t)
			tok := a.token(user, time.Hour)
			d := a.connect(tr[0], tok, "")
			expectConnected(t, d, false, 0)
			first := c.publish("FIRST", nil, user)[user]
			expectIDs(t, d, []string{first}, "before the drop")
			hangUp(d)
			var away []string
			for i := range 7 {
				if i%3 == 2 {
					away = append(away, c.publishAll("AWAY_ALL", i))
				} else {
					away = append(away, nodes[i%3].with(t).publish("AWAY", i, user)[user])
				}
			}
			d = b.connect(tr[1], tok, first)
			expectConnected(t, d, true, len(away))
			expectIDs(t, d, away, "replay on node 2")
			expectLive(t, a, d, user)
		}
	})

	t.Run("resume from a position on the same node and on another", func(t *testing.T) {
		combos := [][3]string{{"websocket", "0", "1"}, {"sse", "0", "2"}, {"sse", "1", "1"}, {"websocket", "2", "2"}}
		users := be.users(t, "cl-pos", len(combos))
		for j, tr := range combos {
			user := users[j]
			from, to := nodes[tr[1][0]-'0'].with(t), nodes[tr[2][0]-'0'].with(t)
			tok := from.token(user, time.Hour)
			d := from.connect(tr[0], tok, "")
			p := d.connected()
			pos, _ := p["position"].(string)
			if pos == "" {
				t.Fatalf("hub.connected on %s has no position: %v", from.Config.NodeName, p)
			}
			if c, ok := d.(*sseClient); ok {
				hubtest.Eventually(t, 5*time.Second, "the stream's last event id to be the position", func() bool { return c.lastEventID() == pos })
			}
			hangUp(d) // before its first event
			var away []string
			for i := range 4 {
				if i == 1 {
					away = append(away, nodes[2].with(t).publishAll("AWAY_ALL", i))
				} else {
					away = append(away, nodes[i%3].with(t).publish("AWAY", i, user)[user])
				}
			}
			d = to.connect(tr[0], tok, pos)
			expectConnected(t, d, true, len(away))
			expectIDs(t, d, away, "replay from the position")
			expectLive(t, from, d, user)
		}
	})

	t.Run("disconnect through node 3", func(t *testing.T) {
		for _, user := range be.users(t, "cl-disc", 3) {
			a, b, c := nodes[0].with(t), nodes[1].with(t), nodes[2].with(t)
			tok := a.token(user, time.Hour)
			wa := a.mustWS(tok, "")
			wa.connected()
			sb := b.mustSSE(tok, "")
			sb.connected()
			wb := b.mustWS(tok, "")
			wb.connected()
			sc := c.mustSSE(tok, "")
			sc.connected()
			// every subscription is live once an event reaches all of them
			id := a.publish("PING", nil, user)[user]
			for i, d := range []device{wa, sb, wb, sc} {
				expectIDs(t, d, []string{id}, fmt.Sprintf("%s's device %d", user, i))
			}
			status, body := c.post("/api/users/"+user+"/disconnect", nil, map[string]string{"X-API-Key": hubtest.APIKey})
			if status != http.StatusOK || body["closed"] != float64(1) {
				t.Fatalf("disconnect %s on node 3: %d %v, want 200 {\"closed\":1}", user, status, body)
			}
			for i, w := range []*wsClient{wa, wb} {
				if code, reason := w.closed(5 * time.Second); code != 4003 {
					t.Fatalf("%s's websocket %d: close %d %q, want 4003", user, i, code, reason)
				}
			}
			for i, s := range []*sseClient{sb, sc} {
				evs := s.waitEnd(5 * time.Second)
				if len(evs) == 0 || evs[len(evs)-1].Type != "hub.closed" {
					t.Fatalf("%s's sse %d: stream ended with %v, want hub.closed", user, i, evs)
				}
			}
		}
	})

	t.Run("stats carry cluster totals", func(t *testing.T) {
		admin := nodes[0].token("cl-admin", time.Hour, "admin")
		user := "cl-stats"
		tok := nodes[0].token(user, time.Hour)
		for i := range 5 {
			n := nodes[i%3].with(t)
			n.connect(transports[i%2], tok, "").connected()
		}
		var last string
		deadline := time.Now().Add(20 * time.Second)
		for {
			ok, desc := clusterStatsAgree(nodes[:], admin)
			if ok {
				break
			}
			last = desc
			if time.Now().After(deadline) {
				t.Fatalf("cluster stats never agreed: %s", last)
			}
			time.Sleep(100 * time.Millisecond) // polling interval
		}
	})

	for i, n := range nodes {
		if st, body := getStatus(n.URL+"/readyz", ""); st != http.StatusOK {
			t.Fatalf("node %d /readyz: %d %v", i+1, st, body)
		}
	}
}

// clusterStatsAgree reads every node's stats and reports whether each
// node's "cluster" totals count three nodes and add up to the sum of the
// nodes' own figures, but for activeUsers: the user cl-stats, connected to
// every node, counts once, so the cluster has at least two users fewer
// than the nodes' sum.
func clusterStatsAgree(nodes []*testHub, admin string) (bool, string) {
	var sumTotal, sumWS, sumSSE, sumUsers int
	var clusters []map[string]any
	for _, n := range nodes {
		st, body := getStatus(n.API+"/api/websocket/stats", admin)
		if st != http.StatusOK {
			return false, fmt.Sprintf("%s stats: %d %v", n.Config.NodeName, st, body)
		}
		if body["node"] != n.Config.NodeName {
			return false, fmt.Sprintf("%s stats name another node: %v", n.Config.NodeName, body)
		}
		conns, _ := body["connections"].(map[string]any)
		total, _ := body["totalConnections"].(float64)
		ws, _ := conns["websocket"].(float64)
		sse, _ := conns["sse"].(float64)
		sumTotal += int(total)
		sumWS += int(ws)
		sumSSE += int(sse)
		users, _ := body["activeUsers"].(float64)
		sumUsers += int(users)
		c, _ := body["cluster"].(map[string]any)
		if c == nil {
			return false, fmt.Sprintf("%s stats without cluster: %v", n.Config.NodeName, body)
		}
		clusters = append(clusters, c)
	}
	for i, c := range clusters {
		conns, _ := c["connections"].(map[string]any)
		users, _ := c["activeUsers"].(float64)
		if c["nodes"] != float64(len(nodes)) || c["totalConnections"] != float64(sumTotal) ||
			conns["websocket"] != float64(sumWS) || conns["sse"] != float64(sumSSE) ||
			users < 1 || int(users) > sumUsers-2 {
			return false, fmt.Sprintf("node %d cluster %v; nodes' own: total %d websocket %d sse %d users %d",
				i+1, c, sumTotal, sumWS, sumSSE, sumUsers)
		}
	}
	return true, ""
}

// TestClusterRedisFault kills the node's Redis and brings it back: the node
// reports not ready and refuses to acknowledge events while Redis is gone,
// and recovers without losing an event it acknowledged.
func TestClusterRedisFault(t *testing.T) {
	// An append-only file synced on every write: what Redis acknowledged
	// survives the kill, as with a production Redis that keeps the hub's
	// history.
	rp := hubtest.StartRedisServer(t, "--appendonly", "yes", "--appendfsync", "always", "--dir", t.TempDir())
	th := startNode(t, rp.URL(), "fault-1", nil)
	hubtest.Eventually(t, 10*time.Second, "ready", func() bool {
		st, _ := getStatus(th.URL+"/readyz", "")
		return st == http.StatusOK
	})
	const user = "fault-user"
	tok := th.token(user, time.Hour)
	w := th.mustWS(tok, "")
	expectConnected(t, w, false, 0)

	// A publisher acknowledges events while Redis is killed under it.
	var (
		mu    sync.Mutex
		acked []string
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			st, body := th.postNoFatal("/api/broadcast", map[string]any{"userIds": []string{user}, "type": "BEFORE", "payload": i})
			if st == http.StatusAccepted {
				evs, _ := body["events"].([]any)
				if len(evs) == 1 {
					id, _ := evs[0].(map[string]any)["id"].(string)
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				}
			} else {
				time.Sleep(10 * time.Millisecond) // pacing while Redis is down
			}
		}
	}()
	hubtest.Eventually(t, 10*time.Second, "events acknowledged before the kill", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 20
	})
	mu.Lock()
	before := append([]string(nil), acked...)
	mu.Unlock()
	rp.Kill()
	close(stop)
	wg.Wait()

	hubtest.Eventually(t, 15*time.Second, "/readyz 503 not_ready", func() bool {
		st, body := getStatus(th.URL+"/readyz", "")
		e, _ := body["error"].(map[string]any)
		return st == http.StatusServiceUnavailable && e["code"] == "not_ready"
	})
	hubtest.Eventually(t, 15*time.Second, "broadcast 503 unavailable", func() bool {
		st, body := th.postNoFatal("/api/broadcast", map[string]any{"all": true, "type": "DURING"})
		e, _ := body["error"].(map[string]any)
		if st == http.StatusAccepted {
			t.Errorf("broadcast acknowledged while Redis is down: %v", body)
		}
		return st == http.StatusServiceUnavailable && e["code"] == "unavailable"
	})

	rp.Start()
	hubtest.Eventually(t, 20*time.Second, "/readyz 200 after Redis is back", func() bool {
		st, _ := getStatus(th.URL+"/readyz", "")
		return st == http.StatusOK
	})
	hubtest.Eventually(t, 20*time.Second, "publishing after Redis is back", func() bool {
		st, _ := th.postNoFatal("/api/broadcast", map[string]any{"userIds": []string{"fault-other"}, "type": "PROBE"})
		return st == http.StatusAccepted
	})

	// Every event acknowledged before the kill reaches the client: live,
	// or from the streams when the node resyncs after Redis is back (an
	// acknowledgement can reach the publisher while the Pub/Sub message to
	// the node is lost with the killed Redis).
	expectIDs(t, w, before, "events acknowledged before the kill")

	// The client gets what is published after the recovery; the hub may
	// close it with 1001 first (if the history could not be read back):
	// then it reconnects as a fresh start.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("no event published after the recovery reached the client")
		}
		id := th.publish("AFTER", nil, user)[user]
		if got, closed := nextOrClosed(w, id, 3*time.Second); got {
			break
		} else if closed {
			if code, reason := w.closed(time.Second); code != websocket.StatusGoingAway {
				t.Fatalf("client closed with %d %q after the recovery, want 1001", code, reason)
			}
			w = th.mustWS(tok, "")
			expectConnected(t, w, false, 0)
		}
	}
}

// nextOrClosed waits for the event id on w, skipping others; it reports
// whether it came, or else whether the connection ended.
func nextOrClosed(w *wsClient, id string, timeout time.Duration) (got, closed bool) {
	deadline := time.After(timeout)
	for {
		select {
		case e := <-w.ch:
			if e.ID == id {
				return true, false
			}
		case <-w.done:
			for {
				select {
				case e := <-w.ch:
					if e.ID == id {
						return true, false
					}
				default:
					return false, true
				}
			}
		case <-deadline:
			return false, false
		}
	}
}
