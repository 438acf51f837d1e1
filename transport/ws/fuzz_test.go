package ws_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/transport/ws"
)

// fuzzEnv is one hub and one endpoint shared by every iteration, and the
// current client connection of u1 (dialled again after a close).
type fuzzEnv struct {
	hub    *hub.Hub
	h      *ws.Handler
	srv    *httptest.Server
	conn   *websocket.Conn
	sentry int
}

func (e *fuzzEnv) dial(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http"), &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + hubtest.Token(t, "u1", time.Hour)}},
	})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	c.SetReadLimit(1 << 20)
	e.conn = c
	var f frame
	if err := e.read(&f); err != nil || f.Type != "hub.connected" {
		t.Fatalf("first frame %+v, %v: want hub.connected", f, err)
	}
}

type frame struct {
	ID      *string         `json:"id"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

func (e *fuzzEnv) read(f *frame) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, data, err := e.conn.Read(ctx)
	if err != nil {
		return err
	}
	if typ != websocket.MessageText {
		return errors.New("server sent a binary frame")
	}
	*f = frame{}
	if err := json.Unmarshal(data, f); err != nil {
		return errors.New("server frame is not JSON: " + string(data))
	}
	if bytes.Contains(data, []byte(`"u2"`)) || bytes.Contains(data, []byte("secret-of-u2")) {
		return errors.New("server frame carries u2's data: " + string(data))
	}
	return nil
}

func (e *fuzzEnv) write(binary bool, data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ := websocket.MessageText
	if binary {
		typ = websocket.MessageBinary
	}
	return e.conn.Write(ctx, typ, data)
}

// FuzzClientFrame sends one arbitrary client frame on a live connection of
// u1, then a sentinel hub.refresh with a fresh token of u1. Until the
// sentinel's hub.refreshed, the connection may only answer hub.error,
// hub.nack or hub.refreshed (or nothing, for hub.pong); or it closes with
// 1003, 1008, 1009 or 4001. It never sends an application event or
// anything of u2, who has events of its own. In the frame, $TOKEN is
// replaced by a valid token of u1 and $OTHER by one of u2 (a refresh to
// another user must close with 4001).
func FuzzClientFrame(f *testing.F) {
	for _, s := range []struct {
		binary bool
		frame  string
	}{
		{false, `{"type":"hub.pong"}`},
		{false, `{"type":"hub.refresh","token":"$TOKEN"}`},
		{false, `{"type":"hub.refresh","token":"$OTHER"}`},
		{false, `{"type":"hub.refresh","token":"garbage"}`},
		{false, `{"type":"hub.refresh"}`},
		{false, `{"type":"hub.send","ref":"r1","event":{"type":"A","payload":{}}}`},
		{false, `{"type":"NOPE"}`},
		{false, `{"type":""}`},
		{false, `{}`},
		{false, `null`},
		{false, `[1,2]`},
		{false, `not json`},
		{false, ""},
		{false, "\xff\xfe"},
		{false, `{"type":"hub.pong","x":"` + strings.Repeat("a", 4100) + `"}`},
		{true, `{"type":"hub.pong"}`},
	} {
		f.Add(s.binary, []byte(s.frame))
	}
	e := &fuzzEnv{}
	e.hub = hub.New(hub.Options{Node: "n", Heartbeat: time.Hour, HistorySize: 10, HistoryTTL: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	e.hub.Start()
	v, err := auth.New(context.Background(), auth.Options{Secret: hubtest.Secret})
	if err != nil {
		f.Fatal(err)
	}
	e.h = ws.New(ws.Options{Hub: e.hub, Auth: v, Logger: slog.New(slog.DiscardHandler)})
	e.srv = httptest.NewServer(e.h)
	f.Cleanup(func() {
		if e.conn != nil {
			_ = e.conn.CloseNow()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.hub.Shutdown(ctx)
		e.h.Wait()
		e.srv.Close()
		v.Close()
	})
	if _, err := e.hub.Publish(context.Background(), []string{"u2"}, "A", json.RawMessage(`"secret-of-u2"`)); err != nil {
		f.Fatal(err)
	}
	own := hubtest.Token(f, "u1", 2*time.Hour)
	other := hubtest.Token(f, "u2", 2*time.Hour)

	f.Fuzz(func(t *testing.T, binary bool, data []byte) {
		if len(data) > 8192 {
			return
		}
		data = bytes.ReplaceAll(data, []byte("$TOKEN"), []byte(own))
		data = bytes.ReplaceAll(data, []byte("$OTHER"), []byte(other))
		if e.conn == nil {
			e.dial(t)
		}
		defer func() {
			if t.Failed() && e.conn != nil {
				_ = e.conn.CloseNow()
				e.conn = nil
			}
		}()
		// The sentinel's token has its own expiry, which only its
		// hub.refreshed can carry.
		e.sentry++
		sentinel := hubtest.Token(t, "u1", 3*time.Hour+time.Duration(e.sentry)*time.Second)
		sid, verr := v.Verify(sentinel)
		if verr != nil {
			t.Fatalf("sentinel token: %v", verr)
		}
		wantExp := sid.ExpiresAt.UTC().Format(hub.TimeFormat)

		var cf struct {
			Type  string `json:"type"`
			Token string `json:"token"`
		}
		isJSON := json.Unmarshal(data, &cf) == nil
		wantClose := websocket.StatusCode(-1)
		switch {
		case len(data) > ws.MaxFrame:
			wantClose = websocket.StatusMessageTooBig
		case binary:
			wantClose = websocket.StatusUnsupportedData
		case !utf8.Valid(data):
			wantClose = websocket.StatusInvalidFramePayloadData
		case isJSON && cf.Type == "hub.refresh" && cf.Token != own:
			wantClose = 4001
		}

		_ = e.write(binary, data) // a write error shows up as the read's close below
		_ = e.write(false, []byte(`{"type":"hub.refresh","token":"`+sentinel+`"}`))
		var answers []string
		for {
			var fr frame
			err := e.read(&fr)
			if err != nil {
				status := websocket.CloseStatus(err)
				_ = e.conn.CloseNow()
				e.conn = nil
				if !slices.Contains([]websocket.StatusCode{1003, 1007, 1008, 1009, 4001}, status) {
					t.Fatalf("frame %q (binary %v): connection ended with %v (status %d)", data, binary, err, status)
				}
				if status != wantClose {
					t.Fatalf("frame %q (binary %v): closed with %d, want %d", data, binary, status, wantClose)
				}
				return
			}
			if fr.ID != nil {
				t.Fatalf("frame %q: the server sent an application event %+v", data, fr)
			}
			if fr.Type == "hub.refreshed" {
				var p struct{ TokenExpiresAt string }
				_ = json.Unmarshal(fr.Payload, &p)
				if p.TokenExpiresAt == wantExp {
					break
				}
			}
			if fr.Type != "hub.error" && fr.Type != "hub.nack" && fr.Type != "hub.refreshed" {
				t.Fatalf("frame %q: answered with %q", data, fr.Type)
			}
			answers = append(answers, fr.Type)
		}
		if wantClose != -1 {
			t.Fatalf("frame %q (binary %v): connection stayed open, want close %d", data, binary, wantClose)
		}
		var want []string
		switch {
		case isJSON && cf.Type == "hub.pong":
		case isJSON && cf.Type == "hub.refresh":
			want = []string{"hub.refreshed"}
		case isJSON && cf.Type == "hub.send":
			want = []string{"hub.nack"}
		default:
			want = []string{"hub.error"}
		}
		if !slices.Equal(answers, want) {
			t.Fatalf("frame %q: answered %v, want %v", data, answers, want)
		}
	})
}
