package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
)

// validType is an independent statement of the contract's type rule.
func validType(s string) bool {
	if len(s) < 1 || len(s) > hub.MaxTypeLen || strings.HasPrefix(strings.ToLower(s), "hub.") {
		return false
	}
	for _, c := range []byte(s) {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_.:-", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

func FuzzValidateType(f *testing.F) {
	for _, s := range []string{"", "A", "DRAFT_UPDATED", "a.b:c-d_e", "hub.ping", "HUB.shutdown", "Hub.", "hub", "hubX.y", "a b", "a\nb", "é", strings.Repeat("x", 128), strings.Repeat("x", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := hub.ValidateType(s)
		if want := validType(s); (err == nil) != want {
			t.Fatalf("ValidateType(%q) = %v, want valid=%v", s, err, want)
		}
		if err == nil && strings.ContainsAny(s, "\r\n\x00 \"\\") {
			t.Fatalf("ValidateType(%q) accepted a byte that could break a frame or a record", s)
		}
	})
}

func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"", "AAA-17", "x", "a b", "a\tb", "a\nb", "a\rb", "\x7f", "é", "~!", strings.Repeat("1", 128), strings.Repeat("1", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := hub.ValidateID(s)
		want := len(s) >= 1 && len(s) <= hub.MaxIDLen
		for _, c := range []byte(s) {
			if c <= ' ' || c > '~' {
				want = false
			}
		}
		if (err == nil) != want {
			t.Fatalf("ValidateID(%q) = %v, want valid=%v", s, err, want)
		}
		if err == nil && strings.ContainsAny(s, "\r\n \t\x00") {
			t.Fatalf("ValidateID(%q) accepted whitespace", s)
		}
	})
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"", "-", "-1", "A-", "A-0", "A-1", "AAA-17", "a-b-3", "A-18446744073709551615", "A-18446744073709551616", "A-+1", "A- 1", "A-01", "c-x-y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		epoch, seq, ok := hub.ParseID(s)
		if !ok {
			if epoch != "" || seq != 0 {
				t.Fatalf("ParseID(%q) failed but returned (%q, %d)", s, epoch, seq)
			}
			return
		}
		if epoch == "" || seq == 0 {
			t.Fatalf("ParseID(%q) = (%q, %d, true): empty epoch or zero seq", s, epoch, seq)
		}
		if strings.HasSuffix(s, "-"+strconv.FormatUint(seq, 10)) && s[:len(s)-len(strconv.FormatUint(seq, 10))-1] != epoch {
			t.Fatalf("ParseID(%q): epoch %q is not the part before the last '-'", s, epoch)
		}
		// Round trip: formatting (epoch, seq) the hub's way parses back to the
		// same pair, and a canonical id is unchanged by the round trip.
		canon := epoch + "-" + strconv.FormatUint(seq, 10)
		e2, s2, ok2 := hub.ParseID(canon)
		if !ok2 || e2 != epoch || s2 != seq {
			t.Fatalf("ParseID(%q) = (%q, %d, %v), want (%q, %d, true)", canon, e2, s2, ok2, epoch, seq)
		}
		if strings.Contains(s[len(epoch)+1:], "-") {
			t.Fatalf("ParseID(%q): sequence part %q holds a '-'", s, s[len(epoch)+1:])
		}
	})
}

// FuzzEnvelope publishes an arbitrary type and payload to a registered
// connection. A refused event is never delivered; an accepted one is one
// line of JSON that decodes back to the same id, type and an equivalent
// payload, and its SSE record is exactly id:, event:, data: and a blank
// line: nothing the caller gives can add a line to the stream.
func FuzzEnvelope(f *testing.F) {
	seeds := []struct{ typ, payload string }{
		{"DRAFT_UPDATED", `{"draftId":42}`},
		{"A", ``},
		{"A", `null`},
		{"A", "  \n\t "},
		{"A", `"line1\nline2\r\n"`},
		{"A", "{\n  \"a\": [1, 2,\r\n 3]\n}"},
		{"A", `"\u2028\u2029</script>"`},
		{"A", `[true,false,null,1e400,-0.0,"x"]`},
		{"A", `{"a":1}{"b":2}`},
		{"A", `{"a":"` + "\xff\xfe" + `"}`},
		{"A", `{`},
		{"A\nid: 1", `1`},
		{"hub.connected", `{}`},
		{"A", "\"\x00\""},
	}
	for _, s := range seeds {
		f.Add(s.typ, []byte(s.payload))
	}
	h := hub.New(hub.Options{Node: "n", Epoch: "EP", SendQueue: 1 << 20})
	f.Cleanup(h.Stop)
	s := newSink()
	c, err := h.Register(ws("u1"), s)
	if err != nil {
		f.Fatalf("Register: %v", err)
	}
	f.Cleanup(func() { h.Unregister(c) })
	drain(c) // hub.connected

	f.Fuzz(func(t *testing.T, typ string, payload []byte) {
		evs, err := h.Publish(context.Background(), []string{"u1"}, typ, json.RawMessage(payload))
		msgs, _ := drain(c)
		if err != nil {
			if len(msgs) != 0 {
				t.Fatalf("refused event (%v) delivered %d messages", err, len(msgs))
			}
			if validType(typ) && json.Valid(payload) {
				t.Fatalf("Publish(%q, %q) refused a valid event: %v", typ, payload, err)
			}
			return
		}
		if !validType(typ) {
			t.Fatalf("Publish accepted the invalid type %q", typ)
		}
		if len(bytes.TrimSpace(payload)) > 0 && !json.Valid(payload) {
			t.Fatalf("Publish accepted the invalid payload %q", payload)
		}
		if len(evs) != 1 || len(msgs) != 1 {
			t.Fatalf("got %d ids and %d messages, want 1 and 1", len(evs), len(msgs))
		}
		m := msgs[0]
		if m.ID != evs[0].ID || m.Type != typ || m.Control() {
			t.Fatalf("message id %q type %q, want %q %q", m.ID, m.Type, evs[0].ID, typ)
		}
		if err := hub.ValidateID(m.ID); err != nil {
			t.Fatalf("id %q: %v", m.ID, err)
		}
		checkFrame(t, m, typ, payload)
		checkRecord(t, m)
	})
}

func checkFrame(t *testing.T, m *hub.Message, typ string, payload []byte) {
	t.Helper()
	if bytes.ContainsAny(m.Frame, "\r\n") || !json.Valid(m.Frame) {
		t.Fatalf("frame %q is not one line of valid JSON", m.Frame)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(m.Frame, &env); err != nil {
		t.Fatalf("frame %q: %v", m.Frame, err)
	}
	if len(env) != 4 {
		t.Fatalf("frame %q has fields %v, want id, type, payload, timestamp", m.Frame, keys(env))
	}
	var id, gotType, ts string
	for name, dst := range map[string]*string{"id": &id, "type": &gotType, "timestamp": &ts} {
		if err := json.Unmarshal(env[name], dst); err != nil {
			t.Fatalf("frame %q: field %s: %v", m.Frame, name, err)
		}
	}
	if id != m.ID || gotType != typ {
		t.Fatalf("frame %q decodes to id %q type %q, want %q %q", m.Frame, id, gotType, m.ID, typ)
	}
	if _, err := time.Parse(hub.TimeFormat, ts); err != nil {
		t.Fatalf("timestamp %q: %v", ts, err)
	}
	want := any(nil)
	if len(bytes.TrimSpace(payload)) > 0 {
		if err := decodeNumbers(payload, &want); err != nil {
			t.Fatalf("accepted payload %q does not decode: %v", payload, err)
		}
	}
	var got any
	if err := decodeNumbers(env["payload"], &got); err != nil {
		t.Fatalf("frame payload %q: %v", env["payload"], err)
	}
	wb, _ := json.Marshal(want)
	gb, _ := json.Marshal(got)
	if !bytes.Equal(wb, gb) {
		t.Fatalf("payload %q came back as %q", payload, env["payload"])
	}
}

// checkRecord: exactly "id: ", "event: ", "data: " lines, then one blank line.
func checkRecord(t *testing.T, m *hub.Message) {
	t.Helper()
	rec := string(m.SSE)
	if !strings.HasSuffix(rec, "\n\n") || strings.HasSuffix(rec, "\n\n\n") {
		t.Fatalf("record %q does not end with exactly one blank line", rec)
	}
	if strings.ContainsRune(rec, '\r') {
		t.Fatalf("record %q holds a CR", rec)
	}
	lines := strings.Split(strings.TrimSuffix(rec, "\n\n"), "\n")
	want := []string{"id: " + m.ID, "event: " + m.Type, "data: " + string(m.Frame)}
	if len(lines) != len(want) {
		t.Fatalf("record %q has %d lines, want 3", rec, len(lines))
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Fatalf("record line %d = %q, want %q", i, lines[i], want[i])
		}
	}
}

// decodeNumbers decodes b keeping numbers as their literal text.
func decodeNumbers(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

func keys(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
