package hub_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
)

// TestDevicesCounted: Publish and BroadcastAll count the connections live
// when the event was published (a user's, everyone's); a connection that
// left is no longer counted.
func TestDevicesCounted(t *testing.T) {
	h := newHub(t, hub.Options{HistorySize: 10, HistoryTTL: time.Minute})
	a1, _ := register(t, h, ws("a"))
	register(t, h, hub.ConnInfo{UserID: "a", Transport: hub.TransportSSE})
	register(t, h, ws("b"))
	evs, err := h.Publish(ctx, []string{"a", "b", "offline"}, "T", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []int{2, 1, 0}
	for i, e := range evs {
		if e.Devices != want[i] {
			t.Errorf("%s: devices %d, want %d", e.UserID, e.Devices, want[i])
		}
	}
	all, err := h.BroadcastAll(ctx, "T", json.RawMessage(`"x"`))
	if err != nil || all.Devices != 3 || all.ID == "" {
		t.Fatalf("BroadcastAll = %+v, %v; want an id and 3 devices", all, err)
	}

	h.Unregister(a1) // a device leaves
	evs, _ = h.Publish(ctx, []string{"a"}, "T", nil)
	if evs[0].Devices != 1 {
		t.Errorf("after a device left: devices %d, want 1", evs[0].Devices)
	}
	if all, _ := h.BroadcastAll(ctx, "T", nil); all.Devices != 2 {
		t.Errorf("broadcast after a device left: devices %d, want 2", all.Devices)
	}
	// without history, the same counts
	h2 := newHub(t, hub.Options{})
	register(t, h2, ws("a"))
	if evs, _ := h2.Publish(ctx, []string{"a", "b"}, "T", nil); evs[0].Devices != 1 || evs[1].Devices != 0 {
		t.Errorf("without history: %+v, want 1 and 0 devices", evs)
	}
}

// TestConnectionsOnOneNode lists a user's connections with their fields.
func TestConnectionsOnOneNode(t *testing.T) {
	h := newHub(t, hub.Options{Node: "hub-1"})
	before := time.Now()
	c1, _ := register(t, h, ws("u1"))
	c2, _ := register(t, h, hub.ConnInfo{UserID: "u1", Transport: hub.TransportSSE})
	register(t, h, ws("u2"))
	got, err := h.Connections(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("Connections(u1) = %+v, want 2", got)
	}
	for i, want := range []struct {
		c  *hub.Conn
		tr string
	}{{c1, hub.TransportWebSocket}, {c2, hub.TransportSSE}} {
		g := got[i]
		if g.ConnectionID != want.c.ID() || g.Transport != want.tr || g.Node != "hub-1" ||
			g.ConnectedAt.Before(before.Add(-time.Second)) || g.ConnectedAt.After(time.Now()) {
			t.Errorf("connection %d = %+v, want id %s transport %s node hub-1", i, g, want.c.ID(), want.tr)
		}
	}
	h.Unregister(c1)
	if got, _ := h.Connections(ctx, "u1"); len(got) != 1 || got[0].ConnectionID != c2.ID() {
		t.Errorf("after one left: %+v", got)
	}
	if got, err := h.Connections(ctx, "nobody"); err != nil || len(got) != 0 {
		t.Errorf("Connections(nobody) = %+v, %v; want none", got, err)
	}
}

// TestResumable: only ids this hub could have issued count as a resume for
// admission control.
func TestResumable(t *testing.T) {
	h := newHub(t, hub.Options{Epoch: "EP", HistorySize: 10, HistoryTTL: time.Minute})
	if h.Resumable("EP-1") {
		t.Error("EP-1 before any event: resumable, want not (a seq from the future)")
	}
	if !h.Resumable("EP-0p") {
		t.Error("the position before the first event: not resumable")
	}
	evs, _ := h.Publish(ctx, []string{"u"}, "T", nil)
	pos := *connected(t, mustDrain(t, h, "u")).Position
	for _, id := range []string{evs[0].ID, pos, "EP-0p", "EP-1p"} {
		if !h.Resumable(id) {
			t.Errorf("Resumable(%q) = false, want true", id)
		}
	}
	for _, id := range []string{
		"", "EP-2", "EP-2p", "EP-99999", "OTHER-1", "OTHER-1p", "EP", "EP-", "EP-x", "EP--1", "-1",
		"EP-1pp", "p", "EP-01x", "1", "EP-18446744073709551616", strings.Repeat("E", 200) + "-1",
		"' OR 1=1 --", "EP-1\n",
	} {
		if h.Resumable(id) {
			t.Errorf("Resumable(%q) = true, want false", id)
		}
	}
}
