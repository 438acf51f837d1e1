package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/hubtest/app"
)

// TestTailSurvivesRestart: tail on a node of a two-node cluster (one Redis)
// whose node is stopped and started again on the same address. While it is
// down, events are published through the other node; tail reconnects
// (with backoff) once the node is back and resumes without loss: every
// event, exactly once, in order, and hub.connected says recovered with
// what it missed. No event reaches tail before the stop, so the resume
// starts from the position the first hub.connected gave.
func TestTailSurvivesRestart(t *testing.T) {
	for _, transport := range []string{"ws", "sse"} {
		t.Run(transport, func(t *testing.T) {
			redis := hubtest.StartRedisServer(t) // skips without redis-server, unless HUB_REQUIRE_REDIS=1
			addr := hubtest.FreeAddr(t)
			node := func(name, addr string) func(*config.Config) {
				return func(c *config.Config) {
					c.NodeName, c.Broker, c.RedisURL = name, "redis", redis.URL()
					if addr != "" {
						c.Addr = addr
					}
				}
			}
			a := app.Start(t, node("hub-a", addr))
			b := app.Start(t, node("hub-b", ""))
			tr := startTail(t, "--url", a.URL, "--token", token(t, "u1"), "--transport", transport, "--backoff-max", "200ms")
			first := tr.waitType("hub.connected")
			if p, _ := first["payload"].(map[string]any); p["position"] == nil || p["position"] == "" {
				t.Fatalf("hub.connected %v has no position", first)
			}

			var want []string
			publish := func(n int) {
				for range n {
					var ans struct{ Events []struct{ ID string } }
					decode(t, mustRun(t, "", "publish", "--url", b.URL, "--api-key", hubtest.APIKey, "--user", "u1", "--type", "TICK",
						"--payload", fmt.Sprintf(`{"n":%d}`, len(want))), &ans)
					want = append(want, ans.Events[0].ID)
				}
			}
			a.Stop()
			tr.waitType("hub.shutdown")
			tr.waitErr("reconnecting")
			publish(5) // while node a is down
			tr.waitErr("connection lost")

			a2 := app.Start(t, node("hub-a", addr))
			hubtest.Eventually(t, 15*time.Second, "tail reconnected to the restarted node", func() bool {
				return len(tr.ofType("hub.connected")) == 2
			})
			second := tr.ofType("hub.connected")[1]
			if p, _ := second["payload"].(map[string]any); p["recovered"] != true || p["missed"] != 5.0 || p["node"] != "hub-a" {
				t.Errorf("hub.connected after the restart: %v, want recovered with 5 missed", second)
			}
			publish(3) // live again
			hubtest.Eventually(t, 10*time.Second, "every event", func() bool { return len(tr.ofType("TICK")) >= len(want) })
			var got []string
			for _, e := range tr.ofType("TICK") {
				got = append(got, e["id"].(string))
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("tail printed ids\n %v\nwant\n %v", got, want)
			}
			if e := tr.errOut.String(); !strings.Contains(e, "resuming after "+first["payload"].(map[string]any)["position"].(string)) {
				t.Errorf("stderr %q, want it to resume after the first position", e)
			}
			_ = a2
			tr.cancel()
			if code := tr.exit(); code != exitOK {
				t.Errorf("exit %d after an interrupt, want 0", code)
			}
		})
	}
}

// TestTailRestartInMemory: a single in-memory hub restarted on the same
// address: tail reconnects, is told recovered:false (the history went
// with the process), and prints what is published after.
func TestTailRestartInMemory(t *testing.T) {
	for _, transport := range []string{"ws", "sse"} {
		t.Run(transport, func(t *testing.T) {
			addr := hubtest.FreeAddr(t)
			fixed := func(c *config.Config) { c.Addr = addr }
			a := app.Start(t, fixed)
			tr := startTail(t, "--url", a.URL, "--token", token(t, "u1"), "--transport", transport, "--backoff-max", "200ms")
			tr.waitType("hub.connected")
			mustRun(t, "", "publish", "--url", a.URL, "--api-key", hubtest.APIKey, "--user", "u1", "--type", "BEFORE")
			tr.waitType("BEFORE")
			a.Stop()
			tr.waitErr("reconnecting")
			a2 := app.Start(t, fixed)
			hubtest.Eventually(t, 15*time.Second, "reconnected", func() bool { return len(tr.ofType("hub.connected")) == 2 })
			if p, _ := tr.ofType("hub.connected")[1]["payload"].(map[string]any); p["recovered"] != false {
				t.Errorf("after the restart of an in-memory hub: %v, want recovered:false", p)
			}
			mustRun(t, "", "publish", "--url", a2.URL, "--api-key", hubtest.APIKey, "--user", "u1", "--type", "AFTER")
			tr.waitType("AFTER")
			if n := len(tr.ofType("BEFORE")); n != 1 {
				t.Errorf("BEFORE printed %d times, want once", n)
			}
		})
	}
}

// TestHints: a hub that cannot be reached, or a service API on another
// listener, gets a hint on stderr after the error.
func TestHints(t *testing.T) {
	down := "http://" + hubtest.FreeAddr(t) // nothing listens there
	th := app.Start(t, func(c *config.Config) { c.InternalAddr = "127.0.0.1:0" })
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"stats, no hub", []string{"stats", "--url", down, "--token", "x.y.z"},
			[]string{"connection refused", "no hub answers at " + down + ": is it running there? Set --url or HUB_URL"}},
		{"publish, no hub", []string{"publish", "--url", down, "--api-key", hubtest.APIKey, "--all", "--type", "A"},
			[]string{"no hub answers at " + down}},
		{"tail ws, no hub", []string{"tail", "--url", down, "--token", "x.y.z"},
			[]string{"no hub answers at " + down}},
		{"tail sse, no hub", []string{"tail", "--url", down, "--token", "x.y.z", "--transport", "sse"},
			[]string{"no hub answers at " + down}},
		{"unknown host", []string{"disconnect", "--url", "http://no-such-host.invalid", "--api-key", hubtest.APIKey, "--user", "u1"},
			[]string{"no hub answers at http://no-such-host.invalid"}},
		{"API on the internal listener", []string{"publish", "--url", th.URL, "--api-key", hubtest.APIKey, "--all", "--type", "A"},
			[]string{"404 not_found", "the hub serves its service API on the internal listener only: set --url or HUB_URL"}},
		{"tail on the internal listener", []string{"tail", "--url", th.API, "--token", token(t, "u1"), "--transport", "sse"},
			[]string{"404 not_found", "the WebSocket and SSE endpoints are on the hub's public listener (HUB_ADDR)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := hubctl(t, "", tt.args...)
			if r.code != exitError {
				t.Errorf("exit %d, want 1 (stderr %q)", r.code, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q, want %q", r.stderr, w)
				}
			}
		})
	}
	// and the internal listener takes the same call
	mustRun(t, "", "publish", "--url", th.API, "--api-key", hubtest.APIKey, "--all", "--type", "A")
}

// ofType returns the envelopes of type typ printed so far.
func (tr *tailRun) ofType(typ string) []map[string]any {
	tr.t.Helper()
	var out []map[string]any
	for _, e := range tr.envelopes() {
		if e["type"] == typ {
			out = append(out, e)
		}
	}
	return out
}

// TestTailerPrint: what tail prints and where it resumes from.
func TestTailerPrint(t *testing.T) {
	var out hubtest.Buffer
	tl := &tailer{s: &streams{out: &out}, seen: newIDWindow(2)}
	lines := []string{
		`{"type":"hub.connected","payload":{"missed":0,"position":"E-0p"}}`,
		`{"type":"hub.ping"}`,
		`{"id":"E-1","type":"A","payload":1}`,
		`{"id":"E-1","type":"A","payload":1}`,
		`{"id":"E-2","type":"B","payload":2}`,
		`{"type":"hub.connected","payload":{"missed":3,"position":"E-9"}}`,
	}
	var positions []string
	for _, l := range lines {
		if _, err := tl.print([]byte(l)); err != nil {
			t.Fatal(err)
		}
		positions = append(positions, tl.position())
	}
	want := strings.Join([]string{lines[0], lines[2], lines[4], lines[5]}, "\n") + "\n"
	if out.String() != want {
		t.Errorf("printed\n%s\nwant\n%s", out.String(), want)
	}
	// the position follows hub.connected when nothing was replayed, and the
	// events; a replaying hub.connected leaves it to the replayed events
	if got := strings.Join(positions, " "); got != "E-0p E-0p E-1 E-1 E-2 E-2" {
		t.Errorf("positions %s", got)
	}
	for _, c := range []struct {
		give closeStatus
		want string
	}{
		{closeStatus{1001, "server shutdown"}, `{"type":"hub.shutdown"}`},
		{closeStatus{4001, "token expired"}, `{"type":"hub.expired"}`},
		{closeStatus{4003, "disconnected by server"}, `{"payload":{"code":4003,"reason":"disconnected by server"},"type":"hub.closed"}`},
	} {
		if got := string(c.give.line()); got != c.want {
			t.Errorf("line(%v) = %s, want %s", c.give, got, c.want)
		}
	}
}
