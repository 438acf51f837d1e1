package hub_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
)

var tsPattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func TestEnvelopeExactShape(t *testing.T) {
	h := newHub(t, hub.Options{Epoch: "E"})
	c, _ := register(t, h, ws("u1"))
	before := time.Now()
	evs, err := h.Publish(context.Background(), []string{"u1"}, "DRAFT_UPDATED", json.RawMessage("{\n  \"draftId\": 42,\n  \"tags\": [\"a b\", 2]\n}"))
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0] != (hub.UserEvent{UserID: "u1", ID: "E-1", Devices: 1}) {
		t.Fatalf("Publish = %+v, want [{u1 E-1 1}]", evs)
	}
	msgs, _ := drain(c)
	if len(msgs) != 2 {
		t.Fatalf("got %v, want hub.connected and one event", types(msgs))
	}
	m := msgs[1]
	if m.Accepted.Before(before) || m.Accepted.After(after) {
		t.Errorf("Accepted %v not within the Publish call [%v, %v]", m.Accepted, before, after)
	}
	ts := m.Accepted.UTC().Format(hub.TimeFormat)
	if !tsPattern.MatchString(ts) {
		t.Fatalf("timestamp %q is not RFC 3339 with ms in UTC", ts)
	}
	wantFrame := `{"id":"E-1","type":"DRAFT_UPDATED","payload":{"draftId":42,"tags":["a b",2]},"timestamp":"` + ts + `"}`
	if string(m.Frame) != wantFrame {
		t.Errorf("Frame\n got %s\nwant %s", m.Frame, wantFrame)
	}
	wantSSE := "id: E-1\nevent: DRAFT_UPDATED\ndata: " + wantFrame + "\n\n"
	if string(m.SSE) != wantSSE {
		t.Errorf("SSE\n got %q\nwant %q", m.SSE, wantSSE)
	}
	if m.ID != "E-1" || m.Type != "DRAFT_UPDATED" || m.Control() {
		t.Errorf("ID=%q Type=%q Control=%v", m.ID, m.Type, m.Control())
	}
}

func TestControlEvents(t *testing.T) {
	tests := []struct {
		name      string
		give      *hub.Message
		wantFrame string
		wantSSE   string
	}{
		{
			name:      "no payload",
			give:      hub.Control("hub.error", nil),
			wantFrame: `{"type":"hub.error"}`,
			wantSSE:   "event: hub.error\ndata: {\"type\":\"hub.error\"}\n\n",
		},
		{
			name:      "payload",
			give:      hub.Control("hub.refreshed", map[string]string{"tokenExpiresAt": "2026-02-05T10:16:08.123Z"}),
			wantFrame: `{"type":"hub.refreshed","payload":{"tokenExpiresAt":"2026-02-05T10:16:08.123Z"}}`,
			wantSSE:   "event: hub.refreshed\ndata: {\"type\":\"hub.refreshed\",\"payload\":{\"tokenExpiresAt\":\"2026-02-05T10:16:08.123Z\"}}\n\n",
		},
		{
			name:      "ping",
			give:      hub.Ping,
			wantFrame: `{"type":"hub.ping"}`,
			wantSSE:   ": ping\n\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(tt.give.Frame); got != tt.wantFrame {
				t.Errorf("Frame = %s, want %s", got, tt.wantFrame)
			}
			if got := string(tt.give.SSE); got != tt.wantSSE {
				t.Errorf("SSE = %q, want %q", got, tt.wantSSE)
			}
			if tt.give.ID != "" || !tt.give.Control() {
				t.Errorf("ID = %q, Control = %v; want no id, control", tt.give.ID, tt.give.Control())
			}
		})
	}
}

func TestConnectedSSERecordHasNoID(t *testing.T) {
	h := newHub(t, hub.Options{})
	c, _ := register(t, h, hub.ConnInfo{UserID: "u1", Transport: hub.TransportSSE})
	msgs, _ := drain(c)
	connected(t, msgs)
	rec := string(msgs[0].SSE)
	lines := strings.Split(strings.TrimSuffix(rec, "\n\n"), "\n")
	if len(lines) != 2 || lines[0] != "event: hub.connected" || lines[1] != "data: "+string(msgs[0].Frame) {
		t.Fatalf("SSE record %q, want event: and one data: line", rec)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(msgs[0].Frame, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["id"]; ok {
		t.Errorf("control envelope has an id: %s", msgs[0].Frame)
	}
}

func TestPayloadCompaction(t *testing.T) {
	tests := []struct {
		name    string
		give    json.RawMessage
		want    string
		wantErr bool
	}{
		{name: "object", give: json.RawMessage(`{"a": 1}`), want: `{"a":1}`},
		{name: "multi-line", give: json.RawMessage("{\n\t\"a\": \"x y\",\r\n\t\"b\": null\n}\n"), want: `{"a":"x y","b":null}`},
		{name: "array", give: json.RawMessage(`[1, 2 ,3]`), want: `[1,2,3]`},
		{name: "string", give: json.RawMessage(`"maintenance at 22:00"`), want: `"maintenance at 22:00"`},
		{name: "escaped newline stays escaped", give: json.RawMessage(`"a\nb"`), want: `"a\nb"`},
		{name: "number", give: json.RawMessage(` 42 `), want: `42`},
		{name: "bool", give: json.RawMessage(`true`), want: `true`},
		{name: "null", give: json.RawMessage(`null`), want: `null`},
		{name: "nil is null", give: nil, want: `null`},
		{name: "empty is null", give: json.RawMessage(``), want: `null`},
		{name: "blank is null", give: json.RawMessage(" \n\t"), want: `null`},
		{name: "truncated", give: json.RawMessage(`{"a":`), wantErr: true},
		{name: "bare key", give: json.RawMessage(`{a:1}`), wantErr: true},
		{name: "two values", give: json.RawMessage(`1 2`), wantErr: true},
		{name: "open string", give: json.RawMessage(`"x`), wantErr: true},
		{name: "raw newline in string", give: json.RawMessage("\"a\nb\""), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t, hub.Options{})
			c, _ := register(t, h, ws("u1"))
			_, err := h.Publish(context.Background(), []string{"u1"}, "T", tt.give)
			_, berr := h.Broadcast(context.Background(), "T", tt.give)
			msgs, _ := drain(c)
			if tt.wantErr {
				if err == nil || berr == nil {
					t.Fatalf("Publish err = %v, Broadcast err = %v; want errors", err, berr)
				}
				if len(msgs) != 1 {
					t.Errorf("refused events were queued: %v", types(msgs))
				}
				return
			}
			if err != nil || berr != nil {
				t.Fatalf("Publish err = %v, Broadcast err = %v", err, berr)
			}
			if len(msgs) != 3 {
				t.Fatalf("got %v, want connected and two events", types(msgs))
			}
			for _, m := range msgs[1:] {
				if got := string(decode(t, m).Payload); got != tt.want {
					t.Errorf("payload = %s, want %s", got, tt.want)
				}
				if strings.Count(string(m.Frame), "\n") != 0 {
					t.Errorf("frame has a newline: %q", m.Frame)
				}
				if strings.Count(string(m.SSE), "\n") != 4 {
					t.Errorf("SSE record is not three lines and a blank one: %q", m.SSE)
				}
			}
		})
	}
}

func TestValidateType(t *testing.T) {
	tests := []struct {
		give    string
		wantErr bool
	}{
		{give: "DRAFT_UPDATED"},
		{give: "A"},
		{give: "a.b:c-d_e9"},
		{give: strings.Repeat("x", hub.MaxTypeLen)},
		{give: "hub"},
		{give: "hubx"},
		{give: "Hub_x"},
		{give: "xhub.y"},
		{give: "", wantErr: true},
		{give: strings.Repeat("x", hub.MaxTypeLen+1), wantErr: true},
		{give: "hub.", wantErr: true},
		{give: "hub.connected", wantErr: true},
		{give: "Hub.x", wantErr: true},
		{give: "HUB.shutdown", wantErr: true},
		{give: "hUb.", wantErr: true},
		{give: "a b", wantErr: true},
		{give: "a/b", wantErr: true},
		{give: "a\n", wantErr: true},
		{give: "é", wantErr: true},
		{give: `a"b`, wantErr: true},
	}
	for _, tt := range tests {
		if err := hub.ValidateType(tt.give); (err != nil) != tt.wantErr {
			t.Errorf("ValidateType(%q) = %v, want error: %v", tt.give, err, tt.wantErr)
		}
	}
}

func TestValidateID(t *testing.T) {
	tests := []struct {
		give    string
		wantErr bool
	}{
		{give: "AAA-17"},
		{give: "a"},
		{give: "!~"},
		{give: strings.Repeat("x", hub.MaxIDLen)},
		{give: "", wantErr: true},
		{give: strings.Repeat("x", hub.MaxIDLen+1), wantErr: true},
		{give: "a b", wantErr: true},
		{give: "a\tb", wantErr: true},
		{give: "a\nb", wantErr: true},
		{give: "a\x7f", wantErr: true},
		{give: "é", wantErr: true},
	}
	for _, tt := range tests {
		if err := hub.ValidateID(tt.give); (err != nil) != tt.wantErr {
			t.Errorf("ValidateID(%q) = %v, want error: %v", tt.give, err, tt.wantErr)
		}
	}
}

func TestParseID(t *testing.T) {
	tests := []struct {
		give      string
		wantEpoch string
		wantSeq   uint64
		wantOK    bool
	}{
		{give: "AAA-17", wantEpoch: "AAA", wantSeq: 17, wantOK: true},
		{give: "a-b-3", wantEpoch: "a-b", wantSeq: 3, wantOK: true},
		{give: "E-18446744073709551615", wantEpoch: "E", wantSeq: 1<<64 - 1, wantOK: true},
		{give: "AAA-0"},
		{give: "AAA-"},
		{give: "-5"},
		{give: "AAA"},
		{give: ""},
		{give: "AAA-x"},
		{give: "AAA-+5"},
		{give: "AAA- 5"},
		{give: "E-18446744073709551616"},
	}
	for _, tt := range tests {
		epoch, seq, ok := hub.ParseID(tt.give)
		if epoch != tt.wantEpoch || seq != tt.wantSeq || ok != tt.wantOK {
			t.Errorf("ParseID(%q) = %q, %d, %v; want %q, %d, %v", tt.give, epoch, seq, ok, tt.wantEpoch, tt.wantSeq, tt.wantOK)
		}
	}
}

func TestPublishedIDsParseAndGrow(t *testing.T) {
	h := newHub(t, hub.Options{Epoch: "ep"})
	var last uint64
	for i := 0; i < 5; i++ {
		evs, err := h.Publish(context.Background(), []string{"a", "b"}, "T", nil)
		if err != nil {
			t.Fatal(err)
		}
		id, err := h.Broadcast(context.Background(), "T", nil)
		if err != nil {
			t.Fatal(err)
		}
		if evs[0].ID != evs[1].ID {
			t.Fatalf("one publish to two users gave two ids: %+v", evs)
		}
		for _, id := range []string{evs[0].ID, id} {
			epoch, seq, ok := hub.ParseID(id)
			if !ok || epoch != "ep" || seq <= last {
				t.Fatalf("id %q: epoch %q seq %d ok %v; want epoch ep and seq > %d", id, epoch, seq, ok, last)
			}
			if err := hub.ValidateID(id); err != nil {
				t.Fatalf("hub id %q is not a valid id: %v", id, err)
			}
			last = seq
		}
	}
}

func TestReasonsOfTheContract(t *testing.T) {
	tests := []struct {
		give hub.Reason
		want hub.Reason
	}{
		{hub.ReasonNormal, hub.Reason{Code: 1000, Text: "normal"}},
		{hub.ReasonShutdown, hub.Reason{Code: 1001, Text: "server shutdown"}},
		{hub.ReasonTokenExpired, hub.Reason{Code: 4001, Text: "token expired"}},
		{hub.ReasonUnauthorized, hub.Reason{Code: 4001, Text: "unauthorized"}},
		{hub.ReasonDisconnected, hub.Reason{Code: 4003, Text: "disconnected by server"}},
		{hub.ReasonSlowConsumer, hub.Reason{Code: 4008, Text: "slow consumer"}},
		{hub.ReasonTooManyConns, hub.Reason{Code: 4029, Text: "too many connections"}},
		{hub.ReasonPolicyViolate, hub.Reason{Code: 1008, Text: "policy violation"}},
	}
	for _, tt := range tests {
		if tt.give != tt.want {
			t.Errorf("reason %v, want %v", tt.give, tt.want)
		}
	}
	if got := hub.ReasonSlowConsumer.String(); got != "4008 slow consumer" {
		t.Errorf("String() = %q", got)
	}
}

// TestCompressedOnce: however many connections ask at once, an event is
// compressed once and every one of them gets the same bytes.
func TestCompressedOnce(t *testing.T) {
	m := hub.Control("hub.test", map[string]string{"k": "v"})
	var calls atomic.Int32
	compress := func(frame []byte) []byte {
		calls.Add(1)
		return append([]byte("z:"), frame...)
	}
	const n = 64
	got := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i] = m.Compressed(compress) })
	}
	wg.Wait()
	if c := calls.Load(); c != 1 {
		t.Fatalf("compressed %d times, want once", c)
	}
	for i := range got {
		if &got[i][0] != &got[0][0] || string(got[i]) != "z:"+string(m.Frame) {
			t.Fatalf("caller %d got other bytes: %q", i, got[i])
		}
	}
	// nil (nothing gained) is remembered too
	m2 := hub.Control("hub.test", 1)
	for range 3 {
		if z := m2.Compressed(func([]byte) []byte { calls.Add(1); return nil }); z != nil {
			t.Fatal("nil not kept")
		}
	}
	if c := calls.Load(); c != 2 {
		t.Fatalf("%d calls, want 2", c)
	}
}

// The envelope's timestamp and id are appended by hand: the bytes must be
// those of time.Format and of the plain concatenation.
func TestTimestampAndIDByHand(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	east := time.FixedZone("east", 5*3600+1800)
	for i := range 10000 {
		ts := time.Unix(rng.Int64N(400e9)-200e9, rng.Int64N(1e9)) // years 0 to 8300 or so
		if i%2 == 1 {
			ts = ts.In(east)
		}
		want := ts.UTC().Format(hub.TimeFormat)
		if got := string(hub.AppendTimestamp([]byte("x"), ts)); got != "x"+want {
			t.Fatalf("%v: %q, want %q", ts, got, "x"+want)
		}
		seq := rng.Uint64() >> rng.IntN(64)
		if got, want := hub.FormatID("EPOCH", seq), "EPOCH-"+strconv.FormatUint(seq, 10); got != want {
			t.Fatalf("id %q, want %q", got, want)
		}
	}
	for _, ts := range []time.Time{time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(12000, 1, 1, 0, 0, 0, 999999999, time.UTC), {}} {
		if got, want := string(hub.AppendTimestamp(nil, ts)), ts.UTC().Format(hub.TimeFormat); got != want {
			t.Fatalf("%v: %q, want %q", ts, got, want)
		}
	}
}
