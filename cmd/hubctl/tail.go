package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/r3labs/sse/v2"

	"github.com/hubd/hub/client"
)

func init() {
	commands["tail"] = &command{summary: "print a user's events as they come (WebSocket or SSE)", run: runTail}
}

// maxEvent bounds one event read by tail.
const maxEvent = 8 << 20

// closeStatus is how the server ended a tail: a close code and reason.
type closeStatus struct {
	code   int
	reason string
}

// clean reports whether the close is a normal end (1000) or a server
// shutdown (1001).
func (c closeStatus) clean() bool { return c.code == 1000 || c.code == 1001 }

// runTail connects as the token's user and prints every envelope (control
// events too), one JSON line each, until interrupted (exit 0) or closed by
// the server (exit 0 for 1000/1001, else 1).
func runTail(ctx context.Context, s *streams, args []string) int {
	fs := newFlagSet("tail", "[--url U] --token T [--transport ws|sse] [--last-event-id ID] [--path P]", s)
	cf := addConnFlags(fs)
	transport := fs.String("transport", "ws", "ws (WebSocket) or sse")
	lastID := fs.String("last-event-id", "", "resume after this event id")
	path := fs.String("path", "", "the endpoint's path (default /ws/realtime or /sse/realtime)")
	if code, done := parseFlags(fs, s, args); done {
		return code
	}
	if *transport != "ws" && *transport != "sse" {
		return usageError(s, fs, fmt.Sprintf("--transport %q: want ws or sse", *transport))
	}
	cf.resolve()
	if cf.token == "" {
		return usageError(s, fs, "--token (or HUB_TOKEN) is required: tail connects as the token's user")
	}
	if *path == "" {
		*path = map[string]string{"ws": "/ws/realtime", "sse": "/sse/realtime"}[*transport]
	}
	u, err := url.Parse(cf.url + *path)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return usageError(s, fs, fmt.Sprintf("--url %q: want an http:// or https:// URL", cf.url))
	}

	tail := tailWS
	if *transport == "sse" {
		tail = tailSSE
	}
	st, err := tail(ctx, s, u, cf.token, *lastID)
	switch {
	case ctx.Err() != nil:
		return exitOK // interrupted
	case err != nil:
		return fail(s, "tail", err)
	}
	fmt.Fprintf(s.err, "hubctl tail: closed by the server: %d %s\n", st.code, st.reason)
	if st.clean() {
		return exitOK
	}
	return exitError
}

// tailWS tails over WebSocket; it returns the server's close status.
func tailWS(ctx context.Context, s *streams, u *url.URL, token, lastID string) (closeStatus, error) {
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	if lastID != "" {
		q := u.Query()
		q.Set("last_event_id", lastID)
		u.RawQuery = q.Encode()
	}
	hc := newHTTPClient()
	defer hc.CloseIdleConnections()
	hdr := http.Header{"Authorization": {"Bearer " + token}}
	c, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPClient: hc, HTTPHeader: hdr})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return closeStatus{}, fmt.Errorf("connect: %w", client.ReadError(resp))
		}
		return closeStatus{}, fmt.Errorf("connect: %w", err)
	}
	defer c.CloseNow()
	c.SetReadLimit(maxEvent)
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return closeStatus{}, ctx.Err()
			}
			if ce, ok := errors.AsType[websocket.CloseError](err); ok {
				return closeStatus{code: int(ce.Code), reason: ce.Reason}, nil
			}
			return closeStatus{}, fmt.Errorf("read: %w", err)
		}
		if _, err := fmt.Fprintf(s.out, "%s\n", b); err != nil {
			c.Close(websocket.StatusNormalClosure, "")
			return closeStatus{}, fmt.Errorf("write: %w", err)
		}
	}
}

// noRetry is a backoff policy that never retries (backoff.Stop), so that
// the SSE client ends when the stream does.
type noRetry struct{}

func (noRetry) Reset()                     {}
func (noRetry) NextBackOff() time.Duration { return -1 }

// sseEnd maps the hub's closing control events to a close status.
var sseEnd = map[string]closeStatus{
	"hub.shutdown": {1001, "server shutdown"},
	"hub.expired":  {4001, "token expired"},
}

// tailSSE tails over SSE with the r3labs client (no auto-reconnect); it
// returns the close status told by the stream's last control event.
func tailSSE(ctx context.Context, s *streams, u *url.URL, token, lastID string) (closeStatus, error) {
	hc := newHTTPClient()
	defer hc.CloseIdleConnections()
	sc := sse.NewClient(u.String(), sse.ClientMaxBufferSize(maxEvent))
	sc.Connection = hc
	sc.Headers["Authorization"] = "Bearer " + token
	sc.ReconnectStrategy = noRetry{}
	if lastID != "" {
		sc.LastEventID.Store([]byte(lastID))
	}
	var refused *client.Error
	sc.ResponseValidator = func(_ *sse.Client, resp *http.Response) error {
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		defer resp.Body.Close()
		refused = client.ReadError(resp)
		return refused
	}

	var (
		mu       sync.Mutex
		end      *closeStatus
		writeErr error
	)
	err := sc.SubscribeRawWithContext(ctx, func(ev *sse.Event) {
		if len(ev.Data) == 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if _, err := fmt.Fprintf(s.out, "%s\n", ev.Data); err != nil && writeErr == nil {
			writeErr = err
		}
		typ := string(ev.Event)
		if st, ok := sseEnd[typ]; ok {
			end = &st
		} else if typ == "hub.closed" {
			var p struct {
				Payload struct {
					Code   int    `json:"code"`
					Reason string `json:"reason"`
				} `json:"payload"`
			}
			if json.Unmarshal(ev.Data, &p) == nil {
				end = &closeStatus{code: p.Payload.Code, reason: p.Payload.Reason}
			}
		}
	})
	mu.Lock()
	defer mu.Unlock()
	switch {
	case ctx.Err() != nil:
		return closeStatus{}, ctx.Err()
	case refused != nil:
		return closeStatus{}, fmt.Errorf("connect: %w", refused)
	case err != nil:
		return closeStatus{}, fmt.Errorf("stream: %w", err)
	case writeErr != nil:
		return closeStatus{}, fmt.Errorf("write: %w", writeErr)
	case end == nil:
		return closeStatus{}, errors.New("the stream ended without a closing event")
	}
	return *end, nil
}
