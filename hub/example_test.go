package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hubd/hub/hub"
)

// wakeSink is the smallest Sink: a real transport starts (or signals) its
// writer in Wake and closes the socket in Abort.
type wakeSink struct{ woken chan struct{} }

func (s wakeSink) Wake() {
	select {
	case s.woken <- struct{}{}:
	default:
	}
}
func (wakeSink) Abort(hub.Reason)    {}
func (wakeSink) Heartbeat(idle bool) {}

func Example() {
	h := hub.New(hub.Options{Node: "hub-1", Epoch: "E1"})
	defer h.Stop()

	sink := wakeSink{woken: make(chan struct{}, 1)}
	c, err := h.Register(hub.ConnInfo{UserID: "u1", Transport: hub.TransportWebSocket}, sink)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Unregister(c)

	evs, err := h.Publish(context.Background(), []string{"u1"}, "DRAFT_UPDATED", json.RawMessage(`{"draftId": 42}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("published", evs[0].ID)

	<-sink.woken // the transport's writer runs now
	var buf []*hub.Message
	for {
		msgs, reason := c.Next(buf[:0])
		if reason != nil {
			fmt.Println("close with", reason)
			return
		}
		if len(msgs) == 0 {
			break // drained: the next event wakes the sink again
		}
		for _, m := range msgs {
			// a WebSocket writer sends m.Frame, an SSE writer m.SSE
			if m.Control() {
				fmt.Println("control", m.Type)
			} else {
				fmt.Println("event", m.ID, m.Type)
			}
		}
		buf = msgs
	}
	// Output:
	// published E1-1
	// control hub.connected
	// event E1-1 DRAFT_UPDATED
}

// ExampleKeyed: a draft edited three times and a "typing" indicator while
// the user's device is away; the device resumes from the last id it saw
// and gets the newest edit only, and the typing event not at all.
func ExampleKeyed() {
	h := hub.New(hub.Options{Node: "hub-1", Epoch: "E1", HistorySize: 100, HistoryTTL: time.Minute})
	defer h.Stop()
	ctx := context.Background()

	seen, _ := h.Publish(ctx, []string{"u1"}, "DRAFT_UPDATED", json.RawMessage(`{"text":"H"}`), hub.Keyed("draft:42"))
	// the device goes away after seeing E1-1
	for _, text := range []string{"He", "Hel", "Hello"} {
		p, _ := json.Marshal(map[string]string{"text": text})
		_, _ = h.Publish(ctx, []string{"u1"}, "DRAFT_UPDATED", p, hub.Keyed("draft:42"))
	}
	_, _ = h.Publish(ctx, []string{"u1"}, "TYPING", json.RawMessage(`true`), hub.Volatile())

	sink := wakeSink{woken: make(chan struct{}, 1)}
	c, err := h.Register(hub.ConnInfo{UserID: "u1", Transport: hub.TransportWebSocket, LastEventID: seen[0].ID}, sink)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Unregister(c)
	msgs, _ := c.Next(nil) // hub.connected and the replay are queued by Register
	for _, m := range msgs {
		var env struct {
			ID, Type, Key string
			Payload       json.RawMessage
		}
		_ = json.Unmarshal(m.Frame, &env)
		fmt.Println(env.ID, env.Type, env.Key, string(env.Payload))
	}
	// Output:
	// hub.connected  {"connectionId":"c-E1-1","userId":"u1","transport":"websocket","heartbeatSeconds":25,"recovered":true,"missed":1,"node":"hub-1","position":"E1-4"}
	// E1-4 DRAFT_UPDATED draft:42 {"text":"Hello"}
}
