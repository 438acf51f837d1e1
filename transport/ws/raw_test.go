package ws

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/wsproto"
)

// These tests speak WebSocket frame by frame over a real socket, to check
// the endpoint's own reader: early data, frames split across reads,
// fragmentation with a ping in the middle, the closing handshake, protocol
// errors and the pong timeout.

type rawEnv struct {
	hub *hub.Hub
	h   *Handler
	srv *httptest.Server
}

func newRawEnv(t *testing.T, heartbeat, pongTimeout time.Duration) *rawEnv {
	t.Helper()
	return newRawEnvWith(t, heartbeat, pongTimeout, nil)
}

// newRawEnvWith is newRawEnv with the endpoint's options changed by mod.
func newRawEnvWith(t *testing.T, heartbeat, pongTimeout time.Duration, mod func(*Options)) *rawEnv {
	t.Helper()
	e := &rawEnv{}
	e.hub = hub.New(hub.Options{Node: "n", Heartbeat: heartbeat, HistorySize: 10, HistoryTTL: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	e.hub.Start()
	v, err := auth.New(context.Background(), auth.Options{Secret: hubtest.Secret})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Hub: e.hub, Auth: v, PongTimeout: pongTimeout, Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&o)
	}
	e.h = New(o)
	e.srv = httptest.NewServer(e.h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.hub.Shutdown(ctx)
		e.h.Wait()
		e.srv.Close()
		v.Close()
	})
	return e
}

type rawClient struct {
	t       *testing.T
	c       net.Conn
	br      *bufio.Reader
	deflate bool // permessage-deflate negotiated: RSV1 may be set
	rsv1    bool // the last frame read had RSV1 set
}

// dial upgrades a raw connection for user; extra is written right after
// the upgrade request, in the same write.
func (e *rawEnv) dial(t *testing.T, user string, extra []byte) *rawClient {
	t.Helper()
	rc, _ := e.dialOffer(t, user, "", extra)
	return rc
}

// dialOffer is dial with a Sec-WebSocket-Extensions offer (none when
// empty); it returns the extensions the hub answered with.
func (e *rawEnv) dialOffer(t *testing.T, user, offer string, extra []byte) (*rawClient, string) {
	t.Helper()
	tok := hubtest.Token(t, user, time.Hour)
	c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Authorization: Bearer " + tok + "\r\n"
	if offer != "" {
		req += "Sec-WebSocket-Extensions: " + offer + "\r\n"
	}
	req += "\r\n"
	if _, err := c.Write(append([]byte(req), extra...)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %d", resp.StatusCode)
	}
	rc := &rawClient{t: t, c: c, br: br, deflate: resp.Header.Get("Sec-WebSocket-Extensions") != ""}
	if typ := rc.nextEvent(); typ != "hub.connected" {
		t.Fatalf("first event %q", typ)
	}
	return rc, resp.Header.Get("Sec-WebSocket-Extensions")
}

// maskedFrame builds a masked client frame.
func maskedFrame(fin bool, op wsproto.Opcode, payload []byte) []byte {
	return wsproto.AppendClientFrame(nil, fin, false, op, [4]byte{0x12, 0x34, 0x56, 0x78}, payload)
}

func (r *rawClient) write(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// frame reads the next server frame (10 s at most); a compressed one
// (RSV1, on a connection that negotiated permessage-deflate) is inflated
// with compress/flate, and r.rsv1 says it was compressed.
func (r *rawClient) frame() (op wsproto.Opcode, payload []byte, err error) {
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	fin, rsv1, op, payload, err := readFrameRSV1(r.br)
	r.rsv1 = rsv1
	switch {
	case err != nil:
	case !fin:
		err = errors.New("the server fragmented a frame")
	case rsv1 && !r.deflate:
		err = errors.New("RSV1 set without permessage-deflate")
	case rsv1 && op != wsproto.OpText:
		err = fmt.Errorf("RSV1 set on a frame of %v", op)
	case rsv1:
		payload, err = inflate(payload)
	}
	return op, payload, err
}

// nextEvent reads frames until a text frame and returns its envelope type,
// answering pings on the way.
func (r *rawClient) nextEvent() string {
	r.t.Helper()
	for {
		op, p, err := r.frame()
		if err != nil {
			r.t.Fatalf("reading: %v", err)
		}
		switch op {
		case wsproto.OpPing:
			r.write(maskedFrame(true, wsproto.OpPong, p))
		case wsproto.OpText:
			var env struct{ Type string }
			if err := json.Unmarshal(p, &env); err != nil {
				r.t.Fatalf("server text frame is not JSON: %q", p)
			}
			return env.Type
		default:
			r.t.Fatalf("unexpected frame opcode %d %q", op, p)
		}
	}
}

// closed reads until the server's close frame and returns its code, then
// checks that the server closes the socket.
func (r *rawClient) closed() int {
	r.t.Helper()
	for {
		op, p, err := r.frame()
		if err != nil {
			r.t.Fatalf("reading until the close frame: %v", err)
		}
		if op != wsproto.OpClose {
			continue
		}
		if len(p) < 2 {
			r.t.Fatalf("close frame without a code: %q", p)
		}
		r.eof()
		return int(binary.BigEndian.Uint16(p))
	}
}

// eof checks that the server closes the socket (no frame comes first).
func (r *rawClient) eof() {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := r.br.ReadByte()
	if err == nil {
		r.t.Fatalf("byte %#x after the close", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.t.Fatal("the server did not close the socket")
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		r.t.Fatalf("after the close: %v", err)
	}
}

func TestRawEarlyDataSplitFramesFragmentation(t *testing.T) {
	e := newRawEnv(t, time.Hour, 10*time.Second)
	// A frame sent in the same write as the upgrade request is read.
	r := e.dial(t, "u1", maskedFrame(true, wsproto.OpText, []byte(`{"type":"NOPE"}`)))
	if typ := r.nextEvent(); typ != "hub.error" {
		t.Fatalf("early frame answered with %q, want hub.error", typ)
	}
	// A fragmented message with a ping between its fragments, written one
	// byte at a time.
	var msg []byte
	msg = append(msg, maskedFrame(false, wsproto.OpText, []byte(`{"type"`))...)
	msg = append(msg, maskedFrame(true, wsproto.OpPing, []byte("p1"))...)
	msg = append(msg, maskedFrame(false, wsproto.OpContinuation, []byte(`:"NO`))...)
	msg = append(msg, maskedFrame(true, wsproto.OpContinuation, []byte(`PE"}`))...)
	for _, b := range msg {
		r.write([]byte{b})
	}
	op, p, err := r.frame()
	if err != nil || op != wsproto.OpPong || string(p) != "p1" {
		t.Fatalf("answer to the ping: opcode %d %q %v; want a pong with its payload", op, p, err)
	}
	if typ := r.nextEvent(); typ != "hub.error" {
		t.Fatalf("fragmented message answered with %q, want hub.error", typ)
	}
	// A message over 125 bytes (16-bit length) is read too, and the
	// connection still gets events.
	r.write(maskedFrame(true, wsproto.OpText, []byte(`{"type":"hub.pong","pad":"`+strings.Repeat("x", 300)+`"}`)))
	if _, err := e.hub.Publish(context.Background(), []string{"u1"}, "A", json.RawMessage(`1`)); err != nil {
		t.Fatal(err)
	}
	if typ := r.nextEvent(); typ != "A" {
		t.Fatalf("got %q, want the event A", typ)
	}
}

func TestRawClosingHandshake(t *testing.T) {
	e := newRawEnv(t, time.Hour, 10*time.Second)
	t.Run("client close is echoed", func(t *testing.T) {
		r := e.dial(t, "u1", nil)
		r.write(maskedFrame(true, wsproto.OpClose, append([]byte{0x0f, 0xa0}, "bye"...))) // 4000
		if code := r.closed(); code != 4000 {
			t.Fatalf("echoed %d, want 4000", code)
		}
	})
	t.Run("server close waits for the client", func(t *testing.T) {
		r := e.dial(t, "u2", nil)
		if n := e.hub.DisconnectUser("u2"); n != 1 {
			t.Fatalf("disconnected %d", n)
		}
		for {
			op, p, err := r.frame()
			if err != nil {
				t.Fatal(err)
			}
			if op != wsproto.OpClose {
				continue
			}
			if code := binary.BigEndian.Uint16(p); code != 4003 || string(p[2:]) != "disconnected by server" {
				t.Fatalf("close %d %q", code, p[2:])
			}
			break
		}
		r.write(maskedFrame(true, wsproto.OpClose, []byte{0x0f, 0xa3}))
		r.eof()
	})
	for _, tt := range []struct {
		name  string
		frame []byte
		want  int
	}{
		{"unmasked frame", []byte{0x81, 0x02, 'h', 'i'}, wsproto.CloseProtocolError},
		{"reserved bits", append([]byte{0xc1}, maskedFrame(true, wsproto.OpText, []byte("{}"))[1:]...), wsproto.CloseProtocolError},
		{"unknown opcode", maskedFrame(true, 0x3, nil), wsproto.CloseProtocolError},
		{"fragmented ping", maskedFrame(false, wsproto.OpPing, nil), wsproto.CloseProtocolError},
		{"continuation without a message", maskedFrame(true, wsproto.OpContinuation, []byte("x")), wsproto.CloseProtocolError},
		{"close code 1005", maskedFrame(true, wsproto.OpClose, []byte{0x03, 0xed}), wsproto.CloseProtocolError},
		{"one-byte close", maskedFrame(true, wsproto.OpClose, []byte{0x03}), wsproto.CloseProtocolError},
		{"binary", maskedFrame(true, wsproto.OpBinary, []byte("x")), wsproto.CloseUnsupportedData},
		{"frame over the limit", maskedFrame(true, wsproto.OpText, make([]byte, MaxFrame+1)), wsproto.CloseMessageTooBig},
		{"text that is not UTF-8", maskedFrame(true, wsproto.OpText, []byte("{\"type\":\"\xff\xfe\"}")), wsproto.CloseInvalidPayload},
		{"fragmented text that is not UTF-8", append(maskedFrame(false, wsproto.OpText, []byte{'"', 0xe2, 0x82}),
			maskedFrame(true, wsproto.OpContinuation, []byte{'"'})...), wsproto.CloseInvalidPayload},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.dial(t, "u3", nil)
			r.write(tt.frame)
			if code := r.closed(); code != tt.want {
				t.Fatalf("close %d, want %d", code, tt.want)
			}
		})
	}
}

func p2(code int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(code)) }

func TestRawPongTimeout(t *testing.T) {
	e := newRawEnv(t, 50*time.Millisecond, 300*time.Millisecond)
	// A client that answers pings stays connected across several pong
	// timeouts and still gets events.
	good := e.dial(t, "good", nil)
	silent := e.dial(t, "silent", nil)
	pings := 0
	for pings < 10 {
		op, p, err := good.frame()
		if err != nil {
			t.Fatalf("the answering client: %v", err)
		}
		if op == wsproto.OpPing {
			pings++
			good.write(maskedFrame(true, wsproto.OpPong, p))
		}
	}
	// The silent client (it reads but never answers) is dropped, without a
	// close frame.
	for {
		op, _, err := silent.frame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("a client that never answers pings was not dropped")
			}
			break
		}
		if op == wsproto.OpClose {
			t.Fatal("a dead client got a close frame; it is dropped")
		}
	}
	if _, err := e.hub.Publish(context.Background(), []string{"good"}, "A", json.RawMessage(`1`)); err != nil {
		t.Fatal(err)
	}
	for { // hub.ping may come first on an idle connection
		typ := good.nextEvent()
		if typ == "A" {
			break
		}
		if typ != "hub.ping" {
			t.Fatalf("got %q, want the event A", typ)
		}
	}
}

// TestRawChurnOneConnection opens and drops a lone connection many times,
// each sending a frame as it goes (half of them a close frame too): the
// poller starts an epoll instance with each first connection and lets it go
// with the last, and every connection must be torn down whichever way it
// ends.
func TestRawChurnOneConnection(t *testing.T) {
	e := newRawEnv(t, time.Hour, 10*time.Second)
	for i := range 200 {
		r := e.dial(t, "churn", nil)
		r.write(maskedFrame(true, wsproto.OpText, []byte(`{"type":"hub.pong"}`)))
		if i%2 == 0 {
			r.write(maskedFrame(true, wsproto.OpClose, p2(wsproto.CloseNormal)))
		}
		_ = r.c.Close()
		hubtest.Eventually(t, 10*time.Second, fmt.Sprintf("iteration %d: the connection to be torn down", i), func() bool {
			return e.hub.Stats().TotalConnections == 0
		})
	}
}

// TestRawAnswersBeforeClose: the answers the hub gives at once to frames
// that came before a close frame, or before a frame that fails the
// connection, in the same read, go out before the hub's closing frame.
func TestRawAnswersBeforeClose(t *testing.T) {
	e := newRawEnv(t, time.Hour, 10*time.Second)
	refresh, err := auth.Mint(hubtest.Secret, "HS256", "u1", nil, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	text := func(s string) []byte { return maskedFrame(true, wsproto.OpText, []byte(s)) }
	for _, tt := range []struct {
		name  string
		give  [][]byte
		want  []string
		close int
	}{
		{"hub.error, then the client's close", [][]byte{text(`{"type":"nope"}`), maskedFrame(true, wsproto.OpClose, p2(1000))},
			[]string{"hub.error"}, 1000},
		{"hub.refreshed and hub.nack, then the client's close",
			[][]byte{text(`{"type":"hub.refresh","token":"` + refresh + `"}`), text(`{"type":"hub.send","ref":"r1"}`), maskedFrame(true, wsproto.OpClose, p2(4000))},
			[]string{"hub.refreshed", "hub.nack"}, 4000},
		{"hub.error, then a binary frame", [][]byte{text(`not json`), maskedFrame(true, wsproto.OpBinary, []byte("x"))},
			[]string{"hub.error"}, wsproto.CloseUnsupportedData},
		{"hub.error, then text that is not UTF-8", [][]byte{text(`[]`), text("\xc3\x28")},
			[]string{"hub.error"}, wsproto.CloseInvalidPayload},
		{"hub.error, then a protocol error", [][]byte{text(`{}`), {0x81, 0x02, 'h', 'i'}},
			[]string{"hub.error"}, wsproto.CloseProtocolError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.dial(t, "u1", nil)
			var all []byte
			for _, f := range tt.give {
				all = append(all, f...)
			}
			r.write(all) // one write: the hub reads them together
			var got []string
			for {
				op, p, err := r.frame()
				if err != nil {
					t.Fatalf("after %v: %v", got, err)
				}
				if op == wsproto.OpText {
					var env struct{ Type string }
					_ = json.Unmarshal(p, &env)
					got = append(got, env.Type)
					continue
				}
				if op != wsproto.OpClose {
					continue
				}
				if code := int(binary.BigEndian.Uint16(p)); code != tt.close {
					t.Fatalf("close %d, want %d (answers before it: %v)", code, tt.close, got)
				}
				break
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("answers before the close frame: %v, want %v", got, tt.want)
			}
			r.eof()
		})
	}
}

// TestRawHandshake: the 101 answer is the hub's own (RFC 6455 §4.2.2), and
// a handshake that is not one is refused with the contract's JSON body
// before the token is looked at.
func TestRawHandshake(t *testing.T) {
	e := newRawEnv(t, time.Hour, 10*time.Second)
	tok := hubtest.Token(t, "u1", time.Hour)
	roundTrip := func(t *testing.T, req string) (*http.Response, map[string]map[string]string) {
		t.Helper()
		c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		var body map[string]map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("status %d: the body is not the contract's JSON: %v", resp.StatusCode, err)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("Content-Type %q", ct)
		}
		return resp, body
	}
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	req := func(proto string, lines ...string) string {
		return "GET /?token=" + tok + " " + proto + "\r\nHost: x\r\n" + strings.Join(lines, "\r\n") + "\r\n\r\n"
	}
	upgrade, connection, version, skey := "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: "+key

	t.Run("101", func(t *testing.T) {
		resp, _ := roundTrip(t, req("HTTP/1.1", upgrade, "Connection: keep-alive, Upgrade", version, skey))
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := resp.Header.Get("Sec-WebSocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
			t.Errorf("Sec-WebSocket-Accept %q", got)
		}
		if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || !strings.EqualFold(resp.Header.Get("Connection"), "upgrade") {
			t.Errorf("Upgrade %q, Connection %q", resp.Header.Get("Upgrade"), resp.Header.Get("Connection"))
		}
		if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
			t.Errorf("extensions %q accepted without an offer", ext)
		}
	})
	for _, tt := range []struct {
		name   string
		req    string
		status int
		code   string
		header [2]string // a header the answer must carry
	}{
		{"no upgrade at all", req("HTTP/1.1"), 426, "upgrade_required", [2]string{"Upgrade", "websocket"}},
		{"no Connection: Upgrade", req("HTTP/1.1", upgrade, version, skey), 400, "bad_handshake", [2]string{}},
		{"version 8", req("HTTP/1.1", upgrade, connection, "Sec-WebSocket-Version: 8", skey), 426, "upgrade_required", [2]string{"Sec-WebSocket-Version", "13"}},
		{"no key", req("HTTP/1.1", upgrade, connection, version), 400, "bad_handshake", [2]string{}},
		{"a key that is not 16 bytes", req("HTTP/1.1", upgrade, connection, version, "Sec-WebSocket-Key: c2hvcnQ="), 400, "bad_handshake", [2]string{}},
		{"two keys", req("HTTP/1.1", upgrade, connection, version, skey, skey), 400, "bad_handshake", [2]string{}},
		{"HTTP/1.0", req("HTTP/1.0", upgrade, connection, version, skey), 400, "bad_handshake", [2]string{}},
		{"a bad handshake without a token is still a bad handshake",
			"GET / HTTP/1.1\r\nHost: x\r\n" + upgrade + "\r\n" + version + "\r\n" + skey + "\r\n\r\n", 400, "bad_handshake", [2]string{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := roundTrip(t, tt.req)
			if resp.StatusCode != tt.status || body["error"]["code"] != tt.code || body["error"]["message"] == "" {
				t.Fatalf("%d %v, want %d %s", resp.StatusCode, body, tt.status, tt.code)
			}
			if tt.header[0] != "" && resp.Header.Get(tt.header[0]) != tt.header[1] {
				t.Errorf("%s: %q, want %q", tt.header[0], resp.Header.Get(tt.header[0]), tt.header[1])
			}
		})
	}
	// the upgraded one goes with its socket; the refused ones never came
	hubtest.Eventually(t, 10*time.Second, "no connection left", func() bool { return e.hub.Stats().TotalConnections == 0 })
}

// A handshake refused because the node is draining says when to come back
// (503 shutting_down with Retry-After), so that a fleet coming back after a
// restart does not return at once to a node that is going away.
func TestDrainingRefusalHasRetryAfter(t *testing.T) {
	e := newRawEnv(t, time.Hour, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.hub.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/", nil)
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Authorization", "Bearer "+hubtest.Token(t, "u1", time.Hour))
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"shutting_down"`) {
		t.Fatalf("handshake while draining: %d %s, want 503 shutting_down", resp.StatusCode, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "2" {
		t.Errorf("Retry-After %q, want 2", ra)
	}
}
