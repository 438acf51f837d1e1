package hub_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
)

// sizedPayload returns a JSON string payload whose envelope, published on a
// hub of epoch "E" with single-digit sequences and a type of "T", is about
// n bytes; every envelope made with it has the same size.
func sizedPayload(n int) json.RawMessage {
	return json.RawMessage(`"` + strings.Repeat("x", n) + `"`)
}

// envelopeSize publishes one event to a throwaway user of h and returns its
// envelope's size (the events of a test all have that size).
func envelopeSize(t *testing.T, h *hub.Hub, typ string, p json.RawMessage) int64 {
	t.Helper()
	c, _ := register(t, h, ws("probe"))
	defer h.Unregister(c)
	drain(c)
	if _, err := h.Publish(ctx, []string{"probe"}, typ, p); err != nil {
		t.Fatal(err)
	}
	msgs, _ := drain(c)
	if len(msgs) != 1 {
		t.Fatalf("probe got %d messages", len(msgs))
	}
	return int64(msgs[0].Size())
}

// TestHistoryMaxBytesPerUser: a user's history holds at most
// HistoryMaxBytes of envelopes, oldest evicted first; a resume that needs
// an evicted event is recovered:false, one that does not is replayed.
func TestHistoryMaxBytesPerUser(t *testing.T) {
	p := sizedPayload(200)
	probe := newHub(t, hub.Options{Epoch: "E", HistorySize: 100, HistoryTTL: time.Minute})
	size := envelopeSize(t, probe, "T", p)

	h := newHub(t, hub.Options{Epoch: "E", HistorySize: 100, HistoryTTL: time.Minute, HistoryMaxBytes: 3 * size})
	var sent []string
	for range 5 {
		sent = append(sent, publishOne(t, h, "u1", p))
	}
	if got := h.UserHistoryBytes("u1"); got != 3*size {
		t.Fatalf("u1's history holds %d bytes, want 3 envelopes of %d", got, size)
	}
	p2, replay := reconnect(t, h, "u1", sent[2]) // the oldest held: 4 and 5 follow
	if !p2.Recovered || p2.Missed != 2 || !slices.Equal(replay, sent[3:]) {
		t.Fatalf("resume from the third event: recovered %v missed %d %v, want true 2 %v", p2.Recovered, p2.Missed, replay, sent[3:])
	}
	for i := range 2 { // evicted: its successors may be held, but the gap cannot be proven
		if p, replay := reconnect(t, h, "u1", sent[i]); p.Recovered || len(replay) != 0 {
			t.Fatalf("resume from evicted event %d: recovered %v %v, want false and no replay", i+1, p.Recovered, replay)
		}
	}

	// an event bigger than the bound on its own is delivered, not kept
	c, _ := register(t, h, ws("u2"))
	drain(c)
	big := sizedPayload(int(4 * size))
	evs, err := h.Publish(ctx, []string{"u2"}, "T", big)
	if err != nil {
		t.Fatal(err)
	}
	if msgs, _ := drain(c); !slices.Equal(ids(msgs), []string{evs[0].ID}) {
		t.Fatalf("the big event was not delivered live: %v", ids(msgs))
	}
	if got := h.UserHistoryBytes("u2"); got != 0 {
		t.Fatalf("u2's history holds %d bytes after an event over the bound, want 0", got)
	}
	h.Unregister(c)
	pos := connected(t, mustDrain(t, h, "u3")).Position
	if _, err := h.Publish(ctx, []string{"u3"}, "T", big); err != nil {
		t.Fatal(err)
	}
	if p, _ := reconnect(t, h, "u3", *pos); p.Recovered {
		t.Fatal("resume from before an event that was too big to keep: recovered, want false")
	}
}

// mustDrain registers a connection of user, drains and unregisters it, and
// returns what it was sent.
func mustDrain(t *testing.T, h *hub.Hub, user string) []*hub.Message {
	t.Helper()
	c, _ := register(t, h, ws(user))
	defer h.Unregister(c)
	msgs, _ := drain(c)
	return msgs
}

// TestSharedEventCountsPerUserAndOnceForTheNode: one event to many users
// counts in full against each user's bound and once against the node's
// (whose bound also counts the bookkeeping of each place it is held).
func TestSharedEventCountsPerUserAndOnceForTheNode(t *testing.T) {
	p := sizedPayload(300)
	probe := newHub(t, hub.Options{Epoch: "E", HistorySize: 100, HistoryTTL: time.Minute})
	size := envelopeSize(t, probe, "T", p)
	users := []string{"a", "b", "c"}

	// room for 3 envelopes held in 7 places
	total := 3*size + 7*hub.HoldOverhead
	h := newHub(t, hub.Options{Epoch: "E", HistorySize: 100, HistoryTTL: time.Minute,
		HistoryMaxBytes: 2 * size, HistoryTotalBytes: total})
	var ids []string
	for range 3 {
		evs, err := h.Publish(ctx, users, "T", p)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, evs[0].ID)
	}
	// each user keeps 2 envelopes (its own bound); the node counts the
	// two events they hold once each
	for _, u := range users {
		if got := h.UserHistoryBytes(u); got != 2*size {
			t.Errorf("%s holds %d bytes, want %d", u, got, 2*size)
		}
	}
	if got := h.HistoryBytes(); got != 2*size {
		t.Fatalf("the node counts %d bytes, want %d (two shared events, once each)", got, 2*size)
	}
	if got, want := h.HistoryUsage(), 2*size+6*hub.HoldOverhead; got != want {
		t.Fatalf("the node uses %d bytes, want %d (two envelopes, held in six places)", got, want)
	}
	for _, u := range users {
		if pl, replay := reconnect(t, h, u, ids[1]); !pl.Recovered || !slices.Equal(replay, ids[2:]) {
			t.Fatalf("%s from the second event: recovered %v %v", u, pl.Recovered, replay)
		}
		if pl, _ := reconnect(t, h, u, ids[0]); pl.Recovered {
			t.Fatalf("%s from the first event, evicted by the user bound: recovered", u)
		}
	}

	// Two more users with events of their own push the node over its
	// bound; the oldest event goes from every history.
	for _, u := range []string{"d", "e"} {
		if _, err := h.Publish(ctx, []string{u}, "T", p); err != nil {
			t.Fatal(err)
		}
		if got := h.HistoryUsage(); got > total {
			t.Fatalf("the node uses %d bytes, over its bound of %d", got, total)
		}
	}
	if got := h.UserHistoryBytes("a"); got != size {
		t.Fatalf("a holds %d bytes after the node evicted its oldest event, want %d", got, size)
	}
	if hm := h.HistoryMemory(); hm.Evicted != 1 || hm.Bytes != h.HistoryUsage() {
		t.Fatalf("HistoryMemory = %+v, want 1 event evicted and %d bytes", hm, h.HistoryUsage())
	}
	if pl, replay := reconnect(t, h, "b", ids[2]); !pl.Recovered || len(replay) != 0 {
		t.Fatalf("b from the newest shared event: recovered %v %v, want true and nothing", pl.Recovered, replay)
	}
	if pl, _ := reconnect(t, h, "c", ids[1]); pl.Recovered {
		t.Fatal("c from the event the node evicted: recovered, want false")
	}
}

// TestBroadcastsCountAgainstEachUserBound: a resume replays a user's own
// events and the broadcasts within the user's bound, counting the
// broadcasts in full; beyond it the resume is not recovered.
func TestBroadcastsCountAgainstEachUserBound(t *testing.T) {
	p := sizedPayload(250)
	probe := newHub(t, hub.Options{Epoch: "E", HistorySize: 100, HistoryTTL: time.Minute})
	size := envelopeSize(t, probe, "T", p)

	h := newHub(t, hub.Options{Epoch: "E", HistorySize: 100, HistoryTTL: time.Minute, HistoryMaxBytes: 2 * size})
	e1 := publishOne(t, h, "u1", p)
	var bs []string
	for range 2 {
		b, err := h.Broadcast(ctx, "T", p)
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	if pl, replay := reconnect(t, h, "u1", e1); !pl.Recovered || !slices.Equal(replay, bs) {
		t.Fatalf("resume over two broadcasts (the bound): recovered %v %v, want true %v", pl.Recovered, replay, bs)
	}
	publishOne(t, h, "u1", p)
	if pl, _ := reconnect(t, h, "u1", e1); pl.Recovered {
		t.Fatal("resume over two broadcasts and an own event (over the bound): recovered, want false")
	}
}

func publishOne(t *testing.T, h *hub.Hub, user string, p json.RawMessage) string {
	t.Helper()
	evs, err := h.Publish(ctx, []string{user}, "T", p)
	if err != nil {
		t.Fatal(err)
	}
	return evs[0].ID
}

// TestHistoryTotalBytesUnderLoad publishes from several goroutines to many
// users, single and shared events and broadcasts: the node never holds more
// than its bound once a publish has returned, the eviction queue keeps no
// dropped event, and per-user accounting adds up.
func TestHistoryTotalBytesUnderLoad(t *testing.T) {
	const total = 64 << 10
	h := newHub(t, hub.Options{HistorySize: 50, HistoryTTL: time.Minute, HistoryMaxBytes: 8 << 10, HistoryTotalBytes: total})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1500 {
				p := sizedPayload(100 + (i*37+g)%900)
				var err error
				switch i % 10 {
				case 0:
					_, err = h.Broadcast(ctx, "T", p)
				case 1, 2:
					_, err = h.Publish(ctx, []string{fmt.Sprint("s", i%7), fmt.Sprint("s", i%11), fmt.Sprint("u", g, "-", i%50)}, "T", p)
				default:
					_, err = h.Publish(ctx, []string{fmt.Sprint("u", g, "-", i%50)}, "T", p)
				}
				if err != nil {
					errs <- err
					return
				}
				if got := h.HistoryUsage(); got > total+4*(1<<10) { // others' publishes may be between push and evict
					errs <- fmt.Errorf("the node uses %d bytes, bound %d", got, total)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := h.HistoryUsage(); got > total {
		t.Fatalf("the node uses %d bytes at rest, bound %d", got, total)
	}
	if n := h.HistoryIndexLen(); n > 2000 {
		t.Fatalf("the eviction queue has %d entries for a history of %d bytes: dropped events are kept", n, h.HistoryBytes())
	}
	// at rest, the TTL empties everything and the count goes to zero
	h.MaintainAt(time.Now().Add(2 * time.Minute))
	if got := h.HistoryUsage(); got != 0 {
		t.Fatalf("the node counts %d bytes after every event expired, want 0", got)
	}
}

// TestBookkeepingCountedForTheNode: a small event sent to many users is
// held in as many places; the node's bound counts that bookkeeping, so a
// stream of such events cannot hold memory far beyond the bound.
func TestBookkeepingCountedForTheNode(t *testing.T) {
	const total = 64 << 10
	h := newHub(t, hub.Options{HistorySize: 1000, HistoryTTL: time.Minute, HistoryTotalBytes: total})
	users := make([]string, 1000)
	for i := range users {
		users[i] = fmt.Sprint("many-", i)
	}
	var ids []string
	for range 5 {
		evs, err := h.Publish(ctx, users, "T", json.RawMessage(`1`))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, evs[0].ID)
		if got := h.HistoryUsage(); got > total {
			t.Fatalf("the node uses %d bytes, bound %d", got, total)
		}
	}
	// 1,000 places of 32 bytes each per event: the two newest fit
	if p, replay := reconnect(t, h, "many-7", ids[3]); !p.Recovered || len(replay) != 1 {
		t.Fatalf("from the fourth event: recovered %v %v, want the fifth", p.Recovered, replay)
	}
	if p, _ := reconnect(t, h, "many-7", ids[2]); p.Recovered {
		t.Fatal("from an event the node evicted: recovered")
	}
}

// TestEvictionQueueCompacted: events dropped by a user's own bound do not
// stay in the node's eviction queue.
func TestEvictionQueueCompacted(t *testing.T) {
	h := newHub(t, hub.Options{HistorySize: 10, HistoryTTL: time.Minute, HistoryTotalBytes: 1 << 30})
	for range 20000 {
		publishOne(t, h, "u1", json.RawMessage(`1`))
	}
	if n := h.HistoryIndexLen(); n > 200 {
		t.Fatalf("the eviction queue has %d entries for a history of 10 events", n)
	}
}
