package modules_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
)

// publishBody posts one broadcast body with the API key and returns the
// event's id (of the first user, or of all).
func (th *testHub) publishBody(body map[string]any) string {
	th.t.Helper()
	status, ans := th.post("/api/broadcast", body, map[string]string{"X-API-Key": hubtest.APIKey})
	if status != http.StatusAccepted {
		th.t.Fatalf("broadcast %v: %d %v", body, status, ans)
	}
	if id, ok := ans["id"].(string); ok {
		return id
	}
	return ans["events"].([]any)[0].(map[string]any)["id"].(string)
}

// keyOf decodes an envelope's key and volatile fields.
func keyOf(t *testing.T, e envelope) (key string, volatile bool) {
	t.Helper()
	var f struct {
		Key      *string `json:"key"`
		Volatile *bool   `json:"volatile"`
	}
	if err := json.Unmarshal(e.raw, &f); err != nil {
		t.Fatalf("envelope %s: %v", e.raw, err)
	}
	if f.Volatile != nil && !*f.Volatile {
		t.Fatalf(`envelope %s has "volatile":false`, e.raw)
	}
	if f.Key != nil {
		key = *f.Key
	}
	return key, f.Volatile != nil
}

// keyedEvent is one event of the keys scenario as published.
type keyedEvent struct {
	id, key  string
	volatile bool
	value    int
}

// keysScenario runs, on nodes (one node, or a cluster: publishes go
// round robin, devices sit on different nodes), a user with a device that
// stays connected and one that goes away while a draft of 10 keys gets 200
// updates, among plain, volatile and keyed broadcast events. The device
// that stayed got everything live, keys and volatile flags on the
// envelopes; the one that comes back (on another node) gets, recovered,
// one event per key (the newest), the plain events, the newest keyed
// broadcast and no volatile event, in publish order; resuming from a
// superseded id and from a volatile id works too.
func keysScenario(t *testing.T, nodes []*testHub, user string, tr [2]string) {
	node := func(i int) *testHub { return nodes[i%len(nodes)].with(t) }
	tok := node(0).token(user, time.Hour)
	stay := node(0).connect(tr[0], tok, "")
	expectConnected(t, stay, false, 0)
	away := node(1).connect(tr[1], tok, "")
	expectConnected(t, away, false, 0)
	start := node(2).publishBody(map[string]any{"userIds": []string{user}, "type": "START"})
	expectIDs(t, stay, []string{start}, "start")
	expectIDs(t, away, []string{start}, "start")
	hangUp(away)

	var sent []keyedEvent
	for i := range 200 {
		body := map[string]any{"userIds": []string{user}, "type": "DRAFT_UPDATED", "payload": map[string]int{"rev": i}}
		ev := keyedEvent{value: i}
		switch {
		case i%40 == 13:
			body = map[string]any{"all": true, "type": "BANNER", "payload": map[string]int{"rev": i}, "key": "banner"}
			ev.key = "banner"
		case i%9 == 4:
			body["type"], body["volatile"] = "TYPING", true
			ev.volatile = true
		case i%25 == 7:
			body["type"] = "NOTE"
		default:
			ev.key = fmt.Sprintf("draft:%d", i%10)
			body["key"] = ev.key
		}
		ev.id = node(i).publishBody(body)
		sent = append(sent, ev)
	}

	// live: every event, in order, with its key or volatile flag
	for i, want := range sent {
		e := stay.next(10 * time.Second)
		key, vol := keyOf(t, e)
		if e.ID != want.id || key != want.key || vol != want.volatile {
			t.Fatalf("live event %d: %s, want id %s key %q volatile %v", i, e.raw, want.id, want.key, want.volatile)
		}
	}

	// what a resume from position i must replay: of each key the newest,
	// the plain events, no volatile one, in publish order
	replayAfter := func(i int) []keyedEvent {
		newest := map[string]int{}
		for j := i; j < len(sent); j++ {
			if sent[j].key != "" {
				newest[sent[j].key] = j
			}
		}
		var out []keyedEvent
		for j := i; j < len(sent); j++ {
			switch e := sent[j]; {
			case e.volatile:
			case e.key != "" && newest[e.key] != j:
			default:
				out = append(out, e)
			}
		}
		return out
	}
	check := func(from string, after int, on *testHub, transport string) {
		t.Helper()
		d := on.connect(transport, tok, from)
		want := replayAfter(after)
		expectConnected(t, d, true, len(want))
		state := map[string]int{}
		for i, w := range want {
			e := d.next(10 * time.Second)
			key, vol := keyOf(t, e)
			if e.ID != w.id || key != w.key || vol {
				t.Fatalf("replay from %s, event %d: %s, want id %s key %q", from, i, e.raw, w.id, w.key)
			}
			var p struct{ Rev int }
			_ = json.Unmarshal(e.Payload, &p)
			if key != "" {
				state[key] = p.Rev
			}
		}
		// the device's state per key is the newest value published for it
		for j := after; j < len(sent); j++ {
			if k := sent[j].key; k != "" && state[k] < sent[j].value {
				t.Fatalf("replay from %s: key %s at %d, %d was published", from, k, state[k], sent[j].value)
			}
		}
		hangUp(d)
	}
	check(start, 0, node(1), tr[1])
	// from a superseded id (draft:5's first update) and from a volatile id
	firstOf := func(match func(keyedEvent) bool) int {
		return slices.IndexFunc(sent, match)
	}
	sup := firstOf(func(e keyedEvent) bool { return e.key == "draft:5" })
	check(sent[sup].id, sup+1, node(2), tr[0])
	vol := firstOf(func(e keyedEvent) bool { return e.volatile })
	check(sent[vol].id, vol+1, node(0), tr[1])
	// the newest id: nothing to replay
	check(sent[len(sent)-1].id, len(sent), node(1), tr[0])
}

// TestKeysOneNode runs keysScenario on one node, on both transports.
func TestKeysOneNode(t *testing.T) {
	th := startHub(t, nil)
	for _, tr := range [][2]string{{"websocket", "sse"}, {"sse", "websocket"}} {
		t.Run(tr[0]+"-"+tr[1], func(t *testing.T) {
			keysScenario(t, []*testHub{th}, "keys-"+tr[0], tr)
		})
	}
}

// TestKeysThreeNodes runs keysScenario on three nodes over Redis.
func TestKeysThreeNodes(t *testing.T) {
	ru := clusterRedisURL(t)
	var nodes []*testHub
	for i := range 3 {
		nodes = append(nodes, startNode(t, ru, fmt.Sprintf("node-%d", i+1), nil))
	}
	for i, n := range nodes {
		hubtest.Eventually(t, 10*time.Second, fmt.Sprintf("node %d ready", i+1), func() bool {
			st, _ := getStatus(n.URL+"/readyz", "")
			return st == http.StatusOK
		})
	}
	for _, tr := range [][2]string{{"websocket", "sse"}, {"sse", "websocket"}} {
		t.Run(tr[0]+"-"+tr[1], func(t *testing.T) {
			keysScenario(t, nodes, "cl-keys-"+tr[0], tr)
		})
	}
}
