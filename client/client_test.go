package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubd/hub/client"
	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/transport/api"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const apiKey = "key-abcdefghijklmnop"

// env is a real hub with its API on a loopback server.
type env struct {
	t   *testing.T
	hub *hub.Hub
	srv *httptest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	h := hub.New(hub.Options{Node: "hub-1", HistorySize: 100, HistoryTTL: time.Minute})
	h.Start()
	v, err := auth.New(context.Background(), auth.Options{Secret: hubtest.Secret, APIKeys: []string{apiKey}})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	mux := http.NewServeMux()
	api.New(api.Options{Hub: h, Auth: v, MaxPayload: 4 << 10, Logger: slog.New(slog.DiscardHandler)}).RegisterInternal(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		h.Stop()
		v.Close()
	})
	return &env{t: t, hub: h, srv: srv}
}

func (e *env) client(opts ...client.Option) *client.Client {
	return client.New(e.srv.URL+"/", append([]client.Option{client.WithHTTPClient(e.srv.Client())}, opts...)...)
}

// device is a connection registered directly with the hub.
type device struct {
	t     *testing.T
	conn  *hub.Conn
	mu    sync.Mutex
	woken chan struct{}
	abort *hub.Reason
}

func (d *device) Wake() {
	select {
	case d.woken <- struct{}{}:
	default:
	}
}

func (d *device) Abort(r hub.Reason) {
	d.mu.Lock()
	d.abort = &r
	d.mu.Unlock()
	d.Wake()
}

func (*device) Heartbeat(bool) {}

func (e *env) connect(user string) *device {
	e.t.Helper()
	d := &device{t: e.t, woken: make(chan struct{}, 1)}
	c, err := e.hub.Register(hub.ConnInfo{UserID: user, Transport: hub.TransportWebSocket}, d)
	if err != nil {
		e.t.Fatalf("register: %v", err)
	}
	d.conn = c
	e.t.Cleanup(func() { e.hub.Unregister(c) })
	return d
}

// connectFrom registers a connection of user resuming from last.
func (e *env) connectFrom(user, last string) *device {
	e.t.Helper()
	d := &device{t: e.t, woken: make(chan struct{}, 1)}
	c, err := e.hub.Register(hub.ConnInfo{UserID: user, Transport: hub.TransportWebSocket, LastEventID: last}, d)
	if err != nil {
		e.t.Fatalf("register: %v", err)
	}
	d.conn = c
	e.t.Cleanup(func() { e.hub.Unregister(c) })
	return d
}

// envelope is a delivered event.
type envelope struct {
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Key      string          `json:"key"`
	Volatile bool            `json:"volatile"`
	Payload  json.RawMessage `json:"payload"`
}

// events waits until n application events have been delivered (control
// events are skipped) or the connection closed, and returns them and the
// close reason.
func (d *device) events(n int) ([]envelope, *hub.Reason) {
	d.t.Helper()
	var got []envelope
	deadline := time.After(5 * time.Second)
	for len(got) < n {
		msgs, reason := d.conn.Next(nil)
		if reason != nil {
			return got, reason
		}
		for _, m := range msgs {
			if m.Control() {
				continue
			}
			var e envelope
			if err := json.Unmarshal(m.Frame, &e); err != nil {
				d.t.Fatalf("frame %q: %v", m.Frame, err)
			}
			got = append(got, e)
		}
		if len(msgs) > 0 {
			continue
		}
		select {
		case <-d.woken:
		case <-deadline:
			d.t.Fatalf("got %d of %d events", len(got), n)
		}
	}
	return got, nil
}

func TestPublish(t *testing.T) {
	e := newEnv(t)
	u1, u2 := e.connect("u1"), e.connect("u2")
	c := e.client(client.WithAPIKey(apiKey))
	ctx := context.Background()

	evs, err := c.Publish(ctx, []string{"u1", "u2"}, "DRAFT_UPDATED", map[string]int{"draftId": 42})
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if len(evs) != 2 || evs[0].UserID != "u1" || evs[1].UserID != "u2" || evs[0].ID == "" || evs[1].ID == "" ||
		evs[0].Devices != 1 || evs[1].Devices != 1 {
		t.Fatalf("Publish = %+v, want an id and one device for u1 and u2", evs)
	}
	for i, d := range []*device{u1, u2} {
		got, _ := d.events(1)
		if got[0].ID != evs[i].ID || got[0].Type != "DRAFT_UPDATED" || string(got[0].Payload) != `{"draftId":42}` {
			t.Errorf("%s got %+v, want id %s", evs[i].UserID, got[0], evs[i].ID)
		}
	}

	// a raw payload goes as is; the same idempotency key gives the same ids
	raw := json.RawMessage(`[1,"two",null]`)
	first, err := c.Publish(ctx, []string{"u1"}, "RAW", raw, client.IdempotencyKey("k-1"))
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	again, err := c.Publish(ctx, []string{"u1"}, "RAW", raw, client.IdempotencyKey("k-1"))
	if err != nil {
		t.Fatalf("Publish again: %v", err)
	}
	if !slices.Equal(first, again) {
		t.Errorf("repeated key: %+v, want %+v", again, first)
	}
	got, _ := u1.events(1)
	if string(got[0].Payload) != string(raw) || got[0].ID != first[0].ID {
		t.Errorf("u1 got %+v, want payload %s id %s", got[0], raw, first[0].ID)
	}
}

// TestPublishKeyedAndVolatile: Keyed and Volatile reach the envelope; a
// device that resumes gets the newest event of the key only and no
// volatile event; both together are refused by the hub.
func TestPublishKeyedAndVolatile(t *testing.T) {
	e := newEnv(t)
	u1 := e.connect("u1")
	c := e.client(client.WithAPIKey(apiKey))
	ctx := context.Background()

	start, err := c.Publish(ctx, []string{"u1"}, "START", nil)
	if err != nil {
		t.Fatal(err)
	}
	var last []client.UserEvent
	for i := range 5 {
		if last, err = c.Publish(ctx, []string{"u1"}, "DRAFT_UPDATED", map[string]int{"rev": i}, client.Keyed("draft:42")); err != nil {
			t.Fatalf("Publish keyed: %v", err)
		}
	}
	if _, err := c.Publish(ctx, []string{"u1"}, "TYPING", true, client.Volatile()); err != nil {
		t.Fatalf("Publish volatile: %v", err)
	}
	all, err := c.PublishAll(ctx, "BANNER", "hi", client.Keyed("banner"))
	if err != nil {
		t.Fatalf("PublishAll keyed: %v", err)
	}
	got, _ := u1.events(8)
	if got[5].Key != "draft:42" || got[5].ID != last[0].ID || got[6].Type != "TYPING" || !got[6].Volatile || got[6].Key != "" ||
		got[7].ID != all || got[7].Key != "banner" || got[0].Key != "" || got[0].Volatile {
		t.Fatalf("envelopes %+v", got)
	}
	res, err := c.Batch(ctx, []client.Message{
		{UserIDs: []string{"u1"}, Type: "DRAFT_UPDATED", Payload: 9, Key: "draft:42"},
		{UserIDs: []string{"u1"}, Type: "TYPING", Volatile: true},
	})
	if err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("Batch: %v %+v", err, res)
	}

	r := e.connectFrom("u1", start[0].ID)
	replay, _ := r.events(2)
	if replay[0].ID != all || replay[1].ID != res[0].Events[0].ID {
		t.Fatalf("resume replayed %+v, want the banner and the newest draft", replay)
	}

	_, err = c.Publish(ctx, []string{"u1"}, "T", nil, client.Keyed("k"), client.Volatile())
	if !client.IsCode(err, "invalid_request") || !strings.Contains(err.Error(), "volatile") {
		t.Fatalf("Keyed and Volatile: %v, want invalid_request naming volatile", err)
	}
}

func TestPublishAll(t *testing.T) {
	e := newEnv(t)
	u1, u2 := e.connect("u1"), e.connect("u2")
	c := e.client(client.WithToken(hubtest.Token(t, "svc", time.Hour, "service")))

	id, err := c.PublishAll(context.Background(), "ANNOUNCEMENT", "maintenance at 22:00")
	if err != nil {
		t.Fatalf("PublishAll: %v", err)
	}
	if id == "" {
		t.Fatal("PublishAll: empty id")
	}
	for _, d := range []*device{u1, u2} {
		got, _ := d.events(1)
		if got[0].ID != id || string(got[0].Payload) != `"maintenance at 22:00"` {
			t.Errorf("got %+v, want id %s", got[0], id)
		}
	}
}

func TestBatch(t *testing.T) {
	e := newEnv(t)
	u1 := e.connect("u1")
	c := e.client(client.WithAPIKey(apiKey))

	res, err := c.Batch(context.Background(), []client.Message{
		{UserIDs: []string{"u1"}, Type: "A", Payload: 1},
		{All: true, Type: "B"},
		{UserIDs: []string{"u1"}, Type: "hub.nope"},
		{UserIDs: []string{"u1"}, Type: "C", Payload: json.RawMessage(`{"x":true}`)},
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if len(res) != 4 {
		t.Fatalf("Batch: %d results, want 4", len(res))
	}
	if len(res[0].Events) != 1 || res[0].Events[0].UserID != "u1" || res[0].Err != nil {
		t.Errorf("result 0 = %+v, want an event of u1", res[0])
	}
	if res[1].ID == "" || res[1].Devices != 1 || res[1].Err != nil {
		t.Errorf("result 1 = %+v, want an id and 1 device", res[1])
	}
	if res[2].Err == nil || res[2].Err.Code != "invalid_request" || !strings.Contains(res[2].Err.Message, "messages[2].type") {
		t.Errorf("result 2 = %+v, want invalid_request naming messages[2].type", res[2])
	}
	got, _ := u1.events(3)
	wantIDs := []string{res[0].Events[0].ID, res[1].ID, res[3].Events[0].ID}
	for i, ev := range got {
		if ev.ID != wantIDs[i] {
			t.Errorf("event %d id %s, want %s (in order)", i, ev.ID, wantIDs[i])
		}
	}
	if string(got[1].Payload) != "null" || string(got[2].Payload) != `{"x":true}` {
		t.Errorf("payloads %s %s", got[1].Payload, got[2].Payload)
	}

	// the results encode back as the hub's answer
	b, err := json.Marshal(res[1:3])
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"id":"` + res[1].ID + `","devices":1},{"error":{"code":"invalid_request","message":` + mustJSON(t, res[2].Err.Message) + `}}]`
	if string(b) != want {
		t.Errorf("marshal = %s, want %s", b, want)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDisconnect(t *testing.T) {
	e := newEnv(t)
	d1, d2 := e.connect("u 1"), e.connect("u 1")
	other := e.connect("u2")
	c := e.client(client.WithAPIKey(apiKey))

	n, err := c.Disconnect(context.Background(), "u 1")
	if err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	if n != 2 {
		t.Errorf("Disconnect = %d, want 2", n)
	}
	for _, d := range []*device{d1, d2} {
		if _, reason := d.events(1); reason == nil || reason.Code != 4003 {
			t.Errorf("close reason %v, want 4003", reason)
		}
	}
	if got := e.hub.UserConnections("u2"); got != 1 {
		t.Errorf("u2 has %d connections, want 1", got)
	}
	_ = other
	if n, err := c.Disconnect(context.Background(), "nobody"); err != nil || n != 0 {
		t.Errorf("Disconnect(nobody) = %d, %v; want 0, nil", n, err)
	}
}

func TestConnections(t *testing.T) {
	e := newEnv(t)
	before := time.Now().Add(-time.Second)
	d1, d2 := e.connect("u1"), e.connect("u1")
	c := e.client(client.WithAPIKey(apiKey))
	got, err := c.Connections(context.Background(), "u1")
	if err != nil {
		t.Fatalf("Connections: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("Connections = %+v, want 2", got)
	}
	for i, d := range []*device{d1, d2} {
		g := got[i]
		if g.ConnectionID != d.conn.ID() || g.Transport != "websocket" || g.Node != "hub-1" ||
			g.ConnectedAt.Before(before) || g.ConnectedAt.After(time.Now()) {
			t.Errorf("connection %d = %+v, want %s", i, g, d.conn.ID())
		}
	}
	if got, err := c.Connections(context.Background(), "nobody/with a slash"); err != nil || got == nil || len(got) != 0 {
		t.Errorf("Connections(nobody) = %#v, %v; want an empty slice", got, err)
	}
	if _, err := e.client().Connections(context.Background(), "u1"); !client.IsCode(err, "missing_token") {
		t.Errorf("without credentials: %v, want missing_token", err)
	}
}

func TestStats(t *testing.T) {
	e := newEnv(t)
	e.connect("u1")
	e.connect("u1")
	e.connect("u2")
	c := e.client(client.WithToken(hubtest.Token(t, "ops", time.Hour, "admin")))

	s, err := c.Stats(context.Background())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if s.TotalConnections != 3 || s.ActiveUsers != 2 || s.Connections["websocket"] != 3 || s.Node != "hub-1" || s.UptimeSeconds < 0 {
		t.Errorf("Stats = %+v", s)
	}
	if s.Cluster != nil {
		t.Errorf("Cluster = %s, want none without a broker", s.Cluster)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	big := strings.Repeat("x", 8<<10)
	tests := []struct {
		name       string
		give       *client.Client
		call       func(*client.Client) error
		wantStatus int
		wantCode   string
		wantInMsg  string
	}{
		{
			name: "no credentials", give: e.client(),
			call:       func(c *client.Client) error { _, err := c.Publish(ctx, []string{"u1"}, "A", nil); return err },
			wantStatus: 401, wantCode: "missing_token",
		},
		{
			name: "wrong API key", give: e.client(client.WithAPIKey("wrong-key-0123456789")),
			call:       func(c *client.Client) error { _, err := c.Disconnect(ctx, "u1"); return err },
			wantStatus: 401,
		},
		{
			name: "bad token", give: e.client(client.WithToken("not.a.jwt")),
			call:       func(c *client.Client) error { _, err := c.PublishAll(ctx, "A", nil); return err },
			wantStatus: 401, wantCode: "invalid_token",
		},
		{
			name: "user token publishes", give: e.client(client.WithToken(hubtest.Token(t, "u1", time.Hour))),
			call:       func(c *client.Client) error { _, err := c.Publish(ctx, []string{"u1"}, "A", nil); return err },
			wantStatus: 403, wantCode: "forbidden",
		},
		{
			name: "API key reads stats", give: e.client(client.WithAPIKey(apiKey)),
			call:       func(c *client.Client) error { _, err := c.Stats(ctx); return err },
			wantStatus: 403, wantCode: "forbidden",
		},
		{
			name: "no users", give: e.client(client.WithAPIKey(apiKey)),
			call:       func(c *client.Client) error { _, err := c.Publish(ctx, nil, "A", nil); return err },
			wantStatus: 400, wantCode: "invalid_request", wantInMsg: "userIds",
		},
		{
			name: "bad type", give: e.client(client.WithAPIKey(apiKey)),
			call:       func(c *client.Client) error { _, err := c.PublishAll(ctx, "bad type!", nil); return err },
			wantStatus: 400, wantCode: "invalid_request", wantInMsg: "type",
		},
		{
			name: "empty batch", give: e.client(client.WithAPIKey(apiKey)),
			call:       func(c *client.Client) error { _, err := c.Batch(ctx, nil); return err },
			wantStatus: 400, wantCode: "invalid_request", wantInMsg: "messages",
		},
		{
			name: "too large", give: e.client(client.WithAPIKey(apiKey)),
			call:       func(c *client.Client) error { _, err := c.Publish(ctx, []string{"u1"}, "A", big); return err },
			wantStatus: 413, wantCode: "payload_too_large",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(tt.give)
			var ce *client.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want a *client.Error", err, err)
			}
			if ce.Status != tt.wantStatus {
				t.Errorf("Status = %d, want %d", ce.Status, tt.wantStatus)
			}
			if tt.wantCode != "" && !client.IsCode(err, tt.wantCode) {
				t.Errorf("Code = %q, want %q", ce.Code, tt.wantCode)
			}
			if ce.Code == "" || ce.Message == "" {
				t.Errorf("error %+v: empty code or message", ce)
			}
			if !strings.Contains(ce.Message, tt.wantInMsg) {
				t.Errorf("Message = %q, want it to name %q", ce.Message, tt.wantInMsg)
			}
			if !strings.Contains(err.Error(), ce.Code) {
				t.Errorf("Error() = %q does not name the code", err)
			}
		})
	}
}

func TestUnexpectedResponse(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "bad gateway", http.StatusBadGateway)
	}))
	defer srv.Close()
	_, err := client.New(srv.URL, client.WithHTTPClient(srv.Client())).Stats(context.Background())
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 502 || ce.Code != client.CodeUnexpectedResponse || !strings.Contains(ce.Message, "bad gateway") {
		t.Errorf("error = %#v, want 502 %s", err, client.CodeUnexpectedResponse)
	}
	if client.IsCode(errors.New("plain"), client.CodeUnexpectedResponse) {
		t.Error("IsCode(plain error) = true")
	}
}

func TestMessageJSON(t *testing.T) {
	tests := []struct {
		give    string
		want    client.Message
		wantErr bool
	}{
		{give: `{"userIds":["a","b"],"type":"T","payload":{"x":1}}`, want: client.Message{UserIDs: []string{"a", "b"}, Type: "T", Payload: json.RawMessage(`{"x":1}`)}},
		{give: `{"all":true,"type":"T","idempotencyKey":"k"}`, want: client.Message{All: true, Type: "T", IdempotencyKey: "k"}},
		{give: `{"userIds":["a"],"type":"T","key":"draft:42"}`, want: client.Message{UserIDs: []string{"a"}, Type: "T", Key: "draft:42"}},
		{give: `{"all":true,"type":"T","volatile":true}`, want: client.Message{All: true, Type: "T", Volatile: true}},
		{give: `{"all":true,"type":"T","volatile":false}`, want: client.Message{All: true, Type: "T"}},
		{give: `{"all":true,"type":"T","extra":1}`, wantErr: true},
		{give: `[1]`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			var m client.Message
			err := json.Unmarshal([]byte(tt.give), &m)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			a, _ := json.Marshal(m)
			b, _ := json.Marshal(tt.want)
			if string(a) != string(b) {
				t.Errorf("got %s, want %s", a, b)
			}
		})
	}
}
