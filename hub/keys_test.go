package hub_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
)

// publishKeyed publishes one event of type T with payload p to users with
// the options and returns its id.
func publishKeyed(t *testing.T, h *hub.Hub, p any, opts []hub.EventOption, users ...string) string {
	t.Helper()
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := h.Publish(ctx, users, "T", raw, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return evs[0].ID
}

func keyed(k string) []hub.EventOption { return []hub.EventOption{hub.Keyed(k)} }

var volatile = []hub.EventOption{hub.Volatile()}

// envelopeOf decodes a message's frame with the key and volatile fields.
type keyedEnvelope struct {
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Key      *string         `json:"key"`
	Volatile *bool           `json:"volatile"`
	Payload  json.RawMessage `json:"payload"`
}

func decodeKeyed(t *testing.T, m *hub.Message) keyedEnvelope {
	t.Helper()
	var e keyedEnvelope
	if err := json.Unmarshal(m.Frame, &e); err != nil {
		t.Fatalf("frame %s: %v", m.Frame, err)
	}
	return e
}

// TestKeyedEventsSupersede: a device away while a draft is edited 200
// times gets, on resume, the newest edit of each key in publish order and
// every unkeyed event, recovered:true with missed counting what is
// replayed; a device that stayed connected got every event live; the
// envelope carries the key; the history holds one event per key.
func TestKeyedEventsSupersede(t *testing.T) {
	h := newHub(t, hub.Options{Epoch: "E", HistorySize: 50, HistoryTTL: time.Minute})
	live, _ := register(t, h, ws("u1"))
	start := publishKeyed(t, h, "start", nil, "u1")

	var last = map[string]string{} // key -> newest id
	var plain []string
	for i := range 200 {
		k := fmt.Sprintf("draft:%d", i%3)
		last[k] = publishKeyed(t, h, map[string]any{"draft": k, "rev": i}, keyed(k), "u1")
		if i%50 == 7 {
			plain = append(plain, publishKeyed(t, h, i, nil, "u1"))
		}
	}
	// the newest of each key and every plain event, in publish (id) order
	want := append(slices.Clone(plain), last["draft:0"], last["draft:1"], last["draft:2"])
	slices.SortFunc(want, func(a, b string) int { return int(seqOf(t, a)) - int(seqOf(t, b)) })

	p, got := reconnect(t, h, "u1", start)
	if !p.Recovered || p.Missed != len(want) || !slices.Equal(got, want) {
		t.Fatalf("resume: recovered %v missed %d %v; want true %d %v", p.Recovered, p.Missed, got, len(want), want)
	}
	// ids keep increasing through the replay, and the position is the last
	if p.Position == nil || *p.Position != want[len(want)-1] {
		t.Errorf("position %v, want %s", p.Position, want[len(want)-1])
	}

	// live delivery is unchanged: the connected device got all 205
	msgs, _ := drain(live)
	if n := len(ids(msgs)); n != 1+200+len(plain) {
		t.Fatalf("the live device got %d events, want %d", n, 1+200+len(plain))
	}
	for _, m := range msgs[1:] {
		e := decodeKeyed(t, m)
		switch {
		case e.Volatile != nil:
			t.Fatalf("volatile field in %s", m.Frame)
		case strings.HasPrefix(string(e.Payload), "{"):
			if e.Key == nil || !strings.Contains(string(e.Payload), `"draft":"`+*e.Key+`"`) || m.Key() != *e.Key {
				t.Fatalf("keyed envelope %s: key %v, Message.Key %q", m.Frame, e.Key, m.Key())
			}
		case e.Key != nil:
			t.Fatalf("plain envelope with a key: %s", m.Frame)
		}
	}
	h.Unregister(live)

	// the history holds one event per key: 205 events in a history of 50
	// lost nothing, so even the first id resumes
	if p, got := reconnect(t, h, "u1", start); !p.Recovered || len(got) != len(want) {
		t.Fatalf("second resume: recovered %v, %d events", p.Recovered, len(got))
	}
}

// TestResumeFromSupersededID: the id of a superseded event (a device that
// saw an edit that was edited again) is still resumable; the replay holds
// the newest of its key and what else came after it.
func TestResumeFromSupersededID(t *testing.T) {
	h := newHub(t, hub.Options{Epoch: "E", HistorySize: 10, HistoryTTL: time.Minute})
	a1 := publishKeyed(t, h, 1, keyed("a"), "u1")
	x := publishKeyed(t, h, "x", nil, "u1")
	a2 := publishKeyed(t, h, 2, keyed("a"), "u1")
	b1 := publishKeyed(t, h, 3, keyed("b"), "u1")
	a3 := publishKeyed(t, h, 4, keyed("a"), "u1")

	tests := []struct {
		name, from string
		want       []string
	}{
		{"a1, superseded twice", a1, []string{x, b1, a3}},
		{"a2, superseded", a2, []string{b1, a3}},
		{"x, held", x, []string{b1, a3}},
		{"b1, held", b1, []string{a3}},
		{"a3, the newest", a3, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, got := reconnect(t, h, "u1", tt.from)
			if !p.Recovered || p.Missed != len(tt.want) || !slices.Equal(got, tt.want) {
				t.Fatalf("recovered %v missed %d %v; want true %d %v", p.Recovered, p.Missed, got, len(tt.want), tt.want)
			}
		})
	}
	// superseding does not raise the floor, but the bounds still do: ten
	// more plain events push x, b1 and a3 out, and a superseded id from
	// before them is then not provable
	for i := range 10 {
		publishKeyed(t, h, i, nil, "u1")
	}
	if p, got := reconnect(t, h, "u1", a2); p.Recovered || len(got) != 0 {
		t.Fatalf("from a2 after the bound dropped what followed it: recovered %v, %v", p.Recovered, got)
	}
}

// TestVolatileEvents: a volatile event reaches the connections live now,
// is stored nowhere (no replay, no user history made for it), never makes
// a resume recovered:false, and its id is resumable like a position.
func TestVolatileEvents(t *testing.T) {
	h := newHub(t, hub.Options{Epoch: "E", HistorySize: 3, HistoryTTL: time.Minute})
	c, _ := register(t, h, ws("u1"))
	first := publishKeyed(t, h, "first", nil, "u1")
	var typing []string
	for i := range 20 { // far more than the history holds: it keeps nothing of them
		typing = append(typing, publishKeyed(t, h, i, volatile, "u1"))
	}
	msgs, _ := drain(c)
	if got := ids(msgs); len(got) != 21 {
		t.Fatalf("live: %d events, want 21", len(got))
	}
	for _, m := range msgs[2:] {
		if e := decodeKeyed(t, m); e.Volatile == nil || !*e.Volatile || e.Key != nil || !m.Volatile() {
			t.Fatalf("volatile envelope %s", m.Frame)
		}
	}
	if e := decodeKeyed(t, msgs[1]); e.Volatile != nil {
		t.Fatalf("plain envelope %s says volatile", msgs[1].Frame)
	}
	h.Unregister(c)

	after := publishKeyed(t, h, "after", nil, "u1")
	// across volatile events: nothing of them replayed, still recovered
	if p, got := reconnect(t, h, "u1", first); !p.Recovered || p.Missed != 1 || !slices.Equal(got, []string{after}) {
		t.Fatalf("from before the volatile events: recovered %v missed %d %v; want true 1 [%s]", p.Recovered, p.Missed, got, after)
	}
	// from a volatile id: a position in the sequence
	if p, got := reconnect(t, h, "u1", typing[5]); !p.Recovered || !slices.Equal(got, []string{after}) {
		t.Fatalf("from a volatile id: recovered %v %v", p.Recovered, got)
	}
	if p, got := reconnect(t, h, "u1", typing[19]); !p.Recovered || !slices.Equal(got, []string{after}) {
		t.Fatalf("from the last volatile id: recovered %v %v", p.Recovered, got)
	}

	// a user who only ever got volatile events has no history on the node
	n := h.UserStates()
	vid := publishKeyed(t, h, "v", volatile, "ghost")
	if h.UserStates() != n {
		t.Fatal("a volatile event made a user history")
	}
	if p, got := reconnect(t, h, "ghost", vid); !p.Recovered || len(got) != 0 {
		t.Fatalf("ghost from its volatile id: recovered %v %v", p.Recovered, got)
	}
	// and to everyone: live only
	d, _ := register(t, h, ws("u2"))
	all, err := h.BroadcastAll(ctx, "T", json.RawMessage(`1`), hub.Volatile())
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(mustDrainConn(d)); !slices.Equal(got, []string{all.ID}) || all.Devices != 1 {
		t.Fatalf("volatile broadcast: %v devices %d", got, all.Devices)
	}
	h.Unregister(d)
	if n := h.BroadcastHistoryLen(); n != 0 {
		t.Fatalf("the broadcast history holds %d events", n)
	}
	if p, got := reconnect(t, h, "u2", all.ID); !p.Recovered || len(got) != 0 {
		t.Fatalf("from a volatile broadcast's id: recovered %v %v", p.Recovered, got)
	}
}

func mustDrainConn(c *hub.Conn) []*hub.Message {
	msgs, _ := drain(c)
	return msgs
}

// TestKeyedBroadcasts: an all:true event with a key supersedes the last
// broadcast with that key, and on resume any older event of the user with
// that key; a user event with the key after it supersedes it for that
// user only.
func TestKeyedBroadcasts(t *testing.T) {
	h := newHub(t, hub.Options{Epoch: "E", HistorySize: 10, HistoryTTL: time.Minute})
	start := publishKeyed(t, h, 0, nil, "u1", "u2")
	publishKeyed(t, h, "mine", keyed("banner"), "u1") // superseded for u1 by the broadcasts
	var b1, b2 string
	for i, p := range []*string{&b1, &b2} {
		id, err := h.Broadcast(ctx, "T", json.RawMessage(fmt.Sprint(i)), hub.Keyed("banner"))
		if err != nil {
			t.Fatal(err)
		}
		*p = id
	}
	if n := h.BroadcastHistoryLen(); n != 1 {
		t.Fatalf("broadcast history holds %d events, want 1 (b2)", n)
	}
	for _, u := range []string{"u1", "u2"} {
		if p, got := reconnect(t, h, u, start); !p.Recovered || !slices.Equal(got, []string{b2}) {
			t.Fatalf("%s: recovered %v %v; want [%s]", u, p.Recovered, got, b2)
		}
	}
	u1b := publishKeyed(t, h, "mine again", keyed("banner"), "u1")
	if p, got := reconnect(t, h, "u1", start); !p.Recovered || !slices.Equal(got, []string{u1b}) {
		t.Fatalf("u1 after its own keyed event: %v %v; want [%s]", p.Recovered, got, u1b)
	}
	if p, got := reconnect(t, h, "u2", start); !p.Recovered || !slices.Equal(got, []string{b2}) {
		t.Fatalf("u2 keeps the broadcast: %v %v", p.Recovered, got)
	}
}

// TestKeyedBoundsCountOneEventPerKey: the per-user bound (count and bytes)
// counts one event per key, the node-wide account gives back the bytes of
// superseded events, and publishing many updates keeps the ring bounded.
func TestKeyedBoundsCountOneEventPerKey(t *testing.T) {
	p := sizedPayload(100)
	probe := newHub(t, hub.Options{Epoch: "E", HistorySize: 100, HistoryTTL: time.Minute})
	size := envelopeSize(t, probe, "T", p)

	h := newHub(t, hub.Options{Epoch: "E", HistorySize: 4, HistoryTTL: time.Minute, HistoryMaxBytes: 20 * size})
	first := publishKeyed(t, h, "0", keyed("k0"), "u1")
	for i := range 3000 {
		publishKeyed(t, h, strings.Repeat("x", 100), keyed(fmt.Sprint("k", i%4)), "u1")
	}
	// four keys in a history of four: the first id (superseded) resumes
	if p, got := reconnect(t, h, "u1", first); !p.Recovered || p.Missed != 4 || len(got) != 4 {
		t.Fatalf("after 3000 updates of 4 keys: recovered %v missed %d", p.Recovered, p.Missed)
	}
	// (the envelopes grow by their key and longer ids: 32 bytes spared)
	if got := h.UserHistoryBytes("u1"); got > 4*(size+32) {
		t.Errorf("u1's history holds %d bytes, want 4 envelopes of about %d", got, size)
	}
	if got, want := h.HistoryBytes(), h.UserHistoryBytes("u1"); got != want {
		t.Errorf("node-wide bytes %d, want u1's %d (superseded events given back)", got, want)
	}
	if n := h.UserRingLen("u1"); n > 2*4 {
		t.Errorf("u1's ring has %d slots after 3000 updates, want at most 8", n)
	}
	// a fifth key pushes the oldest key's event out: resumes from before
	// it are no longer provable, from after it they are
	k4 := publishKeyed(t, h, "new", keyed("k4"), "u1")
	if p, _ := reconnect(t, h, "u1", first); p.Recovered {
		t.Fatal("a dropped key's event: recovered")
	}
	if p, got := reconnect(t, h, "u1", k4); !p.Recovered || len(got) != 0 {
		t.Fatalf("from the newest: %v %v", p.Recovered, got)
	}
}
