package api

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"testing"

	"github.com/hubd/hub/hub"
)

// FuzzFastJSON checks the fast paths against encoding/json on valid JSON:
// whenever a fast path answers, it must answer what encoding/json does.
func FuzzFastJSON(f *testing.F) {
	for _, s := range []string{
		`{"userIds":["a","b"],"type":"T","payload":{"x":[1,"]}",{"y":null}]},"idempotencyKey":"k"}`,
		`{"all":true,"type":"T","payload":"s\"tr"}`,
		`{"type":"A","type":"B"}`,
		` { "payload" : [ ] , "all" : false } `,
		`{"us\u0065rIds":["x"]}`,
		`["a", "b\\c", 1, {"k":"v"}, [], "\u00e9"]`,
		`{}`, `[]`, `"plain"`, `a<b&c>d`, "bench-42", "tab\there", `"caf\u00e9"`, "\"\xff\"", `12.5e3`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// data as a user id and an event id: the hand-built answer is
		// json.Marshal's, byte for byte
		evs := []hub.UserEvent{{UserID: string(data), ID: "E-1", Devices: len(data)}, {UserID: "u2", ID: string(data)}}
		if got, ok := appendUsersAnswer(nil, evs); ok {
			want, err := json.Marshal(usersAnswer{Events: evs})
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("answer for %q: %s, json.Marshal %s (%v)", data, got, want, err)
			}
		}
		if !json.Valid(data) {
			return
		}
		if m, ok := fastFieldMap(data); ok {
			var want map[string]json.RawMessage
			if err := json.Unmarshal(data, &want); err != nil {
				t.Fatalf("fastFields accepted %q, encoding/json: %v", data, err)
			}
			if !maps.EqualFunc(m, want, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
				t.Fatalf("fastFields(%q) = %q, encoding/json %q", data, m, want)
			}
		}
		if a, ok := fastArray(data); ok {
			var want []json.RawMessage
			if err := json.Unmarshal(data, &want); err != nil {
				t.Fatalf("fastArray accepted %q, encoding/json: %v", data, err)
			}
			if !slices.EqualFunc(a, want, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
				t.Fatalf("fastArray(%q) = %q, encoding/json %q", data, a, want)
			}
		}
		if got, ok := fastStrings(data, []string{"before"}); ok {
			var want []string
			if err := json.Unmarshal(data, &want); err != nil || !slices.Equal(got, append([]string{"before"}, want...)) {
				t.Fatalf("fastStrings(%q) = %q, encoding/json %q (%v)", data, got, want, err)
			}
		}
		if s, ok := simpleString(data); ok {
			var want string
			if err := json.Unmarshal(data, &want); err != nil || s != want {
				t.Fatalf("simpleString(%q) = %q, encoding/json %q (%v)", data, s, want, err)
			}
		}
	})
}

// fastFieldMap is fastFields with broadcastFields as a map, the form
// encoding/json gives.
func fastFieldMap(data []byte) (map[string]json.RawMessage, bool) {
	out := make([]json.RawMessage, len(broadcastFields))
	if !fastFields(data, broadcastFields, out) {
		return nil, false
	}
	m := map[string]json.RawMessage{}
	for i, v := range out {
		if v != nil {
			m[broadcastFields[i]] = v
		}
	}
	return m, true
}

func TestFastPathsFallBack(t *testing.T) {
	// escaped keys, unknown keys and escaped strings go to encoding/json
	if _, ok := fastFieldMap([]byte(`{"us\u0065rIds":["x"]}`)); ok {
		t.Fatal("an escaped key took the fast path")
	}
	if _, ok := fastFieldMap([]byte(`{"UserIds":["x"]}`)); ok {
		t.Fatal("an unknown key took the fast path")
	}
	if _, ok := simpleString([]byte(`"a\nb"`)); ok {
		t.Fatal("an escaped string took the fast path")
	}
	m, ok := fastFieldMap([]byte(`{"type":"A","payload":{"a":"}"},"type":"B"}`))
	if !ok || string(m["type"]) != `"B"` || string(m["payload"]) != `{"a":"}"}` {
		t.Fatalf("got %q %v", m, ok)
	}
}

func TestBatchAnswerIsMarshal(t *testing.T) {
	// a batch answer appended piece by piece is json.Marshal's output
	// (HTML characters escaped)
	evs := []hub.UserEvent{{UserID: "a<b&c", ID: "E-1"}}
	e := invalidRequest("messages[1].type: must be a string")
	got := []byte(`{"results":[`)
	got, ok := appendUsersAnswer(got, evs)
	if ok {
		t.Fatal("an id with HTML characters took the fast path")
	}
	first, err := json.Marshal(usersAnswer{Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, first...)
	got = appendBatchError(append(got, ','), e)
	got, ok = appendUsersAnswer(append(got, ','), []hub.UserEvent{{UserID: "u2", ID: "E-2", Devices: 3}})
	if !ok {
		t.Fatal("a plain id did not take the fast path")
	}
	got = append(got, "]}"...)
	type errEntry struct {
		Error *apiError `json:"error"`
	}
	want, err := json.Marshal(struct {
		Results []any `json:"results"`
	}{[]any{usersAnswer{Events: evs}, errEntry{e}, usersAnswer{Events: []hub.UserEvent{{UserID: "u2", ID: "E-2", Devices: 3}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("appended %s\nmarshal  %s", got, want)
	}
}
