package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/internal/hubtest"
)

func bg(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		give redisbroker.Options
	}{
		{"bad url", redisbroker.Options{URL: "http://x"}},
		{"negative size", redisbroker.Options{URL: "redis://127.0.0.1:6379", HistorySize: -1}},
		{"negative ttl", redisbroker.Options{URL: "redis://127.0.0.1:6379", HistoryTTL: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := redisbroker.New(tt.give); err == nil {
				t.Fatal("New succeeded, want an error")
			}
		})
	}
}

func TestStartFailsWhenUnreachable(t *testing.T) {
	b, err := redisbroker.New(redisbroker.Options{URL: "redis://127.0.0.1:1/0", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New(hub.Options{Broker: b, Logger: quiet})
	if err := b.Start(bg(t), h); err == nil {
		b.Close()
		t.Fatal("Start succeeded without Redis")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close after failed Start: %v", err)
	}
}

// The frame built by the Lua script is byte for byte the hub's envelope,
// live and from the history.
func TestFrameMatchesEncodeEnvelope(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		n := be.node(t, "a", 100, time.Minute)
		cl := connect(t, n.hub, "u1", "")
		tests := []struct {
			name    string
			payload string
		}{
			{"object", `{"draftId":42,"s":"x"}`},
			{"string with escapes", `"quote \" backslash \\ newline \n tab \t"`},
			{"null", `null`},
			{"array", `[1,2.5,true,false]`},
			{"unicode", `{"k":"héllo ✓ \u2028"}`},
			{"percent signs", `"%d %s %%"`},
		}
		ts := time.Now().Add(-time.Second).In(time.FixedZone("x", 3600)) // not UTC, sub-millisecond
		var first string
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				id, _, err := n.broker.PublishUsers(bg(t), []string{"u1"}, "T.x:y-z", []byte(tt.payload), ts, hub.EventOptions{})
				if err != nil {
					t.Fatal(err)
				}
				ids := []string{id}
				if i == 0 {
					first = ids[0]
				}
				got := cl.waitEvents(i + 1)[i]
				want := hub.EncodeEnvelope(ids[0], "T.x:y-z", hub.EventOptions{}, []byte(tt.payload), ts)
				if string(got.Frame) != string(want) {
					t.Errorf("live frame\n got %s\nwant %s", got.Frame, want)
				}
				if got.ID != ids[0] || got.Type != "T.x:y-z" || !got.Accepted.Equal(ts.Truncate(time.Millisecond)) {
					t.Errorf("message = %q %q %v", got.ID, got.Type, got.Accepted)
				}
				if !strings.Contains(string(got.SSE), "id: "+ids[0]+"\n") {
					t.Errorf("SSE record %q lacks the id", got.SSE)
				}
			})
		}
		// The same frames come back from the history (on one server
		// through History, on both through a device that resumes).
		live := cl.events()
		r := connect(t, n.hub, "u1", first)
		if rec, missed := r.connected(); !rec || missed != len(live)-1 {
			t.Fatalf("resume: recovered %v missed %d, want true %d", rec, missed, len(live)-1)
		}
		hists := [][]*hub.Message{r.waitEvents(len(live) - 1)}
		if !be.cluster() {
			hist, ok, err := n.broker.History(bg(t), "u1", first, 100)
			if err != nil || !ok {
				t.Fatalf("History = %v, %v", ok, err)
			}
			hists = append(hists, hist)
		}
		for _, hist := range hists {
			if len(hist) != len(live)-1 {
				t.Fatalf("history has %d events, want %d", len(hist), len(live)-1)
			}
			for i, m := range hist {
				if string(m.Frame) != string(live[i+1].Frame) || m.Seq() != live[i+1].Seq() {
					t.Errorf("history[%d] = %s, live %s", i, m.Frame, live[i+1].Frame)
				}
			}
		}
	})
}

func TestThreeNodes(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		nodes := []node{
			be.node(t, "a", 1000, time.Minute),
			be.node(t, "b", 1000, time.Minute),
			be.node(t, "c", 1000, time.Minute),
		}
		var conns []*client
		for _, n := range nodes {
			conns = append(conns, connect(t, n.hub, "u1", ""))
		}
		other := connect(t, nodes[2].hub, "u2", "")

		// A publish on node a reaches the user on every node, same id; u2 gets
		// nothing.
		evs, err := nodes[0].hub.Publish(bg(t), []string{"u1"}, "Note", json.RawMessage(`{"n":1}`))
		if err != nil {
			t.Fatal(err)
		}
		for i, cl := range conns {
			got := cl.waitEvents(1)
			if got[0].ID != evs[0].ID {
				t.Errorf("conn %d got id %s, want %s", i, got[0].ID, evs[0].ID)
			}
		}
		// A broadcast from node b reaches every connection.
		id, err := nodes[1].hub.Broadcast(bg(t), "Ann", json.RawMessage(`"hi"`))
		if err != nil {
			t.Fatal(err)
		}
		for i, cl := range append(conns, other) {
			want := 2
			if cl == other {
				want = 1
			}
			got := cl.waitEvents(want)
			if got[want-1].ID != id || got[want-1].Type != "Ann" {
				t.Errorf("conn %d last event %s %s, want broadcast %s", i, got[want-1].ID, got[want-1].Type, id)
			}
		}
		if len(other.events()) != 1 {
			t.Errorf("u2 received %d events, want only the broadcast", len(other.events()))
		}

		// Concurrent publishing from the three nodes: every connection gets
		// every event, in id order, the same sequence.
		const per = 60
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range per {
					var err error
					if k%10 == 0 {
						_, err = n.hub.Broadcast(context.Background(), "B", json.RawMessage(fmt.Sprint(k)))
					} else {
						_, err = n.hub.Publish(context.Background(), []string{"u1", "u2"}, "P", json.RawMessage(fmt.Sprintf(`[%d,%d]`, i, k)))
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		var ref []string
		for i, cl := range conns {
			got := cl.waitEvents(2 + 3*per)
			if len(got) != 2+3*per {
				t.Fatalf("conn %d got %d events, want %d", i, len(got), 2+3*per)
			}
			for k := 1; k < len(got); k++ {
				if got[k].Seq() <= got[k-1].Seq() {
					t.Fatalf("conn %d: event %d (%s) after %s: out of order", i, k, got[k].ID, got[k-1].ID)
				}
			}
			if i == 0 {
				ref = idsOf(got)
			} else if !slices.Equal(idsOf(got), ref) {
				t.Errorf("conn %d got another sequence than conn 0", i)
			}
		}
	})
}

func TestResumeOnAnotherNode(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		const size = 5
		a := be.node(t, "a", size, time.Minute)
		b := be.node(t, "b", size, time.Minute)
		c := be.node(t, "c", size, time.Minute)

		ca := connect(t, a.hub, "u1", "")
		evs, err := a.hub.Publish(bg(t), []string{"u1"}, "E", json.RawMessage(`0`))
		if err != nil {
			t.Fatal(err)
		}
		ca.waitEvents(1)
		last := evs[0].ID
		a.hub.Unregister(ca.c)

		// Published on c while u1 has no connection: two personal events, a
		// broadcast and another user's event in between.
		var want []string
		for k, kind := range []string{"u1", "all", "u2", "u1"} {
			switch kind {
			case "all":
				id, err := c.hub.Broadcast(bg(t), "B", json.RawMessage(fmt.Sprint(k)))
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, id)
			default:
				e, err := c.hub.Publish(bg(t), []string{kind}, "E", json.RawMessage(fmt.Sprint(k)))
				if err != nil {
					t.Fatal(err)
				}
				if kind == "u1" {
					want = append(want, e[0].ID)
				}
			}
		}

		cb := connect(t, b.hub, "u1", last)
		rec, missed := cb.connected()
		if !rec || missed != len(want) {
			t.Fatalf("hub.connected recovered=%v missed=%d, want true %d", rec, missed, len(want))
		}
		if got := idsOf(cb.waitEvents(len(want))); !slices.Equal(got, want) {
			t.Fatalf("replayed %v, want %v", got, want)
		}
		// Live after hub.connected.
		e, err := c.hub.Publish(bg(t), []string{"u1"}, "E", json.RawMessage(`9`))
		if err != nil {
			t.Fatal(err)
		}
		if got := cb.waitEvents(len(want) + 1); got[len(want)].ID != e[0].ID {
			t.Fatalf("live event %s, want %s", got[len(want)].ID, e[0].ID)
		}
		cb.poll()
		if n := len(cb.events()); n != len(want)+1 {
			t.Fatalf("got %d events, want %d (duplicates?)", n, len(want)+1)
		}
		newest := e[0].ID

		type resumeCase struct {
			name      string
			last      string
			recovered bool
			missed    int
		}
		var tests []resumeCase
		u2ID := ""
		{ // an id of u2's event, not held for u1
			e, err := c.hub.Publish(bg(t), []string{"u2"}, "E", json.RawMessage(`1`))
			if err != nil {
				t.Fatal(err)
			}
			u2ID = e[0].ID
		}
		if !be.cluster() {
			epoch, seq, _ := hub.ParseID(newest)
			tests = []resumeCase{
				{"newest id", newest, true, 0},
				{"unknown seq in the future", fmt.Sprintf("%s-%d", epoch, seq+1000), false, 0},
				// an id u1's streams do not hold is taken as a position (as a
				// superseded or volatile id must be): nothing of u1's came after
				{"another user's id", u2ID, true, 0},
				{"malformed", "not-an-id", false, 0},
				{"other epoch", fmt.Sprintf("ZZZZ-%d", seq), false, 0},
				{"fresh start", "", false, 0},
			}
		} else {
			// on a cluster an id resolves through the user's own id index
			// (superseded and volatile ids are in it): another user's id is
			// unknown to u1, as is a position ahead of u1's order
			pos := connectedPosition(connect(t, c.hub, "u1", ""))
			key, err := strconv.ParseUint(strings.TrimPrefix(pos, "p"), 10, 64)
			if err != nil {
				t.Fatalf("position %q: %v", pos, err)
			}
			tests = []resumeCase{
				{"newest id", newest, true, 0},
				{"a position", pos, true, 0},
				{"unknown key in the future", fmt.Sprintf("p%d", key+2_000_000_000), false, 0},
				{"another user's id", u2ID, false, 0},
				{"malformed", "not-an-id", false, 0},
				{"an id of the other mode", "ZZZZ-5", false, 0},
				{"fresh start", "", false, 0},
			}
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cl := connect(t, b.hub, "u1", tt.last)
				rec, missed := cl.connected()
				if rec != tt.recovered || missed != tt.missed {
					t.Fatalf("recovered=%v missed=%d, want %v %d", rec, missed, tt.recovered, tt.missed)
				}
				b.hub.Unregister(cl.c)
			})
		}

		// More than HistorySize events after the id: not recovered.
		for k := range size + 1 {
			if _, err := c.hub.Publish(bg(t), []string{"u1"}, "E", json.RawMessage(fmt.Sprint(k))); err != nil {
				t.Fatal(err)
			}
		}
		cl := connect(t, b.hub, "u1", newest)
		if rec, missed := cl.connected(); rec || missed != 0 {
			t.Fatalf("after %d events: recovered=%v missed=%d, want false 0", size+1, rec, missed)
		}
	})
}

// History's proof, case by case, on the broker itself.
func TestHistory(t *testing.T) {
	url := hubtest.RedisURL(t)
	now := time.Now()
	type pub struct {
		all bool
		age time.Duration
	}
	tests := []struct {
		name string
		size int
		pubs []pub // to u1 unless all; ids[i] is the id of pubs[i]
		from int   // index of the last id
		max  int
		want []int // indexes of the events returned
		ok   bool
	}{
		{"after the first", 10, []pub{{}, {}, {all: true}, {}}, 0, 10, []int{1, 2, 3}, true},
		{"from a broadcast", 10, []pub{{}, {all: true}, {}}, 1, 10, []int{2}, true},
		{"nothing missed", 10, []pub{{}, {}}, 1, 10, nil, true},
		{"more than max", 10, []pub{{}, {}, {}, {}}, 0, 2, nil, false},
		{"exactly max", 10, []pub{{}, {}, {}}, 0, 2, []int{1, 2}, true},
		{"trimmed right after the id is still provable", 2, []pub{{}, {}, {}}, 1, 10, []int{2}, true},
		{"trimmed beyond the id", 2, []pub{{}, {}, {}, {}}, 0, 10, nil, false},
		{"last id older than the ttl", 10, []pub{{age: 2 * time.Minute}, {}}, 0, 10, nil, false},
		{"broadcast stream trimmed beyond the id", 2, []pub{{}, {all: true}, {all: true}, {all: true}}, 0, 10, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pfx := hubtest.RedisPrefix(t, url)
			n := startNode(t, url, pfx, "a", tt.size, time.Minute)
			var ids []string
			for _, p := range tt.pubs {
				ts := now.Add(-p.age)
				if p.all {
					id, _, err := n.broker.PublishAll(bg(t), "B", []byte(`1`), ts, hub.EventOptions{})
					if err != nil {
						t.Fatal(err)
					}
					ids = append(ids, id)
				} else {
					got, _, err := n.broker.PublishUsers(bg(t), []string{"u1"}, "E", []byte(`1`), ts, hub.EventOptions{})
					if err != nil {
						t.Fatal(err)
					}
					ids = append(ids, got)
				}
			}
			msgs, ok, err := n.broker.History(bg(t), "u1", ids[tt.from], tt.max)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, i := range tt.want {
				want = append(want, ids[i])
			}
			if ok != tt.ok || !slices.Equal(idsOf(msgs), want) {
				t.Fatalf("History = %v %v, want %v %v", idsOf(msgs), ok, want, tt.ok)
			}
		})
	}
}

// Without history the broker still publishes, and resume is never proven.
func TestNoHistory(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		n := be.node(t, "a", 0, 0)
		cl := connect(t, n.hub, "u1", "")
		id, _, err := n.broker.PublishUsers(bg(t), []string{"u1"}, "E", []byte(`1`), time.Now(), hub.EventOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids := []string{id}
		if got := cl.waitEvents(1); got[0].ID != ids[0] {
			t.Fatalf("got %s, want %s", got[0].ID, ids[0])
		}
		if !be.cluster() {
			if _, ok, _ := n.broker.History(bg(t), "u1", ids[0], 10); ok {
				t.Fatal("History proved a resume without history")
			}
		}
		if rec, _ := connect(t, n.hub, "u1", ids[0]).connected(); rec {
			t.Fatal("a resume without history: recovered")
		}
		streams := []string{be.pfx + "u:*"}
		if be.cluster() {
			streams = []string{be.pfx + "us:*", be.pfx + "ui:*", be.pfx + "as:*"}
		}
		for _, pat := range streams {
			if keys := be.keys(t, pat); len(keys) != 0 {
				t.Fatalf("streams %v, want none", keys)
			}
		}
	})
}

// Streams expire when idle; the epoch does not.
func TestStreamExpiry(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	n := startNode(t, url, pfx, "a", 10, 90*time.Second)
	if _, _, err := n.broker.PublishUsers(bg(t), []string{"u1"}, "E", []byte(`1`), time.Now(), hub.EventOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.broker.PublishAll(bg(t), "E", []byte(`1`), time.Now(), hub.EventOptions{}); err != nil {
		t.Fatal(err)
	}
	rc := hubtest.RedisClient(t, url)
	for _, pat := range []string{pfx + "u:{u1}:*", pfx + "a:*", pfx + "uh:{u1}:*", pfx + "ah:*"} {
		keys, err := rc.Keys(bg(t), pat).Result()
		if err != nil || len(keys) != 1 {
			t.Fatalf("keys %s = %v, %v", pat, keys, err)
		}
		ttl := rc.PTTL(bg(t), keys[0]).Val()
		if ttl <= 0 || ttl > 90*time.Second {
			t.Errorf("%s ttl %v, want (0, 90s]", keys[0], ttl)
		}
	}
	if ttl := rc.PTTL(bg(t), pfx+"meta:2").Val(); ttl != -1 {
		t.Errorf("meta ttl %v, want none", ttl)
	}
}

// When Redis lost its data, a new epoch is made: old ids are unknown.
func TestLostDataMakesNewEpoch(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	n := startNode(t, url, pfx, "a", 10, time.Minute)
	first, _, err := n.broker.PublishUsers(bg(t), []string{"u1"}, "E", []byte(`1`), time.Now(), hub.EventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{first}
	if _, _, err := n.broker.PublishUsers(bg(t), []string{"u1"}, "E", []byte(`1`), time.Now(), hub.EventOptions{}); err != nil {
		t.Fatal(err)
	}
	rc := hubtest.RedisClient(t, url)
	keys, _ := rc.Keys(bg(t), pfx+"*").Result()
	rc.Del(bg(t), keys...)
	after, _, err := n.broker.PublishUsers(bg(t), []string{"u1"}, "E", []byte(`1`), time.Now(), hub.EventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e1, _, _ := hub.ParseID(ids[0])
	e2, _, _ := hub.ParseID(after)
	if e1 == e2 {
		t.Fatalf("epoch %s kept after the data was lost", e1)
	}
	if _, ok, _ := n.broker.History(bg(t), "u1", ids[0], 10); ok {
		t.Fatal("an id of the lost epoch was recovered")
	}
}

func TestDisconnectAcrossNodes(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		a := be.node(t, "a", 10, time.Minute)
		b := be.node(t, "b", 10, time.Minute)
		c := be.node(t, "c", 10, time.Minute)
		ca, cb := connect(t, a.hub, "u1", ""), connect(t, b.hub, "u1", "")
		keep := connect(t, b.hub, "u2", "")
		if n := c.hub.DisconnectUser("u1"); n != 0 {
			t.Errorf("DisconnectUser on c closed %d local connections, want 0", n)
		}
		for name, cl := range map[string]*client{"a": ca, "b": cb} {
			hubtest.Eventually(t, 15*time.Second, "close on "+name, func() bool { cl.poll(); return cl.end != nil })
			if *cl.end != hub.ReasonDisconnected {
				t.Errorf("conn on %s closed with %v, want %v", name, *cl.end, hub.ReasonDisconnected)
			}
		}
		keep.poll()
		if keep.end != nil {
			t.Errorf("u2 was closed: %v", *keep.end)
		}
	})
}

func TestClusterStats(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		a := be.node(t, "a", 10, time.Minute)
		b := be.node(t, "b", 10, time.Minute)
		connect(t, a.hub, "u1", "")
		connect(t, a.hub, "u2", "")
		connect(t, b.hub, "u1", "")
		_, err := b.hub.Register(hub.ConnInfo{UserID: "u3", Transport: hub.TransportSSE}, &sink{})
		if err != nil {
			t.Fatal(err)
		}
		// u1 is on both nodes: one user of three
		want := redisbroker.ClusterTotals{Nodes: 2, TotalConnections: 4, ActiveUsers: 3,
			Connections: map[string]int{hub.TransportWebSocket: 3, hub.TransportSSE: 1}}
		var got redisbroker.ClusterTotals
		hubtest.Eventually(t, 15*time.Second, "cluster stats", func() bool {
			v, err := a.broker.ClusterStats(bg(t))
			if err != nil {
				t.Fatal(err)
			}
			got = v.(redisbroker.ClusterTotals)
			totals := got
			totals.Members = nil // checked below
			return fmt.Sprint(totals) == fmt.Sprint(want)
		})
		buf, _ := json.Marshal(got)
		if !strings.Contains(string(buf), `"nodes":2,"totalConnections":4,"activeUsers":3,"connections":{`) {
			t.Errorf("json %s", buf)
		}
		// Members: each node's own stats, by name.
		if m := got.Members; len(m) != 2 || m[0].Node != "a" || m[0].TotalConnections != 2 || m[0].Connections[hub.TransportWebSocket] != 2 ||
			m[1].Node != "b" || m[1].ActiveUsers != 2 || m[1].Connections[hub.TransportSSE] != 1 || time.Since(m[1].ReportedAt) > 10*time.Second {
			t.Errorf("members %+v", m)
		}
		if !strings.Contains(string(buf), `"members":[{"totalConnections":2,"activeUsers":2,"connections":{`) || !strings.Contains(string(buf), `"node":"b"`) ||
			!strings.Contains(string(buf), `"reportedAt":"`) {
			t.Errorf("json %s", buf)
		}
		// A closed node's stats stop counting.
		if err := b.broker.Close(); err != nil {
			t.Fatal(err)
		}
		v, err := a.broker.ClusterStats(bg(t))
		if err != nil {
			t.Fatal(err)
		}
		if got := v.(redisbroker.ClusterTotals); got.Nodes != 1 || got.TotalConnections != 2 || got.ActiveUsers != 2 || len(got.Members) != 1 || got.Members[0].Node != "a" {
			t.Errorf("after closing b: %+v, want 1 node 2 connections 2 users", got)
		}
	})
}

// TestClusterActiveUsers checks that the cluster's activeUsers counts each
// user once however many nodes hold a connection of theirs, adds up the
// users of different nodes, and drops a user who left every node at the
// nodes' next report.
func TestClusterActiveUsers(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		a := be.node(t, "a", 0, 0)
		b := be.node(t, "b", 0, 0)
		c := be.node(t, "c", 0, 0)
		// users waits until activeUsers is want, give or take slack
		users := func(want, slack int, what string) {
			t.Helper()
			got := -1
			hubtest.Eventually(t, 15*time.Second, what, func() bool {
				v, err := c.broker.ClusterStats(bg(t))
				if err != nil {
					t.Fatal(err)
				}
				tot := v.(redisbroker.ClusterTotals)
				got = tot.ActiveUsers
				return tot.Nodes == 3 && got >= want-slack && got <= want+slack
			})
			t.Logf("%s: activeUsers %d", what, got)
		}
		a1 := connect(t, a.hub, "u1", "")
		b1 := connect(t, b.hub, "u1", "")
		users(1, 0, "u1 on a and b counts once")
		connect(t, a.hub, "u2", "")
		connect(t, b.hub, "u3", "")
		c4 := connect(t, c.hub, "u4", "")
		connect(t, c.hub, "u4", "")
		users(4, 0, "u1 on a and b, u2 on a, u3 on b, u4 twice on c: four users")
		b.hub.Unregister(b1.c)
		users(4, 0, "u1 still on a")
		a.hub.Unregister(a1.c)
		users(3, 0, "u1 gone from every node")
		c.hub.Unregister(c4.c)
		users(3, 0, "u4 still on c once")
		// many users spread over the nodes, each on two of them
		for i := range 300 {
			u := fmt.Sprintf("m%d", i)
			connect(t, []node{a, b, c}[i%3].hub, u, "")
			connect(t, []node{a, b, c}[(i+1)%3].hub, u, "")
		}
		// a HyperLogLog is exact for a few users, within about 1% beyond
		// (the nodes' sum would be 606)
		users(303, 6, "300 more users, each on two nodes")
	})
}

// Subscribe and Unsubscribe of the same user in quick succession leave the
// subscription in the state the last call asked for.
func TestSubscribeChurn(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		a := be.node(t, "a", 10, time.Minute)
		pub := be.node(t, "p", 10, time.Minute)
		for range 50 {
			cl := connect(t, a.hub, "u1", "")
			a.hub.Unregister(cl.c)
		}
		cl := connect(t, a.hub, "u1", "")
		evs, err := pub.hub.Publish(bg(t), []string{"u1"}, "E", json.RawMessage(`1`))
		if err != nil {
			t.Fatal(err)
		}
		if got := cl.waitEvents(1); got[0].ID != evs[0].ID {
			t.Fatalf("got %s, want %s", got[0].ID, evs[0].ID)
		}
		if err := a.broker.Ready(); err != nil {
			t.Fatalf("Ready: %v", err)
		}
	})
}
