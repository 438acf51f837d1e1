package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
)

// esHarness opens a plain EventSource (no hub.js) on url and records, for
// each message, its type, lastEventId and data on window.__es.
const esHarness = `((url, types) => {
  const R = (window.__es = { msgs: [], errors: 0, opens: 0 });
  const es = new EventSource(url);
  window.__source = es;
  es.onopen = () => R.opens++;
  es.onerror = () => R.errors++;
  for (const t of types) {
    es.addEventListener(t, (e) => R.msgs.push({ type: e.type, lastEventId: e.lastEventId, data: e.data }));
  }
  return true;
})`

type esMsg struct {
	Type        string `json:"type"`
	LastEventID string `json:"lastEventId"`
	Data        string `json:"data"`
}

// testEventSourcePosition: a browser's own EventSource, cut before its first
// event, resumes from the position that the hub sent as a data-less id
// record: the reconnect is told recovered:true and gets every event
// published while it was away, with their ids.
func testEventSourcePosition(t *testing.T, b context.Context) {
	h := startHub(t, nil)
	px := hubtest.StartProxy(t, h.Servers.Addr())
	base := "http://" + px.Addr()
	p := openPage(t, b, base)
	user := "es-position"
	url := fmt.Sprintf("/sse/realtime?token=%s", hubtest.Token(t, user, time.Hour))
	types, _ := json.Marshal([]string{"hub.connected", "AWAY", "ALL"})
	evalT[bool](t, p, fmt.Sprintf("%s(%q, %s)", esHarness, url, types))
	p.waitFor(t, "hub.connected", `window.__es.msgs.length >= 1`, 10*time.Second)

	px.Cut() // before its first event; new connections are refused until restore
	p.waitFor(t, "the EventSource to notice the cut", `window.__es.errors >= 1`, 10*time.Second)
	var away []string
	for i := range 3 {
		away = append(away, h.publish(t, "AWAY", i, user))
	}
	away = append(away, h.publishAll(t, "ALL", "x"))
	px.Restore()

	p.waitFor(t, "the second hub.connected and the replay", fmt.Sprintf(`window.__es.msgs.length >= %d`, 2+len(away)), 20*time.Second)
	msgs := evalT[[]esMsg](t, p, "window.__es.msgs")
	var connected []map[string]any
	var got []string
	for _, m := range msgs {
		if m.Type == "hub.connected" {
			var env struct {
				Payload map[string]any `json:"payload"`
			}
			if err := json.Unmarshal([]byte(m.Data), &env); err != nil {
				t.Fatalf("hub.connected data %q: %v", m.Data, err)
			}
			connected = append(connected, env.Payload)
			continue
		}
		got = append(got, m.LastEventID)
	}
	if len(connected) != 2 {
		t.Fatalf("hub.connected %d times, want 2: %v", len(connected), msgs)
	}
	if pos, _ := connected[0]["position"].(string); pos == "" {
		t.Errorf("first hub.connected has no position: %v", connected[0])
	}
	if connected[1]["recovered"] != true || connected[1]["missed"] != float64(len(away)) {
		t.Errorf("after the cut: %v, want recovered true and missed %d", connected[1], len(away))
	}
	if !slices.Equal(got, away) {
		t.Errorf("events after the cut: %v, want %v", got, away)
	}
	evalT[bool](t, p, "(window.__source.close(), true)")
}
