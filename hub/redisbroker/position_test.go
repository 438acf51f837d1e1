package redisbroker_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
)

// A fresh device is handed nothing from before the position its
// hub.connected names: broadcasts and its user's events published from
// another node while it registers either come after that position (and are
// delivered) or before it (and are not), never both ways at once. Events
// published before hub.connected but delivered to the node late by Pub/Sub
// must not slip in through the registration's pending buffer.
func TestFreshDeviceGetsNothingBeforeItsPosition(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		a := be.node(t, "a", 1000, time.Minute)
		b := be.node(t, "b", 1000, time.Minute)

		var stop atomic.Bool
		var wg sync.WaitGroup
		defer func() { stop.Store(true); wg.Wait() }()
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; !stop.Load(); i++ {
					if i%2 == 0 {
						_, _ = b.hub.BroadcastAll(bg(t), "all", json.RawMessage(`1`))
					} else {
						_, _ = b.hub.Publish(bg(t), []string{"fresh"}, "own", json.RawMessage(`1`))
					}
				}
			}()
		}

		for i := 0; i < 300; i++ {
			cl := connect(t, a.hub, "fresh", "")
			cl.connected()
			var env struct {
				Payload struct {
					Position string `json:"position"`
				} `json:"payload"`
			}
			if err := json.Unmarshal(cl.msgs[0].Frame, &env); err != nil {
				t.Fatal(err)
			}
			// the position's seq ("<epoch>-<seq>p"; on a cluster "p<key>",
			// the user's order key, what Seq is there)
			pos := env.Payload.Position
			if !be.isPosition(pos) {
				t.Fatalf("position %q has no position form", pos)
			}
			at := strings.TrimPrefix(strings.TrimSuffix(pos, "p"), "p")
			seq, err := strconv.ParseUint(at[strings.LastIndexByte(at, '-')+1:], 10, 64)
			if err != nil {
				t.Fatalf("position %q: %v", env.Payload.Position, err)
			}
			// wait until something after the position arrived: whatever was
			// in flight at registration has been delivered by then
			evs := cl.waitEvents(1)
			for _, m := range evs {
				if m.Seq() <= seq {
					t.Fatalf("device %d: event %s (%s) from before its position %s", i, m.ID, m.Type, env.Payload.Position)
				}
			}
			a.hub.Unregister(cl.c)
		}
	})
}

// A device that resumed from a position and was replayed nothing still has
// its gap closed after an outage: events published while its node was cut
// off from Redis reach it once the node is back (Resync reads from the
// position it resumed from). (On a cluster the node loses one master:
// eachCut.)
func TestResumedFromPositionSurvivesCut(t *testing.T) {
	eachCut(t, 1000, func(t *testing.T, s *cutSetup) {
		a := s.a
		first := connect(t, a.hub, s.u1, "")
		pos := connectedPosition(first)
		a.hub.Unregister(first.c)

		cl := connect(t, a.hub, s.u1, pos)
		if rec, missed := cl.connected(); !rec || missed != 0 {
			t.Fatalf("resume from %s: recovered %v missed %d, want true 0", pos, rec, missed)
		}

		s.cut()
		hubtest.Eventually(t, 15*time.Second, "Ready to fail", func() bool { return a.broker.Ready() != nil })
		id := s.publish(t, []string{s.u1}, "E", json.RawMessage(`1`))
		s.doRestore()
		hubtest.Eventually(t, 30*time.Second, "Ready again", func() bool { return a.broker.Ready() == nil })
		got := cl.waitEvents(1)
		if got[0].ID != id {
			t.Fatalf("after the cut got %v, want %s", idsOf(got), id)
		}
	})
}

// Two hubs on one Redis server kept apart by database numbers do not hear
// each other: Pub/Sub channels are shared by every database of a server,
// so a node's channels name its database (when it is not 0).
func TestDatabasesDoNotShareChannels(t *testing.T) {
	rs := hubtest.StartRedisServer(t)
	a := startNode(t, hubtest.RedisDB(t, rs.URL(), 3), "hub:", "a", 100, time.Minute)
	a2 := startNode(t, hubtest.RedisDB(t, rs.URL(), 3), "hub:", "a2", 100, time.Minute)
	b := startNode(t, hubtest.RedisDB(t, rs.URL(), 4), "hub:", "b", 100, time.Minute)
	z := startNode(t, hubtest.RedisDB(t, rs.URL(), 0), "hub:", "z", 100, time.Minute)
	onA2 := connect(t, a2.hub, "u1", "")
	onB := connect(t, b.hub, "u1", "")
	onZ := connect(t, z.hub, "u1", "")
	for _, cl := range []*client{onA2, onB, onZ} {
		cl.connected()
	}
	evs, err := a.hub.Publish(bg(t), []string{"u1"}, "E", json.RawMessage(`1`))
	if err != nil {
		t.Fatal(err)
	}
	all, err := a.hub.Broadcast(bg(t), "B", json.RawMessage(`2`))
	if err != nil {
		t.Fatal(err)
	}
	got := onA2.waitEvents(2) // the same database hears both
	if got[0].ID != evs[0].ID || got[1].ID != all {
		t.Fatalf("node a2 got %v, want %s %s", idsOf(got), evs[0].ID, all)
	}
	// what reached a2 through Redis would have reached b and z by now too;
	// one more event of their own databases, delivered after, proves it
	for _, n := range []struct {
		node
		cl *client
	}{{b, onB}, {z, onZ}} {
		own, err := n.hub.Publish(bg(t), []string{"u1"}, "OWN", json.RawMessage(`3`))
		if err != nil {
			t.Fatal(err)
		}
		got := n.cl.waitEvents(1)
		if len(got) != 1 || got[0].ID != own[0].ID {
			t.Fatalf("a node of another database got %v, want only its own %s", idsOf(got), own[0].ID)
		}
	}
}
