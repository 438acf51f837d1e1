package redisbroker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/internal/hubtest"
)

// clusterNodes starts a real three-master Redis Cluster (shared by the
// tests of one run) and n hub nodes on it under a prefix of the test's own.
func clusterNodes(t *testing.T, n, size int) (*hubtest.RedisCluster, []node) {
	t.Helper()
	rc := sharedCluster(t)
	pfx := fmt.Sprintf("t%d%s:", time.Now().UnixNano()%1e9, strings.ToLower(strings.ReplaceAll(t.Name(), "/", "_")))
	var nodes []node
	for i := range n {
		name := string(rune('a' + i))
		nodes = append(nodes, startWith(t,
			redisbroker.Options{URL: rc.URL(), Cluster: true, Prefix: pfx, Node: name, HistorySize: size, HistoryTTL: time.Minute},
			hub.Options{HistorySize: size, HistoryTTL: time.Minute, Node: name}))
	}
	return rc, nodes
}

// sharedCluster starts a three-master cluster for t.
func sharedCluster(t *testing.T) *hubtest.RedisCluster {
	return hubtest.StartRedisCluster(t, 3)
}

// usersOn returns one user per master of rc, each named after pfx.
func usersOn(t *testing.T, rc *hubtest.RedisCluster, pfx string, masters int) []string {
	t.Helper()
	out := make([]string, masters)
	found := 0
	for i := 0; found < masters && i < 10000; i++ {
		u := fmt.Sprintf("%s%d", pfx, i)
		m := rc.MasterOf("{" + u + "}")
		if out[m] == "" {
			out[m] = u
			found++
		}
	}
	if found < masters {
		t.Fatalf("no user on every master")
	}
	return out
}

func publish(t *testing.T, h *hub.Hub, typ string, users ...string) string {
	t.Helper()
	evs, err := h.Publish(bg(t), users, typ, json.RawMessage(`{"n":1}`))
	if err != nil {
		t.Fatalf("publish %s: %v", typ, err)
	}
	for _, e := range evs[1:] {
		if e.ID != evs[0].ID {
			t.Fatalf("one publish, two ids: %q, %q", evs[0].ID, e.ID)
		}
	}
	return evs[0].ID
}

func broadcast(t *testing.T, h *hub.Hub, typ string) string {
	t.Helper()
	ev, err := h.BroadcastAll(bg(t), typ, json.RawMessage(`{"n":2}`))
	if err != nil {
		t.Fatalf("broadcast %s: %v", typ, err)
	}
	return ev.ID
}

func typesOf(msgs []*hub.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Type
	}
	return out
}

// On a three-master cluster with three hub nodes, users on every master:
// a user's devices on two nodes get every event published through any
// node, its own and the broadcasts, with the same ids and in the same
// order; a publish to several users gives them one id; a device that
// reconnects on another node with its last id gets exactly what it missed,
// in that order, recovered; one that reconnects with its position does too.
func TestClusterThreeNodes(t *testing.T) {
	rc, ns := clusterNodes(t, 3, 100)
	a, b, c := ns[0], ns[1], ns[2]
	users := usersOn(t, rc, "u", 3)

	var onA, onB []*client
	for _, u := range users {
		x := connect(t, a.hub, u, "")
		x.connected()
		y := connect(t, b.hub, u, "")
		y.connected()
		onA, onB = append(onA, x), append(onB, y)
	}
	// a fresh device elsewhere, which keeps its position
	fresh := connect(t, c.hub, users[0], "")
	pos := connectedPosition(fresh)
	if !strings.HasPrefix(pos, "p") {
		t.Fatalf("position %q", pos)
	}
	c.hub.Unregister(fresh.c)

	// interleave own events and broadcasts, published through all nodes
	var want [][]string
	for range users {
		want = append(want, nil)
	}
	pubs := []node{a, b, c}
	for i := range 30 {
		n := pubs[i%3]
		switch i % 5 {
		case 0, 3:
			typ := fmt.Sprintf("ALL_%d", i)
			broadcast(t, n.hub, typ)
			for j := range users {
				want[j] = append(want[j], typ)
			}
		case 1:
			typ := fmt.Sprintf("MANY_%d", i)
			publish(t, n.hub, typ, users...)
			for j := range users {
				want[j] = append(want[j], typ)
			}
		default:
			j := i % len(users)
			typ := fmt.Sprintf("ONE_%d", i)
			publish(t, n.hub, typ, users[j])
			want[j] = append(want[j], typ)
		}
	}
	for j := range users {
		ga := onA[j].waitEvents(len(want[j]))
		gb := onB[j].waitEvents(len(want[j]))
		if !slices.Equal(idsOf(ga), idsOf(gb)) {
			t.Fatalf("user %d: node a got %v, node b %v", j, idsOf(ga), idsOf(gb))
		}
		// the order is the publish order (each publish was answered
		// before the next was made)
		if got := typesOf(ga); !slices.Equal(got, want[j]) {
			t.Fatalf("user %d got %v, want %v", j, got, want[j])
		}
	}

	// resume on another node from an id in the middle: exactly the rest
	for j, u := range users {
		got := onA[j].events()
		mid := len(got) / 2
		r := connect(t, c.hub, u, got[mid-1].ID)
		rec, missed := r.connected()
		if !rec || missed != len(got)-mid {
			t.Fatalf("user %d resumed from %s: recovered %v missed %d, want true %d", j, got[mid-1].ID, rec, missed, len(got)-mid)
		}
		if ids := idsOf(r.waitEvents(len(got) - mid)); !slices.Equal(ids, idsOf(got[mid:])) {
			t.Fatalf("user %d replay %v, want %v", j, ids, idsOf(got[mid:]))
		}
	}
	// from the fresh device's position, on yet another node: everything
	r := connect(t, a.hub, users[0], pos)
	rec, missed := r.connected()
	if !rec || missed != len(want[0]) {
		t.Fatalf("resume from position: recovered %v missed %d, want true %d", rec, missed, len(want[0]))
	}
	if got := typesOf(r.waitEvents(len(want[0]))); !slices.Equal(got, want[0]) {
		t.Fatalf("replay from position %v, want %v", got, want[0])
	}
}

// Devices, connections, disconnect and stats are cluster-wide.
func TestClusterRegistries(t *testing.T) {
	rc, ns := clusterNodes(t, 3, 100)
	a, b, c := ns[0], ns[1], ns[2]
	users := usersOn(t, rc, "d", 3)
	x := connect(t, a.hub, users[0], "")
	x.connected()
	y := connect(t, b.hub, users[0], "")
	y.connected()
	z := connect(t, c.hub, users[1], "")
	z.connected()
	if got := devicesOf(t, c.hub, users...); !slices.Equal(got, []int{2, 1, 0}) {
		t.Fatalf("devices %v, want [2 1 0]", got)
	}
	all, err := a.hub.BroadcastAll(bg(t), "D", nil)
	if err != nil || all.Devices != 3 {
		t.Fatalf("broadcast: %+v %v, want 3 devices", all, err)
	}
	conns, err := c.hub.Connections(bg(t), users[0])
	if err != nil || len(conns) != 2 {
		t.Fatalf("connections of %s: %v %v, want 2", users[0], conns, err)
	}
	hubtest.Eventually(t, 10*time.Second, "cluster stats", func() bool {
		st, err := c.broker.ClusterStats(bg(t))
		if err != nil {
			return false
		}
		tot := st.(redisbroker.ClusterTotals)
		return tot.Nodes == 3 && tot.TotalConnections == 3 && tot.ActiveUsers == 2
	})
	if n := c.hub.DisconnectUser(users[0]); n != 0 {
		t.Fatalf("closed %d on a node without the user's connections", n)
	}
	for _, cl := range []*client{x, y} {
		hubtest.Eventually(t, 10*time.Second, "disconnected", func() bool { cl.poll(); return cl.end != nil })
		if *cl.end != hub.ReasonDisconnected {
			t.Fatalf("closed with %v, want disconnected", *cl.end)
		}
	}
	z.poll()
	if z.end != nil {
		t.Fatalf("another user's connection closed: %v", *z.end)
	}
}

// A master killed mid-stream and restarted empty (no persistence, no
// replica): while it is down publishes fail with ErrUnavailable (nothing
// published) and the nodes are not ready; once it is back they are ready
// again and resync. The devices of users whose history was on the lost
// master are closed to resume, and their resume says recovered:false; the
// others keep their connections and miss nothing.
func TestClusterMasterKilled(t *testing.T) {
	rc, ns := clusterNodes(t, 2, 100)
	a, b := ns[0], ns[1]
	allMaster := rc.MasterOf("{all}")
	users := usersOn(t, rc, "k", 3)
	lost := (allMaster + 1) % 3 // a master without the broadcasts
	var onA, onB []*client
	for _, u := range users {
		x := connect(t, a.hub, u, "")
		x.connected()
		y := connect(t, b.hub, u, "")
		y.connected()
		onA, onB = append(onA, x), append(onB, y)
	}
	for i := range users {
		publish(t, b.hub, "BEFORE", users[i])
	}
	broadcast(t, a.hub, "BEFORE_ALL")
	for i := range users {
		onA[i].waitEvents(2)
		onB[i].waitEvents(2)
	}

	rc.Kill(lost)
	hubtest.Eventually(t, 15*time.Second, "nodes not ready", func() bool {
		return a.broker.Ready() != nil && b.broker.Ready() != nil
	})
	// the other masters flag it failing: the cluster refuses every slot
	// (CLUSTERDOWN), and keeps refusing for a moment after it is back
	other := rc.NodeClient((lost + 1) % 3)
	hubtest.Eventually(t, 15*time.Second, "cluster_state:fail", func() bool {
		info, err := other.ClusterInfo(bg(t)).Result()
		return err == nil && strings.Contains(info, "cluster_state:fail")
	})
	if _, err := a.hub.Publish(bg(t), []string{users[lost]}, "DURING", nil); !errors.Is(err, hub.ErrUnavailable) && !errors.Is(err, hub.ErrOutcomeUnknown) {
		t.Fatalf("publish to a user of the killed master: %v, want unavailable", err)
	}
	rc.Start(lost)
	hubtest.Eventually(t, 30*time.Second, "nodes ready again", func() bool {
		return a.broker.Ready() == nil && b.broker.Ready() == nil
	})

	// the lost master's users: closed to resume, told recovered:false
	for _, cl := range []*client{onA[lost], onB[lost]} {
		hubtest.Eventually(t, 15*time.Second, "lost user's device closed", func() bool { cl.poll(); return cl.end != nil })
		last := cl.events()[len(cl.events())-1].ID
		r := connect(t, a.hub, users[lost], last)
		if rec, _ := r.connected(); rec {
			t.Fatalf("resume from %s after its master lost the history: recovered", last)
		}
	}
	// the others stay and get what comes next
	publishAll := func(typ string) {
		hubtest.Eventually(t, 15*time.Second, "publish after the restart", func() bool {
			_, err := b.hub.Publish(bg(t), users, typ, nil)
			return err == nil
		})
	}
	publishAll("AFTER")
	for i := range users {
		if i == lost {
			continue
		}
		for _, cl := range []*client{onA[i], onB[i]} {
			got := typesOf(cl.waitEvents(3))
			if !slices.Equal(got, []string{"BEFORE", "BEFORE_ALL", "AFTER"}) {
				t.Fatalf("user %d got %v", i, got)
			}
			if cl.end != nil {
				t.Fatalf("user %d's device closed: %v", i, *cl.end)
			}
		}
	}
}

// A user who only gets broadcasts keeps a resumable history while
// connected, however long: the user's meta hash (what proves the user's
// own history complete) is renewed with the connection slots, so a device
// that drops after the TTL of its last own event resumes recovered:true
// from a recent broadcast.
func TestClusterMetaLivesWhileConnected(t *testing.T) {
	rc := sharedCluster(t)
	const ttl = 3 * time.Second
	pfx := fmt.Sprintf("m%d:", time.Now().UnixNano()%1e9)
	bo := redisbroker.Options{URL: rc.URL(), Cluster: true, Prefix: pfx, Node: "a", HistorySize: 100, HistoryTTL: ttl, SlotTTL: 900 * time.Millisecond}
	a := startWith(t, bo, hub.Options{HistorySize: 100, HistoryTTL: ttl, Node: "a"})
	t0 := time.Now()
	x := connect(t, a.hub, "lonely", "")
	x.connected()
	// past the TTL counted from the registration
	hubtest.Eventually(t, 10*time.Second, "the TTL to pass", func() bool { return time.Since(t0) > ttl+500*time.Millisecond })
	id := broadcast(t, a.hub, "LATE")
	if got := x.waitEvents(1); got[0].ID != id {
		t.Fatalf("got %s, want %s", got[0].ID, id)
	}
	a.hub.Unregister(x.c)
	r := connect(t, a.hub, "lonely", id)
	if rec, missed := r.connected(); !rec || missed != 0 {
		t.Fatalf("resume from a broadcast %v old: recovered %v missed %d, want true 0", time.Since(t0), rec, missed)
	}
}

// The nodes' Pub/Sub connections to the masters are killed again and again
// (CLIENT KILL TYPE pubsub) while events are published without pause, to
// users on every master and to everyone: every device ends with every
// event exactly once, in publish order, and is never closed (Redis kept
// the history, so each resync proves it closed the gap).
func TestClusterPubSubKilledUnderLoad(t *testing.T) {
	rc, ns := clusterNodes(t, 2, 1000)
	a, b := ns[0], ns[1]
	users := usersOn(t, rc, "p", 3)
	var devices [][]*client
	for _, u := range users {
		x := connect(t, a.hub, u, "")
		x.connected()
		y := connect(t, b.hub, u, "")
		y.connected()
		devices = append(devices, []*client{x, y})
	}
	want := make([][]string, len(users))
	kills := 0
	for i := range 400 {
		if i%40 == 20 {
			// the next events are published while the nodes redial
			if err := rc.NodeClient(kills%3).ClientKillByFilter(bg(t), "TYPE", "pubsub").Err(); err != nil {
				t.Fatalf("client kill: %v", err)
			}
			kills++
		}
		typ := fmt.Sprintf("E%d", i)
		var err error
		if i%7 == 0 {
			_, err = b.hub.BroadcastAll(bg(t), typ, nil)
		} else {
			_, err = b.hub.Publish(bg(t), []string{users[i%3]}, typ, nil)
		}
		if errors.Is(err, hub.ErrOutcomeUnknown) {
			t.Fatalf("publish %s: outcome unknown", typ)
		}
		if err != nil {
			continue // refused: published nowhere
		}
		for j := range users {
			if i%7 == 0 || j == i%3 {
				want[j] = append(want[j], typ)
			}
		}
	}
	hubtest.Eventually(t, 15*time.Second, "nodes ready again", func() bool {
		return a.broker.Ready() == nil && b.broker.Ready() == nil
	})
	for j := range users {
		for _, d := range devices[j] {
			got := typesOf(d.waitEvents(len(want[j])))
			if !slices.Equal(got, want[j]) {
				t.Fatalf("user %d after %d kills: got %d events %v..., want %d", j, kills, len(got), got[:min(len(got), 10)], len(want[j]))
			}
			if d.end != nil {
				t.Fatalf("user %d's device closed: %v", j, *d.end)
			}
		}
	}
}

// migrateSlot moves one hash slot, with its keys, from master from to
// master to, as redis-cli --cluster reshard does (IMPORTING, MIGRATING,
// MIGRATE, then SETSLOT NODE on every master).
func migrateSlot(t *testing.T, rc *hubtest.RedisCluster, slot, from, to int) {
	t.Helper()
	ctx := bg(t)
	src, dst := rc.NodeClient(from), rc.NodeClient(to)
	srcID, err := src.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	dstID, err := dst.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("migrate slot %d: %v", slot, err)
		}
	}
	must(dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err())
	must(src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID).Err())
	host, port, _ := strings.Cut(rc.Addrs()[to], ":")
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		must(err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(src.Do(ctx, args...).Err())
	}
	for i := range rc.Addrs() {
		must(rc.NodeClient(i).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err())
	}
}

// A user's slot moved to another master (resharding) while the user's
// devices are connected: Redis unsubscribes the nodes from the user's
// channel, the nodes read the new layout, subscribe again where the slot
// now is and resync; every event, before, during and after, arrives
// exactly once, and the user's history moved with the slot (a resume
// afterwards is recovered).
func TestClusterSlotMoved(t *testing.T) {
	rc, ns := clusterNodes(t, 2, 100)
	a, b := ns[0], ns[1]
	users := usersOn(t, rc, "s", 3)
	allM := rc.MasterOf("{all}")
	from := (allM + 1) % 3
	to := (allM + 2) % 3
	u := users[from]
	x := connect(t, a.hub, u, "")
	x.connected()
	y := connect(t, b.hub, u, "")
	y.connected()
	publish(t, b.hub, "E1", u)
	x.waitEvents(1)
	first := x.events()[0].ID

	migrateSlot(t, rc, rc.Slot("{"+u+"}"), from, to)
	if got := rc.MasterOf("{" + u + "}"); got != to {
		t.Fatalf("slot on master %d after the move, want %d", got, to)
	}
	want := []string{"E1"}
	for i := 2; i <= 6; i++ {
		typ := fmt.Sprintf("E%d", i)
		hubtest.Eventually(t, 15*time.Second, "publish after the move", func() bool {
			_, err := b.hub.Publish(bg(t), []string{u}, typ, nil)
			return err == nil
		})
		want = append(want, typ)
	}
	for _, d := range []*client{x, y} {
		if got := typesOf(d.waitEvents(len(want))); !slices.Equal(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		if d.end != nil {
			t.Fatalf("device closed: %v", *d.end)
		}
	}
	hubtest.Eventually(t, 15*time.Second, "nodes ready", func() bool { return a.broker.Ready() == nil && b.broker.Ready() == nil })
	r := connect(t, a.hub, u, first)
	if rec, missed := r.connected(); !rec || missed != len(want)-1 {
		t.Fatalf("resume after the move: recovered %v missed %d, want true %d", rec, missed, len(want)-1)
	}
}

// Ids from a master whose clock runs ahead: a broadcast key a little ahead
// of the user's master's clock resumes (its place is reserved in the
// user's order); a key an hour ahead is no id of ours (recovered:false)
// and reserves nothing, so the user's next events are not held back.
func TestClusterKeysAhead(t *testing.T) {
	_, ns := clusterNodes(t, 1, 100)
	a := ns[0]
	broadcast(t, a.hub, "FIRST") // the broadcast history exists
	x := connect(t, a.hub, "ahead", "")
	x.connected()
	us := time.Now().Add(200 * time.Millisecond).UnixMicro()
	r := connect(t, a.hub, "ahead", fmt.Sprintf("b%d", 2*us))
	if rec, missed := r.connected(); !rec || missed != 0 {
		t.Fatalf("resume from a broadcast 200 ms ahead: recovered %v missed %d, want true 0", rec, missed)
	}
	far := time.Now().Add(time.Hour).UnixMicro()
	f := connect(t, a.hub, "ahead", fmt.Sprintf("p%d", 2*far+1))
	if rec, _ := f.connected(); rec {
		t.Fatal("resume from a position an hour ahead: recovered")
	}
	id := publish(t, a.hub, "NEXT", "ahead")
	for _, cl := range []*client{x, r, f} {
		if got := cl.waitEvents(1); got[len(got)-1].ID != id {
			t.Fatalf("got %v, want %s last", idsOf(got), id)
		}
	}
}

// A master that stops answering without closing anything (SIGSTOP, shorter
// than the cluster's node timeout): each node's Pub/Sub connection to it
// goes silent, is found by its unanswered ping, and the node is not ready;
// once the master continues, the nodes subscribe again and resync. Events
// acknowledged to users of the other masters meanwhile reach every device
// exactly once, in order, and no device is closed.
func TestClusterMasterStalled(t *testing.T) {
	rc := hubtest.StartRedisCluster(t, 3)
	pfx := fmt.Sprintf("st%d:", time.Now().UnixNano()%1e9)
	var ns []node
	var logs hubtest.Buffer
	for _, name := range []string{"a", "b"} {
		bo := redisbroker.Options{URL: rc.URL(), Cluster: true, Prefix: pfx, Node: name, HistorySize: 1000, HistoryTTL: time.Minute,
			PingInterval: 200 * time.Millisecond, PublishTimeout: 300 * time.Millisecond}
		if name == "a" {
			bo.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		}
		ns = append(ns, startWith(t, bo, hub.Options{HistorySize: 1000, HistoryTTL: time.Minute, Node: name}))
	}
	a, b := ns[0], ns[1]
	stalled := (rc.MasterOf("{all}") + 1) % 3
	var users []string
	for m, u := range usersOn(t, rc, "w", 3) {
		if m != stalled {
			users = append(users, u)
		}
	}
	var devices []*client
	for _, u := range users {
		d := connect(t, a.hub, u, "")
		d.connected()
		devices = append(devices, d)
	}
	var want []string
	pub := func() {
		t.Helper()
		typ := fmt.Sprintf("E%d", len(want))
		if _, err := b.hub.Publish(bg(t), users, typ, nil); err != nil {
			if errors.Is(err, hub.ErrOutcomeUnknown) {
				t.Fatalf("publish %s: outcome unknown", typ)
			}
			return // refused: nothing published
		}
		want = append(want, typ)
	}
	pub()
	rc.Node(stalled).Signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			rc.Node(stalled).Signal(syscall.SIGCONT)
		}
	}()
	hubtest.Eventually(t, 10*time.Second, "node a to find its connection to the master silent", func() bool {
		pub()
		return a.broker.Ready() != nil && strings.Contains(logs.String(), "no answer to a ping")
	})
	pub()
	rc.Node(stalled).Signal(syscall.SIGCONT)
	stopped = false
	hubtest.Eventually(t, 30*time.Second, "nodes ready again", func() bool {
		return a.broker.Ready() == nil && b.broker.Ready() == nil
	})
	pub()
	for _, d := range devices {
		if got := typesOf(d.waitEvents(len(want))); !slices.Equal(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		if d.end != nil {
			t.Fatalf("device closed: %v", *d.end)
		}
	}
}
