package modules_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

// device is a connection of either transport, as the resume tests see it.
type device interface {
	connected() map[string]any
	next(timeout time.Duration) envelope
}

var transports = []string{"websocket", "sse"}

// connect opens a device of transport for token, resuming from lastID
// (last_event_id query parameter for WebSocket, Last-Event-ID for SSE).
func (th *testHub) connect(transport, token, lastID string) device {
	th.t.Helper()
	if transport == "sse" {
		return th.mustSSE(token, lastID)
	}
	return th.mustWS(token, url.QueryEscape(lastID))
}

// with returns a copy of th whose helpers fail t (for subtests).
func (th *testHub) with(t *testing.T) *testHub {
	c := *th
	c.t = t
	return &c
}

// hangUp closes a device from the client side and waits for its reader.
func hangUp(d device) {
	switch c := d.(type) {
	case *wsClient:
		c.c.CloseNow()
		<-c.done
	case *sseClient:
		c.close()
	}
}

// publishAll broadcasts to every user and returns the event id.
func (th *testHub) publishAll(typ string, payload any) string {
	th.t.Helper()
	status, body := th.post("/api/broadcast", map[string]any{"all": true, "type": typ, "payload": payload},
		map[string]string{"X-API-Key": hubtest.APIKey})
	id, _ := body["id"].(string)
	if status != http.StatusAccepted || id == "" {
		th.t.Fatalf("broadcast all: %d %v", status, body)
	}
	return id
}

// expectIDs reads len(ids) events and checks they are ids, in order.
func expectIDs(t *testing.T, d device, ids []string, what string) {
	t.Helper()
	for i, id := range ids {
		if e := d.next(5 * time.Second); e.ID != id {
			t.Fatalf("%s: event %d is %s, want id %s", what, i, e.raw, id)
		}
	}
}

// expectConnected checks hub.connected's recovered and missed.
func expectConnected(t *testing.T, d device, recovered bool, missed int) {
	t.Helper()
	p := d.connected()
	if p["recovered"] != recovered || p["missed"] != float64(missed) {
		t.Fatalf("hub.connected recovered=%v missed=%v, want recovered=%v missed=%d (%v)",
			p["recovered"], p["missed"], recovered, missed, p)
	}
}

// expectLive publishes one event to user and checks it is the next one d gets.
func expectLive(t *testing.T, th *testHub, d device, user string) {
	t.Helper()
	id := th.publish("LIVE", nil, user)[user]
	if e := d.next(5 * time.Second); e.ID != id {
		t.Fatalf("live event: got %s, want id %s", e.raw, id)
	}
}

func TestResumeAcrossTransports(t *testing.T) {
	th := startHub(t, nil)
	for _, from := range transports {
		for _, to := range transports {
			t.Run(from+" to "+to, func(t *testing.T) {
				th := th.with(t)
				user := "resume-" + from + "-" + to
				tok := th.token(user, time.Hour)
				d := th.connect(from, tok, "")
				expectConnected(t, d, false, 0)
				var seen []string
				for i := range 3 {
					seen = append(seen, th.publish("BEFORE", i, user)[user])
				}
				expectIDs(t, d, seen, "before the drop")
				hangUp(d)
				// missed while away: personal events and broadcasts to all, interleaved
				var away []string
				for i := range 6 {
					if i%3 == 1 {
						away = append(away, th.publishAll("ANNOUNCEMENT", i))
					} else {
						away = append(away, th.publish("AWAY", i, user)[user])
					}
				}
				d = th.connect(to, tok, seen[len(seen)-1])
				expectConnected(t, d, true, len(away))
				expectIDs(t, d, away, "replay")
				expectLive(t, th, d, user)
				// resuming from the middle replays only what came after
				d2 := th.connect(to, tok, away[2])
				expectConnected(t, d2, true, len(away)-3+1)
				expectIDs(t, d2, away[3:], "replay from the middle")
			})
		}
	}
}

func TestResumeNotRecovered(t *testing.T) {
	th := startHub(t, func(c *config.Config) { c.HistorySize = 4 })
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			th := th.with(t)
			user := "nr-" + tr
			tok := th.token(user, time.Hour)
			first := th.publish("FIRST", nil, user)[user]
			var more []string
			for i := range 10 {
				more = append(more, th.publish("MORE", i, user)[user])
			}
			other := th.publish("OTHER", nil, "someone-else-"+tr)["someone-else-"+tr]
			epoch, _, _ := strings.Cut(first, "-")
			tests := []struct {
				name, give string
			}{
				{"more missed than the history holds", first},
				{"unknown epoch", "ZZZZZZZZZZZZZ-3"},
				{"from the future", epoch + "-999999"},
				{"malformed", "not-an-id"},
				{"malformed with spaces", "a b c"},
				{"just a number", "42"},
			}
			// within the history it recovers
			d := th.connect(tr, tok, more[len(more)-3])
			expectConnected(t, d, true, 2)
			expectIDs(t, d, more[len(more)-2:], "replay")
			// an id the user's history does not hold (here another
			// user's; a superseded or volatile event's in practice)
			// counts as a position: nothing of the user came after it
			d = th.connect(tr, tok, other)
			expectConnected(t, d, true, 0)
			expectLive(t, th, d, user)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					th := th.with(t)
					d := th.connect(tr, tok, tt.give)
					expectConnected(t, d, false, 0)
					expectLive(t, th, d, user)
				})
			}
		})
	}
}

func TestResumeHistoryDisabled(t *testing.T) {
	th := startHub(t, func(c *config.Config) { c.HistorySize = 0 })
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			th := th.with(t)
			user := "nohist-" + tr
			tok := th.token(user, time.Hour)
			d := th.connect(tr, tok, "")
			expectConnected(t, d, false, 0)
			id := th.publish("X", nil, user)[user]
			expectIDs(t, d, []string{id}, "live")
			hangUp(d)
			th.publish("Y", nil, user)
			d = th.connect(tr, tok, id)
			expectConnected(t, d, false, 0)
			expectLive(t, th, d, user)
		})
	}
}

func TestResumeAfterRestart(t *testing.T) {
	a := startHub(t, nil)
	var ids []string
	for i := range 5 {
		ids = append(ids, a.publish("OLD", i, "alice")["alice"])
	}
	a.Stop()
	b := startHub(t, nil)
	// the new node has events of its own for alice, with sequence numbers
	// that may overlap the old ones: the epoch must tell them apart
	for i := range 5 {
		b.publish("NEW", i, "alice")
	}
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			b := b.with(t)
			d := b.connect(tr, b.token("alice", time.Hour), ids[1])
			expectConnected(t, d, false, 0)
			expectLive(t, b, d, "alice")
		})
	}
}

func TestSSELastEventIDHeaderWins(t *testing.T) {
	th := startHub(t, nil)
	// indexes into the user's six events; -1: not sent, -2: "garbage"
	tests := []struct {
		name          string
		header, query int
		recovered     bool
		from          int // first replayed index (6: none)
	}{
		{"header only", 3, -1, true, 4},
		{"query only", -1, 2, true, 3},
		{"header over query", 4, 0, true, 5},
		{"header over a bad query", 1, -2, true, 2},
		{"bad header over a good query", -2, 1, false, 6},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := th.with(t)
			user := fmt.Sprintf("hdr-%d", i)
			var ids []string
			for j := range 6 {
				ids = append(ids, th.publish("E", j, user)[user])
			}
			pick := func(n int) string {
				switch n {
				case -1:
					return ""
				case -2:
					return "garbage"
				}
				return ids[n]
			}
			c, status, body, err := th.dialSSE(sseDial{Token: th.token(user, time.Hour), LastID: pick(tt.header), LastIDQ: pick(tt.query)})
			if err != nil || c == nil {
				t.Fatalf("dial: %v %d %v", err, status, body)
			}
			expectConnected(t, c, tt.recovered, len(ids[tt.from:]))
			expectIDs(t, c, ids[tt.from:], "replay")
			expectLive(t, th, c, user)
		})
	}
}

// TestResumeWhilePublishing resumes while a publisher keeps going: the
// device sees every event after its last id exactly once, in order.
func TestResumeWhilePublishing(t *testing.T) {
	th := startHub(t, nil)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			th := th.with(t)
			user := "busy-" + tr
			tok := th.token(user, time.Hour)
			d := th.connect(tr, tok, "")
			expectConnected(t, d, false, 0)
			const total = 300
			var (
				mu  sync.Mutex
				ids []string
				wg  sync.WaitGroup
			)
			published := func() int { mu.Lock(); defer mu.Unlock(); return len(ids) }
			errc := make(chan error, 1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range total {
					status, body := th.postNoFatal("/api/broadcast", map[string]any{"userIds": []string{user}, "type": "SEQ", "payload": i})
					if status != http.StatusAccepted {
						errc <- fmt.Errorf("publish %d: %d %v", i, status, body)
						return
					}
					id := body["events"].([]any)[0].(map[string]any)["id"].(string)
					mu.Lock()
					ids = append(ids, id)
					mu.Unlock()
				}
			}()
			defer wg.Wait()
			// read a while, drop, let some go by, resume while still publishing
			hubtest.Eventually(t, 10*time.Second, "50 events published", func() bool { return published() >= 50 })
			var got []string
			for len(got) < 20 {
				got = append(got, d.next(5*time.Second).ID)
			}
			hangUp(d)
			n := published()
			hubtest.Eventually(t, 10*time.Second, "more events published", func() bool { return published() >= n+20 })
			d = th.connect(tr, tok, got[len(got)-1])
			p := d.connected()
			if p["recovered"] != true {
				t.Fatalf("hub.connected %v, want recovered", p)
			}
			missed := int(p["missed"].(float64))
			wg.Wait()
			select {
			case err := <-errc:
				t.Fatal(err)
			default:
			}
			if missed < 20 {
				t.Errorf("missed %d, want at least 20", missed)
			}
			for len(got) < total {
				got = append(got, d.next(5*time.Second).ID)
			}
			for i := range total {
				if got[i] != ids[i] {
					t.Fatalf("event %d: got %s, want %s (gap or duplicate)", i, got[i], ids[i])
				}
			}
			// nothing extra is queued: the next event is a fresh one
			expectLive(t, th, d, user)
		})
	}
}

// postNoFatal posts to the internal API with the API key and may be called
// from any goroutine.
func (th *testHub) postNoFatal(path string, body any) (int, map[string]any) {
	req, _ := http.NewRequest(http.MethodPost, th.API+path, strings.NewReader(mustJSON(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", hubtest.APIKey)
	return doNoFatal(req)
}

// TestResumeFromPosition: a device cut before its first event resumes from
// hub.connected's position with recovered:true and every event published
// while it was away; an SSE stream carries the position as its last event
// id (a data-less id record), as an EventSource would resume from it; a
// device cut during the replay resumes from the last event it got.
func TestResumeFromPosition(t *testing.T) {
	th := startHub(t, nil)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			th := th.with(t)
			user := "position-" + tr
			tok := th.token(user, time.Hour)
			d := th.connect(tr, tok, "")
			p := d.connected()
			pos, _ := p["position"].(string)
			if pos == "" || p["recovered"] != false || p["missed"] != float64(0) {
				t.Fatalf("fresh start: %v, want a position, recovered false, missed 0", p)
			}
			if c, ok := d.(*sseClient); ok {
				hubtest.Eventually(t, 5*time.Second, "the SSE stream's last event id to be the position", func() bool {
					return c.lastEventID() == pos
				})
			}
			hangUp(d) // before its first event

			var away []string
			for i := range 5 {
				if i == 2 {
					away = append(away, th.publishAll("ANNOUNCEMENT", i))
				} else {
					away = append(away, th.publish("AWAY", i, user)[user])
				}
			}
			d = th.connect(tr, tok, pos)
			p = d.connected()
			if p["recovered"] != true || p["missed"] != float64(len(away)) || p["position"] != away[len(away)-1] {
				t.Fatalf("resume from the position: %v, want recovered true, missed %d, position %s", p, len(away), away[len(away)-1])
			}
			expectIDs(t, d, away[:2], "replay, before the cut")
			hangUp(d) // during the replay

			d = th.connect(tr, tok, away[1])
			expectConnected(t, d, true, len(away)-2)
			expectIDs(t, d, away[2:], "replay after a cut during the replay")
			expectLive(t, th, d, user)
		})
	}
}
