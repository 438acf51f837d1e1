package redisbroker_test

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
)

// startLimited starts a hub with a broker like startNode, with a per-user
// connection limit and the broker's slot lifetime.
func startLimited(t testing.TB, be backend, name string, perUser int, slotTTL time.Duration) node {
	t.Helper()
	bo := be.options(name, 100, time.Minute)
	bo.SlotTTL = slotTTL
	return startWith(t, bo,
		hub.Options{HistorySize: 100, HistoryTTL: time.Minute, MaxConnsPerUser: perUser, BrokerTimeout: 2 * time.Second, Node: name})
}

// register registers a connection of user; the test unregisters it when it
// ends.
func register(t testing.TB, h *hub.Hub, user, transport string) (*hub.Conn, error) {
	t.Helper()
	c, err := h.Register(hub.ConnInfo{UserID: user, Transport: transport}, &sink{})
	if err == nil {
		t.Cleanup(func() { h.Unregister(c) })
	}
	return c, err
}

// userLimit reports whether err is the per-user limit refusal.
func userLimit(err error) bool {
	var le *hub.LimitError
	return errors.As(err, &le) && le.Scope == "user" && le.Limit == 2 && errors.Is(err, hub.ErrTooManyConnections)
}

// The per-user limit counts a user's connections on every node, WebSocket
// and SSE together; a closed connection frees its slot for any node.
func TestConnLimitAcrossNodes(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		a := startLimited(t, be, "a", 2, 0)
		b := startLimited(t, be, "b", 2, 0)
		rc := be.client(t)

		a1, err := register(t, a.hub, "u1", hub.TransportWebSocket)
		if err != nil {
			t.Fatalf("first connection: %v", err)
		}
		if _, err := register(t, a.hub, "u1", hub.TransportSSE); err != nil {
			t.Fatalf("second connection: %v", err)
		}
		if n := rc.ZCard(bg(t), be.pfx+"uc:{u1}").Val(); n != 2 {
			t.Fatalf("slots of u1 = %d, want 2", n)
		}
		for _, tr := range []string{hub.TransportWebSocket, hub.TransportSSE} {
			if _, err := register(t, b.hub, "u1", tr); !userLimit(err) {
				t.Fatalf("third connection (%s) on the other node: err %v, want the user limit", tr, err)
			}
		}
		if n := b.hub.Stats().TotalConnections; n != 0 {
			t.Fatalf("refused connections still counted on b: %d", n)
		}
		if _, err := register(t, b.hub, "u2", hub.TransportWebSocket); err != nil {
			t.Fatalf("another user on b: %v", err)
		}

		a.hub.Unregister(a1)
		var b1 *hub.Conn
		hubtest.Eventually(t, 15*time.Second, "b to accept u1 once a connection closed", func() bool {
			c, err := register(t, b.hub, "u1", hub.TransportWebSocket)
			if err != nil && !userLimit(err) {
				t.Fatalf("register on b: %v", err)
			}
			b1 = c
			return err == nil
		})
		if _, err := register(t, a.hub, "u1", hub.TransportWebSocket); !userLimit(err) {
			t.Fatalf("third connection back on a: err %v, want the user limit", err)
		}
		b.hub.Unregister(b1)
		hubtest.Eventually(t, 15*time.Second, "the slot to be given back", func() bool { return rc.ZCard(bg(t), be.pfx+"uc:{u1}").Val() == 1 })
	})
}

// The slots of a node that stopped without giving them back (a crash)
// expire; those of a live node are renewed and do not.
func TestSlotsOfStoppedNodeExpire(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		const ttl = 900 * time.Millisecond
		a := startLimited(t, be, "a", 2, ttl)
		b := startLimited(t, be, "b", 2, ttl)
		rc := be.client(t)
		for range 2 {
			if _, err := register(t, a.hub, "u1", hub.TransportWebSocket); err != nil {
				t.Fatal(err)
			}
		}
		redisNow := func() float64 {
			tm, err := rc.Time(bg(t)).Result()
			if err != nil {
				t.Fatal(err)
			}
			return float64(tm.UnixMilli())
		}
		first, err := rc.ZRangeWithScores(bg(t), be.pfx+"uc:{u1}", 0, -1).Result()
		if err != nil || len(first) != 2 {
			t.Fatalf("slots = %v, %v", first, err)
		}
		expiry := max(first[0].Score, first[1].Score)
		hubtest.Eventually(t, 15*time.Second, "the first expiry to pass", func() bool { return redisNow() > expiry+float64(ttl/time.Millisecond) })
		if _, err := register(t, b.hub, "u1", hub.TransportWebSocket); !userLimit(err) {
			t.Fatalf("slots of a live node expired: err %v, want the user limit", err)
		}

		if err := a.broker.Close(); err != nil { // a crash: nothing unregistered
			t.Fatal(err)
		}
		hubtest.Eventually(t, 15*time.Second, "the stopped node's slots to expire", func() bool {
			_, err := register(t, b.hub, "u1", hub.TransportWebSocket)
			if err != nil && !userLimit(err) {
				t.Fatalf("register on b: %v", err)
			}
			return err == nil
		})
	})
}

// A broker failure while taking a slot refuses the connection as
// unavailable, not as over the limit: on one server Redis cut off, on a
// cluster the user's master killed (a cluster of the test's own).
func TestAcquireUnavailable(t *testing.T) {
	t.Parallel() // its own Redis
	check := func(t *testing.T, a node, user string) {
		_, err := register(t, a.hub, user, hub.TransportWebSocket)
		if !errors.Is(err, hub.ErrUnavailable) || errors.Is(err, hub.ErrTooManyConnections) {
			t.Fatalf("register during a cut: err %v, want ErrUnavailable", err)
		}
		if n := a.hub.Stats().TotalConnections; n != 0 {
			t.Fatalf("failed connection still counted: %d", n)
		}
	}
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		px := hubtest.StartProxy(t, hubtest.StartRedisServer(t).Addr())
		a := startLimited(t, backend{url: "redis://" + px.Addr() + "/0", pfx: "hub:"}, "a", 2, 0)
		px.Cut()
		check(t, a, "u1")
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		rc := hubtest.StartRedisCluster(t, 3)
		a := startLimited(t, backend{url: rc.URL(), pfx: clusterPrefix(t, rc), rc: rc}, "a", 2, 0)
		m := rc.MasterOf("{u1}")
		rc.Kill(m)
		check(t, a, "u1")
		// back, so that no dial to it is still being retried (go-redis
		// retries a failed dial in the background, once a second) when
		// the run ends and goleak looks
		rc.Start(m)
	})
}

// A connection that has received nothing yet when the node loses Redis
// still gets, once the node is back, every event published meanwhile by
// another node, in order, exactly once, then the live ones. (On a cluster
// the node loses one master: eachCut.)
func TestResyncFreshConnection(t *testing.T) {
	eachCut(t, 1000, func(t *testing.T, s *cutSetup) {
		a := s.a
		// an event before the connection: not for it
		s.publish(t, []string{s.u1}, "E", json.RawMessage(`-1`))
		cl := connect(t, a.hub, s.u1, "")
		if rec, missed := cl.connected(); rec || missed != 0 {
			t.Fatalf("hub.connected recovered=%v missed=%d", rec, missed)
		}

		s.cut()
		hubtest.Eventually(t, 15*time.Second, "Ready to fail", func() bool { return a.broker.Ready() != nil })
		var want []string
		for k := range 6 {
			if k == 3 {
				want = append(want, s.publish(t, nil, "B", json.RawMessage(`3`)))
			} else {
				want = append(want, s.publish(t, []string{s.u1, s.u2}, "E", json.RawMessage(strconv.Itoa(k))))
			}
		}
		s.doRestore()
		hubtest.Eventually(t, 30*time.Second, "Ready again", func() bool { return a.broker.Ready() == nil })
		want = append(want, s.publish(t, []string{s.u1}, "E", json.RawMessage(`6`)))

		got := idsOf(cl.waitEvents(len(want)))
		if cl.end != nil {
			t.Fatalf("connection closed: %v", *cl.end)
		}
		if !equal(got, want) {
			t.Fatalf("events %v, want %v", got, want)
		}
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Position is the id of the last event published ("<epoch>-0" before any),
// and Since reads what came after it.
func TestPositionAndSince(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	n := startNode(t, url, pfx, "a", 100, time.Minute)
	b := n.broker
	p0, err := b.Position(bg(t))
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := b.PublishUsers(bg(t), []string{"u1", "u2"}, "E", []byte(`1`), time.Now(), hub.EventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{id, id} // one event, one id for both users
	if want := ids[0][:lastDash(ids[0])] + "-0"; p0 != want {
		t.Fatalf("first position %q, want %q", p0, want)
	}
	p1, err := b.Position(bg(t))
	if err != nil {
		t.Fatal(err)
	}
	if p1 != ids[1] {
		t.Fatalf("position %q, want the last id %q", p1, ids[1])
	}
	all, _, err := b.PublishAll(bg(t), "B", []byte(`2`), time.Now(), hub.EventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		user   string
		pos    string
		max    int
		want   []string
		wantOK bool
	}{
		{"from the start", "u1", p0, 10, []string{ids[0], all}, true},
		{"from a position no stream holds", "u1", p1, 10, []string{all}, true},
		{"too many", "u1", p0, 1, nil, false},
		{"another epoch", "u1", "zzz-0", 10, nil, false},
		{"not a position", "u1", "nope", 10, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, ok, err := b.Since(bg(t), tt.user, tt.pos, tt.max)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.wantOK || !equal(idsOf(msgs), tt.want) {
				t.Fatalf("Since = %v, %v; want %v, %v", idsOf(msgs), ok, tt.want, tt.wantOK)
			}
		})
	}
	// An id that u1's streams do not hold (here another user's) is taken
	// by History as a position: nothing after it, complete.
	if _, _, err := b.PublishUsers(bg(t), []string{"u2"}, "E", []byte(`3`), time.Now(), hub.EventOptions{}); err != nil {
		t.Fatal(err)
	}
	p2, err := b.Position(bg(t))
	if err != nil {
		t.Fatal(err)
	}
	if msgs, ok, err := b.Since(bg(t), "u1", p2, 10); err != nil || !ok || len(msgs) != 0 {
		t.Fatalf("Since the last position = %v, %v, %v; want nothing, complete", idsOf(msgs), ok, err)
	}
	if msgs, ok, err := b.History(bg(t), "u1", p2, 10); err != nil || !ok || len(msgs) != 0 {
		t.Fatalf("History from an id u1 does not hold = %v, %v, %v; want nothing, complete", idsOf(msgs), ok, err)
	}
}
