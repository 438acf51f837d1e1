package hub_test

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
)

// reconnect registers a connection of user resuming from last and returns
// its hub.connected payload and the ids queued after it; the connection is
// unregistered.
func reconnect(t *testing.T, h *hub.Hub, user, last string) (connectedPayload, []string) {
	t.Helper()
	c, _ := register(t, h, resumeFrom(user, last))
	defer h.Unregister(c)
	msgs, _ := drain(c)
	return connected(t, msgs), ids(msgs)
}

func publishN(t *testing.T, h *hub.Hub, user string, n int) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		evs, err := h.Publish(ctx, []string{user}, "T", json.RawMessage(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, evs[0].ID)
	}
	return out
}

func TestResumeRecovers(t *testing.T) {
	h := newHub(t, hub.Options{HistorySize: 10, HistoryTTL: time.Minute})
	first := publishN(t, h, "u1", 3)
	publishN(t, h, "u2", 2) // another user's events are not replayed
	var missed []string
	missed = append(missed, publishN(t, h, "u1", 2)...)
	b, err := h.Broadcast(ctx, "ALL", nil)
	if err != nil {
		t.Fatal(err)
	}
	missed = append(missed, b)
	missed = append(missed, publishN(t, h, "u1", 1)...)

	c, _ := register(t, h, resumeFrom("u1", first[2]))
	live := publishN(t, h, "u1", 2)
	msgs, _ := drain(c)
	p := connected(t, msgs)
	if !p.Recovered || p.Missed != len(missed) {
		t.Fatalf("recovered %v missed %d, want true %d", p.Recovered, p.Missed, len(missed))
	}
	want := append(slices.Clone(missed), live...)
	if got := ids(msgs); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v (missed then live)", got, want)
	}
	if len(msgs) != 1+len(want) {
		t.Fatalf("extra control events: %v", types(msgs))
	}
	h.Unregister(c)

	// resuming from the newest id misses nothing but is recovered
	p, got := reconnect(t, h, "u1", live[1])
	if !p.Recovered || p.Missed != 0 || len(got) != 0 {
		t.Errorf("from the last id: recovered %v missed %d events %v", p.Recovered, p.Missed, got)
	}
	// resuming from a broadcast id
	p, got = reconnect(t, h, "u1", b)
	if want := append(missed[len(missed)-1:], live...); !p.Recovered || p.Missed != len(want) || !slices.Equal(got, want) {
		t.Errorf("from a broadcast id: recovered %v missed %d events %v; want %v", p.Recovered, p.Missed, got, want)
	}
	// a user who never had an event of their own resumes broadcasts
	p, got = reconnect(t, h, "u3", b)
	if !p.Recovered || p.Missed != 0 || len(got) != 0 {
		t.Errorf("u3 from the broadcast: recovered %v missed %d events %v", p.Recovered, p.Missed, got)
	}
}

func TestResumeNotRecovered(t *testing.T) {
	const size = 5
	h := newHub(t, hub.Options{Epoch: "E1", HistorySize: size, HistoryTTL: time.Minute})
	u1 := publishN(t, h, "u1", 2)
	u2 := publishN(t, h, "u2", 1)
	old := publishN(t, h, "old", 1)
	publishN(t, h, "old", size+1) // pushes the first out of the history
	over := publishN(t, h, "over", 1)
	publishN(t, h, "over", size-1)
	if _, err := h.Broadcast(ctx, "ALL", nil); err != nil { // size+1 missed in two streams
		t.Fatal(err)
	}
	tight := publishN(t, h, "tight", 1)
	publishN(t, h, "tight", size-1)
	if _, err := h.Broadcast(ctx, "ALL", nil); err != nil { // size missed: still recoverable
		t.Fatal(err)
	}

	// the user's own history still holds the id, but broadcasts after it
	// were pushed out of theirs
	dropped := newHub(t, hub.Options{HistorySize: size, HistoryTTL: time.Minute})
	floor := publishN(t, dropped, "u1", 1)
	for i := 0; i < size+1; i++ {
		if _, err := dropped.Broadcast(ctx, "ALL", nil); err != nil {
			t.Fatal(err)
		}
	}

	restarted := newHub(t, hub.Options{HistorySize: size, HistoryTTL: time.Minute})
	disabled := newHub(t, hub.Options{Epoch: "E1"})
	noTTL := newHub(t, hub.Options{Epoch: "E1", HistorySize: size})
	for _, x := range []*hub.Hub{restarted, disabled, noTTL} {
		publishN(t, x, "u1", 3)
	}

	tests := []struct {
		name          string
		hub           *hub.Hub
		user, last    string
		wantRecovered bool
		wantMissed    int
	}{
		{name: "fresh start", hub: h, user: "u1", last: ""},
		{name: "known id", hub: h, user: "u1", last: u1[0], wantRecovered: true, wantMissed: 3},
		{name: "exactly HistorySize missed", hub: h, user: "tight", last: tight[0], wantRecovered: true, wantMissed: size},
		{name: "more missed than HistorySize", hub: h, user: "over", last: over[0]},
		{name: "older than the history", hub: h, user: "old", last: old[0]},
		{name: "broadcasts dropped after the id", hub: dropped, user: "u1", last: floor[0]},
		// an id u1's history does not hold counts as a position (so that
		// superseded and volatile ids resume): what came after it for u1
		// (the two broadcasts) is all there
		{name: "another user's id", hub: h, user: "u1", last: u2[0], wantRecovered: true, wantMissed: 2},
		// a position names no event: the same
		{name: "another user's id as a position", hub: h, user: "u1", last: u2[0] + "p", wantRecovered: true, wantMissed: 2},
		{name: "future seq", hub: h, user: "u1", last: "E1-999999"},
		{name: "malformed", hub: h, user: "u1", last: "garbage"},
		{name: "seq zero", hub: h, user: "u1", last: "E1-0"},
		// the position before the first event: everything of u1 is still held
		{name: "the position before the first event", hub: h, user: "u1", last: "E1-0p", wantRecovered: true, wantMissed: 4},
		{name: "a position from the future", hub: h, user: "u1", last: "E1-999999p"},
		{name: "a position of another epoch", hub: h, user: "u1", last: "XX-1p"},
		{name: "a bare suffix", hub: h, user: "u1", last: "p"},
		{name: "no epoch", hub: h, user: "u1", last: "-1"},
		{name: "other epoch", hub: h, user: "u1", last: "XX-1"},
		{name: "restart (new epoch)", hub: restarted, user: "u1", last: u1[0]},
		{name: "history disabled", hub: disabled, user: "u1", last: "E1-1"},
		{name: "history without TTL is disabled", hub: noTTL, user: "u1", last: "E1-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, got := reconnect(t, tt.hub, tt.user, tt.last)
			if p.Recovered != tt.wantRecovered || p.Missed != tt.wantMissed || len(got) != tt.wantMissed {
				t.Errorf("recovered %v missed %d (%d replayed); want %v %d", p.Recovered, p.Missed, len(got), tt.wantRecovered, tt.wantMissed)
			}
		})
	}
}

// TestResumeWhilePublishing resumes, again and again, while other goroutines
// publish to the same user and to all: every new connection gets every event
// after its last id exactly once, in order, missed and live alike.
func TestResumeWhilePublishing(t *testing.T) {
	const (
		publishers = 4
		maxEvents  = 5000 // per publisher
		resumes    = 100
	)
	h := newHub(t, hub.Options{HistorySize: 1 << 16, HistoryTTL: time.Minute, SendQueue: 1 << 16})
	var (
		mu        sync.Mutex
		published []string // in the order Publish returned, not quite seq order
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(published)
	}
	for g := 0; g < publishers; g++ {
		wg.Go(func() {
			for n := 0; n < maxEvents; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var id string
				if g == 0 && n%5 == 3 {
					b, err := h.Broadcast(ctx, "ALL", nil)
					if err != nil {
						t.Error(err)
						return
					}
					id = b
				} else {
					evs, err := h.Publish(ctx, []string{"noise", "u1"}, "T", json.RawMessage(fmt.Sprint(n)))
					if err != nil {
						t.Error(err)
						return
					}
					id = evs[1].ID
				}
				mu.Lock()
				published = append(published, id)
				mu.Unlock()
			}
		})
	}
	type resumed struct {
		c      *hub.Conn
		last   uint64
		before int // events published before Register began
	}
	var conns []resumed
	for i := 0; i < resumes; i++ {
		hubtest.Eventually(t, 10*time.Second, "an event", func() bool { return count() > i })
		mu.Lock()
		last, before := published[len(published)*(i%10)/10], len(published)
		mu.Unlock()
		c, _ := register(t, h, resumeFrom("u1", last))
		conns = append(conns, resumed{c, seqOf(t, last), before})
	}
	n0 := count()
	hubtest.Eventually(t, 10*time.Second, "live events", func() bool { return count() >= min(n0+100, publishers*maxEvents) })
	close(stop)
	wg.Wait()

	seqs := make(map[string]uint64, len(published))
	for _, id := range published {
		seqs[id] = seqOf(t, id)
	}
	slices.SortFunc(published, func(a, b string) int { return cmp.Compare(seqs[a], seqs[b]) })
	for _, r := range conns {
		msgs, _ := drain(r.c)
		p := connected(t, msgs)
		i, _ := slices.BinarySearchFunc(published, r.last, func(id string, seq uint64) int { return cmp.Compare(seqs[id], seq) })
		want := published[i+1:]
		if got := ids(msgs); !slices.Equal(got, want) {
			t.Fatalf("resume after seq %d: got %d events, want the %d after it in order", r.last, len(got), len(want))
		}
		if !p.Recovered || p.Missed > len(want) {
			t.Errorf("recovered %v missed %d of %d", p.Recovered, p.Missed, len(want))
		}
		h.Unregister(r.c)
	}
}

func TestResumeAfterTTLTrimNotRecovered(t *testing.T) {
	h := newHub(t, hub.Options{HistorySize: 100, HistoryTTL: time.Minute})
	first := publishN(t, h, "u1", 3)
	b, err := h.Broadcast(ctx, "ALL", nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, got := reconnect(t, h, "u1", first[0]); !p.Recovered || len(got) != 3 {
		t.Fatalf("before trimming: recovered %v, %d events", p.Recovered, len(got))
	}
	h.MaintainAt(time.Now().Add(2 * time.Minute))
	if n := h.BroadcastHistoryLen(); n != 0 {
		t.Errorf("broadcast history holds %d events after the TTL", n)
	}
	for _, last := range []string{first[0], first[2], b} {
		if p, got := reconnect(t, h, "u1", last); p.Recovered || len(got) != 0 {
			t.Errorf("from %s after trimming: recovered %v, %d events", last, p.Recovered, len(got))
		}
	}
	// the position after the last event: nothing after it was dropped
	// (the forgotten history's floor is not above it)
	if p, got := reconnect(t, h, "u1", b+"p"); !p.Recovered || len(got) != 0 {
		t.Errorf("from the position after %s: recovered %v, %d events", b, p.Recovered, len(got))
	}
	next := publishN(t, h, "u1", 2)
	if p, got := reconnect(t, h, "u1", next[0]); !p.Recovered || !slices.Equal(got, next[1:]) {
		t.Errorf("new events: recovered %v, %v", p.Recovered, got)
	}
}

// TestTTLTrimByMaintenanceLoop lets the real loop trim a tiny TTL.
func TestTTLTrimByMaintenanceLoop(t *testing.T) {
	h := newHub(t, hub.Options{HistorySize: 100, HistoryTTL: 20 * time.Millisecond, Heartbeat: 40 * time.Millisecond})
	first := publishN(t, h, "u1", 2)
	h.Start()
	hubtest.Eventually(t, 10*time.Second, "the id to become unrecoverable", func() bool {
		p, _ := reconnect(t, h, "u1", first[0])
		return !p.Recovered
	})
	hubtest.Eventually(t, 10*time.Second, "idle users to be dropped", func() bool { return h.UserStates() == 0 })
}

func TestIdleUserHistoriesDropped(t *testing.T) {
	h := newHub(t, hub.Options{HistorySize: 10, HistoryTTL: time.Minute})
	c, _ := register(t, h, ws("online"))
	for i := 0; i < 100; i++ {
		publishN(t, h, fmt.Sprint("offline-", i), 3)
	}
	publishN(t, h, "online", 3)
	if n := h.UserStates(); n != 101 {
		t.Fatalf("UserStates = %d, want 101", n)
	}
	h.MaintainAt(time.Now().Add(30 * time.Second))
	if n := h.UserStates(); n != 101 {
		t.Fatalf("UserStates before the TTL = %d, want 101", n)
	}
	h.MaintainAt(time.Now().Add(2 * time.Minute))
	if n := h.UserStates(); n != 1 {
		t.Fatalf("UserStates after the TTL = %d, want 1 (the connected user)", n)
	}
	h.Unregister(c)
	if n := h.UserStates(); n != 0 {
		t.Fatalf("UserStates after the last Unregister = %d, want 0", n)
	}

	// without history nothing is kept for users who are not connected
	nh := newHub(t, hub.Options{})
	publishN(t, nh, "offline", 3)
	c, _ = register(t, nh, ws("u"))
	nh.Unregister(c)
	if n := nh.UserStates(); n != 0 {
		t.Fatalf("UserStates without history = %d, want 0", n)
	}
}

// TestPosition: hub.connected carries a position from which a device cut
// before its first event resumes without loss, even after the node forgot
// the user in between; with events replayed it is the last of them; with
// history off there is none.
func TestPosition(t *testing.T) {
	h := newHub(t, hub.Options{HistorySize: 100, HistoryTTL: time.Minute})
	publishN(t, h, "other", 2)

	c, _ := register(t, h, ws("u1"))
	msgs, _ := drain(c)
	p := connected(t, msgs)
	if p.Position == nil || *p.Position == "" {
		t.Fatalf("fresh start: no position in %s", msgs[0].Frame)
	}
	pos := *p.Position
	if want := "\nid: " + pos + "\n\n"; !strings.HasSuffix(string(msgs[0].SSE), want) {
		t.Errorf("SSE record %q does not end with the position record %q", msgs[0].SSE, want)
	}
	h.Unregister(c) // cut before its first event

	// the node forgets the user (no connection, no history), then events
	// come for the user and for all while the device is away
	h.MaintainAt(time.Now())
	if n := h.UserStates(); n != 1 {
		t.Fatalf("%d user states after maintenance, want 1 (other's)", n)
	}
	away := publishN(t, h, "u1", 3)
	b, err := h.Broadcast(ctx, "ALL", nil)
	if err != nil {
		t.Fatal(err)
	}
	away = append(away, b)
	publishN(t, h, "other", 1)

	p, got := reconnect(t, h, "u1", pos)
	if !p.Recovered || p.Missed != len(away) || !slices.Equal(got, away) {
		t.Fatalf("from the position: recovered %v missed %d events %v; want true %d %v", p.Recovered, p.Missed, got, len(away), away)
	}
	if p.Position == nil || *p.Position != b {
		t.Errorf("position after a replay = %v, want the last replayed id %s", p.Position, b)
	}

	// a cut during a replay: resuming from any replayed id loses nothing
	p, got = reconnect(t, h, "u1", away[1])
	if !p.Recovered || !slices.Equal(got, away[2:]) {
		t.Errorf("from the middle of the replay: recovered %v, %v", p.Recovered, got)
	}

	// a resume that replays nothing gets a position too, and the SSE
	// record; a resume from it later still finds what came after
	c, _ = register(t, h, resumeFrom("u1", b))
	msgs, _ = drain(c)
	p = connected(t, msgs)
	if !p.Recovered || p.Missed != 0 || p.Position == nil {
		t.Fatalf("nothing to replay: recovered %v missed %d position %v", p.Recovered, p.Missed, p.Position)
	}
	h.Unregister(c)
	later := publishN(t, h, "u1", 1)
	if p, got := reconnect(t, h, "u1", *p.Position); !p.Recovered || !slices.Equal(got, later) {
		t.Errorf("from the second position: recovered %v, %v; want %v", p.Recovered, got, later)
	}

	// history off: no position
	off := newHub(t, hub.Options{})
	c, _ = register(t, off, ws("u1"))
	msgs, _ = drain(c)
	if p := connected(t, msgs); p.Position != nil {
		t.Errorf("history off: position %q", *p.Position)
	}
	if strings.Contains(string(msgs[0].SSE), "\nid:") {
		t.Errorf("history off: SSE record %q has an id", msgs[0].SSE)
	}
}

// TestPositionBeforeAnyEvent: the position of a node that has published
// nothing yet (sequence 0) is resumable like any other.
func TestPositionBeforeAnyEvent(t *testing.T) {
	h := newHub(t, hub.Options{HistorySize: 100, HistoryTTL: time.Minute, Epoch: "E1"})
	c, _ := register(t, h, ws("u1"))
	msgs, _ := drain(c)
	p := connected(t, msgs)
	h.Unregister(c)
	if p.Position == nil || *p.Position != "E1-0p" {
		t.Fatalf("position %v, want E1-0p", p.Position)
	}
	away := publishN(t, h, "u1", 2)
	if p, got := reconnect(t, h, "u1", *p.Position); !p.Recovered || !slices.Equal(got, away) {
		t.Fatalf("from E1-0p: recovered %v, %v; want %v", p.Recovered, got, away)
	}
}
