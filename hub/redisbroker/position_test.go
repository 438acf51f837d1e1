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
