package ws

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/netpoll"
	"github.com/hubd/hub/internal/wsproto"
)

// TestSimultaneousCloseKeepsServerCloseFrame: the hub's close frame waits
// in the write buffer behind a writer flushing to a slow client when the
// client's own close frame arrives. The answer to it must not tear the
// connection down at once (the close frame and the events before it would
// be lost): the socket is closed once the writer has written everything.
func TestSimultaneousCloseKeepsServerCloseFrame(t *testing.T) {
	hb := hub.New(hub.Options{Node: "n", Heartbeat: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	hb.Start()
	h := New(Options{Hub: hb, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hb.Shutdown(ctx)
		h.Wait()
	})
	server, client := hubtest.TCPPair(t)
	c := &conn{h: h, release: func() {}}
	hc, err := hb.Register(hub.ConnInfo{UserID: "u1", Transport: hub.TransportWebSocket}, c)
	if err != nil {
		t.Fatal(err)
	}
	c.hc, c.user, c.cork = hc, "u1", newCorkConn(server)
	c.rd.Limit = MaxFrame
	h.live.Add(1)
	h.wg.Add(1) // until teardown
	c.life.Start()

	// The client reads nothing: the writer fills the socket, then owns it
	// and flushes the rest (as drain's flush goroutine does).
	pad := bytes.Repeat([]byte("x"), 8000)
	sent := 0
	for pending := false; !pending; sent++ {
		if sent > 100000 {
			t.Fatal("the socket never filled")
		}
		if pending, err = c.cork.writeFrames([]*hub.Message{{Frame: pad}}); err != nil {
			t.Fatal(err)
		}
	}
	flushed := make(chan error, 1)
	go func() { flushed <- c.cork.flush(10 * time.Second) }()

	// The hub closes: its frame queues behind the writer.
	c.life.Close(hub.ReasonDisconnected)
	c.close(hub.ReasonDisconnected)
	if more := c.onClose(wsproto.CloseNormal); more { // the client's close arrives meanwhile
		t.Fatal("reading goes on after the client's close")
	}
	if c.life.State() == netpoll.StateClosed {
		t.Fatal("torn down while the hub's close frame still waited to be written")
	}

	// The client reads: every event, then the hub's close frame, then the end.
	_ = client.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(client)
	for i := 0; ; i++ {
		_, op, p, err := readFrame(r)
		if err != nil {
			t.Fatalf("after %d of %d events: %v (the close frame was lost)", i, sent, err)
		}
		if op == wsproto.OpText {
			continue
		}
		if op != wsproto.OpClose || len(p) < 2 || int(binary.BigEndian.Uint16(p)) != hub.ReasonDisconnected.Code {
			t.Fatalf("frame %v %q, want the hub's close", op, p)
		}
		if i != sent {
			t.Fatalf("the close frame came after %d events, want %d", i, sent)
		}
		break
	}
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	hubtest.Eventually(t, 10*time.Second, "the connection to be torn down", func() bool {
		return c.life.State() == netpoll.StateClosed
	})
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("a byte after the close frame")
	}
}

// TestTLSConnection: over TLS the poller cannot watch the socket, so the
// connection is read by a goroutine of its own (readBlocking) and written
// by flushing goroutines: early data, events, ping and pong, a compressed
// event, the hub's close and the client's.
func TestTLSConnection(t *testing.T) {
	e := &rawEnv{}
	e.hub = hub.New(hub.Options{Node: "n", Heartbeat: time.Hour, HistorySize: 10, HistoryTTL: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	e.hub.Start()
	v, err := auth.New(context.Background(), auth.Options{Secret: hubtest.Secret})
	if err != nil {
		t.Fatal(err)
	}
	e.h = New(Options{Hub: e.hub, Auth: v, Logger: slog.New(slog.DiscardHandler), Compression: true, CompressionMin: 512})
	e.srv = httptest.NewTLSServer(e.h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.hub.Shutdown(ctx)
		e.h.Wait()
		e.srv.Close()
		v.Close()
	})
	cfg := e.srv.Client().Transport.(*http.Transport).TLSClientConfig
	dial := func(user string, extra []byte) *rawClient {
		t.Helper()
		c, err := tls.Dial("tcp", strings.TrimPrefix(e.srv.URL, "https://"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate\r\n" +
			"Authorization: Bearer " + hubtest.Token(t, user, time.Hour) + "\r\n\r\n"
		if _, err := c.Write(append([]byte(req), extra...)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("handshake: %v %v", resp, err)
		}
		rc := &rawClient{t: t, c: c, br: br, deflate: resp.Header.Get("Sec-WebSocket-Extensions") != ""}
		if typ := rc.nextEvent(); typ != "hub.connected" {
			t.Fatalf("first event %q", typ)
		}
		return rc
	}

	r := dial("u1", maskedFrame(true, wsproto.OpText, []byte(`{"type":"NOPE"}`)))
	if typ := r.nextEvent(); typ != "hub.error" {
		t.Fatalf("early frame answered with %q", typ)
	}
	r.write(maskedFrame(true, wsproto.OpPing, []byte("tls")))
	if op, p, err := r.frame(); err != nil || op != wsproto.OpPong || string(p) != "tls" {
		t.Fatalf("pong: %v %q %v", op, p, err)
	}
	if _, err := e.hub.Publish(context.Background(), []string{"u1"}, "BIG", bigPayload); err != nil {
		t.Fatal(err)
	}
	if typ := r.nextEvent(); typ != "BIG" || !r.rsv1 {
		t.Fatalf("%q compressed %v, want a compressed BIG", typ, r.rsv1)
	}
	// The client closes: echoed, then the socket is closed.
	r.write(maskedFrame(true, wsproto.OpClose, p2(wsproto.CloseNormal)))
	if code := r.closed(); code != wsproto.CloseNormal {
		t.Fatalf("echoed %d", code)
	}

	// The hub closes: its frame, then the socket once the client answers.
	r = dial("u2", nil)
	if n := e.hub.DisconnectUser("u2"); n != 1 {
		t.Fatalf("disconnected %d", n)
	}
	for {
		op, p, err := r.frame()
		if err != nil {
			t.Fatal(err)
		}
		if op == wsproto.OpClose {
			if code := int(binary.BigEndian.Uint16(p)); code != hub.ReasonDisconnected.Code {
				t.Fatalf("close %d", code)
			}
			break
		}
	}
	r.write(maskedFrame(true, wsproto.OpClose, p2(hub.ReasonDisconnected.Code)))
	r.eof()
	hubtest.Eventually(t, 10*time.Second, "every connection torn down", func() bool { return e.hub.Stats().TotalConnections == 0 })
}

// TestPingAfterClose: the pinger does not ping a connection whose close
// frame is out (it would follow the close frame) and does not count it as
// waiting for a pong; a ping that cannot be written fails the connection.
func TestPingAfterClose(t *testing.T) {
	server, client := hubtest.TCPPair(t)
	c := &conn{cork: newCorkConn(server)}
	if seq, ok := c.ping(); !ok || seq != 1 {
		t.Fatalf("first ping: %d %v", seq, ok)
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(client)
	if _, op, p, err := readFrame(r); err != nil || op != wsproto.OpPing || binary.BigEndian.Uint64(p) != 1 {
		t.Fatalf("ping frame: %v %x %v", op, p, err)
	}
	if _, err := c.cork.writeControl(wsproto.OpClose, wsproto.ClosePayload(1000, "")); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.ping(); ok {
		t.Fatal("pinged after the close frame")
	}
	if _, op, _, err := readFrame(r); err != nil || op != wsproto.OpClose {
		t.Fatalf("after the ping: %v %v, want the close frame", op, err)
	}
	c.life.Start()
	c.life.Close(hub.ReasonDisconnected)
	if _, ok := c.ping(); ok {
		t.Fatal("pinged a closing connection")
	}
}
