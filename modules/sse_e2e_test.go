package modules_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

func TestSSEMixedDevicesOneUser(t *testing.T) {
	th := startHub(t, nil)
	tok := th.token("alice", time.Hour)
	var alice []device
	for i := range 4 {
		d := th.connect(transports[i%2], tok, "")
		p := d.connected()
		if p["transport"] != transports[i%2] || p["userId"] != "alice" || p["recovered"] != false {
			t.Fatalf("hub.connected %v", p)
		}
		alice = append(alice, d)
	}
	bob := th.mustSSE(th.token("bob", time.Hour), "")
	bob.connected()

	h := bob.resp.Header
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := h.Get(k); !strings.HasPrefix(got, want) {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if ce := h.Get("Content-Encoding"); ce != "" {
		t.Errorf("Content-Encoding %q, want none", ce)
	}
	if r := bob.firstRet.Load(); r < 1500 || r > 4500 {
		t.Errorf("first retry: %d ms, want about 3000", r)
	}

	var want, bobWant []string
	for i := range 30 {
		if i%5 == 4 {
			id := th.publishAll("ANNOUNCEMENT", i)
			want = append(want, id)
			bobWant = append(bobWant, id)
		} else {
			want = append(want, th.publish("DRAFT_UPDATED", map[string]int{"draftId": i}, "alice")["alice"])
		}
	}
	// then a fresh event is the next one everywhere: nothing extra in between
	want = append(want, th.publish("LIVE", nil, "alice")["alice"])
	for i, d := range alice {
		expectIDs(t, d, want, fmt.Sprintf("alice device %d", i))
	}
	expectIDs(t, bob, bobWant, "bob")
	expectLive(t, th, bob, "bob")
}

func TestSSEHandshakeFailuresAreJSON(t *testing.T) {
	th := startHub(t, nil)
	expired := hubtest.ExpiredToken(t, "alice")
	tests := []struct {
		name   string
		give   sseDial
		status int
		code   string
	}{
		{"missing", sseDial{}, 401, "missing_token"},
		{"garbage header", sseDial{Token: "abc.def.ghi"}, 401, "invalid_token"},
		{"garbage query", sseDial{Token: "abc.def.ghi", TokenQuery: true}, 401, "invalid_token"},
		{"wrong key", sseDial{Token: hubtest.TokenWith(t, "other-secret-0123456789", "alice", time.Hour)}, 401, "invalid_token"},
		{"expired", sseDial{Token: expired, TokenQuery: true}, 401, "token_expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, status, body, err := dialSSE(t, sseDial{URL: th.SSEURL, Token: tt.give.Token, TokenQuery: tt.give.TokenQuery})
			if err != nil {
				t.Fatal(err)
			}
			if c != nil {
				t.Fatal("stream opened, want a refusal")
			}
			e, _ := body["error"].(map[string]any)
			if status != tt.status || e["code"] != tt.code || e["message"] == "" {
				t.Fatalf("got %d %v, want %d %s", status, body, tt.status, tt.code)
			}
		})
	}
	// the query token and the cookie work too
	c, _, _, err := th.dialSSE(sseDial{Token: th.token("alice", time.Hour), TokenQuery: true})
	if err != nil || c == nil {
		t.Fatalf("query token: %v", err)
	}
	c.connected()
	c, _, _, err = th.dialSSE(sseDial{Header: http.Header{"Cookie": {"hub_token=" + th.token("alice", time.Hour)}}})
	if err != nil || c == nil {
		t.Fatalf("cookie token: %v", err)
	}
	c.connected()
}

// stats fetches /api/websocket/stats with an admin token.
func (th *testHub) stats() map[string]any {
	th.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, th.API+"/api/websocket/stats", nil)
	req.Header.Set("Authorization", "Bearer "+th.token("root", time.Hour, "admin"))
	status, body := do(th.t, req)
	if status != http.StatusOK {
		th.t.Fatalf("stats: %d %v", status, body)
	}
	return body
}

func TestSSEStats(t *testing.T) {
	th := startHub(t, nil)
	s1 := th.mustSSE(th.token("alice", time.Hour), "")
	s1.connected()
	th.mustSSE(th.token("bob", time.Hour), "").connected()
	th.mustWS(th.token("alice", time.Hour), "").connected()
	count := func(kind string) any {
		c, _ := th.stats()["connections"].(map[string]any)
		return c[kind]
	}
	st := th.stats()
	if st["totalConnections"] != 3.0 || st["activeUsers"] != 2.0 || count("sse") != 2.0 || count("websocket") != 1.0 {
		t.Fatalf("stats %v, want 3 connections (2 sse, 1 websocket) of 2 users", st)
	}
	hangUp(s1)
	hubtest.Eventually(t, 5*time.Second, "sse count 1 after a hang-up", func() bool { return count("sse") == 1.0 })
	if st := th.stats(); st["totalConnections"] != 2.0 {
		t.Fatalf("stats %v after a hang-up", st)
	}
}

func TestSSEPerUserLimitCountsBothTransports(t *testing.T) {
	th := startHub(t, func(c *config.Config) { c.MaxConnectionsPerUser = 2 })
	tok := th.token("alice", time.Hour)
	th.mustWS(tok, "").connected()
	th.mustSSE(tok, "").connected()
	c, status, body, err := th.dialSSE(sseDial{Token: tok})
	e, _ := body["error"].(map[string]any)
	if err != nil || c != nil || status != http.StatusTooManyRequests || e["code"] != "too_many_connections" {
		t.Fatalf("third (sse) connection: %v %d %v", err, status, body)
	}
	_, resp, err := th.dialWS(tok, "", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third (websocket) connection: %v %v", err, resp)
	}
	// another user is not affected
	th.mustSSE(th.token("bob", time.Hour), "").connected()
}

func TestSSEDisconnectAPI(t *testing.T) {
	th := startHub(t, nil)
	s := th.mustSSE(th.token("alice", time.Hour), "")
	s.connected()
	w := th.mustWS(th.token("alice", time.Hour), "")
	w.connected()
	bob := th.mustSSE(th.token("bob", time.Hour), "")
	bob.connected()
	status, body := th.post("/api/users/alice/disconnect", "", map[string]string{"X-API-Key": hubtest.APIKey})
	if status != http.StatusOK || body["closed"] != 2.0 {
		t.Fatalf("disconnect: %d %v", status, body)
	}
	evs := s.waitEnd(5 * time.Second)
	if len(evs) == 0 || evs[len(evs)-1].Type != "hub.closed" {
		t.Fatalf("sse stream ended with %v, want hub.closed", evs)
	}
	var p struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(evs[len(evs)-1].Payload, &p)
	if p.Code != 4003 {
		t.Errorf("hub.closed payload %s, want code 4003", evs[len(evs)-1].raw)
	}
	if code, _ := w.closed(5 * time.Second); code != 4003 {
		t.Errorf("websocket close %d, want 4003", code)
	}
	expectLive(t, th, bob, "bob")
}

func TestSSEGracefulShutdown(t *testing.T) {
	th := startHub(t, func(c *config.Config) { c.ShutdownTimeout = 4 * time.Second })
	var streams []*sseClient
	for i := range 6 {
		s := th.mustSSE(th.token(fmt.Sprintf("u%d", i%3), time.Hour), "")
		s.connected()
		streams = append(streams, s)
	}
	w := th.mustWS(th.token("u0", time.Hour), "")
	w.connected()
	want := map[string][]string{}
	for i := range 3 {
		u := fmt.Sprintf("u%d", i)
		for range 4 {
			want[u] = append(want[u], th.publish("LAST", nil, u)[u])
		}
	}
	stopped := make(chan struct{})
	go func() { th.Stop(); close(stopped) }()
	for i, s := range streams {
		u := fmt.Sprintf("u%d", i%3)
		evs := s.waitEnd(10 * time.Second)
		var ids []string
		for _, e := range evs {
			if e.ID != "" {
				ids = append(ids, e.ID)
			}
		}
		if fmt.Sprint(ids) != fmt.Sprint(want[u]) {
			t.Errorf("stream %d got %v before the end, want %v", i, ids, want[u])
		}
		if len(evs) == 0 || evs[len(evs)-1].Type != "hub.shutdown" {
			t.Fatalf("stream %d ended with %v, want hub.shutdown last", i, evs)
		}
		if n, r := s.retries.Load(), s.retry.Load(); n < 2 || r <= 0 {
			t.Errorf("stream %d: %d retry fields (last %d), want a positive one with hub.shutdown", i, n, r)
		}
	}
	if code, _ := w.closed(10 * time.Second); code != websocket.StatusGoingAway {
		t.Errorf("websocket close %d, want 1001", code)
	}
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("stop did not return")
	}
	drainedBeforeCut(t, th.Logs.String())
}

func TestSSETokenExpiryAndHeartbeat(t *testing.T) {
	th := startHub(t, func(c *config.Config) { c.JWTLeeway = 0; c.HeartbeatInterval = 100 * time.Millisecond })
	long := th.mustSSE(th.token("bob", time.Hour), "")
	long.connected()
	hubtest.Eventually(t, 5*time.Second, "a \": ping\" comment", func() bool { return long.pings.Load() > 0 })
	short := th.mustSSE(th.token("alice", 1500*time.Millisecond), "")
	short.connected()
	evs := short.waitEnd(10 * time.Second)
	if len(evs) == 0 || evs[len(evs)-1].Type != "hub.expired" {
		t.Fatalf("stream ended with %v, want hub.expired", evs)
	}
	expectLive(t, th, long, "bob")
}
