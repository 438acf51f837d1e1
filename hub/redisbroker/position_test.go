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
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	a := startNode(t, url, pfx, "a", 1000, time.Minute)
	b := startNode(t, url, pfx, "b", 1000, time.Minute)

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
		at, ok := strings.CutSuffix(env.Payload.Position, "p")
		if !ok {
			t.Fatalf("position %q has no position form", env.Payload.Position)
		}
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
}

// A device that resumed from a position and was replayed nothing still has
// its gap closed after an outage: events published while its node was cut
// off from Redis reach it once the node is back (Resync reads from the
// position it resumed from).
func TestResumedFromPositionSurvivesCut(t *testing.T) {
	rs := hubtest.StartRedisServer(t)
	px := hubtest.StartProxy(t, rs.Addr())
	a := startNode(t, "redis://"+px.Addr()+"/0", "hub:", "a", 1000, time.Minute)
	p := startNode(t, rs.URL(), "hub:", "p", 1000, time.Minute)

	first := connect(t, a.hub, "u1", "")
	first.connected()
	var env struct {
		Payload struct {
			Position string `json:"position"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(first.msgs[0].Frame, &env); err != nil {
		t.Fatal(err)
	}
	a.hub.Unregister(first.c)

	cl := connect(t, a.hub, "u1", env.Payload.Position)
	if rec, missed := cl.connected(); !rec || missed != 0 {
		t.Fatalf("resume from %s: recovered %v missed %d, want true 0", env.Payload.Position, rec, missed)
	}

	px.Cut()
	hubtest.Eventually(t, 15*time.Second, "Ready to fail", func() bool { return a.broker.Ready() != nil })
	evs, err := p.hub.Publish(bg(t), []string{"u1"}, "E", json.RawMessage(`1`))
	if err != nil {
		t.Fatal(err)
	}
	px.Restore()
	hubtest.Eventually(t, 15*time.Second, "Ready again", func() bool { return a.broker.Ready() == nil })
	got := cl.waitEvents(1)
	if got[0].ID != evs[0].ID {
		t.Fatalf("after the cut got %v, want %s", idsOf(got), evs[0].ID)
	}
}
