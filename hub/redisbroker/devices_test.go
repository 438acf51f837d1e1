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
	eachBackend(t, func(t *testing.T, be backend) {
		a := be.node(t, "a", 100, time.Minute)
		b := be.node(t, "b", 100, time.Minute)
		c := be.node(t, "c", 100, time.Minute)

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
	})
}

// Connections lists a user's connections on every node with their fields,
// oldest first; a device that leaves is no longer listed.
func TestConnectionsAcrossNodes(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		a := be.node(t, "a", 100, time.Minute)
		b := be.node(t, "b", 100, time.Minute)
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
	})
}

// One publish to many users is one event: one id, one sequence number in
// every user's stream, and, on a node, one message for every connection
// that gets it.
func TestPublishToManyUsersIsOneEvent(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		a := be.node(t, "a", 100, time.Minute)
		b := be.node(t, "b", 100, time.Minute)
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
		rc := be.client(t)
		if !be.cluster() {
			if msgs[0] != msgs[1] || msgs[1] != msgs[2] {
				t.Error("the node built one message per user for one event")
			}
			_, seq, _ := hub.ParseID(evs[0].ID)
			for i := range 4 {
				entries, err := rc.XRange(bg(t), be.userStream(fmt.Sprintf("m%d", i), evs[0].ID), "-", "+").Result()
				if err != nil || len(entries) != 1 || entries[0].ID != strconv.FormatUint(seq, 10)+"-0" {
					t.Fatalf("m%d's stream = %v, %v; want one entry %d-0", i, entries, err, seq)
				}
			}
			return
		}
		// On a cluster each user has an order key of their own (the
		// message's Seq), so a message per user; their frames are one.
		for _, m := range msgs[1:] {
			if string(m.Frame) != string(msgs[0].Frame) {
				t.Errorf("one event, two frames: %s, %s", msgs[0].Frame, m.Frame)
			}
		}
		for i := range 4 {
			u := fmt.Sprintf("m%d", i)
			entries, err := rc.XRange(bg(t), be.userStream(u, ""), "-", "+").Result()
			if err != nil || len(entries) != 1 {
				t.Fatalf("%s's stream = %v, %v; want one entry", u, entries, err)
			}
			key, err := rc.ZScore(bg(t), be.pfx+"ui:{"+u+"}", evs[0].ID).Result()
			if err != nil || strconv.FormatUint(uint64(key), 10)+"-0" != entries[0].ID {
				t.Fatalf("%s's id index gives %s key %v (%v), want its stream's entry %s", u, evs[0].ID, key, err, entries[0].ID)
			}
			if i < len(msgs) && strconv.FormatUint(msgs[i].Seq(), 10)+"-0" != entries[0].ID {
				t.Fatalf("%s's message has Seq %d, its stream entry %s", u, msgs[i].Seq(), entries[0].ID)
			}
		}
	})
}

// Each stream holds at most HistoryMaxBytes of envelopes, oldest deleted
// first; a resume that needs a deleted event is not recovered, one that
// does not is replayed; an envelope bigger than the bound on its own is
// delivered live and not kept, and a resume from before it is not
// recovered either.
func TestStreamByteBound(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		payload := json.RawMessage(`"` + strings.Repeat("x", 300) + `"`)
		probe := be.another(t).node(t, "probe", 100, time.Minute)
		pc := connect(t, probe.hub, "p", "")
		if _, err := probe.hub.Publish(bg(t), []string{"p"}, "B", payload); err != nil {
			t.Fatal(err)
		}
		size := int64(pc.waitEvents(1)[0].Size()) // every envelope below has this size (ids of equal length)

		bound := 3*size + size/2
		bo := be.options("a", 100, time.Minute)
		bo.HistoryMaxBytes = bound
		n := startWith(t, bo,
			hub.Options{HistorySize: 100, HistoryTTL: time.Minute, HistoryMaxBytes: bound, Node: "a"})
		var ids []string
		for range 5 {
			evs, err := n.hub.Publish(bg(t), []string{"u1"}, "B", payload)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, evs[0].ID)
		}
		rc := be.client(t)
		if l := rc.XLen(bg(t), be.userStream("u1", ids[0])).Val(); l != 3 {
			t.Fatalf("u1's stream holds %d entries, want 3", l)
		}
		if got := rc.HGet(bg(t), be.userState("u1", ids[0]), "b").Val(); got != strconv.FormatInt(3*size, 10) {
			t.Fatalf("u1's byte counter = %s, want %d", got, 3*size)
		}
		cl := connect(t, n.hub, "u1", ids[2])
		if rec, missed := cl.connected(); !rec || missed != 2 {
			t.Fatalf("resume from the oldest held: recovered %v missed %d, want true 2", rec, missed)
		}
		if got := idsOf(cl.waitEvents(2)); !slices.Equal(got, ids[3:]) {
			t.Fatalf("replay %v, want %v", got, ids[3:])
		}
		// from the newest deleted event: on one server not recovered (an
		// id no stream holds any more cannot be proven young enough); on a
		// cluster the id's key tells its age and everything after it is
		// held, so it is recovered
		if !be.cluster() {
			if rec, _ := connect(t, n.hub, "u1", ids[1]).connected(); rec {
				t.Fatal("resume from a deleted event: recovered")
			}
		} else {
			r := connect(t, n.hub, "u1", ids[1])
			if rec, missed := r.connected(); !rec || missed != 3 {
				t.Fatalf("resume from the newest deleted event: recovered %v missed %d, want true 3", rec, missed)
			}
			if got := idsOf(r.waitEvents(3)); !slices.Equal(got, ids[2:]) {
				t.Fatalf("replay %v, want %v", got, ids[2:])
			}
		}
		// from an event deleted before it: not recovered
		if rec, _ := connect(t, n.hub, "u1", ids[0]).connected(); rec {
			t.Fatal("resume from an event deleted before the newest deleted one: recovered")
		}

		// too big on its own: delivered, deleted at once
		var pos string
		c2 := connect(t, n.hub, "u2", "")
		if !be.cluster() {
			p, err := n.broker.Position(bg(t))
			if err != nil {
				t.Fatal(err)
			}
			pos = hub.FormatPosition(p)
		} else {
			pos = connectedPosition(c2)
		}
		big := json.RawMessage(`"` + strings.Repeat("y", int(bound)) + `"`)
		evs, err := n.hub.Publish(bg(t), []string{"u2"}, "B", big)
		if err != nil {
			t.Fatal(err)
		}
		if got := c2.waitEvents(1); got[0].ID != evs[0].ID {
			t.Fatalf("the big event was not delivered: %v", idsOf(got))
		}
		if l := rc.XLen(bg(t), be.userStream("u2", ids[0])).Val(); l != 0 {
			t.Fatalf("u2's stream holds %d entries, want 0", l)
		}
		if rec, _ := connect(t, n.hub, "u2", pos).connected(); rec {
			t.Fatal("resume from before an event too big to keep: recovered")
		}

		// a broadcast stream is bounded the same way
		for range 5 {
			if _, err := n.hub.Broadcast(bg(t), "B", payload); err != nil {
				t.Fatal(err)
			}
		}
		if l := rc.XLen(bg(t), be.allStream(ids[0])).Val(); l != 3 {
			t.Fatalf("the broadcast stream holds %d entries, want 3", l)
		}
	})
}

// Latest follows the cluster: what another node publishes, to users this
// node holds nothing of, is known here within a health probe, so that
// Resumable takes an id issued anywhere in the cluster, and nothing from
// the future or of another epoch.
func TestLatestAndResumable(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		a := be.node(t, "a", 100, time.Minute)
		b := be.node(t, "b", 100, time.Minute)
		evs, err := b.hub.Publish(bg(t), []string{"far"}, "L", nil)
		if err != nil {
			t.Fatal(err)
		}
		id := evs[0].ID
		if be.cluster() {
			// on a cluster Resumable checks the form of the ids and
			// positions a cluster hands out (ValidID); nothing is ahead
			all, err := b.hub.Broadcast(bg(t), "L", nil)
			if err != nil {
				t.Fatal(err)
			}
			pos := connectedPosition(connect(t, b.hub, "far", ""))
			var bad []string
			for _, good := range []string{id, all, pos} {
				if !a.hub.Resumable(good) {
					bad = append(bad, good)
				}
			}
			for _, no := range []string{"nope", "", "p", "b-1", "o.x", "1-2"} {
				if a.hub.Resumable(no) {
					t.Errorf("Resumable(%q) = true", no)
				}
			}
			if len(bad) > 0 {
				t.Fatalf("cluster ids and positions not resumable: %v", bad)
			}
			return
		}
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
	})
}
