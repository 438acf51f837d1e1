package redisbroker_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
)

// The frames of keyed and volatile events built by the Lua script are
// byte for byte the hub's, live and (keyed) from the history, and a
// replayed message knows its key.
func TestKeyedFrameMatchesEncodeEnvelope(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	n := startNode(t, url, pfx, "a", 100, time.Minute)
	cl := connect(t, n.hub, "u1", "")
	ts := time.Now().Add(-time.Second)
	var sent []hub.EventOptions
	start, _, err := n.broker.PublishUsers(bg(t), []string{"u1"}, "T", []byte(`0`), ts, hub.EventOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []hub.EventOptions{{Key: "draft:42"}, {Volatile: true}, {Key: "a.b_c-D:9"}, {}} {
		id, _, err := n.broker.PublishUsers(bg(t), []string{"u1"}, "T", []byte(`{"x":1}`), ts, o)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, o)
		got := cl.waitEvents(1 + len(sent))[len(sent)]
		if want := hub.EncodeEnvelope(id, "T", o, []byte(`{"x":1}`), ts); string(got.Frame) != string(want) {
			t.Errorf("live frame\n got %s\nwant %s", got.Frame, want)
		}
	}
	hist, ok, err := n.broker.History(bg(t), "u1", start, 100)
	if err != nil || !ok {
		t.Fatalf("History = %v, %v", ok, err)
	}
	live := cl.events()
	want := []*hub.Message{live[1], live[3], live[4]} // the volatile one is not stored
	if len(hist) != len(want) {
		t.Fatalf("history %v, want %v", idsOf(hist), idsOf(want))
	}
	for i, m := range hist {
		if string(m.Frame) != string(want[i].Frame) {
			t.Errorf("history[%d] = %s, want %s", i, m.Frame, want[i].Frame)
		}
	}
	if hist[0].Key() != "draft:42" || hist[1].Key() != "a.b_c-D:9" || hist[2].Key() != "" {
		t.Errorf("replayed keys %q %q %q", hist[0].Key(), hist[1].Key(), hist[2].Key())
	}
	// key and volatile together: refused, nothing published
	if _, _, err := n.broker.PublishUsers(bg(t), []string{"u1"}, "T", nil, ts, hub.EventOptions{Key: "k", Volatile: true}); err == nil {
		t.Fatal("key and volatile together accepted")
	}
}

// keyedRun publishes, on node a, a start event, then updates of keys
// draft:0..keys-1 (round robin) with a plain event every plainEvery, and
// returns the start id, the newest id of each key and the plain ids.
func keyedRun(t *testing.T, h *hub.Hub, user string, updates, keys, plainEvery int) (start string, newest map[string]string, plain []string) {
	t.Helper()
	evs, err := h.Publish(bg(t), []string{user}, "START", nil)
	if err != nil {
		t.Fatal(err)
	}
	start = evs[0].ID
	newest = map[string]string{}
	for i := range updates {
		k := fmt.Sprintf("draft:%d", i%keys)
		evs, err := h.Publish(bg(t), []string{user}, "DRAFT", json.RawMessage(fmt.Sprintf(`{"rev":%d}`, i)), hub.Keyed(k))
		if err != nil {
			t.Fatal(err)
		}
		newest[k] = evs[0].ID
		if plainEvery > 0 && i%plainEvery == plainEvery-1 {
			evs, err := h.Publish(bg(t), []string{user}, "PLAIN", json.RawMessage(strconv.Itoa(i)))
			if err != nil {
				t.Fatal(err)
			}
			plain = append(plain, evs[0].ID)
		}
	}
	return start, newest, plain
}

func sortedIDs(t *testing.T, ids []string) []string {
	t.Helper()
	out := slices.Clone(ids)
	slices.SortFunc(out, func(a, b string) int {
		_, x, _ := hub.ParseID(a)
		_, y, _ := hub.ParseID(b)
		return int(x) - int(y)
	})
	return out
}

// Keyed events supersede each other in Redis: the stream holds one entry
// per key (its state hash indexes it and counts its bytes), a resume on
// another node replays the newest of each key and every plain event in
// publish order, recovered, and the ids of superseded events resume.
func TestKeyedSupersede(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	a := startNode(t, url, pfx, "a", 100, time.Minute)
	b := startNode(t, url, pfx, "b", 100, time.Minute)
	live := connect(t, b.hub, "u1", "")

	start, newest, plain := keyedRun(t, a.hub, "u1", 200, 10, 40)
	want := slices.Clone(plain)
	for _, id := range newest {
		want = append(want, id)
	}
	want = sortedIDs(t, want)

	// live delivery is unchanged
	if got := live.waitEvents(1 + 200 + len(plain)); len(got) != 1+200+len(plain) {
		t.Fatalf("live: %d events", len(got))
	}

	rc := hubtest.RedisClient(t, url)
	epoch, _, _ := hub.ParseID(start)
	entries := rc.XRange(bg(t), pfx+"u:{u1}:"+epoch, "-", "+").Val()
	if len(entries) != 1+len(want) {
		t.Fatalf("u1's stream holds %d entries, want %d (start, plain, one per key)", len(entries), 1+len(want))
	}
	var bytes int
	for _, e := range entries {
		bytes += len(e.Values["f"].(string))
	}
	st := rc.HGetAll(bg(t), pfx+"uh:{u1}:"+epoch).Val()
	if st["b"] != strconv.Itoa(bytes) {
		t.Errorf("state bytes %s, want %d", st["b"], bytes)
	}
	if f := st["f"]; f != "" && f != "0" {
		t.Errorf("floor %s after superseding only, want none", f)
	}
	for k, id := range newest {
		_, seq, _ := hub.ParseID(id)
		if v := st["k:"+k]; !strings.HasPrefix(v, strconv.FormatUint(seq, 10)+":") {
			t.Errorf("state k:%s = %q, want the seq %d", k, v, seq)
		}
	}

	cl := connect(t, b.hub, "u1", start)
	if rec, missed := cl.connected(); !rec || missed != len(want) {
		t.Fatalf("resume: recovered %v missed %d, want true %d", rec, missed, len(want))
	}
	if got := idsOf(cl.waitEvents(len(want))); !slices.Equal(got, want) {
		t.Fatalf("replay %v, want %v", got, want)
	}

	// from a superseded id: the first update of draft:3 (seq start+4)
	_, s0, _ := hub.ParseID(start)
	superseded := fmt.Sprintf("%s-%d", epoch, s0+4)
	msgs, ok, err := a.broker.History(bg(t), "u1", superseded, 100)
	if err != nil || !ok {
		t.Fatalf("History from a superseded id = %v, %v", ok, err)
	}
	for i := 1; i < len(msgs); i++ {
		if msgs[i].Seq() <= msgs[i-1].Seq() {
			t.Fatalf("replay out of order: %v", idsOf(msgs))
		}
	}
	if !slices.Equal(idsOf(msgs), want) {
		t.Fatalf("from %s: %v, want %v", superseded, idsOf(msgs), want)
	}
	c2 := connect(t, a.hub, "u1", superseded)
	if rec, missed := c2.connected(); !rec || missed != len(want) {
		t.Fatalf("resume from a superseded id: recovered %v missed %d", rec, missed)
	}
}

// Volatile events are published and counted, never stored: a resume
// across them is recovered and replays none, their ids resume like
// positions, and a user who only got volatile events has no keys.
func TestVolatile(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	a := startNode(t, url, pfx, "a", 3, time.Minute)
	b := startNode(t, url, pfx, "b", 3, time.Minute)
	live := connect(t, b.hub, "u1", "")
	first, err := a.hub.Publish(bg(t), []string{"u1"}, "T", nil)
	if err != nil {
		t.Fatal(err)
	}
	var typing []string
	for i := range 10 { // more than the history's size: it keeps none of them
		evs, err := a.hub.Publish(bg(t), []string{"u1"}, "TYPING", json.RawMessage(strconv.Itoa(i)), hub.Volatile())
		if err != nil {
			t.Fatal(err)
		}
		if evs[0].Devices != 1 {
			t.Fatalf("volatile event counted %d devices, want 1", evs[0].Devices)
		}
		typing = append(typing, evs[0].ID)
	}
	got := live.waitEvents(11)
	if !strings.Contains(string(got[5].Frame), `"volatile":true`) {
		t.Fatalf("live volatile frame %s", got[5].Frame)
	}
	rc := hubtest.RedisClient(t, url)
	epoch, _, _ := hub.ParseID(first[0].ID)
	if n := rc.XLen(bg(t), pfx+"u:{u1}:"+epoch).Val(); n != 1 {
		t.Fatalf("u1's stream holds %d entries, want 1", n)
	}
	after, err := a.hub.Publish(bg(t), []string{"u1"}, "T", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{first[0].ID, typing[0], typing[9]} {
		cl := connect(t, b.hub, "u1", from)
		if rec, missed := cl.connected(); !rec || missed != 1 {
			t.Fatalf("from %s: recovered %v missed %d, want true 1", from, rec, missed)
		}
		if got := idsOf(cl.waitEvents(1)); !slices.Equal(got, []string{after[0].ID}) {
			t.Fatalf("from %s: %v", from, got)
		}
	}

	// a user who only ever got volatile events, and a volatile broadcast
	ghost, err := a.hub.Publish(bg(t), []string{"ghost"}, "T", nil, hub.Volatile())
	if err != nil {
		t.Fatal(err)
	}
	all, err := a.hub.BroadcastAll(bg(t), "T", nil, hub.Volatile())
	if err != nil {
		t.Fatal(err)
	}
	if keys := rc.Keys(bg(t), pfx+"*ghost*").Val(); len(keys) != 0 {
		t.Fatalf("keys of a user with volatile events only: %v", keys)
	}
	if keys := rc.Keys(bg(t), pfx+"a:*").Val(); len(keys) != 0 {
		t.Fatalf("a volatile broadcast made a broadcast stream: %v", keys)
	}
	for _, from := range []string{ghost[0].ID, all.ID} {
		cl := connect(t, b.hub, "ghost", from)
		if rec, missed := cl.connected(); !rec || missed != 0 {
			t.Fatalf("ghost from %s: recovered %v missed %d", from, rec, missed)
		}
	}
}

// The per-user bound counts one entry per key: thousands of updates of
// four keys in a history of four lose nothing; a fifth key deletes the
// oldest entry, which raises the floor.
func TestKeyedBound(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	n := startNode(t, url, pfx, "a", 4, time.Minute)
	first, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil, hub.Keyed("draft:0"))
	if err != nil {
		t.Fatal(err)
	}
	_, newest, _ := keyedRun(t, n.hub, "u1", 400, 4, 0) // its start event is pushed out
	rc := hubtest.RedisClient(t, url)
	epoch, _, _ := hub.ParseID(first[0].ID)
	if l := rc.XLen(bg(t), pfx+"u:{u1}:"+epoch).Val(); l != 4 {
		t.Fatalf("stream holds %d entries, want 4", l)
	}
	var want []string
	for _, id := range newest {
		want = append(want, id)
	}
	want = sortedIDs(t, want)
	// the start event was the only one the bound dropped: after it, all is there
	_, startSeq, _ := hub.ParseID(first[0].ID)
	from := fmt.Sprintf("%s-%d", epoch, startSeq+1) // the START event of keyedRun, dropped
	if _, ok, err := n.broker.History(bg(t), "u1", from, 4); err != nil || ok {
		t.Fatalf("from the dropped START event: %v %v, want not complete", ok, err)
	}
	msgs, ok, err := n.broker.History(bg(t), "u1", fmt.Sprintf("%s-%d", epoch, startSeq+2), 4) // the first update, superseded
	if err != nil || !ok || !slices.Equal(idsOf(msgs), want) {
		t.Fatalf("from a superseded update: %v %v %v; want %v", idsOf(msgs), ok, err, want)
	}
	k4, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil, hub.Keyed("draft:4"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := n.broker.History(bg(t), "u1", fmt.Sprintf("%s-%d", epoch, startSeq+2), 10); ok {
		t.Fatal("a resume that needs the dropped oldest key: complete")
	}
	if _, ok, _ := n.broker.History(bg(t), "u1", want[0], 10); ok {
		t.Fatal("from the dropped entry's own id (older than the history): complete")
	}
	if msgs, ok, _ := n.broker.History(bg(t), "u1", want[1], 10); !ok || !slices.Equal(idsOf(msgs), []string{want[2], want[3], k4[0].ID}) {
		t.Fatalf("from the oldest key held: %v %v", idsOf(msgs), ok)
	}
	st := rc.HGetAll(bg(t), pfx+"uh:{u1}:"+epoch).Val()
	if len(st) != 3+4 { // b, f, z and four keys: the dropped key's index went with it
		t.Fatalf("state hash %v, want b, f, z and 4 keys", st)
	}
}

// A keyed broadcast supersedes the last broadcast with its key; on resume
// it also hides the user's older events with that key, and a user event
// with the key after it hides it for that user.
func TestKeyedBroadcast(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	n := startNode(t, url, pfx, "a", 10, time.Minute)
	start, err := n.hub.Publish(bg(t), []string{"u1", "u2"}, "T", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil, hub.Keyed("banner")); err != nil {
		t.Fatal(err)
	}
	var b2 string
	for range 2 {
		if b2, err = n.hub.Broadcast(bg(t), "B", nil, hub.Keyed("banner")); err != nil {
			t.Fatal(err)
		}
	}
	epoch, _, _ := hub.ParseID(b2)
	if l := hubtest.RedisClient(t, url).XLen(bg(t), pfx+"a:"+epoch).Val(); l != 1 {
		t.Fatalf("broadcast stream holds %d entries, want 1", l)
	}
	for _, u := range []string{"u1", "u2"} {
		msgs, ok, err := n.broker.History(bg(t), u, start[0].ID, 10)
		if err != nil || !ok || !slices.Equal(idsOf(msgs), []string{b2}) {
			t.Fatalf("%s: %v %v %v; want [%s]", u, idsOf(msgs), ok, err, b2)
		}
	}
	mine, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil, hub.Keyed("banner"))
	if err != nil {
		t.Fatal(err)
	}
	if msgs, ok, _ := n.broker.History(bg(t), "u1", start[0].ID, 10); !ok || !slices.Equal(idsOf(msgs), []string{mine[0].ID}) {
		t.Fatalf("u1 after its own keyed event: %v %v", idsOf(msgs), ok)
	}
}

// An id the streams do not hold counts as a position, but never for what
// a stream that expired held: a stream expires HistoryTTL after its last
// write, and the checkpoints bound what may have gone with it (the
// horizon), whether the stream is gone or was made again since.
func TestExpiredStreamNotRecovered(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	const ttl = time.Second
	n := startNode(t, url, pfx, "a", 10, ttl)
	var ids []string
	for range 3 {
		evs, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, evs[0].ID)
	}
	epoch, _, _ := hub.ParseID(ids[0])
	rc := hubtest.RedisClient(t, url)
	hubtest.Eventually(t, 10*time.Second, "u1's stream to expire", func() bool {
		return rc.Exists(bg(t), pfx+"u:{u1}:"+epoch, pfx+"uh:{u1}:"+epoch).Val() == 0
	})
	pos, err := n.broker.Position(bg(t))
	if err != nil {
		t.Fatal(err)
	}
	// gone: the first id's successors went with it
	if _, ok, _ := n.broker.History(bg(t), "u1", ids[0], 10); ok {
		t.Fatal("from an id whose successors expired: complete")
	}
	// a position where nothing happened since is fine
	if msgs, ok, err := n.broker.Since(bg(t), "u1", pos, 10); err != nil || !ok || len(msgs) != 0 {
		t.Fatalf("Since the position after the expiry: %v %v %v", idsOf(msgs), ok, err)
	}
	// made again by a new event: the old id is still not provable
	again, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := n.broker.History(bg(t), "u1", ids[0], 10); ok {
		t.Fatal("from an id of the expired stream, after a new one was made: complete")
	}
	// a volatile id of now is, and so is the position
	v, err := n.hub.Publish(bg(t), []string{"u2"}, "T", nil, hub.Volatile())
	if err != nil {
		t.Fatal(err)
	}
	more, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil)
	if err != nil {
		t.Fatal(err)
	}
	if msgs, ok, _ := n.broker.History(bg(t), "u1", v[0].ID, 10); !ok || !slices.Equal(idsOf(msgs), []string{more[0].ID}) {
		t.Fatalf("from a fresh volatile id: %v %v", idsOf(msgs), ok)
	}
	if msgs, ok, _ := n.broker.Since(bg(t), "u1", pos, 10); !ok || !slices.Equal(idsOf(msgs), []string{again[0].ID, more[0].ID}) {
		t.Fatalf("Since the position: %v %v", idsOf(msgs), ok)
	}
}
