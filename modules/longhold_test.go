package modules_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

// The long-hold tests (issue 22) keep connections of every transport and
// route open for more than 30 s, well past every timer and deadline the hub
// and net/http set on them: the 10 s write timeout of each write, the 10 s
// ReadHeaderTimeout of the server, the heartbeat and the WebSocket pong
// timeout. Events are published late, at holdFirst and holdSecond after the
// open, with heartbeats in between, and each must arrive on the very
// connection that was opened: no stream may end, no reconnect may happen
// (the clients here never reconnect; the end of a stream fails the test),
// and at the end the hub still holds exactly that connection, which a
// disconnect closes cleanly (hub.closed and the end of the chunked body on
// SSE, close 4003 on WebSocket). A deadline or timer that is set and never
// reset, cleared or stopped ends the stream before an event.
const (
	holdFirst  = 12 * time.Second // the first late event: past one write timeout
	holdSecond = 31 * time.Second // the second: past three
	// holdBeatSlack is how long a hold may go on past its end waiting for
	// the heartbeats it needs before the test fails.
	holdBeatSlack = 30 * time.Second
)

// holdProfile is the hub's timer configuration for one run of a hold.
type holdProfile struct {
	name      string
	heartbeat time.Duration
	pong      time.Duration
	// beats reports whether every stream must have had a heartbeat before
	// the first late event and another between the two events.
	beats bool
}

var holdProfiles = []holdProfile{
	// The production defaults: heartbeat 25 s, pong timeout 10 s. The first
	// heartbeat comes 12.5 to 25 s after the open, so each stream is idle
	// for longer than the write timeout (10 s) before the first event: a
	// deadline armed by one write and never cleared ends it.
	{name: "default-timers", heartbeat: 25 * time.Second, pong: 10 * time.Second},
	// Every timer fires many times within the hold: a heartbeat (SSE
	// comment; WebSocket ping frame, and hub.ping when idle) every 3 s, and
	// the answer to each ping checked 2 s later.
	{name: "fast-timers", heartbeat: 3 * time.Second, pong: 2 * time.Second, beats: true},
}

func (p holdProfile) apply(c *config.Config) {
	c.HeartbeatInterval = p.heartbeat
	c.PongTimeout = p.pong
}

// TestLongHold runs the hold on each route, with each timer profile, all at
// once: the subtests are started on goroutines of their own (t.Run may be
// called concurrently) rather than with t.Parallel, so that the package's
// wall time grows by one hold (about 35 s) whatever -parallel is (it is
// GOMAXPROCS by default, 2 on a small CI machine).
func TestLongHold(t *testing.T) {
	t.Parallel()
	routes := []struct {
		name string
		run  func(t *testing.T, p holdProfile)
	}{
		{"websocket", holdWebSocket},
		{"sse", holdSSE},
		{"nginx", holdNginx},
		{"tls", holdTLS},
		{"redis-cluster", holdRedisCluster},
	}
	var wg sync.WaitGroup
	for _, route := range routes {
		wg.Go(func() {
			t.Run(route.name, func(t *testing.T) {
				var pwg sync.WaitGroup
				for _, p := range holdProfiles {
					pwg.Go(func() {
						t.Run(p.name, func(t *testing.T) { route.run(t, p) })
					})
				}
				pwg.Wait()
			})
		})
	}
	wg.Wait()
}

// holdWebSocket: a WebSocket straight to the hub (its socket in the
// endpoint's poller, written by the pool writers).
func holdWebSocket(t *testing.T, p holdProfile) {
	th := startHub(t, p.apply)
	r := newHoldRun(t, th)
	r.addWS("websocket", "hold-ws", th.WSURL, nil)
	r.run(p)
}

// holdSSE: an HTTP/1.1 SSE stream straight to the hub (taken over from
// net/http, written with non-blocking writes).
func holdSSE(t *testing.T, p holdProfile) {
	th := startHub(t, p.apply)
	r := newHoldRun(t, th)
	r.addSSE("sse over HTTP/1.1", "hold-sse", 1, sseDial{URL: th.SSEURL})
	r.run(p)
}

// holdNginx: SSE and WebSocket through nginx with the recommended
// configuration (nginx keeps an HTTP/1.1 connection to the hub per stream).
func holdNginx(t *testing.T, p holdProfile) {
	th := startHub(t, p.apply)
	proxy := startNginx(t, th.Servers.Addr())
	r := newHoldRun(t, th)
	r.addSSE("sse through nginx", "hold-nginx-sse", 1, sseDial{URL: "http://" + proxy + th.Config.SSEPath})
	r.addWS("websocket through nginx", "hold-nginx-ws", "ws://"+proxy+th.Config.WSPath, nil)
	r.run(p)
}

// holdTLS: SSE over HTTP/2 (the handler is the writer, each write under a
// per-stream write deadline), SSE over HTTP/1.1 with TLS (taken over, no
// raw socket: written on goroutines) and WebSocket over TLS. The API is on
// a plain internal listener.
func holdTLS(t *testing.T, p holdProfile) {
	dir := t.TempDir()
	writeCert(t, dir, "hold")
	th := startHub(t, func(c *config.Config) {
		p.apply(c)
		c.TLSCertFile = filepath.Join(dir, "cert.pem")
		c.TLSKeyFile = filepath.Join(dir, "key.pem")
		c.InternalAddr = hubtest.FreeAddr(t)
	})
	insecure := &tls.Config{InsecureSkipVerify: true}
	sseURL := "https://" + th.Servers.Addr() + th.Config.SSEPath
	r := newHoldRun(t, th)
	r.addSSE("sse over HTTP/2", "hold-h2", 2, sseDial{URL: sseURL, TLS: insecure, HTTP2: true})
	r.addSSE("sse over HTTP/1.1 with TLS", "hold-h1-tls", 1, sseDial{URL: sseURL, TLS: insecure})
	tr := &http.Transport{TLSClientConfig: insecure}
	t.Cleanup(tr.CloseIdleConnections)
	r.addWS("websocket over TLS", "hold-wss", "wss://"+th.Servers.Addr()+th.Config.WSPath, &http.Client{Transport: tr})
	r.run(p)
}

// holdStream is one connection of a hold, as its scenario sees it.
type holdStream struct {
	name   string // route, for messages
	user   string // a user of its own
	proto  string // the transport hub.connected must name
	connID string // from hub.connected
	beats  int    // heartbeats seen so far
	close  func() // ends it from the client side
}

// holdItem is what a stream's reader hands the scenario: an envelope, a
// heartbeat, or the end of the stream.
type holdItem struct {
	s    *holdStream
	env  envelope
	beat bool
	err  error // the stream ended (io.EOF: a clean end)
}

// holdRun is the scenario of one hub: its streams' readers feed one
// channel, read by the test's goroutine only.
type holdRun struct {
	t       *testing.T
	th      *testHub
	api     *testHub // publishes the late events (nil: th)
	items   chan holdItem
	stop    chan struct{}
	wg      sync.WaitGroup
	streams []*holdStream
	start   time.Time // when every stream had its hub.connected
}

func newHoldRun(t *testing.T, th *testHub) *holdRun {
	r := &holdRun{t: t, th: th, items: make(chan holdItem, 1024), stop: make(chan struct{})}
	t.Cleanup(func() { // before the hub stops (cleanups run last first)
		close(r.stop)
		for _, s := range r.streams {
			s.close()
		}
		r.wg.Wait()
	})
	return r
}

// send hands an item to the scenario; false once the run is over.
func (r *holdRun) send(it holdItem) bool {
	select {
	case r.items <- it:
		return true
	case <-r.stop:
		return false
	}
}

// addSSE opens an SSE stream for user with d (its token and Manual set
// here) and checks the response's HTTP major version.
func (r *holdRun) addSSE(name, user string, protoMajor int, d sseDial) {
	r.t.Helper()
	d.Token, d.Manual = r.th.token(user, time.Hour), true
	c, status, body, err := dialSSE(r.t, d)
	if err != nil || c == nil {
		r.t.Fatalf("%s: open: %v (status %d %v)", name, err, status, body)
	}
	s := &holdStream{name: name, user: user, proto: "sse", close: c.close}
	r.streams = append(r.streams, s)
	if c.resp.ProtoMajor != protoMajor {
		r.t.Fatalf("%s: the response is %s, want HTTP/%d", name, c.resp.Proto, protoMajor)
	}
	p := &sseParser{br: bufio.NewReaderSize(c.resp.Body, 64<<10), onPing: func() { r.send(holdItem{s: s, beat: true}) }}
	r.wg.Go(func() {
		for {
			rec, err := p.next()
			if err == nil {
				var e envelope
				if e, err = decodeEnvelope([]byte(rec.Data)); err == nil && (rec.Event != e.Type || rec.ID != e.ID) {
					err = fmt.Errorf("sse fields id=%q event=%q disagree with %s", rec.ID, rec.Event, rec.Data)
				}
				if err == nil {
					if !r.send(holdItem{s: s, env: e}) {
						return
					}
					continue
				}
			}
			r.send(holdItem{s: s, err: err})
			return
		}
	})
}

// addWS opens a WebSocket for user at wsURL; ping frames count as
// heartbeats (and are answered), as do hub.ping events.
func (r *holdRun) addWS(name, user, wsURL string, hc *http.Client) {
	r.t.Helper()
	s := &holdStream{name: name, user: user, proto: "websocket"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, wsURL+"?token="+r.th.token(user, time.Hour), &websocket.DialOptions{
		HTTPClient: hc,
		OnPingReceived: func(context.Context, []byte) bool {
			r.send(holdItem{s: s, beat: true})
			return true // answer it
		},
	})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		r.t.Fatalf("%s: dial: %v (status %d)", name, err, status)
	}
	s.close = func() { c.CloseNow() }
	r.streams = append(r.streams, s)
	r.wg.Go(func() {
		for {
			_, b, err := c.Read(context.Background())
			var e envelope
			if err == nil {
				e, err = decodeEnvelope(b)
			}
			if err != nil {
				r.send(holdItem{s: s, err: err})
				return
			}
			if !r.send(holdItem{s: s, env: e, beat: e.Type == "hub.ping"}) {
				return
			}
		}
	})
}

// run is the scenario: hub.connected, a quiet hold until holdFirst, the
// first late event, a hold until holdSecond, the second late event, and a
// disconnect that must find exactly the connection that was opened.
func (r *holdRun) run(p holdProfile) {
	t := r.t
	t.Helper()
	r.await("hub.connected", 10*time.Second, func(s *holdStream, e envelope) error {
		var c struct {
			ConnectionID string `json:"connectionId"`
			Transport    string `json:"transport"`
		}
		if e.Type != "hub.connected" || json.Unmarshal(e.Payload, &c) != nil || c.ConnectionID == "" || c.Transport != s.proto {
			return fmt.Errorf("want hub.connected of a %s connection", s.proto)
		}
		s.connID = c.ConnectionID
		return nil
	})
	r.start = time.Now()

	r.hold(r.start.Add(holdFirst), func(*holdStream) int {
		if p.beats {
			return 1
		}
		return 0
	})
	r.late("LATE_FIRST")

	before := map[*holdStream]int{}
	for _, s := range r.streams {
		before[s] = s.beats
	}
	r.hold(r.start.Add(holdSecond), func(s *holdStream) int {
		if p.beats {
			return before[s] + 1
		}
		return 1 // the first heartbeat is due 12.5 to 25 s after the open
	})
	r.late("LATE_SECOND")

	// The hub still holds each user's one connection, which is the one
	// that carried both events: a disconnect closes exactly it, cleanly.
	for _, s := range r.streams {
		status, body := r.th.post("/api/users/"+s.user+"/disconnect", "", map[string]string{"X-API-Key": hubtest.APIKey})
		if status != http.StatusOK || body["closed"] != 1.0 {
			t.Fatalf("%s: disconnect %s after %v: %d %v, want closed 1 (its connection %s)",
				s.name, s.user, r.since(), status, body, s.connID)
		}
	}
	r.awaitClosed()
	for _, s := range r.streams {
		t.Logf("%s: connection %s held %v with %d heartbeats, both late events on it", s.name, s.connID, r.since().Round(time.Second), s.beats)
	}
}

// apiHub is the node whose service API publishes the late events: api,
// else th.
func (r *holdRun) apiHub() *testHub {
	if r.api != nil {
		return r.api
	}
	return r.th
}

func (r *holdRun) since() time.Duration {
	if r.start.IsZero() {
		return 0
	}
	return time.Since(r.start)
}

// late publishes one event of typ to every stream's user and waits for
// each on its stream.
func (r *holdRun) late(typ string) {
	r.t.Helper()
	users := make([]string, len(r.streams))
	for i, s := range r.streams {
		users[i] = s.user
	}
	ids := r.apiHub().publish(typ, map[string]any{"at": r.since().Round(time.Millisecond).String()}, users...)
	r.await(typ, 10*time.Second, func(s *holdStream, e envelope) error {
		if e.Type != typ || e.ID != ids[s.user] {
			return fmt.Errorf("want %s %s", typ, ids[s.user])
		}
		return nil
	})
}

// await reads until every stream has had, as its next envelope (heartbeats
// aside), one that check accepts.
func (r *holdRun) await(what string, timeout time.Duration, check func(*holdStream, envelope) error) {
	r.t.Helper()
	pending := map[*holdStream]bool{}
	for _, s := range r.streams {
		pending[s] = true
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for len(pending) > 0 {
		select {
		case it := <-r.items:
			switch {
			case it.err != nil:
				r.t.Fatalf("%s: connection %s ended %v after the open, before %s: %v", it.s.name, it.s.connID, r.since(), what, it.err)
			case it.beat:
				it.s.beats++
			case !pending[it.s]:
				r.t.Fatalf("%s: %s after %v, while waiting for %s", it.s.name, it.env.raw, r.since(), what)
			default:
				if err := check(it.s, it.env); err != nil {
					r.t.Fatalf("%s: got %s after %v: %v", it.s.name, it.env.raw, r.since(), err)
				}
				delete(pending, it.s)
			}
		case <-timer.C:
			for s := range pending {
				r.t.Errorf("%s: no %s within %v (%v after the open)", s.name, what, timeout, r.since())
			}
			r.t.FailNow()
		}
	}
}

// hold keeps reading until at, and until each stream has had need(s)
// heartbeats in all: every stream must stay open and carry nothing but
// heartbeats meanwhile.
func (r *holdRun) hold(at time.Time, need func(*holdStream) int) {
	r.t.Helper()
	reached := time.NewTimer(time.Until(at))
	defer reached.Stop()
	limit := time.NewTimer(time.Until(at) + holdBeatSlack)
	defer limit.Stop()
	done := false
	for {
		if done {
			short := false
			for _, s := range r.streams {
				short = short || s.beats < need(s)
			}
			if !short {
				return
			}
		}
		select {
		case it := <-r.items:
			switch {
			case it.err != nil:
				r.t.Fatalf("%s: connection %s ended %v after the open, while idle: %v", it.s.name, it.s.connID, r.since(), it.err)
			case it.beat:
				it.s.beats++
			default:
				r.t.Fatalf("%s: %s after %v, while idle", it.s.name, it.env.raw, r.since())
			}
		case <-reached.C:
			done = true
		case <-limit.C:
			for _, s := range r.streams {
				if s.beats < need(s) {
					r.t.Errorf("%s: %d heartbeats %v after the open, want %d", s.name, s.beats, r.since(), need(s))
				}
			}
			r.t.FailNow()
		}
	}
}

// awaitClosed reads until every stream has ended as a disconnect ends it:
// hub.closed with code 4003 and a clean end of the body on SSE, close 4003
// on WebSocket.
func (r *holdRun) awaitClosed() {
	r.t.Helper()
	pending := map[*holdStream]bool{}
	sawClosed := map[*holdStream]bool{}
	for _, s := range r.streams {
		pending[s] = true
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for len(pending) > 0 {
		select {
		case it := <-r.items:
			s := it.s
			switch {
			case it.beat:
			case it.err == nil && s.proto == "sse" && it.env.Type == "hub.closed" && !sawClosed[s]:
				var p struct {
					Code int `json:"code"`
				}
				if err := json.Unmarshal(it.env.Payload, &p); err != nil || p.Code != 4003 {
					r.t.Fatalf("%s: %s, want code 4003", s.name, it.env.raw)
				}
				sawClosed[s] = true
			case it.err == nil:
				r.t.Fatalf("%s: %s while closing", s.name, it.env.raw)
			case s.proto == "sse":
				if !sawClosed[s] || !errors.Is(it.err, io.EOF) {
					r.t.Fatalf("%s: ended with %v (hub.closed seen: %v), want hub.closed then the end of the body", s.name, it.err, sawClosed[s])
				}
				delete(pending, s)
			default:
				var ce websocket.CloseError
				if !errors.As(it.err, &ce) || ce.Code != 4003 {
					r.t.Fatalf("%s: ended with %v, want close 4003", s.name, it.err)
				}
				delete(pending, s)
			}
		case <-timer.C:
			for s := range pending {
				r.t.Errorf("%s: not closed by the disconnect", s.name)
			}
			r.t.FailNow()
		}
	}
}
