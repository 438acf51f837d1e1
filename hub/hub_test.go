package hub_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
)

var ctx = context.Background()

func TestConnectedPayload(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		opts hub.Options
		info hub.ConnInfo
		want connectedPayload
	}{
		{
			name: "websocket defaults",
			opts: hub.Options{Node: "hub-1"},
			info: hub.ConnInfo{UserID: "u1", Transport: hub.TransportWebSocket},
			want: connectedPayload{UserID: "u1", Transport: "websocket", HeartbeatSeconds: 25, Node: "hub-1"},
		},
		{
			name: "sse with token expiry in another zone",
			opts: hub.Options{Node: "n2", Heartbeat: 30 * time.Second},
			info: hub.ConnInfo{UserID: "u2", Transport: hub.TransportSSE, TokenExpiresAt: time.Date(2026, 2, 5, 11, 16, 8, 123456789, cet)},
			want: connectedPayload{UserID: "u2", Transport: "sse", HeartbeatSeconds: 30, Node: "n2", TokenExpiresAt: "2026-02-05T10:16:08.123Z"},
		},
		{
			name: "heartbeat rounded to seconds",
			opts: hub.Options{Heartbeat: 1500 * time.Millisecond},
			info: hub.ConnInfo{UserID: "u3", Transport: hub.TransportWebSocket},
			want: connectedPayload{UserID: "u3", Transport: "websocket", HeartbeatSeconds: 2},
		},
		{
			name: "fresh start with history",
			opts: hub.Options{HistorySize: 10, HistoryTTL: time.Minute, Epoch: "E9"},
			info: hub.ConnInfo{UserID: "u4", Transport: hub.TransportWebSocket},
			want: connectedPayload{UserID: "u4", Transport: "websocket", HeartbeatSeconds: 25, Position: ptr("E9-0p")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t, tt.opts)
			c, _ := register(t, h, tt.info)
			msgs, r := drain(c)
			if r != nil || len(msgs) != 1 {
				t.Fatalf("got %v (reason %v), want hub.connected only", types(msgs), r)
			}
			got := connected(t, msgs)
			if !strings.HasPrefix(got.ConnectionID, "c-") || got.ConnectionID != c.ID() {
				t.Errorf("connectionId %q, Conn.ID %q", got.ConnectionID, c.ID())
			}
			got.ConnectionID = ""
			if (got.Position == nil) != (tt.want.Position == nil) || got.Position != nil && *got.Position != *tt.want.Position {
				t.Errorf("position %v, want %v", got.Position, tt.want.Position)
			}
			got.Position, tt.want.Position = nil, nil
			if got != tt.want {
				t.Errorf("payload\n got %+v\nwant %+v", got, tt.want)
			}
			// tokenExpiresAt is omitted, not empty, without an expiry.
			var raw struct {
				Payload map[string]json.RawMessage `json:"payload"`
			}
			if err := json.Unmarshal(msgs[0].Frame, &raw); err != nil {
				t.Fatal(err)
			}
			_, has := raw.Payload["tokenExpiresAt"]
			if has != (tt.want.TokenExpiresAt != "") {
				t.Errorf("tokenExpiresAt present = %v in %s", has, msgs[0].Frame)
			}
			for _, k := range []string{"connectionId", "userId", "transport", "heartbeatSeconds", "recovered", "missed", "node"} {
				if _, ok := raw.Payload[k]; !ok {
					t.Errorf("payload lacks %q: %s", k, msgs[0].Frame)
				}
			}
		})
	}
}

func TestConnAccessorsAndUniqueIDs(t *testing.T) {
	h := newHub(t, hub.Options{})
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		info := hub.ConnInfo{UserID: fmt.Sprint("u", i%7), Transport: hub.TransportSSE}
		c, _ := register(t, h, info)
		if seen[c.ID()] {
			t.Fatalf("connection id %q given twice", c.ID())
		}
		seen[c.ID()] = true
		if c.UserID() != info.UserID || c.Transport() != hub.TransportSSE {
			t.Fatalf("UserID %q Transport %q", c.UserID(), c.Transport())
		}
	}
	// a second hub (another process) does not reuse the ids either
	h2 := newHub(t, hub.Options{})
	c, _ := register(t, h2, ws("u0"))
	if seen[c.ID()] {
		t.Fatalf("connection id %q reused by another hub", c.ID())
	}
	exp := time.Now().Add(time.Hour).Round(0)
	c.SetTokenExpiry(exp)
	if !c.TokenExpiry().Equal(exp) {
		t.Errorf("TokenExpiry = %v, want %v", c.TokenExpiry(), exp)
	}
	c.SetTokenExpiry(time.Time{})
	if !c.TokenExpiry().IsZero() {
		t.Errorf("TokenExpiry = %v, want zero", c.TokenExpiry())
	}
}

func TestPublishReachesEveryConnOfTheUserOnly(t *testing.T) {
	h := newHub(t, hub.Options{})
	a1, _ := register(t, h, ws("a"))
	a2, _ := register(t, h, hub.ConnInfo{UserID: "a", Transport: hub.TransportSSE})
	b, _ := register(t, h, ws("b"))
	for _, c := range []*hub.Conn{a1, a2, b} {
		drain(c)
	}
	evs, err := h.Publish(ctx, []string{"a"}, "T", json.RawMessage(`1`))
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := drain(a1)
	m2, _ := drain(a2)
	mb, _ := drain(b)
	if len(m1) != 1 || len(m2) != 1 || len(mb) != 0 {
		t.Fatalf("a1 %d, a2 %d, b %d messages; want 1, 1, 0", len(m1), len(m2), len(mb))
	}
	if m1[0] != m2[0] {
		t.Errorf("each connection got its own encoding; want one shared message")
	}
	if m1[0].ID != evs[0].ID {
		t.Errorf("delivered id %q, Publish returned %q", m1[0].ID, evs[0].ID)
	}
}

func TestPublishDuplicateUsersOnce(t *testing.T) {
	h := newHub(t, hub.Options{})
	u1, _ := register(t, h, ws("u1"))
	u2, _ := register(t, h, ws("u2"))
	evs, err := h.Publish(ctx, []string{"u2", "u1", "u2", "u1", "u3"}, "T", nil)
	if err != nil {
		t.Fatal(err)
	}
	users := make([]string, len(evs))
	for i, e := range evs {
		users[i] = e.UserID
	}
	if want := []string{"u2", "u1", "u3"}; !slices.Equal(users, want) {
		t.Fatalf("events for %v, want %v", users, want)
	}
	// one call is one event: one id, one message shared by every queue
	if evs[0].ID != evs[1].ID || evs[1].ID != evs[2].ID {
		t.Errorf("the users of one call got different ids: %+v", evs)
	}
	if got := []int{evs[0].Devices, evs[1].Devices, evs[2].Devices}; !slices.Equal(got, []int{1, 1, 0}) {
		t.Errorf("devices %v, want [1 1 0]", got)
	}
	var got []*hub.Message
	for _, tc := range []struct {
		c    *hub.Conn
		want string
	}{{u1, evs[1].ID}, {u2, evs[0].ID}} {
		msgs, _ := drain(tc.c)
		if ids := ids(msgs); !slices.Equal(ids, []string{tc.want}) {
			t.Fatalf("%s got %v, want [%s]", tc.c.UserID(), ids, tc.want)
		}
		for _, m := range msgs {
			if m.ID != "" {
				got = append(got, m)
			}
		}
	}
	if got[0] != got[1] {
		t.Errorf("each user got its own message; want one shared message")
	}
}

func TestPublishRefused(t *testing.T) {
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		users   []string
		typ     string
		payload json.RawMessage
	}{
		{name: "empty type", ctx: ctx, users: []string{"u1"}, typ: ""},
		{name: "reserved type", ctx: ctx, users: []string{"u1"}, typ: "hub.connected"},
		{name: "bad type", ctx: ctx, users: []string{"u1"}, typ: "a b"},
		{name: "invalid json", ctx: ctx, users: []string{"u1"}, typ: "T", payload: json.RawMessage(`{`)},
		{name: "empty user id", ctx: ctx, users: []string{"u1", ""}, typ: "T"},
		{name: "canceled", ctx: canceled, users: []string{"u1"}, typ: "T"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t, hub.Options{Epoch: "E", HistorySize: 10, HistoryTTL: time.Minute})
			c, _ := register(t, h, ws("u1"))
			if evs, err := h.Publish(tt.ctx, tt.users, tt.typ, tt.payload); err == nil {
				t.Fatalf("Publish = %v, want an error", evs)
			}
			if id, err := h.Broadcast(tt.ctx, tt.typ, tt.payload); err == nil && tt.name != "empty user id" {
				t.Fatalf("Broadcast = %q, want an error", id)
			}
			msgs, _ := drain(c)
			if len(ids(msgs)) != 0 && tt.name != "empty user id" {
				t.Errorf("refused event delivered: %v", ids(msgs))
			}
			if tt.name == "empty user id" && len(msgs) != 2 { // connected + the broadcast
				t.Errorf("got %v; a refused Publish must deliver nothing", types(msgs))
			}
		})
	}
}

func TestBroadcastSameIDEverywhere(t *testing.T) {
	h := newHub(t, hub.Options{Shards: 4})
	var conns []*hub.Conn
	for i := 0; i < 20; i++ {
		c, _ := register(t, h, ws(fmt.Sprint("u", i%8)))
		drain(c)
		conns = append(conns, c)
	}
	id, err := h.Broadcast(ctx, "ANNOUNCEMENT", json.RawMessage(`"maintenance at 22:00"`))
	if err != nil {
		t.Fatal(err)
	}
	var first *hub.Message
	for _, c := range conns {
		msgs, _ := drain(c)
		if len(msgs) != 1 || msgs[0].ID != id {
			t.Fatalf("conn %s got %v, want [%s]", c.ID(), ids(msgs), id)
		}
		if first == nil {
			first = msgs[0]
		} else if msgs[0] != first {
			t.Fatalf("broadcast encoded more than once")
		}
	}
	if e := decode(t, first); e.Type != "ANNOUNCEMENT" || string(e.Payload) != `"maintenance at 22:00"` {
		t.Errorf("envelope %+v", e)
	}
}

// TestConcurrentPublishIsolationAndOrder publishes to many users and to all
// from many goroutines while every connection is drained by its own writer:
// each connection must see exactly its user's events and every broadcast, in
// id order, once.
func TestConcurrentPublishIsolationAndOrder(t *testing.T) {
	const (
		users        = 24
		connsPerUser = 3
		publishers   = 8
		perPublisher = 300
	)
	h := newHub(t, hub.Options{Shards: 8, SendQueue: 1 << 16, HistorySize: 50, HistoryTTL: time.Minute})
	type result struct {
		user    string
		msgs    []*hub.Message
		reason  *hub.Reason
		aborted bool
	}
	results := make(chan result, users*connsPerUser)
	var conns []*hub.Conn
	for u := 0; u < users; u++ {
		for k := 0; k < connsPerUser; k++ {
			user := fmt.Sprint("user-", u)
			c, s := register(t, h, hub.ConnInfo{UserID: user, Transport: []string{hub.TransportWebSocket, hub.TransportSSE}[k%2]})
			conns = append(conns, c)
			go func() {
				msgs, r, a := serve(h, c, s)
				results <- result{user, msgs, r, a}
			}()
		}
	}

	var (
		mu         sync.Mutex
		want       = map[string][]string{}
		broadcasts []string
		wg         sync.WaitGroup
	)
	for g := 0; g < publishers; g++ {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(g), 7))
			for n := 0; n < perPublisher; n++ {
				if n%10 == 0 {
					id, err := h.Broadcast(ctx, "ALL", json.RawMessage(fmt.Sprintf(`{"g":%d,"n":%d}`, g, n)))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					broadcasts = append(broadcasts, id)
					mu.Unlock()
					continue
				}
				// one to three users, sometimes one that never connects
				var to []string
				for range 1 + rnd.IntN(3) {
					to = append(to, fmt.Sprint("user-", rnd.IntN(users+2)))
				}
				evs, err := h.Publish(ctx, to, "ONE", json.RawMessage(fmt.Sprintf(`{"g":%d,"n":%d}`, g, n)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, e := range evs {
					want[e.UserID] = append(want[e.UserID], e.ID)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, c := range conns {
		c.Close(hub.ReasonNormal)
	}

	for range conns {
		res := <-results
		if res.aborted || res.reason == nil || *res.reason != hub.ReasonNormal {
			t.Fatalf("%s: aborted %v reason %v; want a normal close", res.user, res.aborted, res.reason)
		}
		connected(t, res.msgs)
		exp := append(slices.Clone(want[res.user]), broadcasts...)
		seqs := make(map[string]uint64, len(exp))
		for _, id := range exp {
			seqs[id] = seqOf(t, id)
		}
		slices.SortFunc(exp, func(a, b string) int { return cmp.Compare(seqs[a], seqs[b]) })
		got := ids(res.msgs)
		if !slices.Equal(got, exp) {
			t.Fatalf("%s: got %d events, want %d (its own and the broadcasts, in id order)", res.user, len(got), len(exp))
		}
		// per publisher, events arrive in publishing order
		last := map[float64]float64{}
		for _, m := range res.msgs[1:] {
			var p struct{ G, N float64 }
			if err := json.Unmarshal(decode(t, m).Payload, &p); err != nil {
				t.Fatal(err)
			}
			if n, ok := last[p.G]; ok && p.N <= n {
				t.Fatalf("%s: publisher %v event %v after %v", res.user, p.G, p.N, n)
			}
			last[p.G] = p.N
		}
	}
}

func TestWakeOncePerTransition(t *testing.T) {
	h := newHub(t, hub.Options{})
	c, s := register(t, h, ws("u1"))
	publish := func() {
		if _, err := h.Publish(ctx, []string{"u1"}, "T", nil); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name      string
		do        func()
		wantWakes int
	}{
		{"register queues hub.connected", func() {}, 1},
		{"more events on a scheduled queue", func() { publish(); publish() }, 1},
		{"non-empty Next keeps it scheduled", func() {
			if msgs, _ := c.Next(nil); len(msgs) != 3 {
				t.Fatalf("Next = %d messages, want 3", len(msgs))
			}
			publish()
		}, 1},
		{"empty Next ends the transition", func() {
			drain(c)
			publish()
		}, 2},
		{"Send counts as an event", func() {
			drain(c)
			if !c.Send(hub.Control("hub.error", nil)) {
				t.Fatal("Send refused")
			}
		}, 3},
		{"Close on an idle conn wakes", func() {
			drain(c)
			c.Close(hub.ReasonNormal)
		}, 4},
		{"a second Close does not", func() { c.Close(hub.ReasonDisconnected) }, 4},
	}
	for _, st := range steps {
		st.do()
		if got := s.Wakes(); got != st.wantWakes {
			t.Fatalf("%s: %d wakes, want %d", st.name, got, st.wantWakes)
		}
	}
	if _, r := drain(c); r == nil || *r != hub.ReasonNormal {
		t.Fatalf("reason %v, want the first Close's", r)
	}
}

type fakeObserver struct {
	mu        sync.Mutex
	slow      []string
	resumed   []bool
	published int
	dropped   int
}

func (o *fakeObserver) Dropped(_ string, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dropped += n
}

func (o *fakeObserver) SlowConsumer(tr string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.slow = append(o.slow, tr)
}

func (o *fakeObserver) Resumed(r bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.resumed = append(o.resumed, r)
}

func (o *fakeObserver) Published(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.published += n
}

func TestSlowConsumerAbortedOnce(t *testing.T) {
	const queue = 8
	obs := &fakeObserver{}
	h := newHub(t, hub.Options{SendQueue: queue, Observer: obs})
	slow, slowSink := register(t, h, hub.ConnInfo{UserID: "u1", Transport: hub.TransportSSE})
	fast, fastSink := register(t, h, ws("u1"))
	other, _ := register(t, h, ws("u2"))
	drain(slow) // hub.connected; the slow client then stops reading
	var fastGot, otherGot []*hub.Message
	for i := 0; i < queue; i++ {
		if _, err := h.Publish(ctx, []string{"u1", "u2"}, "T", nil); err != nil {
			t.Fatal(err)
		}
		fastGot, _ = drainInto(fast, fastGot)
		otherGot, _ = drainInto(other, otherGot)
	}
	if a := slowSink.Aborts(); len(a) != 0 {
		t.Fatalf("aborted with a queue of %d events, limit %d: %v", queue, queue, a)
	}
	for i := 0; i < 3*queue; i++ {
		if _, err := h.Publish(ctx, []string{"u1", "u2"}, "T", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Broadcast(ctx, "B", nil); err != nil {
			t.Fatal(err)
		}
		fastGot, _ = drainInto(fast, fastGot)
		otherGot, _ = drainInto(other, otherGot)
	}
	if a := slowSink.Aborts(); !slices.Equal(a, []hub.Reason{hub.ReasonSlowConsumer}) {
		t.Fatalf("slow conn aborts %v, want exactly one 4008", a)
	}
	if a := fastSink.Aborts(); len(a) != 0 {
		t.Fatalf("fast conn aborted: %v", a)
	}
	if n := len(ids(fastGot)); n != queue+6*queue {
		t.Errorf("fast conn got %d events, want %d", n, 7*queue)
	}
	if n := len(ids(otherGot)); n != queue+6*queue {
		t.Errorf("other user got %d events, want %d", n, 7*queue)
	}
	if msgs, r := drain(slow); len(msgs) != 0 || r != nil {
		t.Errorf("aborted conn still yields %v, %v", types(msgs), r)
	}
	if slow.Send(hub.Control("hub.error", nil)) {
		t.Error("Send on an aborted conn reported success")
	}
	slow.Close(hub.ReasonNormal)
	if _, r := drain(slow); r != nil {
		t.Errorf("Close after abort yields reason %v", r)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if !slices.Equal(obs.slow, []string{hub.TransportSSE}) {
		t.Errorf("observer SlowConsumer calls %v", obs.slow)
	}
	// the queue's bound is SendQueue plus hub.connected's place: a full
	// queue of queue+1 events and the event that did not fit
	if obs.dropped != queue+2 {
		t.Errorf("observer Dropped total %d, want %d", obs.dropped, queue+2)
	}
	if obs.published != 2*queue+2*3*queue+3*queue {
		t.Errorf("observer Published total %d", obs.published)
	}
}

func TestCloseAfterFlush(t *testing.T) {
	h := newHub(t, hub.Options{HistorySize: 10, HistoryTTL: time.Minute})
	c, _ := register(t, h, ws("u1"))
	for i := 0; i < 3; i++ {
		if _, err := h.Publish(ctx, []string{"u1"}, "T", nil); err != nil {
			t.Fatal(err)
		}
	}
	c.Close(hub.ReasonNormal)
	// events after Close are not queued (they stay in the history)
	if _, err := h.Publish(ctx, []string{"u1"}, "T", nil); err != nil {
		t.Fatal(err)
	}
	if c.Send(hub.Control("hub.error", nil)) {
		t.Error("Send on a closing conn reported success")
	}
	msgs, r := c.Next(nil)
	if len(msgs) != 4 || r != nil {
		t.Fatalf("first Next: %v, reason %v; want connected + 3 events and no reason yet", types(msgs), r)
	}
	msgs, r = c.Next(nil)
	if len(msgs) != 0 || r == nil || *r != hub.ReasonNormal {
		t.Fatalf("second Next: %v, reason %v; want the close reason", types(msgs), r)
	}
	msgs, r = c.Next(nil)
	if len(msgs) != 0 || r != nil {
		t.Fatalf("third Next: %v, reason %v; want nothing", types(msgs), r)
	}
}

func TestDisconnectUser(t *testing.T) {
	h := newHub(t, hub.Options{})
	var victims []*hub.Conn
	for i := 0; i < 3; i++ {
		c, _ := register(t, h, ws("bad"))
		victims = append(victims, c)
	}
	other, _ := register(t, h, ws("good"))
	if n := h.DisconnectUser("nobody"); n != 0 {
		t.Errorf("DisconnectUser(nobody) = %d", n)
	}
	if n := h.DisconnectUser("bad"); n != 3 {
		t.Fatalf("DisconnectUser = %d, want 3", n)
	}
	for _, c := range victims {
		msgs, r := drain(c)
		if len(msgs) != 1 || r == nil || *r != hub.ReasonDisconnected || r.Code != 4003 {
			t.Errorf("victim got %v, reason %v; want hub.connected then 4003", types(msgs), r)
		}
	}
	if _, r := drain(other); r != nil {
		t.Errorf("other user closed with %v", r)
	}
	if n := h.UserConnections("bad"); n != 3 {
		t.Errorf("UserConnections before Unregister = %d, want 3", n)
	}
	for _, c := range victims {
		h.Unregister(c)
	}
	if n := h.UserConnections("bad"); n != 0 {
		t.Errorf("UserConnections after Unregister = %d", n)
	}
}

func TestConnectionLimits(t *testing.T) {
	tests := []struct {
		name      string
		opts      hub.Options
		users     []string // registered in order; the last one is refused
		wantScope string
		wantLimit int
	}{
		{name: "per user", opts: hub.Options{MaxConnsPerUser: 2}, users: []string{"a", "a", "b", "b", "a"}, wantScope: "user", wantLimit: 2},
		{name: "per node", opts: hub.Options{MaxConns: 3}, users: []string{"a", "b", "c", "d"}, wantScope: "node", wantLimit: 3},
		{name: "node before user", opts: hub.Options{MaxConns: 2, MaxConnsPerUser: 2}, users: []string{"a", "b", "a"}, wantScope: "node", wantLimit: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t, tt.opts)
			var conns []*hub.Conn
			for _, u := range tt.users[:len(tt.users)-1] {
				c, _ := register(t, h, ws(u))
				conns = append(conns, c)
			}
			last := tt.users[len(tt.users)-1]
			c, err := h.Register(ws(last), newSink())
			if err == nil || c != nil {
				t.Fatalf("Register over the limit = %v, %v", c, err)
			}
			var le *hub.LimitError
			if !errors.As(err, &le) || le.Scope != tt.wantScope || le.Limit != tt.wantLimit {
				t.Fatalf("error %v, want LimitError{%s %d}", err, tt.wantScope, tt.wantLimit)
			}
			if !errors.Is(err, hub.ErrTooManyConnections) {
				t.Errorf("errors.Is(%v, ErrTooManyConnections) = false", err)
			}
			if got := h.Stats().TotalConnections; got != len(conns) {
				t.Errorf("refused Register left TotalConnections = %d, want %d", got, len(conns))
			}
			// freeing a slot of that user lets it in again
			for _, c := range conns {
				if c.UserID() == last || tt.wantScope == "node" {
					h.Unregister(c)
					h.Unregister(c) // twice is harmless
					break
				}
			}
			c, err = h.Register(ws(last), newSink())
			if err != nil {
				t.Fatalf("Register after Unregister: %v", err)
			}
			if got := h.Stats().TotalConnections; got != len(conns) {
				t.Errorf("TotalConnections = %d, want %d", got, len(conns))
			}
			h.Unregister(c)
		})
	}
}

func TestStats(t *testing.T) {
	h := newHub(t, hub.Options{Node: "hub-1"})
	type want struct {
		total, users, ws, sse int
	}
	check := func(step string, w want) {
		t.Helper()
		st := h.Stats()
		if st.TotalConnections != w.total || st.ActiveUsers != w.users || st.Node != "hub-1" || st.UptimeSeconds < 0 {
			t.Errorf("%s: %+v, want %+v", step, st, w)
		}
		wantConns := map[string]int{"websocket": w.ws, "sse": w.sse}
		if fmt.Sprint(st.Connections) != fmt.Sprint(wantConns) {
			t.Errorf("%s: connections %v, want %v", step, st.Connections, wantConns)
		}
	}
	check("empty", want{})
	a1, _ := register(t, h, ws("a"))
	a2, _ := register(t, h, hub.ConnInfo{UserID: "a", Transport: hub.TransportSSE})
	b1, _ := register(t, h, ws("b"))
	check("three conns of two users", want{3, 2, 2, 1})
	h.Unregister(a2)
	h.Unregister(a2)
	check("a's sse gone", want{2, 2, 2, 0})
	h.Unregister(a1)
	check("a gone", want{1, 1, 1, 0})
	h.Unregister(b1)
	check("all gone", want{})
	b, err := json.Marshal(h.Stats())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"totalConnections":0`, `"activeUsers":0`, `"connections":{"sse":0,"websocket":0}`, `"node":"hub-1"`, `"uptimeSeconds":`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("stats JSON %s lacks %s", b, k)
		}
	}
}

func ptr[T any](v T) *T { return &v }
