package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/r3labs/sse/v2"

	"github.com/hubd/hub/client"
)

func init() {
	commands["tail"] = &command{summary: "print a user's events as they come, reconnecting (WebSocket or SSE)", run: runTail}
}

// maxEvent bounds one event read by tail.
const maxEvent = 8 << 20

// Reconnect delays of tail, as the browser client's (docs/PROTOCOL.md,
// "Browser client").
const (
	backoffBase  = 500 * time.Millisecond
	shutdownMax  = 3 * time.Second // a close 1001 without a server hint: a random wait below it
	throttleWait = 5 * time.Second // 4029 and 429 without Retry-After
	dedupWindow  = 1000            // recent event ids remembered to drop a replayed duplicate
)

// closeStatus is how the server ended a connection: a close code and reason.
type closeStatus struct {
	code   int
	reason string
}

// final reports whether tail stops at this close instead of reconnecting,
// as the browser client does: 1000 (normal), 1003, 1007, 1008 and 1009
// (the client is wrong), 4003 (disconnected through the API) and 4001 (the
// token expired: tail has no way to get a fresh one).
func (c closeStatus) final() bool {
	switch c.code {
	case 1000, 1003, 1007, 1008, 1009, 4001, 4003:
		return true
	}
	return false
}

// line is the control event SSE ends a stream with for this close, which
// tail prints for a WebSocket close too (docs/PROTOCOL.md: hub.shutdown,
// hub.expired, else hub.closed with the code and reason).
func (c closeStatus) line() []byte {
	switch {
	case c.code == 1001:
		return []byte(`{"type":"hub.shutdown"}`)
	case c.code == 4001 && c.reason == "token expired":
		return []byte(`{"type":"hub.expired"}`)
	}
	b, _ := json.Marshal(map[string]any{"type": "hub.closed", "payload": map[string]any{"code": c.code, "reason": c.reason}})
	return b
}

// attempt is the outcome of one connection.
type attempt struct {
	connected  bool          // hub.connected arrived
	end        *closeStatus  // the server's close (frame or closing control event); nil for a cut
	refused    *client.Error // the handshake was answered with an HTTP error
	retryAfter time.Duration // the server's hint: Retry-After, or hub.shutdown's retryMs
	err        error         // what cut it: dial, read or stream error
	writeErr   error         // printing failed (stdout closed): tail stops
}

// runTail connects as the token's user and prints every envelope, one JSON
// line each (control events too, the same on both transports), and
// reconnects with backoff and resumes after the last event it printed (or
// the position hub.connected gave) until interrupted (exit 0) or ended for
// good by the server (exit 0 for 1000, else 1). A hub that cannot be
// reached at the first attempt is an error, with a hint to set --url.
func runTail(ctx context.Context, s *streams, args []string) int {
	fs := newFlagSet("tail", "[--url U] --token T [--transport ws|sse] [--last-event-id ID] [--path P] [--backoff-max D]", s)
	cf := addConnFlags(fs)
	transport := fs.String("transport", "ws", "ws (WebSocket) or sse")
	lastID := fs.String("last-event-id", "", "resume after this event id")
	path := fs.String("path", "", "the endpoint's path (default /ws/realtime or /sse/realtime)")
	backoffMax := fs.Duration("backoff-max", 30*time.Second, "longest wait between reconnect attempts (the server's hints included)")
	if code, done := parseFlags(fs, s, args); done {
		return code
	}
	if *transport != "ws" && *transport != "sse" {
		return usageError(s, fs, fmt.Sprintf("--transport %q: want ws or sse", *transport))
	}
	if *backoffMax <= 0 {
		return usageError(s, fs, fmt.Sprintf("--backoff-max %s: must be positive", *backoffMax))
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
	t := &tailer{s: s, url: u, token: cf.token, lastID: *lastID, backoffMax: *backoffMax, seen: newIDWindow(dedupWindow)}
	if *transport == "sse" {
		t.dial = t.sse
	} else {
		t.dial = t.ws
	}
	return t.run(ctx)
}

// tailer is one `hubctl tail`: its position and what it has printed.
type tailer struct {
	s          *streams
	url        *url.URL
	token      string
	backoffMax time.Duration
	dial       func(ctx context.Context) attempt

	mu     sync.Mutex // print may be called from the SSE client's goroutine
	lastID string
	seen   *idWindow
}

// run connects until interrupted or ended for good.
func (t *tailer) run(ctx context.Context) int {
	everConnected := false
	n := 0 // backoff exponent: attempts since the last hub.connected
	for {
		a := t.dial(ctx)
		switch {
		case ctx.Err() != nil:
			return exitOK // interrupted
		case a.writeErr != nil:
			return fail(t.s, "tail", fmt.Errorf("write: %w", a.writeErr))
		}
		if a.connected {
			everConnected, n = true, 0
		}
		var why string
		var wait time.Duration
		switch {
		case a.refused != nil:
			switch a.refused.Status {
			case http.StatusTooManyRequests, http.StatusServiceUnavailable:
				why = "refused: " + a.refused.Error()
				wait = max(a.retryAfter, min(throttleWait, t.backoffMax))
				if a.refused.Status == http.StatusServiceUnavailable {
					wait = max(a.retryAfter, t.backoff(n))
				}
			default: // 401, 403, 404: connecting again would not help
				return fail(t.s, "tail", fmt.Errorf("connect: %w", a.refused))
			}
		case a.end != nil:
			fmt.Fprintf(t.s.err, "hubctl tail: closed by the server: %d %s\n", a.end.code, a.end.reason)
			if a.end.final() {
				if a.end.code == 4001 {
					fmt.Fprintln(t.s.err, "hubctl tail: the token expired: run tail again with a fresh token (--last-event-id "+t.position()+" resumes)")
				}
				if a.end.code == 1000 {
					return exitOK
				}
				return exitError
			}
			why = fmt.Sprintf("closed %d %s", a.end.code, a.end.reason)
			switch a.end.code {
			case 1001:
				wait = a.retryAfter
				if wait <= 0 {
					wait = rand.N(min(shutdownMax, t.backoffMax))
				}
			case 4008: // slow consumer: at once
			case 4029:
				wait = min(throttleWait, t.backoffMax)
			default:
				wait = t.backoff(n)
			}
		case !everConnected && a.err != nil:
			return fail(t.s, "tail", fmt.Errorf("connect: %w", a.err))
		default:
			why = "connection lost"
			if a.err != nil {
				why += ": " + a.err.Error()
			}
			wait = t.backoff(n)
		}
		wait = min(wait, t.backoffMax) // --backoff-max bounds the server's hints too
		n++
		resume := ""
		if id := t.position(); id != "" {
			resume = ", then resuming after " + id
		}
		fmt.Fprintf(t.s.err, "hubctl tail: %s; reconnecting in %s%s\n", why, wait.Round(time.Millisecond), resume)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return exitOK
		case <-timer.C:
		}
	}
}

// backoff is attempt n's wait: a random time in [0, min(max, base*2^n)].
func (t *tailer) backoff(n int) time.Duration {
	ceiling := t.backoffMax
	if n < 30 && backoffBase<<n < ceiling {
		ceiling = backoffBase << n
	}
	return rand.N(ceiling + 1)
}

// position is the id tail resumes after ("" for a fresh start).
func (t *tailer) position() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastID
}

// print writes one envelope as a line, moves the position and reports
// what it is: whether it is hub.connected. An event whose id was printed
// already (a replay overlap) is dropped; hub.ping (WebSocket only: SSE
// pings are comments) is not printed.
func (t *tailer) print(b []byte) (connected bool, err error) {
	var env struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Payload struct {
			Missed   *int   `json:"missed"`
			Position string `json:"position"`
		} `json:"payload"`
	}
	_ = json.Unmarshal(b, &env) // a line that is not an envelope is printed as it came
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case env.Type == "hub.ping":
		return false, nil
	case env.ID != "" && !t.seen.accept(env.ID):
		return false, nil
	case env.ID != "":
		t.lastID = env.ID
	case env.Type == "hub.connected":
		connected = true
		// nothing replayed: resume from the position even before an event
		if env.Payload.Missed != nil && *env.Payload.Missed == 0 && env.Payload.Position != "" {
			t.lastID = env.Payload.Position
		}
	}
	_, err = fmt.Fprintf(t.s.out, "%s\n", b)
	return connected, err
}

// ws is one WebSocket connection, resuming from the position.
func (t *tailer) ws(ctx context.Context) attempt {
	u := *t.url
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	if id := t.position(); id != "" {
		q := u.Query()
		q.Set("last_event_id", id)
		u.RawQuery = q.Encode()
	}
	hc := newHTTPClient()
	defer hc.CloseIdleConnections()
	hdr := http.Header{"Authorization": {"Bearer " + t.token}}
	c, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPClient: hc, HTTPHeader: hdr})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return attempt{refused: client.ReadError(resp), retryAfter: retryAfter(resp)}
		}
		return attempt{err: err}
	}
	defer c.CloseNow()
	c.SetReadLimit(maxEvent)
	var a attempt
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			if ce, ok := errors.AsType[websocket.CloseError](err); ok && ctx.Err() == nil {
				st := closeStatus{code: int(ce.Code), reason: ce.Reason}
				a.end = &st
				if _, werr := t.print(st.line()); werr != nil {
					a.writeErr = werr
				}
				return a
			}
			a.err = err
			return a
		}
		connected, werr := t.print(b)
		a.connected = a.connected || connected
		if werr != nil {
			c.Close(websocket.StatusNormalClosure, "")
			a.writeErr = werr
			return a
		}
	}
}

// noRetry is a backoff policy that never retries (backoff.Stop), so that
// the SSE client ends when the stream does: tail reconnects by itself.
type noRetry struct{}

func (noRetry) Reset()                     {}
func (noRetry) NextBackOff() time.Duration { return -1 }

// sse is one SSE stream (the r3labs client, without its reconnects),
// resuming from the position with Last-Event-ID.
func (t *tailer) sse(ctx context.Context) attempt {
	hc := newHTTPClient()
	defer hc.CloseIdleConnections()
	sc := sse.NewClient(t.url.String(), sse.ClientMaxBufferSize(maxEvent))
	sc.Connection = hc
	sc.Headers["Authorization"] = "Bearer " + t.token
	sc.ReconnectStrategy = noRetry{}
	if id := t.position(); id != "" {
		sc.LastEventID.Store([]byte(id))
	}
	var (
		mu sync.Mutex // the fields below, set from the client's goroutine
		a  attempt
	)
	sc.ResponseValidator = func(_ *sse.Client, resp *http.Response) error {
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		defer resp.Body.Close()
		mu.Lock()
		defer mu.Unlock()
		a.refused, a.retryAfter = client.ReadError(resp), retryAfter(resp)
		return a.refused
	}
	err := sc.SubscribeRawWithContext(ctx, func(ev *sse.Event) {
		if len(ev.Data) == 0 {
			return // the position record (an id without data), or a comment
		}
		connected, werr := t.print(ev.Data)
		mu.Lock()
		defer mu.Unlock()
		a.connected = a.connected || connected
		if werr != nil && a.writeErr == nil {
			a.writeErr = werr
		}
		var p struct {
			Payload struct {
				Code    int    `json:"code"`
				Reason  string `json:"reason"`
				RetryMs int64  `json:"retryMs"`
			} `json:"payload"`
		}
		switch string(ev.Event) {
		case "hub.shutdown":
			_ = json.Unmarshal(ev.Data, &p)
			a.end = &closeStatus{1001, "server shutdown"}
			a.retryAfter = time.Duration(p.Payload.RetryMs) * time.Millisecond
		case "hub.expired":
			a.end = &closeStatus{4001, "token expired"}
		case "hub.closed":
			if json.Unmarshal(ev.Data, &p) == nil {
				a.end = &closeStatus{code: p.Payload.Code, reason: p.Payload.Reason}
			}
		}
	})
	mu.Lock()
	defer mu.Unlock()
	if a.refused == nil && a.end == nil && a.writeErr == nil {
		a.err = err
		if a.err == nil {
			a.err = errors.New("the stream ended without a closing event")
		}
	}
	return a
}

// retryAfter reads a refusal's Retry-After (seconds); 0 without one.
func retryAfter(resp *http.Response) time.Duration {
	n, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// idWindow remembers the last n ids accepted.
type idWindow struct {
	ids  map[string]struct{}
	ring []string
	next int
}

func newIDWindow(n int) *idWindow {
	return &idWindow{ids: make(map[string]struct{}, n), ring: make([]string, n)}
}

// accept records id and reports whether it is new.
func (w *idWindow) accept(id string) bool {
	if _, dup := w.ids[id]; dup {
		return false
	}
	if old := w.ring[w.next]; old != "" {
		delete(w.ids, old)
	}
	w.ring[w.next] = id
	w.ids[id] = struct{}{}
	w.next = (w.next + 1) % len(w.ring)
	return true
}
