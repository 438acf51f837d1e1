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
	eachBackend(t, func(t *testing.T, be backend) {
		n := be.node(t, "a", 100, time.Minute)
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
		live := cl.events()
		want := []*hub.Message{live[1], live[3], live[4]} // the volatile one is not stored
		// from the history: on one server through History, on both
		// through a device that resumes
		r := connect(t, n.hub, "u1", start)
		if rec, missed := r.connected(); !rec || missed != len(want) {
			t.Fatalf("resume: recovered %v missed %d, want true %d", rec, missed, len(want))
		}
		hists := [][]*hub.Message{r.waitEvents(len(want))}
		if !be.cluster() {
			hist, ok, err := n.broker.History(bg(t), "u1", start, 100)
			if err != nil || !ok {
				t.Fatalf("History = %v, %v", ok, err)
			}
			hists = append(hists, hist)
		}
		for _, hist := range hists {
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
		}
		// key and volatile together: refused, nothing published
		if _, _, err := n.broker.PublishUsers(bg(t), []string{"u1"}, "T", nil, ts, hub.EventOptions{Key: "k", Volatile: true}); err == nil {
			t.Fatal("key and volatile together accepted")
		}
	})
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

// inOrderOf returns ids in the order in which they appear in msgs (a
// device's live events: the user's order, on both backends).
func inOrderOf(t *testing.T, msgs []*hub.Message, ids []string) []string {
	t.Helper()
	var out []string
	for _, m := range msgs {
		if slices.Contains(ids, m.ID) {
			out = append(out, m.ID)
		}
	}
	if len(out) != len(ids) {
		t.Fatalf("ids %v: only %v received", ids, out)
	}
	return out
}

// Keyed events supersede each other in Redis: the stream holds one entry
// per key (its state hash indexes it and counts its bytes), a resume on
// another node replays the newest of each key and every plain event in
// publish order, recovered, and the ids of superseded events resume.
func TestKeyedSupersede(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		a := be.node(t, "a", 100, time.Minute)
		b := be.node(t, "b", 100, time.Minute)
		live := connect(t, b.hub, "u1", "")

		start, newest, plain := keyedRun(t, a.hub, "u1", 200, 10, 40)
		want := slices.Clone(plain)
		for _, id := range newest {
			want = append(want, id)
		}

		// live delivery is unchanged
		got := live.waitEvents(1 + 200 + len(plain))
		if len(got) != 1+200+len(plain) {
			t.Fatalf("live: %d events", len(got))
		}
		want = inOrderOf(t, got, want)
		seqOf := map[string]uint64{}
		for _, m := range got {
			seqOf[m.ID] = m.Seq()
		}

		rc := be.client(t)
		entries := rc.XRange(bg(t), be.userStream("u1", start), "-", "+").Val()
		if len(entries) != 1+len(want) {
			t.Fatalf("u1's stream holds %d entries, want %d (start, plain, one per key)", len(entries), 1+len(want))
		}
		var bytes int
		for _, e := range entries {
			bytes += len(e.Values["f"].(string))
		}
		st := rc.HGetAll(bg(t), be.userState("u1", start)).Val()
		if st["b"] != strconv.Itoa(bytes) {
			t.Errorf("state bytes %s, want %d", st["b"], bytes)
		}
		if f := st["f"]; f != "" && f != "0" {
			t.Errorf("floor %s after superseding only, want none", f)
		}
		for k, id := range newest {
			// a key's entry is the newest event's seq (its order key on a
			// cluster)
			if v := st["k:"+k]; !strings.HasPrefix(v, strconv.FormatUint(seqOf[id], 10)+":") {
				t.Errorf("state k:%s = %q, want the seq %d", k, v, seqOf[id])
			}
		}

		cl := connect(t, b.hub, "u1", start)
		if rec, missed := cl.connected(); !rec || missed != len(want) {
			t.Fatalf("resume: recovered %v missed %d, want true %d", rec, missed, len(want))
		}
		if got := idsOf(cl.waitEvents(len(want))); !slices.Equal(got, want) {
			t.Fatalf("replay %v, want %v", got, want)
		}

		// from a superseded id: the first update of draft:3
		superseded := got[4].ID
		if !be.cluster() {
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
		}
		c2 := connect(t, a.hub, "u1", superseded)
		if rec, missed := c2.connected(); !rec || missed != len(want) {
			t.Fatalf("resume from a superseded id: recovered %v missed %d", rec, missed)
		}
		msgs := c2.waitEvents(len(want))
		for i := 1; i < len(msgs); i++ {
			if msgs[i].Seq() <= msgs[i-1].Seq() {
				t.Fatalf("replay out of order: %v", idsOf(msgs))
			}
		}
		if !slices.Equal(idsOf(msgs), want) {
			t.Fatalf("from %s: %v, want %v", superseded, idsOf(msgs), want)
		}
	})
}

// Volatile events are published and counted, never stored: a resume
// across them is recovered and replays none, their ids resume like
// positions, and a user who only got volatile events has no keys.
func TestVolatile(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		a := be.node(t, "a", 3, time.Minute)
		b := be.node(t, "b", 3, time.Minute)
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
		rc := be.client(t)
		if n := rc.XLen(bg(t), be.userStream("u1", first[0].ID)).Val(); n != 1 {
			t.Fatalf("u1's stream holds %d entries, want 1", n)
		}
		after, err := a.hub.Publish(bg(t), []string{"u1"}, "T", nil)
		if err != nil {
			t.Fatal(err)
		}
		froms := []string{first[0].ID, typing[0], typing[9]}
		for _, from := range froms {
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
		if !be.cluster() {
			if keys := be.keys(t, be.pfx+"*ghost*"); len(keys) != 0 {
				t.Fatalf("keys of a user with volatile events only: %v", keys)
			}
		} else {
			// on a cluster the user's meta hash and id index hold the
			// volatile event's key (its id resumes through them), the
			// stream holds nothing
			if keys := be.keys(t, be.pfx+"us:{ghost}"); len(keys) != 0 {
				t.Fatalf("stream of a user with volatile events only: %v", keys)
			}
		}
		allStreams := be.pfx + "a:*"
		if be.cluster() {
			allStreams = be.pfx + "as:*"
		}
		if keys := be.keys(t, allStreams); len(keys) != 0 {
			t.Fatalf("a volatile broadcast made a broadcast stream: %v", keys)
		}
		for _, from := range []string{ghost[0].ID, all.ID} {
			cl := connect(t, b.hub, "ghost", from)
			if rec, missed := cl.connected(); !rec || missed != 0 {
				t.Fatalf("ghost from %s: recovered %v missed %d", from, rec, missed)
			}
		}
	})
}

// The per-user bound counts one entry per key: thousands of updates of
// four keys in a history of four lose nothing; a fifth key deletes the
// oldest entry, which raises the floor.
func TestKeyedBound(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		n := be.node(t, "a", 4, time.Minute)
		live := connect(t, n.hub, "u1", "")
		first, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil, hub.Keyed("draft:0"))
		if err != nil {
			t.Fatal(err)
		}
		_, newest, _ := keyedRun(t, n.hub, "u1", 400, 4, 0) // its start event is pushed out
		rc := be.client(t)
		if l := rc.XLen(bg(t), be.userStream("u1", first[0].ID)).Val(); l != 4 {
			t.Fatalf("stream holds %d entries, want 4", l)
		}
		var want []string
		for _, id := range newest {
			want = append(want, id)
		}
		got := live.waitEvents(1 + 1 + 400)
		want = inOrderOf(t, got, want)
		start, firstUpdate := got[1].ID, got[2].ID // keyedRun's START event, its first update (superseded)
		// resumes: on one server through History, and through a device
		// that resumes on both
		resume := func(from string, max int) ([]string, bool) {
			t.Helper()
			if !be.cluster() {
				msgs, ok, err := n.broker.History(bg(t), "u1", from, max)
				if err != nil {
					t.Fatal(err)
				}
				hmsgs, hok := idsOf(msgs), ok
				if max < 4 { // the hub asks for HistorySize
					return hmsgs, hok
				}
				cl := connect(t, n.hub, "u1", from)
				rec, missed := cl.connected()
				var ids []string
				if rec {
					ids = idsOf(cl.waitEvents(missed))
				}
				n.hub.Unregister(cl.c)
				if rec != hok || !slices.Equal(ids, hmsgs) {
					t.Fatalf("from %s: History %v %v, a device recovered %v with %v", from, hmsgs, hok, rec, ids)
				}
				return hmsgs, hok
			}
			cl := connect(t, n.hub, "u1", from)
			rec, missed := cl.connected()
			var ids []string
			if rec {
				ids = idsOf(cl.waitEvents(missed))
			}
			n.hub.Unregister(cl.c)
			return ids, rec
		}
		// the start event was the only one the bound dropped: after it, all
		// is there. From the dropped START event itself: on one server not
		// complete (an id no stream holds any more cannot be proven young
		// enough); on a cluster its key tells its age, and everything after
		// it is held.
		if ids, ok := resume(start, 4); be.cluster() != ok || (ok && !slices.Equal(ids, want)) {
			t.Fatalf("from the dropped START event: %v %v", ids, ok)
		}
		if ids, ok := resume(firstUpdate, 4); !ok || !slices.Equal(ids, want) {
			t.Fatalf("from a superseded update: %v %v; want %v", ids, ok, want)
		}
		k4, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil, hub.Keyed("draft:4"))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := resume(firstUpdate, 10); ok {
			t.Fatal("a resume that needs the dropped oldest key: complete")
		}
		// from the dropped entry's own id: as from START above
		if ids, ok := resume(want[0], 10); be.cluster() != ok || (ok && !slices.Equal(ids, []string{want[1], want[2], want[3], k4[0].ID})) {
			t.Fatalf("from the dropped entry's own id: %v %v", ids, ok)
		}
		if ids, ok := resume(want[1], 10); !ok || !slices.Equal(ids, []string{want[2], want[3], k4[0].ID}) {
			t.Fatalf("from the oldest key held: %v %v", ids, ok)
		}
		st := rc.HGetAll(bg(t), be.userState("u1", first[0].ID)).Val()
		fields := []string{"b", "f", "z"}
		if be.cluster() {
			fields = append(fields, "t")
		}
		if len(st) != len(fields)+4 { // and four keys: the dropped key's index went with it
			t.Fatalf("state hash %v, want %v and 4 keys", st, fields)
		}
		for _, f := range fields {
			if _, ok := st[f]; !ok {
				t.Fatalf("state hash %v, want %v and 4 keys", st, fields)
			}
		}
	})
}

// A keyed broadcast supersedes the last broadcast with its key; on resume
// it also hides the user's older events with that key, and a user event
// with the key after it hides it for that user.
func TestKeyedBroadcast(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		n := be.node(t, "a", 10, time.Minute)
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
		if l := be.client(t).XLen(bg(t), be.allStream(b2)).Val(); l != 1 {
			t.Fatalf("broadcast stream holds %d entries, want 1", l)
		}
		// resumes: on one server through History, and through a device
		// that resumes on both
		resume := func(u, from string) ([]string, bool) {
			t.Helper()
			cl := connect(t, n.hub, u, from)
			rec, missed := cl.connected()
			var ids []string
			if rec {
				ids = idsOf(cl.waitEvents(missed))
			}
			n.hub.Unregister(cl.c)
			if !be.cluster() {
				msgs, ok, err := n.broker.History(bg(t), u, from, 10)
				if err != nil || ok != rec || !slices.Equal(idsOf(msgs), ids) {
					t.Fatalf("%s from %s: History %v %v %v, a device recovered %v with %v", u, from, idsOf(msgs), ok, err, rec, ids)
				}
			}
			return ids, rec
		}
		for _, u := range []string{"u1", "u2"} {
			if ids, ok := resume(u, start[0].ID); !ok || !slices.Equal(ids, []string{b2}) {
				t.Fatalf("%s: %v %v; want [%s]", u, ids, ok, b2)
			}
		}
		mine, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil, hub.Keyed("banner"))
		if err != nil {
			t.Fatal(err)
		}
		if ids, ok := resume("u1", start[0].ID); !ok || !slices.Equal(ids, []string{mine[0].ID}) {
			t.Fatalf("u1 after its own keyed event: %v %v", ids, ok)
		}
	})
}

// An id the streams do not hold counts as a position, but never for what
// a stream that expired held: a stream expires HistoryTTL after its last
// write, and the checkpoints bound what may have gone with it (the
// horizon), whether the stream is gone or was made again since.
func TestExpiredStreamNotRecovered(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		ttl := time.Second
		if be.cluster() {
			// a cluster also refuses a position or a volatile id older
			// than the TTL (its key tells its age): room for the steps
			// below on a loaded machine
			ttl = 2 * time.Second
		}
		n := be.node(t, "a", 10, ttl)
		var ids []string
		for range 3 {
			evs, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, evs[0].ID)
		}
		rc := be.client(t)
		held := []string{be.userStream("u1", ids[0]), be.userState("u1", ids[0])}
		if be.cluster() {
			held = append(held, be.pfx+"ui:{u1}")
		}
		hubtest.Eventually(t, 10*time.Second, "u1's stream to expire", func() bool {
			return rc.Exists(bg(t), held...).Val() == 0
		})
		// recovered: on one server through History and Since, and through
		// a device that resumes on both
		resume := func(from string, isPos bool) ([]string, bool) {
			t.Helper()
			cl := connect(t, n.hub, "u1", from)
			rec, missed := cl.connected()
			var got []string
			if rec {
				got = idsOf(cl.waitEvents(missed))
			}
			n.hub.Unregister(cl.c)
			if !be.cluster() {
				var msgs []*hub.Message
				var ok bool
				var err error
				if isPos {
					msgs, ok, err = n.broker.Since(bg(t), "u1", strings.TrimSuffix(from, "p"), 10)
				} else {
					msgs, ok, err = n.broker.History(bg(t), "u1", from, 10)
				}
				if err != nil || ok != rec || !slices.Equal(idsOf(msgs), got) {
					t.Fatalf("from %s: History/Since %v %v %v, a device recovered %v with %v", from, idsOf(msgs), ok, err, rec, got)
				}
			}
			return got, rec
		}
		var pos string
		if !be.cluster() {
			p, err := n.broker.Position(bg(t))
			if err != nil {
				t.Fatal(err)
			}
			pos = hub.FormatPosition(p)
		} else {
			fresh := connect(t, n.hub, "u1", "")
			pos = connectedPosition(fresh)
			n.hub.Unregister(fresh.c)
		}
		// gone: the first id's successors went with it
		if _, ok := resume(ids[0], false); ok {
			t.Fatal("from an id whose successors expired: complete")
		}
		// a position where nothing happened since is fine
		if got, ok := resume(pos, true); !ok || len(got) != 0 {
			t.Fatalf("from the position after the expiry: %v %v", got, ok)
		}
		// made again by a new event: the old id is still not provable
		again, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := resume(ids[0], false); ok {
			t.Fatal("from an id of the expired stream, after a new one was made: complete")
		}
		// a volatile id of now is, and so is the position (on a cluster an
		// id resolves through the user's own id index: u1's volatile event)
		to := "u2"
		if be.cluster() {
			to = "u1"
		}
		v, err := n.hub.Publish(bg(t), []string{to}, "T", nil, hub.Volatile())
		if err != nil {
			t.Fatal(err)
		}
		more, err := n.hub.Publish(bg(t), []string{"u1"}, "T", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := resume(v[0].ID, false); !ok || !slices.Equal(got, []string{more[0].ID}) {
			t.Fatalf("from a fresh volatile id: %v %v", got, ok)
		}
		if got, ok := resume(pos, true); !ok || !slices.Equal(got, []string{again[0].ID, more[0].ID}) {
			t.Fatalf("from the position: %v %v", got, ok)
		}
	})
}
