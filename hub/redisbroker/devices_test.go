package redisbroker_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
)

// devicesOf publishes one event to users through h and returns the devices
// count of each.
func devicesOf(t *testing.T, h *hub.Hub, users ...string) []int {
	t.Helper()
	evs, err := h.Publish(bg(t), users, "D", json.RawMessage(`1`))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int, len(evs))
	for i, e := range evs {
		out[i] = e.Devices
	}
	return out
}

// The devices count of a publish is the user's live connections on every
// node (every connection whose hub.connected came before the publish), read
// in the publish script; a broadcast counts every connection. A device that
// leaves stops counting; so does one whose node stopped without releasing
// it, once its slot expires.
func TestDevicesAcrossNodes(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	a := startNode(t, url, pfx, "a", 100, time.Minute)
	b := startNode(t, url, pfx, "b", 100, time.Minute)
	c := startNode(t, url, pfx, "c", 100, time.Minute)

	if got := devicesOf(t, a.hub, "u1", "u2"); !slices.Equal(got, []int{0, 0}) {
		t.Fatalf("nobody connected: devices %v", got)
	}
	a1 := connect(t, a.hub, "u1", "")
	a1.connected()
	b1 := connect(t, b.hub, "u1", "")
	b1.connected()
	c2 := connect(t, c.hub, "u2", "")
	c2.connected()
	// counted at once: each hub.connected came before the publish
	for _, n := range []node{a, b, c} {
		if got := devicesOf(t, n.hub, "u1", "u2", "u3"); !slices.Equal(got, []int{2, 1, 0}) {
			t.Fatalf("devices %v, want [2 1 0]", got)
		}
	}
	all, err := c.hub.BroadcastAll(bg(t), "D", nil)
	if err != nil || all.Devices != 3 {
		t.Fatalf("broadcast: %+v, %v; want 3 devices", all, err)
	}

	b.hub.Unregister(b1.c) // a device leaves
	hubtest.Eventually(t, 10*time.Second, "u1's count to drop", func() bool {
		return devicesOf(t, c.hub, "u1")[0] == 1
	})
	hubtest.Eventually(t, 10*time.Second, "the broadcast count to drop", func() bool {
		ev, err := a.hub.BroadcastAll(bg(t), "D", nil)
		return err == nil && ev.Devices == 2
	})
}

// Connections lists a user's connections on every node with their fields,
// oldest first; a device that leaves is no longer listed.
func TestConnectionsAcrossNodes(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	a := startNode(t, url, pfx, "a", 100, time.Minute)
	b := startNode(t, url, pfx, "b", 100, time.Minute)
	before := time.Now().Add(-time.Second)
	ca := connect(t, a.hub, "u1", "")
	cb, err := b.hub.Register(hub.ConnInfo{UserID: "u1", Transport: hub.TransportSSE}, &sink{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.hub.Unregister(cb) })
	connect(t, b.hub, "u2", "")

	for _, n := range []node{a, b} {
		got, err := n.hub.Connections(bg(t), "u1")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 {
			t.Fatalf("Connections(u1) = %+v, want 2", got)
		}
		want := map[string]hub.Connection{
			ca.c.ID(): {ConnectionID: ca.c.ID(), Transport: hub.TransportWebSocket, Node: "a"},
			cb.ID():   {ConnectionID: cb.ID(), Transport: hub.TransportSSE, Node: "b"},
		}
		if a, b := got[0], got[1]; a.ConnectedAt.After(b.ConnectedAt) || (a.ConnectedAt.Equal(b.ConnectedAt) && a.ConnectionID > b.ConnectionID) {
			t.Errorf("connections %+v: not ordered by connection time, then id", got)
		}
		for i, g := range got {
			w, ok := want[g.ConnectionID]
			if !ok || g.Transport != w.Transport || g.Node != w.Node ||
				g.ConnectedAt.Before(before) || g.ConnectedAt.After(time.Now()) {
				t.Errorf("connection %d = %+v, want one of %+v connected since the test began", i, g, want)
			}
		}
	}
	a.hub.Unregister(ca.c)
	hubtest.Eventually(t, 10*time.Second, "the connection that left to go", func() bool {
		got, err := b.hub.Connections(bg(t), "u1")
		return err == nil && len(got) == 1 && got[0].ConnectionID == cb.ID()
	})
	if got, err := a.hub.Connections(bg(t), "nobody"); err != nil || len(got) != 0 {
		t.Fatalf("Connections(nobody) = %+v, %v", got, err)
	}
}

// One publish to many users is one event: one id, one sequence number in
// every user's stream, and, on a node, one message for every connection
// that gets it.
func TestPublishToManyUsersIsOneEvent(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	a := startNode(t, url, pfx, "a", 100, time.Minute)
	b := startNode(t, url, pfx, "b", 100, time.Minute)
	var cls []*client
	for i := range 3 {
		cl := connect(t, b.hub, "m"+strconv.Itoa(i), "")
		cl.connected()
		cls = append(cls, cl)
	}
	evs, err := a.hub.Publish(bg(t), []string{"m0", "m1", "m2", "m3"}, "M", json.RawMessage(`{"k":1}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs[1:] {
		if e.ID != evs[0].ID {
			t.Fatalf("one publish gave several ids: %+v", evs)
		}
	}
	var msgs []*hub.Message
	for _, cl := range cls {
		got := cl.waitEvents(1)
		if got[0].ID != evs[0].ID {
			t.Fatalf("got %s, want %s", got[0].ID, evs[0].ID)
		}
		msgs = append(msgs, got[0])
	}
	if msgs[0] != msgs[1] || msgs[1] != msgs[2] {
		t.Error("the node built one message per user for one event")
	}
	rc := hubtest.RedisClient(t, url)
	epoch, seq, _ := hub.ParseID(evs[0].ID)
	for i := range 4 {
		entries, err := rc.XRange(bg(t), fmt.Sprintf("%su:{m%d}:%s", pfx, i, epoch), "-", "+").Result()
		if err != nil || len(entries) != 1 || entries[0].ID != strconv.FormatUint(seq, 10)+"-0" {
			t.Fatalf("m%d's stream = %v, %v; want one entry %d-0", i, entries, err, seq)
		}
	}
}

// Each stream holds at most HistoryMaxBytes of envelopes, oldest deleted
// first; a resume that needs a deleted event is not recovered, one that
// does not is replayed; an envelope bigger than the bound on its own is
// delivered live and not kept, and a resume from before it is not
// recovered either.
func TestStreamByteBound(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	payload := json.RawMessage(`"` + strings.Repeat("x", 300) + `"`)
	probe := startNode(t, url, hubtest.RedisPrefix(t, url), "probe", 100, time.Minute)
	pc := connect(t, probe.hub, "p", "")
	if _, err := probe.hub.Publish(bg(t), []string{"p"}, "B", payload); err != nil {
		t.Fatal(err)
	}
	size := int64(pc.waitEvents(1)[0].Size()) // every envelope below has this size (ids of equal length)

	bound := 3*size + size/2
	n := startWith(t,
		redisbrokerOptions(url, pfx, "a", 100, bound),
		hub.Options{HistorySize: 100, HistoryTTL: time.Minute, HistoryMaxBytes: bound, Node: "a"})
	var ids []string
	for range 5 {
		evs, err := n.hub.Publish(bg(t), []string{"u1"}, "B", payload)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, evs[0].ID)
	}
	rc := hubtest.RedisClient(t, url)
	epoch, _, _ := hub.ParseID(ids[0])
	if l := rc.XLen(bg(t), pfx+"u:{u1}:"+epoch).Val(); l != 3 {
		t.Fatalf("u1's stream holds %d entries, want 3", l)
	}
	if got := rc.HGet(bg(t), pfx+"uh:{u1}:"+epoch, "b").Val(); got != strconv.FormatInt(3*size, 10) {
		t.Fatalf("u1's byte counter = %s, want %d", got, 3*size)
	}
	cl := connect(t, n.hub, "u1", ids[2])
	if rec, missed := cl.connected(); !rec || missed != 2 {
		t.Fatalf("resume from the oldest held: recovered %v missed %d, want true 2", rec, missed)
	}
	if got := idsOf(cl.waitEvents(2)); !slices.Equal(got, ids[3:]) {
		t.Fatalf("replay %v, want %v", got, ids[3:])
	}
	if rec, _ := connect(t, n.hub, "u1", ids[1]).connected(); rec {
		t.Fatal("resume from a deleted event: recovered")
	}

	// too big on its own: delivered, deleted at once
	pos, err := n.broker.Position(bg(t))
	if err != nil {
		t.Fatal(err)
	}
	big := json.RawMessage(`"` + strings.Repeat("y", int(bound)) + `"`)
	c2 := connect(t, n.hub, "u2", "")
	evs, err := n.hub.Publish(bg(t), []string{"u2"}, "B", big)
	if err != nil {
		t.Fatal(err)
	}
	if got := c2.waitEvents(1); got[0].ID != evs[0].ID {
		t.Fatalf("the big event was not delivered: %v", idsOf(got))
	}
	if l := rc.XLen(bg(t), pfx+"u:{u2}:"+epoch).Val(); l != 0 {
		t.Fatalf("u2's stream holds %d entries, want 0", l)
	}
	if rec, _ := connect(t, n.hub, "u2", hub.FormatPosition(pos)).connected(); rec {
		t.Fatal("resume from before an event too big to keep: recovered")
	}

	// a broadcast stream is bounded the same way
	for range 5 {
		if _, err := n.hub.Broadcast(bg(t), "B", payload); err != nil {
			t.Fatal(err)
		}
	}
	if l := rc.XLen(bg(t), pfx+"a:"+epoch).Val(); l != 3 {
		t.Fatalf("the broadcast stream holds %d entries, want 3", l)
	}
}

// Latest follows the cluster: what another node publishes, to users this
// node holds nothing of, is known here within a health probe, so that
// Resumable takes an id issued anywhere in the cluster, and nothing from
// the future or of another epoch.
func TestLatestAndResumable(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	a := startNode(t, url, pfx, "a", 100, time.Minute)
	b := startNode(t, url, pfx, "b", 100, time.Minute)
	evs, err := b.hub.Publish(bg(t), []string{"far"}, "L", nil)
	if err != nil {
		t.Fatal(err)
	}
	id := evs[0].ID
	epoch, seq, _ := hub.ParseID(id)
	hubtest.Eventually(t, 10*time.Second, "node a to know the id", func() bool { return a.hub.Resumable(id) })
	if e, s := a.broker.Latest(); e != epoch || s < seq {
		t.Fatalf("Latest = %s %d, want %s and at least %d", e, s, epoch, seq)
	}
	for _, bad := range []string{epoch + "-" + strconv.FormatUint(seq+1000, 10), "other-1", "nope", ""} {
		if a.hub.Resumable(bad) {
			t.Errorf("Resumable(%q) = true", bad)
		}
	}
	if !a.hub.Resumable(hub.FormatPosition(epoch+"-0")) || !a.hub.Resumable(id+"p") {
		t.Error("positions of the cluster's epoch: not resumable")
	}
}
