package sse_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	r3sse "github.com/r3labs/sse/v2"
	"go.uber.org/goleak"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/transport/sse"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor is how long a test waits for a record, the end of a stream or a
// condition.
const waitFor = 10 * time.Second

// env is a started hub behind a real HTTP server running the SSE handler.
type env struct {
	hub *hub.Hub
	srv *httptest.Server
}

type envConfig struct {
	hub    hub.Options
	sse    func(*sse.Options)
	server func(*httptest.Server) // before start
	http2  bool
}

func newEnv(t *testing.T, cfg envConfig) *env {
	t.Helper()
	ho := cfg.hub
	if ho.HistorySize == 0 {
		ho.HistorySize, ho.HistoryTTL = 1000, 10*time.Minute
	}
	ho.Node = "hub-test"
	ho.Logger = slog.New(slog.DiscardHandler)
	h := hub.New(ho)
	h.Start()
	v, err := auth.New(context.Background(), auth.Options{Secret: hubtest.Secret})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	o := sse.Options{Hub: h, Auth: v, Logger: slog.New(slog.DiscardHandler)}
	if cfg.sse != nil {
		cfg.sse(&o)
	}
	srv := httptest.NewUnstartedServer(sse.New(o))
	if cfg.server != nil {
		cfg.server(srv)
	}
	if cfg.http2 {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		h.Stop()
		v.Close()
	})
	return &env{hub: h, srv: srv}
}

func (e *env) publish(t *testing.T, user, typ string, payload string) string {
	t.Helper()
	evs, err := e.hub.Publish(context.Background(), []string{user}, typ, json.RawMessage(payload))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return evs[0].ID
}

// request builds a GET of the stream with a bearer token (when not empty)
// and extra headers.
func (e *env) request(t *testing.T, tok, query string, hdr map[string]string) *http.Request {
	t.Helper()
	u := e.srv.URL + "/sse/realtime"
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return req
}

// stream is an open SSE response read by a goroutine into an unbounded list
// (so that a test that does not read never makes the client slow).
type stream struct {
	t    *testing.T
	resp *http.Response

	mu     sync.Mutex
	recs   []record
	err    error // set when reading ended
	notify chan struct{}
	done   chan struct{}
	pos    int
	// positions are the data-less "id: <position>" records skipped by
	// nextRec (the one after hub.connected when nothing is replayed).
	positions []string
}

// positionRecord reports whether r holds only an id field, and its value.
func positionRecord(r record) (string, bool) {
	if len(r.fields) == 1 && r.fields[0].name == "id" {
		return r.fields[0].value, true
	}
	return "", false
}

func (e *env) open(t *testing.T, req *http.Request) *stream {
	t.Helper()
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET stream: status %d: %s", resp.StatusCode, b)
	}
	s := &stream{t: t, resp: resp, notify: make(chan struct{}, 1), done: make(chan struct{})}
	go s.read()
	t.Cleanup(s.close)
	return s
}

func (s *stream) read() {
	defer close(s.done)
	p := newParser(s.resp.Body)
	for {
		rec, err := p.next()
		s.mu.Lock()
		if err != nil {
			s.err = err
		} else {
			s.recs = append(s.recs, rec)
		}
		s.mu.Unlock()
		select {
		case s.notify <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

func (s *stream) close() {
	s.resp.Body.Close()
	<-s.done
}

// next returns the next record, skipping ": ping" comments unless pings.
func (s *stream) nextRec(pings bool) record {
	s.t.Helper()
	return s.nextMatching(pings, true)
}

// nextMatching is nextRec that keeps position records when skipPositions
// is false.
func (s *stream) nextMatching(pings, skipPositions bool) record {
	s.t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		for s.pos < len(s.recs) {
			r := s.recs[s.pos]
			s.pos++
			if !pings && len(r.fields) == 0 && len(r.comments) == 1 && r.comments[0] == " ping" {
				continue
			}
			if id, ok := positionRecord(r); ok && skipPositions {
				s.positions = append(s.positions, id)
				continue
			}
			s.mu.Unlock()
			return r
		}
		err := s.err
		s.mu.Unlock()
		if err != nil {
			s.t.Fatalf("stream ended while waiting for a record: %v", err)
		}
		select {
		case <-s.notify:
		case <-deadline.C:
			s.t.Fatalf("no record within %s", waitFor)
		}
	}
}

func (s *stream) next() record {
	s.t.Helper()
	return s.nextRec(false)
}

// count returns how many non-ping records were read so far.
func (s *stream) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.recs {
		if len(r.fields) > 0 {
			n++
		}
	}
	return n
}

// expectEOF waits for the stream to end cleanly after the records read so
// far (pings aside).
func (s *stream) expectEOF() {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(waitFor):
		s.t.Fatalf("stream still open after %s", waitFor)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !errors.Is(s.err, io.EOF) {
		s.t.Fatalf("stream ended with %v, want a clean EOF", s.err)
	}
	for _, r := range s.recs[s.pos:] {
		if len(r.fields) > 0 {
			s.t.Fatalf("unexpected record before EOF: %v", r)
		}
	}
}

// envelope is the decoded data of an event.
type envelope struct {
	ID        *string         `json:"id"`
	Type      string          `json:"type"`
	Payload   json.RawMessage `json:"payload"`
	Timestamp string          `json:"timestamp"`
}

type connected struct {
	ConnectionID     string `json:"connectionId"`
	UserID           string `json:"userId"`
	Transport        string `json:"transport"`
	HeartbeatSeconds int    `json:"heartbeatSeconds"`
	Recovered        bool   `json:"recovered"`
	Missed           int    `json:"missed"`
	Node             string `json:"node"`
	TokenExpiresAt   string `json:"tokenExpiresAt"`
	Position         string `json:"position"`
}

// control checks that rec is a control event of type typ (event and data
// lines, no id line, data the control envelope) and returns its payload.
func control(t *testing.T, rec record, typ string) json.RawMessage {
	t.Helper()
	if _, n := rec.value("id"); n != 0 {
		t.Fatalf("control record %v has an id line", rec)
	}
	ev, n := rec.value("event")
	if n != 1 || ev != typ {
		t.Fatalf("record %v: want one event line %q", rec, typ)
	}
	data, n := rec.value("data")
	if n != 1 {
		t.Fatalf("record %v: want one data line", rec)
	}
	var env envelope
	if err := json.Unmarshal([]byte(data), &env); err != nil {
		t.Fatalf("control data %q: %v", data, err)
	}
	if env.ID != nil || env.Type != typ {
		t.Fatalf("control envelope %s: want type %q and no id", data, typ)
	}
	return env.Payload
}

func expectConnected(t *testing.T, rec record) connected {
	t.Helper()
	var c connected
	if err := json.Unmarshal(control(t, rec, "hub.connected"), &c); err != nil {
		t.Fatalf("hub.connected payload: %v", err)
	}
	return c
}

// expectEvent checks that rec is exactly "id, event, data" for an event of
// the given id and type whose data is the whole envelope.
func expectEvent(t *testing.T, rec record, id, typ, payload string) {
	t.Helper()
	if got := strings.Join(rec.names(), ","); got != "id,event,data" {
		t.Fatalf("record fields %s, want id,event,data (%v)", got, rec)
	}
	gid, gtyp, data, _, ok := rec.event()
	if !ok || gid != id || gtyp != typ {
		t.Fatalf("record %v: want id %q event %q", rec, id, typ)
	}
	var env envelope
	if err := json.Unmarshal([]byte(data), &env); err != nil {
		t.Fatalf("event data %q: %v", data, err)
	}
	if env.ID == nil || *env.ID != id || env.Type != typ || string(env.Payload) != payload {
		t.Fatalf("envelope %s: want id %q type %q payload %s", data, id, typ, payload)
	}
	if _, err := time.Parse(hub.TimeFormat, env.Timestamp); err != nil {
		t.Fatalf("envelope timestamp %q: %v", env.Timestamp, err)
	}
}

func TestStreamFraming(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2=%v", h2), func(t *testing.T) {
			e := newEnv(t, envConfig{http2: h2})
			s := e.open(t, e.request(t, hubtest.Token(t, "u1", time.Hour), "", nil))

			wantProto := 1
			if h2 {
				wantProto = 2
			}
			if s.resp.ProtoMajor != wantProto {
				t.Fatalf("protocol %s, want HTTP/%d", s.resp.Proto, wantProto)
			}
			hd := s.resp.Header
			for k, want := range map[string]string{
				"Content-Type":      "text/event-stream",
				"Cache-Control":     "no-cache",
				"X-Accel-Buffering": "no",
				"Content-Encoding":  "",
			} {
				if got := hd.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			if h2 {
				if c := hd.Get("Connection"); c != "" {
					t.Errorf("Connection header %q on HTTP/2", c)
				}
			} else if c := hd.Get("Connection"); c != "keep-alive" {
				t.Errorf("Connection header %q, want keep-alive", c)
			}

			first := s.next()
			if len(first.fields) == 0 || first.fields[0].name != "retry" {
				t.Fatalf("first record %v does not open with a retry field", first)
			}
			ms, err := strconv.Atoi(first.fields[0].value)
			if err != nil || ms < 2000 || ms > 4000 {
				t.Fatalf("retry %q, want an integer around 3000", first.fields[0].value)
			}
			if first.comments != nil {
				t.Fatalf("first record has comments: %v", first)
			}
			first.fields = first.fields[1:]
			c := expectConnected(t, first)
			if c.UserID != "u1" || c.Transport != "sse" || c.Recovered || c.Missed != 0 ||
				c.Node != "hub-test" || !strings.HasPrefix(c.ConnectionID, "c-") || c.HeartbeatSeconds != 25 || c.TokenExpiresAt == "" {
				t.Fatalf("hub.connected = %+v", c)
			}
			// nothing replayed: the position follows as a data-less id
			// record, before any event
			next := s.nextMatching(false, false)
			if pos, ok := positionRecord(next); !ok || c.Position == "" || pos != c.Position || len(next.comments) != 0 {
				t.Fatalf("record after hub.connected %v, want only \"id: %s\"", next, c.Position)
			}

			for i := range 3 {
				payload := fmt.Sprintf(`{"n":%d}`, i)
				id := e.publish(t, "u1", "DRAFT_UPDATED", payload)
				expectEvent(t, s.next(), id, "DRAFT_UPDATED", payload)
			}
		})
	}
}

func TestRetryIsJitteredPerConnection(t *testing.T) {
	e := newEnv(t, envConfig{})
	seen := map[string]bool{}
	for i := 0; i < 20 && len(seen) < 2; i++ {
		s := e.open(t, e.request(t, hubtest.Token(t, "u1", time.Hour), "", nil))
		v, _ := s.next().value("retry")
		seen[v] = true
		s.close()
	}
	if len(seen) < 2 {
		t.Fatalf("20 connections all got retry %v", seen)
	}
}

// noRetry makes the r3labs client give up instead of reconnecting.
type noRetry struct{}

func (noRetry) NextBackOff() time.Duration { return -1 }
func (noRetry) Reset()                     {}

func TestR3labsClient(t *testing.T) {
	e := newEnv(t, envConfig{})
	c := r3sse.NewClient(e.srv.URL + "/sse/realtime")
	c.Connection = e.srv.Client()
	c.Headers["Authorization"] = "Bearer " + hubtest.Token(t, "u1", time.Hour)
	c.ReconnectStrategy = noRetry{}

	events := make(chan *r3sse.Event, 100)
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		errc <- c.SubscribeRawWithContext(ctx, func(ev *r3sse.Event) { events <- ev })
	}()
	recv := func() *r3sse.Event {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case <-time.After(waitFor):
			t.Fatal("r3labs client received nothing")
			return nil
		}
	}

	first := recv()
	if string(first.Event) != "hub.connected" || len(first.ID) != 0 || len(first.Retry) == 0 {
		t.Fatalf("first event: id %q event %q retry %q", first.ID, first.Event, first.Retry)
	}
	var env envelope
	if err := json.Unmarshal(first.Data, &env); err != nil || env.Type != "hub.connected" || env.ID != nil {
		t.Fatalf("hub.connected data %s (%v)", first.Data, err)
	}
	// the position record: an id and no data (a browser dispatches nothing)
	if pos := recv(); len(pos.ID) == 0 || len(pos.Data) != 0 || len(pos.Event) != 0 {
		t.Fatalf("after hub.connected: id %q event %q data %q, want the position alone", pos.ID, pos.Event, pos.Data)
	}
	for i := range 3 {
		payload := fmt.Sprintf(`{"n":%d}`, i)
		id := e.publish(t, "u1", "ORDER", payload)
		ev := recv()
		if string(ev.ID) != id || string(ev.Event) != "ORDER" {
			t.Fatalf("event %d: id %q event %q, want %q ORDER", i, ev.ID, ev.Event, id)
		}
		if err := json.Unmarshal(ev.Data, &env); err != nil || env.ID == nil || *env.ID != id || string(env.Payload) != payload {
			t.Fatalf("event %d data %s (%v)", i, ev.Data, err)
		}
	}
	e.hub.DisconnectUser("u1")
	if ev := recv(); string(ev.Event) != "hub.closed" {
		t.Fatalf("last event %q, want hub.closed", ev.Event)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("r3labs client did not see the end of the stream")
	}
}

func expectJSONError(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d", resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("error body: %v", err)
	}
	if body.Error.Code != code || body.Error.Message == "" {
		t.Errorf("error %+v, want code %q and a message", body.Error, code)
	}
}

func TestAuthFailures(t *testing.T) {
	e := newEnv(t, envConfig{})
	expired := hubtest.ExpiredToken(t, "u1")
	otherKey := hubtest.TokenWith(t, "another-secret-another-secret-!!", "u1", time.Hour)
	tests := []struct {
		name  string
		give  func(*http.Request)
		want  string
		users int
	}{
		{name: "no token", give: func(*http.Request) {}, want: "missing_token"},
		{name: "garbage", give: func(r *http.Request) { r.Header.Set("Authorization", "Bearer not.a.jwt") }, want: "invalid_token"},
		{name: "wrong key", give: func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+otherKey) }, want: "invalid_token"},
		{name: "expired", give: func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+expired) }, want: "token_expired"},
		{name: "expired in query", give: func(r *http.Request) { r.URL.RawQuery = "token=" + url.QueryEscape(expired) }, want: "token_expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := e.request(t, "", "", nil)
			tt.give(req)
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			expectJSONError(t, resp, http.StatusUnauthorized, tt.want)
			if n := e.hub.Stats().TotalConnections; n != 0 {
				t.Fatalf("%d connections registered", n)
			}
		})
	}
}

func TestTokenSources(t *testing.T) {
	e := newEnv(t, envConfig{})
	tests := []struct {
		name string
		give func(*http.Request)
		want string
	}{
		{name: "query", give: func(r *http.Request) { r.URL.RawQuery = "token=" + hubtest.Token(t, "q-user", time.Hour) }, want: "q-user"},
		{name: "cookie", give: func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: "hub_token", Value: hubtest.Token(t, "c-user", time.Hour)})
		}, want: "c-user"},
		{name: "header wins", give: func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+hubtest.Token(t, "h-user", time.Hour))
			r.URL.RawQuery = "token=" + hubtest.Token(t, "q-user", time.Hour)
		}, want: "h-user"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := e.request(t, "", "", nil)
			tt.give(req)
			s := e.open(t, req)
			if c := expectConnected(t, stripRetry(s.next())); c.UserID != tt.want {
				t.Fatalf("user %q, want %q", c.UserID, tt.want)
			}
		})
	}
}

// stripRetry drops the leading retry field of the first record.
func stripRetry(r record) record {
	if len(r.fields) > 0 && r.fields[0].name == "retry" {
		r.fields = r.fields[1:]
	}
	return r
}

func TestPerUserDelivery(t *testing.T) {
	e := newEnv(t, envConfig{})
	phone := e.open(t, e.request(t, hubtest.Token(t, "u1", time.Hour), "", nil))
	laptop := e.open(t, e.request(t, hubtest.Token(t, "u1", time.Hour), "", nil))
	other := e.open(t, e.request(t, hubtest.Token(t, "u2", time.Hour), "", nil))
	for _, s := range []*stream{phone, laptop, other} {
		expectConnected(t, stripRetry(s.next()))
	}

	const n = 50
	ids := make([]string, n)
	for i := range n {
		ids[i] = e.publish(t, "u1", "T", strconv.Itoa(i))
	}
	marker := e.publish(t, "u2", "MARKER", "null")
	for _, s := range []*stream{phone, laptop} {
		for i := range n {
			expectEvent(t, s.next(), ids[i], "T", strconv.Itoa(i))
		}
	}
	expectEvent(t, other.next(), marker, "MARKER", "null")

	// nothing more: a last event to each proves no duplicate came before it
	last := e.publish(t, "u1", "LAST", "true")
	for _, s := range []*stream{phone, laptop} {
		expectEvent(t, s.next(), last, "LAST", "true")
	}
}

func TestResume(t *testing.T) {
	e := newEnv(t, envConfig{})
	const none = -1
	tests := []struct {
		name          string
		header, query int    // index of the published event resumed from
		raw           string // a literal last_event_id query parameter
		rawHeader     string // a literal Last-Event-ID header
		wantRecovered bool
		wantFrom      int // index of the first replayed event
	}{
		{name: "header", header: 1, query: none, wantRecovered: true, wantFrom: 2},
		{name: "query", header: none, query: 2, wantRecovered: true, wantFrom: 3},
		{name: "header wins", header: 0, query: 3, wantRecovered: true, wantFrom: 1},
		{name: "latest", header: 4, query: none, wantRecovered: true, wantFrom: 5},
		{name: "fresh", header: none, query: none, wantFrom: 5},
		{name: "unknown", header: none, query: none, rawHeader: "OTHER-3", wantFrom: 5},
		{name: "invalid", header: none, query: none, raw: "bad id\n", wantFrom: 5},
		{name: "too long", header: none, query: none, raw: strings.Repeat("x", 300) + "-1", wantFrom: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := "resume-" + tt.name
			ids := make([]string, 5)
			for i := range ids {
				ids[i] = e.publish(t, user, "T", strconv.Itoa(i))
			}
			hdr := map[string]string{}
			switch {
			case tt.header != none:
				hdr["Last-Event-ID"] = ids[tt.header]
			case tt.rawHeader != "":
				hdr["Last-Event-ID"] = tt.rawHeader
			}
			q := ""
			switch {
			case tt.query != none:
				q = "last_event_id=" + url.QueryEscape(ids[tt.query])
			case tt.raw != "":
				q = "last_event_id=" + url.QueryEscape(tt.raw)
			}
			s := e.open(t, e.request(t, hubtest.Token(t, user, time.Hour), q, hdr))
			c := expectConnected(t, stripRetry(s.next()))
			wantMissed := len(ids) - tt.wantFrom
			if c.Recovered != tt.wantRecovered || c.Missed != wantMissed {
				t.Fatalf("recovered %v missed %d, want %v %d", c.Recovered, c.Missed, tt.wantRecovered, wantMissed)
			}
			for i := tt.wantFrom; i < len(ids); i++ {
				expectEvent(t, s.next(), ids[i], "T", strconv.Itoa(i))
			}
			live := e.publish(t, user, "LIVE", `"x"`)
			expectEvent(t, s.next(), live, "LIVE", `"x"`)
		})
	}
}

func TestHeartbeatComment(t *testing.T) {
	e := newEnv(t, envConfig{hub: hub.Options{Heartbeat: 50 * time.Millisecond}})
	s := e.open(t, e.request(t, hubtest.Token(t, "u1", time.Hour), "", nil))
	expectConnected(t, stripRetry(s.next()))
	for range 2 {
		rec := s.nextRec(true)
		if len(rec.fields) != 0 || len(rec.comments) != 1 || rec.comments[0] != " ping" {
			t.Fatalf("record %v, want a ': ping' comment", rec)
		}
	}
	// pings and events do not interleave inside a record
	id := e.publish(t, "u1", "T", "1")
	expectEvent(t, s.next(), id, "T", "1")
}

// TestIdlePastWriteTimeout: a stream idle for several write timeouts
// stays open and gets the next event (issue 22). The write deadline bounds
// each write only: the HTTP/1.1 stream, taken over from net/http, kept its
// response head's deadline and was cut at its first write after it; on
// HTTP/2 a deadline left armed resets the stream when it passes. No
// heartbeat comes meanwhile (its interval is an hour).
func TestIdlePastWriteTimeout(t *testing.T) {
	const writeTimeout = 100 * time.Millisecond
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1.1", true: "http2"}[h2], func(t *testing.T) {
			e := newEnv(t, envConfig{
				hub:   hub.Options{Heartbeat: time.Hour},
				sse:   func(o *sse.Options) { o.WriteTimeout = writeTimeout },
				http2: h2,
			})
			s := e.open(t, e.request(t, hubtest.Token(t, "u1", time.Hour), "", nil))
			if h2 != (s.resp.ProtoMajor == 2) {
				t.Fatalf("response %s", s.resp.Proto)
			}
			expectConnected(t, stripRetry(s.next()))
			for i := range 2 {
				// idle for five write timeouts: the stream must not end
				select {
				case <-s.done:
					t.Fatalf("stream ended while idle: %v", s.err)
				case <-time.After(5 * writeTimeout):
				}
				id := e.publish(t, "u1", "LATE", strconv.Itoa(i))
				expectEvent(t, s.next(), id, "LATE", strconv.Itoa(i))
			}
		})
	}
}

func TestSlowReaderIsClosed(t *testing.T) {
	e := newEnv(t, envConfig{
		hub: hub.Options{SendQueue: 32},
		// only the abort may end the blocked write within the test's wait
		sse: func(o *sse.Options) { o.WriteTimeout = time.Minute },
		server: func(s *httptest.Server) {
			s.Config.ConnState = func(c net.Conn, st http.ConnState) {
				if tc, ok := c.(*net.TCPConn); ok && st == http.StateNew {
					_ = tc.SetWriteBuffer(4096)
				}
			}
		},
	})
	tok := hubtest.Token(t, "u1", time.Hour)
	normal := e.open(t, e.request(t, tok, "", nil))
	expectConnected(t, stripRetry(normal.next()))

	// A client that sends its request and never reads.
	raw, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(raw, "GET /sse/realtime HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nAccept: text/event-stream\r\n\r\n", e.srv.Listener.Addr(), tok)
	hubtest.Eventually(t, waitFor, "two connections", func() bool { return e.hub.UserConnections("u1") == 2 })

	payload := `"` + strings.Repeat("x", 8192) + `"`
	deadline := time.Now().Add(30 * time.Second)
	var ids []string
	for e.hub.Stats().Connections["sse"] == 2 {
		if time.Now().After(deadline) {
			t.Fatalf("slow reader still connected after %d events", len(ids))
		}
		ids = append(ids, e.publish(t, "u1", "BIG", payload))
		// keep the reading client up to date so that only the other is slow
		want := len(ids)
		hubtest.Eventually(t, waitFor, "normal client to keep up", func() bool { return normal.count() >= want })
	}
	hubtest.Eventually(t, waitFor, "slow stream to end", func() bool { return e.hub.UserConnections("u1") == 1 })
	for _, id := range ids {
		expectEvent(t, normal.next(), id, "BIG", payload)
	}
	after := e.publish(t, "u1", "AFTER", "1")
	expectEvent(t, normal.next(), after, "AFTER", "1")
}

func TestShutdown(t *testing.T) {
	e := newEnv(t, envConfig{})
	a := e.open(t, e.request(t, hubtest.Token(t, "u1", time.Hour), "", nil))
	b := e.open(t, e.request(t, hubtest.Token(t, "u2", time.Hour), "", nil))
	expectConnected(t, stripRetry(a.next()))
	expectConnected(t, stripRetry(b.next()))

	idA := e.publish(t, "u1", "T", "1")
	idB := e.publish(t, "u2", "T", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.hub.Shutdown(ctx) }()

	for _, tt := range []struct {
		s       *stream
		id, pay string
	}{{a, idA, "1"}, {b, idB, "2"}} {
		expectEvent(t, tt.s.next(), tt.id, "T", tt.pay)
		rec := tt.s.next()
		if got := strings.Join(rec.names(), ","); got != "retry,event,data" {
			t.Fatalf("shutdown record fields %s (%v)", got, rec)
		}
		retry, _ := rec.value("retry")
		ms, err := strconv.Atoi(retry)
		if err != nil || ms <= 0 {
			t.Fatalf("shutdown retry %q", retry)
		}
		rec.fields = rec.fields[1:]
		var p struct {
			RetryMs int `json:"retryMs"`
		}
		if err := json.Unmarshal(control(t, rec, "hub.shutdown"), &p); err != nil || p.RetryMs != ms {
			t.Fatalf("hub.shutdown payload retryMs %d, want %d (%v)", p.RetryMs, ms, err)
		}
		tt.s.expectEOF()
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	resp, err := e.srv.Client().Do(e.request(t, hubtest.Token(t, "u1", time.Hour), "", nil))
	if err != nil {
		t.Fatal(err)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "2" {
		t.Errorf("503 shutting_down: Retry-After %q, want 2", ra)
	}
	expectJSONError(t, resp, http.StatusServiceUnavailable, "shutting_down")
}

func TestDisconnectUser(t *testing.T) {
	e := newEnv(t, envConfig{})
	s := e.open(t, e.request(t, hubtest.Token(t, "u1", time.Hour), "", nil))
	other := e.open(t, e.request(t, hubtest.Token(t, "u2", time.Hour), "", nil))
	expectConnected(t, stripRetry(s.next()))
	expectConnected(t, stripRetry(other.next()))

	if n := e.hub.DisconnectUser("u1"); n != 1 {
		t.Fatalf("DisconnectUser closed %d", n)
	}
	var p struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(control(t, s.next(), "hub.closed"), &p); err != nil {
		t.Fatal(err)
	}
	if p.Code != 4003 || p.Reason != "disconnected by server" {
		t.Fatalf("hub.closed payload %+v", p)
	}
	s.expectEOF()
	hubtest.Eventually(t, waitFor, "unregister", func() bool { return e.hub.UserConnections("u1") == 0 })

	id := e.publish(t, "u2", "T", "1")
	expectEvent(t, other.next(), id, "T", "1")
}

func TestTokenExpiry(t *testing.T) {
	e := newEnv(t, envConfig{hub: hub.Options{Heartbeat: 100 * time.Millisecond}})
	tok := hubtest.Token(t, "u1", 2*time.Second)
	s := e.open(t, e.request(t, tok, "", nil))
	c := expectConnected(t, stripRetry(s.next()))
	if c.TokenExpiresAt == "" {
		t.Fatal("hub.connected without tokenExpiresAt")
	}
	if p := control(t, s.next(), "hub.expired"); p != nil {
		t.Fatalf("hub.expired payload %s", p)
	}
	s.expectEOF()
}

func TestCORS(t *testing.T) {
	tests := []struct {
		name      string
		patterns  []string
		origin    string // "self": the server's own origin
		wantAllow bool
	}{
		{name: "allowed", patterns: []string{"https://app.example"}, origin: "https://app.example", wantAllow: true},
		{name: "wildcard host", patterns: []string{"*.example.com"}, origin: "https://a.example.com", wantAllow: true},
		{name: "disallowed", patterns: []string{"https://app.example"}, origin: "https://evil.example"},
		{name: "scheme differs", patterns: []string{"https://app.example"}, origin: "http://app.example"},
		{name: "default same host", origin: "self", wantAllow: true},
		{name: "default other host", origin: "https://app.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envConfig{sse: func(o *sse.Options) { o.AllowedOrigins = tt.patterns }})
			origin := tt.origin
			if origin == "self" {
				origin = e.srv.URL
			}

			req, err := http.NewRequest(http.MethodOptions, e.srv.URL+"/sse/realtime", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Origin", origin)
			req.Header.Set("Access-Control-Request-Method", "GET")
			req.Header.Set("Access-Control-Request-Headers", "authorization, last-event-id")
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("preflight status %d", resp.StatusCode)
			}
			hd := resp.Header
			if !strings.Contains(strings.Join(hd.Values("Vary"), ","), "Origin") {
				t.Errorf("Vary %q lacks Origin", hd.Values("Vary"))
			}
			if !tt.wantAllow {
				if v := hd.Get("Access-Control-Allow-Origin"); v != "" {
					t.Fatalf("disallowed origin got Access-Control-Allow-Origin %q", v)
				}
				return
			}
			for k, want := range map[string]string{
				"Access-Control-Allow-Origin":      origin,
				"Access-Control-Allow-Credentials": "true",
				"Access-Control-Allow-Headers":     "Authorization, Last-Event-ID, Content-Type",
				"Access-Control-Allow-Methods":     "GET, OPTIONS",
			} {
				if got := hd.Get(k); got != want {
					t.Errorf("preflight %s = %q, want %q", k, got, want)
				}
			}
			if age, err := strconv.Atoi(hd.Get("Access-Control-Max-Age")); err != nil || age <= 0 {
				t.Errorf("Access-Control-Max-Age %q", hd.Get("Access-Control-Max-Age"))
			}

			// the stream itself and an auth failure carry the answer too
			s := e.open(t, e.request(t, hubtest.Token(t, "u1", time.Hour), "", map[string]string{"Origin": origin}))
			if got := s.resp.Header.Get("Access-Control-Allow-Origin"); got != origin {
				t.Errorf("stream Access-Control-Allow-Origin %q, want %q", got, origin)
			}
			resp, err = e.srv.Client().Do(e.request(t, "", "", map[string]string{"Origin": origin}))
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != origin {
				t.Errorf("401 Access-Control-Allow-Origin %q, want %q", got, origin)
			}
			expectJSONError(t, resp, http.StatusUnauthorized, "missing_token")
		})
	}
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name string
		give hub.Options
	}{
		{name: "per user", give: hub.Options{MaxConnsPerUser: 1}},
		{name: "per node", give: hub.Options{MaxConns: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envConfig{hub: tt.give})
			s := e.open(t, e.request(t, hubtest.Token(t, "u1", time.Hour), "", nil))
			expectConnected(t, stripRetry(s.next()))
			resp, err := e.srv.Client().Do(e.request(t, hubtest.Token(t, "u1", time.Hour), "", nil))
			if err != nil {
				t.Fatal(err)
			}
			expectJSONError(t, resp, http.StatusTooManyRequests, "too_many_connections")
		})
	}
}

func TestAdmit(t *testing.T) {
	var mu sync.Mutex
	var resuming []bool
	e := newEnv(t, envConfig{sse: func(o *sse.Options) {
		o.Admit = func(_ *http.Request, r bool) (bool, int, string, time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			resuming = append(resuming, r)
			return false, http.StatusServiceUnavailable, "overloaded", 1500 * time.Millisecond
		}
	}})
	evs, err := e.hub.Publish(context.Background(), []string{"u1"}, "T", nil)
	if err != nil {
		t.Fatal(err)
	}
	// a made-up id is no resume; an id the hub issued is, and so is a position
	for _, hdr := range []map[string]string{nil, {"Last-Event-ID": "x-1"}, {"Last-Event-ID": evs[0].ID}, {"Last-Event-ID": evs[0].ID + "p"}} {
		resp, err := e.srv.Client().Do(e.request(t, hubtest.Token(t, "u1", time.Hour), "", hdr))
		if err != nil {
			t.Fatal(err)
		}
		if ra := resp.Header.Get("Retry-After"); ra != "2" {
			t.Errorf("Retry-After %q, want 2", ra)
		}
		expectJSONError(t, resp, http.StatusServiceUnavailable, "overloaded")
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(resuming) != "[false false true true]" {
		t.Fatalf("Admit saw resuming %v", resuming)
	}
	if n := e.hub.Stats().TotalConnections; n != 0 {
		t.Fatalf("%d connections registered", n)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	e := newEnv(t, envConfig{})
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		req, err := http.NewRequest(m, e.srv.URL+"/sse/realtime", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if allow := resp.Header.Get("Allow"); allow != "GET, OPTIONS" {
			t.Errorf("%s: Allow %q", m, allow)
		}
		expectJSONError(t, resp, http.StatusMethodNotAllowed, "method_not_allowed")
	}
}

// The raw bytes of the stream's opening, for readers that do not parse.
func TestOpeningBytes(t *testing.T) {
	e := newEnv(t, envConfig{})
	resp, err := e.srv.Client().Do(e.request(t, hubtest.Token(t, "u1", time.Hour), "", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for _, prefix := range []string{"retry: ", "event: hub.connected\n", `data: {"type":"hub.connected","payload":{`, "\n"} {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(line, prefix) {
			t.Fatalf("line %q, want prefix %q", line, prefix)
		}
	}
}

// TestCookieOrigin: an EventSource with withCredentials on another site
// sends the victim's cookie and the page's Origin; the stream it opened
// was the victim's. Now a stream authenticated by the cookie whose request
// has an Origin that HUB_ALLOWED_ORIGINS does not allow is 403
// origin_not_allowed and no connection is registered; without Origin (a
// same-origin EventSource), from an allowed origin, or with the token in
// the header or query (which a page cannot take from the victim), it opens.
func TestCookieOrigin(t *testing.T) {
	cookie := func(r *http.Request) {
		r.AddCookie(&http.Cookie{Name: "hub_token", Value: hubtest.Token(t, "victim", time.Hour)})
	}
	tests := []struct {
		name     string
		patterns []string
		give     func(*http.Request)
		origin   string
		wantOpen bool
	}{
		{"cookie, foreign origin", nil, cookie, "https://evil.example", false},
		{"cookie, origin null", nil, cookie, "null", false},
		{"cookie, not in the list", []string{"https://app.example"}, cookie, "https://evil.example", false},
		{"cookie, allowed host other scheme", []string{"https://app.example"}, cookie, "http://app.example", false},
		{"cookie, no origin", nil, cookie, "", true},
		{"cookie, allowed origin", []string{"https://app.example"}, cookie, "https://app.example", true},
		{"cookie, own host", nil, cookie, "own", true},
		{"header, foreign origin", nil, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+hubtest.Token(t, "victim", time.Hour)) }, "https://evil.example", true},
		{"query, foreign origin", nil, func(r *http.Request) { r.URL.RawQuery = "token=" + hubtest.Token(t, "victim", time.Hour) }, "https://evil.example", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envConfig{sse: func(o *sse.Options) { o.AllowedOrigins = tt.patterns }})
			req := e.request(t, "", "", nil)
			tt.give(req)
			switch tt.origin {
			case "":
			case "own":
				req.Header.Set("Origin", e.srv.URL)
			default:
				req.Header.Set("Origin", tt.origin)
			}
			if tt.wantOpen {
				s := e.open(t, req)
				if c := expectConnected(t, stripRetry(s.next())); c.UserID != "victim" {
					t.Fatalf("user %q, want victim", c.UserID)
				}
				return
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			expectJSONError(t, resp, http.StatusForbidden, "origin_not_allowed")
			if n := e.hub.Stats().TotalConnections; n != 0 {
				t.Fatalf("%d connections registered", n)
			}
		})
	}
}
