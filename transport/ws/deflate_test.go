package ws

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/wsproto"
)

// bigPayload is a JSON payload that makes an envelope of well over 512
// bytes.
var bigPayload = json.RawMessage(`{"items":[` + strings.Repeat(`{"id":1234,"name":"widget","price":"9.99"},`, 30) + `{"id":0}]}`)

func compressedFrame(p []byte) []byte {
	return wsproto.AppendClientFrame(nil, true, true, wsproto.OpText, [4]byte{9, 8, 7, 6}, wsproto.Deflate(nil, p))
}

// TestRawDeflate: with permessage-deflate negotiated, events of at least
// HUB_WS_COMPRESSION_MIN bytes go out compressed (RSV1), smaller ones
// plain, every recipient gets the same compressed bytes, and compressed
// client messages are inflated within the limits.
func TestRawDeflate(t *testing.T) {
	e := newRawEnvWith(t, time.Hour, 10*time.Second, func(o *Options) { o.Compression, o.CompressionMin = true, 512 })
	const chromium = "permessage-deflate; client_max_window_bits"
	a, ext := e.dialOffer(t, "u1", chromium, nil)
	if ext != wsproto.DeflateResponse {
		t.Fatalf("answered %q, want %q", ext, wsproto.DeflateResponse)
	}
	if a.rsv1 {
		t.Fatal("hub.connected (small) went compressed")
	}
	b, _ := e.dialOffer(t, "u2", chromium, nil)

	if _, err := e.hub.Broadcast(context.Background(), "BIG", bigPayload); err != nil {
		t.Fatal(err)
	}
	var wire [][]byte
	for _, r := range []*rawClient{a, b} {
		_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		fin, rsv1, op, z, err := readFrameRSV1(r.br)
		if err != nil || !fin || !rsv1 || op != wsproto.OpText {
			t.Fatalf("large event: fin %v rsv1 %v op %v err %v; want a compressed text frame", fin, rsv1, op, err)
		}
		env, err := inflate(z)
		if err != nil {
			t.Fatalf("the large event does not inflate: %v", err)
		}
		var got struct {
			Type    string
			Payload json.RawMessage
		}
		if err := json.Unmarshal(env, &got); err != nil || got.Type != "BIG" || !bytes.Equal(got.Payload, bigPayload) {
			t.Fatalf("inflated %q (%v)", env, err)
		}
		if len(z)*3 > len(env) {
			t.Errorf("compressed %d bytes to %d: less than 3x", len(env), len(z))
		}
		wire = append(wire, z)
	}
	if !bytes.Equal(wire[0], wire[1]) {
		t.Error("two recipients got different compressed bytes")
	}
	if _, err := e.hub.Publish(context.Background(), []string{"u1"}, "SMALL", json.RawMessage(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if typ := a.nextEvent(); typ != "SMALL" || a.rsv1 {
		t.Fatalf("small event %q, compressed %v; want it plain", typ, a.rsv1)
	}

	// Compressed client messages.
	a.write(compressedFrame([]byte(`{"type":"nope","pad":"` + strings.Repeat("x", 2000) + `"}`)))
	if typ := a.nextEvent(); typ != "hub.error" {
		t.Fatalf("a compressed unknown message answered with %q, want hub.error", typ)
	}
	for _, tt := range []struct {
		name  string
		frame []byte
		want  int
	}{
		{"a small frame that inflates past 4 KiB", compressedFrame([]byte(`{"type":"hub.pong","pad":"` + strings.Repeat("x", 20000) + `"}`)), wsproto.CloseMessageTooBig},
		{"a frame that does not inflate", wsproto.AppendClientFrame(nil, true, true, wsproto.OpText, [4]byte{1, 2, 3, 4}, []byte{0xff, 0xff, 0xff}), wsproto.CloseInvalidPayload},
		{"compressed text that is not UTF-8", compressedFrame([]byte("{\"type\":\"\xed\xa0\x80\"}")), wsproto.CloseInvalidPayload},
		{"RSV1 on a ping", wsproto.AppendClientFrame(nil, true, true, wsproto.OpPing, [4]byte{1, 2, 3, 4}, nil), wsproto.CloseProtocolError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := e.dialOffer(t, "u3", chromium, nil)
			r.write(tt.frame)
			if code := r.closed(); code != tt.want {
				t.Fatalf("close %d, want %d", code, tt.want)
			}
		})
	}
}

// TestRawDeflateDeclined: an offer the hub cannot honour is declined (no
// extension in the answer, events plain, a compressed frame is a protocol
// error), and with compression off no offer is taken.
func TestRawDeflateDeclined(t *testing.T) {
	for _, tt := range []struct {
		name        string
		compression bool
		offer       string
	}{
		{"a server window below 15 bits", true, "permessage-deflate; server_max_window_bits=10"},
		{"an unknown parameter", true, "permessage-deflate; x_param"},
		{"compression off", false, "permessage-deflate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newRawEnvWith(t, time.Hour, 10*time.Second, func(o *Options) { o.Compression, o.CompressionMin = tt.compression, 0 })
			r, ext := e.dialOffer(t, "u1", tt.offer, nil)
			if ext != "" {
				t.Fatalf("accepted %q", ext)
			}
			if _, err := e.hub.Publish(context.Background(), []string{"u1"}, "BIG", bigPayload); err != nil {
				t.Fatal(err)
			}
			if typ := r.nextEvent(); typ != "BIG" || r.rsv1 {
				t.Fatalf("%q compressed %v, want it plain", typ, r.rsv1)
			}
			r.write(compressedFrame([]byte(`{"type":"hub.pong"}`)))
			if code := r.closed(); code != wsproto.CloseProtocolError {
				t.Fatalf("a compressed frame without the extension: close %d, want 1002", code)
			}
		})
	}
}

// TestDeflateGoClient: coder/websocket as the independent client, in both
// of its compression modes (it offers with and without context takeover;
// the hub answers no context takeover either way), receives compressed
// events and sends compressed messages the hub understands, one after
// another (a client that kept its context would break the second).
func TestDeflateGoClient(t *testing.T) {
	e := newRawEnvWith(t, time.Hour, 10*time.Second, func(o *Options) { o.Compression, o.CompressionMin = true, 512 })
	for _, mode := range []websocket.CompressionMode{websocket.CompressionNoContextTakeover, websocket.CompressionContextTakeover} {
		t.Run(map[websocket.CompressionMode]string{websocket.CompressionNoContextTakeover: "no context takeover", websocket.CompressionContextTakeover: "context takeover"}[mode], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http"), &websocket.DialOptions{
				HTTPHeader:      http.Header{"Authorization": {"Bearer " + hubtest.Token(t, "go", time.Hour)}},
				CompressionMode: mode,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != wsproto.DeflateResponse {
				t.Fatalf("negotiated %q", got)
			}
			read := func() (string, json.RawMessage) {
				t.Helper()
				_, data, err := c.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var env struct {
					Type    string
					Payload json.RawMessage
				}
				if err := json.Unmarshal(data, &env); err != nil {
					t.Fatalf("%q: %v", data, err)
				}
				return env.Type, env.Payload
			}
			if typ, _ := read(); typ != "hub.connected" {
				t.Fatalf("first %q", typ)
			}
			for i := range 3 {
				if _, err := e.hub.Publish(ctx, []string{"go"}, "BIG", bigPayload); err != nil {
					t.Fatal(err)
				}
				if typ, p := read(); typ != "BIG" || !bytes.Equal(p, bigPayload) {
					t.Fatalf("event %d: %q %s", i, typ, p)
				}
			}
			for i := range 3 { // each over the client's threshold: compressed
				msg := `{"type":"nope","n":` + string(rune('0'+i)) + `,"pad":"` + strings.Repeat("ab", 600) + `"}`
				if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				if typ, _ := read(); typ != "hub.error" {
					t.Fatalf("message %d answered with %q, want hub.error", i, typ)
				}
			}
			c.Close(websocket.StatusNormalClosure, "")
		})
	}
}
