package modules_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

// getKey GETs path from th's service API with the API key.
func (th *testHub) getKey(path string) (int, map[string]any) {
	th.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, th.API+path, nil)
	req.Header.Set("X-API-Key", hubtest.APIKey)
	return do(th.t, req)
}

// publishDevices publishes to users through th and returns the devices
// count of each and the ids.
func (th *testHub) publishDevices(body map[string]any) (devices []int, ids []string) {
	th.t.Helper()
	status, ans := th.post("/api/broadcast", body, map[string]string{"X-API-Key": hubtest.APIKey})
	if status != http.StatusAccepted {
		th.t.Fatalf("broadcast: %d %v", status, ans)
	}
	if evs, ok := ans["events"].([]any); ok {
		for _, e := range evs {
			m := e.(map[string]any)
			d, ok := m["devices"].(float64)
			if !ok {
				th.t.Fatalf("answer %v: an event without devices", ans)
			}
			devices = append(devices, int(d))
			ids = append(ids, m["id"].(string))
		}
		return devices, ids
	}
	d, ok := ans["devices"].(float64)
	if !ok {
		th.t.Fatalf("answer %v: no devices", ans)
	}
	return []int{int(d)}, []string{ans["id"].(string)}
}

// connectionsOf reads GET /api/users/{user}/connections through th and
// returns the connection ids by node.
func (th *testHub) connectionsOf(user string) (map[string][]string, []map[string]any) {
	th.t.Helper()
	status, body := th.getKey("/api/users/" + user + "/connections")
	if status != http.StatusOK || body["userId"] != user {
		th.t.Fatalf("connections of %s: %d %v", user, status, body)
	}
	list, ok := body["connections"].([]any)
	if !ok {
		th.t.Fatalf("connections of %s: %v, want a list ([] for none)", user, body)
	}
	byNode := map[string][]string{}
	var all []map[string]any
	for _, c := range list {
		m := c.(map[string]any)
		byNode[m["node"].(string)] = append(byNode[m["node"].(string)], m["connectionId"].(string))
		all = append(all, m)
	}
	return byNode, all
}

// TestDevicesOneNode and TestDevicesThreeNodes: the broadcast answers
// count each user's live connections (of everyone's for all), on any node,
// at once after hub.connected; a device that leaves stops counting; the
// connections endpoint lists them with their node, through any node; a
// repeated idempotencyKey answers the first count.
func TestDevicesOneNode(t *testing.T) {
	testDevices(t, []*testHub{startHub(t, nil)})
}

func TestDevicesThreeNodes(t *testing.T) {
	ru := clusterRedisURL(t)
	var nodes []*testHub
	for i := range 3 {
		nodes = append(nodes, startNode(t, ru, fmt.Sprintf("dev-node-%d", i+1), nil))
	}
	for i, n := range nodes {
		hubtest.Eventually(t, 10*time.Second, fmt.Sprintf("node %d ready", i+1), func() bool {
			st, _ := getStatus(n.URL+"/readyz", "")
			return st == http.StatusOK
		})
	}
	testDevices(t, nodes)
}

func testDevices(t *testing.T, nodes []*testHub) {
	first, last, middle := nodes[0], nodes[len(nodes)-1], nodes[len(nodes)/2]
	tok := first.token("dv", time.Hour)
	a := first.connect("websocket", tok, "")
	aID := a.connected()["connectionId"].(string)
	b := last.connect("sse", tok, "") // on another node when there are three
	bID := b.connected()["connectionId"].(string)
	c := middle.connect("websocket", first.token("dv2", time.Hour), "")
	c.connected()

	// counted at once, through every node; one id for the three users
	for _, n := range nodes {
		devices, ids := n.publishDevices(map[string]any{"userIds": []string{"dv", "dv2", "dv-offline"}, "type": "D"})
		if !slices.Equal(devices, []int{2, 1, 0}) || ids[0] != ids[1] || ids[1] != ids[2] {
			t.Fatalf("through %s: devices %v ids %v, want [2 1 0] and one id", n.Config.NodeName, devices, ids)
		}
		expectIDs(t, a, ids[:1], "dv on "+first.Config.NodeName)
		expectIDs(t, b, ids[:1], "dv on "+last.Config.NodeName)
		expectIDs(t, c, ids[:1], "dv2")
	}
	if devices, _ := middle.publishDevices(map[string]any{"all": true, "type": "D"}); devices[0] != 3 {
		t.Fatalf("broadcast to all: devices %d, want 3", devices[0])
	}

	// the connections endpoint, through every node
	for _, n := range nodes {
		byNode, all := n.connectionsOf("dv")
		if len(all) != 2 || !slices.Contains(byNode[first.Config.NodeName], aID) || !slices.Contains(byNode[last.Config.NodeName], bID) {
			t.Fatalf("connections of dv through %s: %v, want %s on %s and %s on %s",
				n.Config.NodeName, all, aID, first.Config.NodeName, bID, last.Config.NodeName)
		}
		for _, m := range all {
			at, err := time.Parse(time.RFC3339, m["connectedAt"].(string))
			wantTr := map[string]string{aID: "websocket", bID: "sse"}[m["connectionId"].(string)]
			if err != nil || time.Since(at) > time.Minute || m["transport"] != wantTr {
				t.Errorf("connection %v: want transport %s and a recent connectedAt", m, wantTr)
			}
		}
		if _, none := n.connectionsOf("dv-offline"); len(none) != 0 {
			t.Fatalf("connections of an offline user: %v", none)
		}
	}

	// the idempotency key: the first answer, count included
	body := map[string]any{"userIds": []string{"dv"}, "type": "D", "idempotencyKey": "dv-key"}
	firstAns, _ := first.publishDevices(body)

	// a device leaves: the count drops, on every node, and the list too
	hangUp(b)
	for _, n := range nodes {
		hubtest.Eventually(t, 10*time.Second, "dv's count to drop through "+n.Config.NodeName, func() bool {
			devices, _ := n.publishDevices(map[string]any{"userIds": []string{"dv"}, "type": "D"})
			return devices[0] == 1
		})
		hubtest.Eventually(t, 10*time.Second, "the connection that left to go from the list", func() bool {
			byNode, all := n.connectionsOf("dv")
			return len(all) == 1 && slices.Equal(byNode[first.Config.NodeName], []string{aID})
		})
	}
	if devices, _ := last.publishDevices(map[string]any{"all": true, "type": "D"}); devices[0] != 2 {
		t.Fatalf("broadcast to all after a device left: devices %d, want 2", devices[0])
	}
	if again, _ := last.publishDevices(body); !slices.Equal(again, firstAns) || firstAns[0] != 2 {
		t.Fatalf("repeated idempotencyKey: devices %v, want the first answer's %v (2)", again, firstAns)
	}
	// batch results carry the count per event
	status, ans := middle.post("/api/broadcast/batch", map[string]any{"messages": []any{
		map[string]any{"userIds": []string{"dv", "dv2"}, "type": "D"},
		map[string]any{"all": true, "type": "D"},
	}}, map[string]string{"X-API-Key": hubtest.APIKey})
	if status != http.StatusAccepted || !strings.Contains(fmt.Sprint(ans), "devices:1") ||
		fmt.Sprint(ans["results"].([]any)[1].(map[string]any)["devices"]) != "2" {
		t.Fatalf("batch: %d %v, want the counts of each event", status, ans)
	}
}

// TestHistoryByteBoundsConfigured: HUB_HISTORY_MAX_BYTES reaches the hub
// and the Redis broker: a user's history keeps what fits, oldest out
// first, and a resume that needs an evicted event is recovered:false.
func TestHistoryByteBoundsConfigured(t *testing.T) {
	payload := strings.Repeat("x", 1000)
	run := func(t *testing.T, th *testHub) {
		tok := th.token("bb", time.Hour)
		var ids []string
		for range 4 {
			ids = append(ids, th.publish("BIG", payload, "bb")["bb"])
		}
		// 2 KiB holds the last of the ~1.1 KB envelopes only: the third is gone
		expectConnected(t, th.connect("websocket", tok, ids[2]), false, 0)
		d := th.connect("sse", tok, ids[3])
		expectConnected(t, d, true, 0)
		expectLive(t, th, d, "bb")
	}
	mod := func(c *config.Config) { c.HistoryMaxBytes = 2 << 10 }
	t.Run("memory", func(t *testing.T) { run(t, startHub(t, mod)) })
	t.Run("redis", func(t *testing.T) {
		th := startNode(t, clusterRedisURL(t), "bb-node", mod)
		hubtest.Eventually(t, 10*time.Second, "ready", func() bool {
			st, _ := getStatus(th.URL+"/readyz", "")
			return st == http.StatusOK
		})
		run(t, th)
	})
}
