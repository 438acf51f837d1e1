package hub_test

import (
	"context"
	"encoding/json"
	"fmt"

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
