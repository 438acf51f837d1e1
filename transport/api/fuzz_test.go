package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/transport/api"
)

// fuzzMaxPayload keeps the body limit small so that the fuzzer reaches 413.
const fuzzMaxPayload = 2048

// fuzzHandler returns a constructor of the real API over one real hub
// (history off, so that arbitrary user ids leave nothing behind between
// iterations). Each iteration builds its own API, so that an idempotency key
// remembered by one iteration does not answer for another.
func fuzzHandler(f *testing.F) func() http.Handler {
	h, v := fuzzHub(f)
	return func() http.Handler { return fuzzAPI(h, v) }
}

// fuzzHub starts the hub (history off) and the verifier of a fuzz target.
func fuzzHub(f *testing.F) (*hub.Hub, *auth.Verifier) {
	h := hub.New(hub.Options{Node: "hub-1", Logger: slog.New(slog.DiscardHandler)})
	h.Start()
	v, err := auth.New(context.Background(), auth.Options{Secret: hubtest.Secret, APIKeys: []string{apiKey}})
	if err != nil {
		f.Fatalf("auth.New: %v", err)
	}
	f.Cleanup(func() {
		h.Stop()
		v.Close()
	})
	return h, v
}

// fuzzAPI is a fresh API over h and v.
func fuzzAPI(h *hub.Hub, v *auth.Verifier) http.Handler {
	mux := http.NewServeMux()
	api.New(api.Options{Hub: h, Auth: v, MaxPayload: fuzzMaxPayload, Logger: slog.New(slog.DiscardHandler)}).RegisterInternal(mux)
	return mux
}

// postFuzz posts body with the API key and checks the parts of the answer
// common to every endpoint: status 202, 400 or 413 and a JSON body.
func postFuzz(t *testing.T, h http.Handler, path string, body []byte) (int, map[string]json.RawMessage) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("X-API-Key", apiKey)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	status := rec.Code
	if status != http.StatusAccepted && status != http.StatusBadRequest && status != http.StatusRequestEntityTooLarge {
		t.Fatalf("POST %s %q: status %d, want 202, 400 or 413 (body %s)", path, body, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("POST %s: Content-Type %q", path, ct)
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("POST %s %q: body %q is not a JSON object: %v", path, body, rec.Body, err)
	}
	switch {
	case len(body) > fuzzMaxPayload && status != http.StatusRequestEntityTooLarge:
		t.Fatalf("POST %s: %d-byte body answered %d, want 413", path, len(body), status)
	case len(body) <= fuzzMaxPayload && status == http.StatusRequestEntityTooLarge:
		t.Fatalf("POST %s: %d-byte body answered 413", path, len(body))
	case status == http.StatusRequestEntityTooLarge:
		checkError(t, out, "payload_too_large")
	case status == http.StatusBadRequest:
		checkError(t, out, "invalid_json", "invalid_request")
		if (!json.Valid(body) || !utf8.Valid(body)) && errorCode(out) != "invalid_json" {
			t.Fatalf("POST %s: body %q is not UTF-8 JSON but the code is %q", path, body, errorCode(out))
		}
	case !json.Valid(body):
		t.Fatalf("POST %s: body %q is not JSON but was accepted", path, body)
	case !utf8.Valid(body):
		t.Fatalf("POST %s: body %q is not valid UTF-8 but was accepted", path, body)
	}
	return status, out
}

func errorCode(out map[string]json.RawMessage) string {
	var e struct{ Code string }
	_ = json.Unmarshal(out["error"], &e)
	return e.Code
}

// checkError checks {"error":{"code":<one of codes>,"message":"..."}}.
func checkError(t *testing.T, out map[string]json.RawMessage, codes ...string) {
	t.Helper()
	var e struct{ Code, Message string }
	if len(out) != 1 || json.Unmarshal(out["error"], &e) != nil {
		t.Fatalf("error body %v is not {\"error\":{...}}", out)
	}
	if !slices.Contains(codes, e.Code) || e.Message == "" {
		t.Fatalf("error %+v, want a code among %v and a message", e, codes)
	}
}

// checkAnswer checks a broadcast's 202 body against the request object req:
// {"events":[{userId,id,devices}...]} naming only requested users, or
// {"id":...,"devices":N}.
func checkAnswer(t *testing.T, out map[string]json.RawMessage, req json.RawMessage) {
	t.Helper()
	var asked struct {
		UserIDs []string `json:"userIds"`
		All     bool     `json:"all"`
	}
	_ = json.Unmarshal(req, &asked)
	if raw, ok := out["id"]; ok {
		var id string
		var devices int
		if len(out) != 2 || json.Unmarshal(raw, &id) != nil || hub.ValidateID(id) != nil || !asked.All ||
			json.Unmarshal(out["devices"], &devices) != nil || devices < 0 {
			t.Fatalf("answer %v for request %s, want an id and devices", out, req)
		}
		return
	}
	if len(out) != 1 {
		t.Fatalf("answer %v: want exactly one of events and id", out)
	}
	var events []struct {
		UserID, ID string
		Devices    *int
	}
	if err := json.Unmarshal(out["events"], &events); err != nil || len(events) == 0 {
		t.Fatalf("answer %v for request %s: no events (%v)", out, req, err)
	}
	for _, e := range events {
		if hub.ValidateID(e.ID) != nil || !slices.Contains(asked.UserIDs, e.UserID) || e.Devices == nil || *e.Devices < 0 {
			t.Fatalf("answer event %+v for request %s: bad id or devices, or a user not asked for", e, req)
		}
	}
}

func FuzzBroadcastBody(f *testing.F) {
	for _, s := range []string{
		`{"userIds":["u1","u2"],"type":"DRAFT_UPDATED","payload":{"draftId":42}}`,
		`{"all":true,"type":"ANNOUNCEMENT","payload":"maintenance at 22:00"}`,
		`{"userIds":["u1","u1"],"type":"A","payload":null,"idempotencyKey":"k1"}`,
		`{"userIds":["u1"],"all":true,"type":"A"}`,
		`{"all":false,"type":"A"}`,
		`{"userIds":[],"type":"A"}`,
		`{"userIds":[""],"type":"A"}`,
		`{"userIds":[1],"type":"A"}`,
		`{"userIds":["u1"],"type":"hub.connected"}`,
		`{"userIds":["u1"],"type":"A","extra":1}`,
		`{"userIds":["u1"],"type":"A","key":"draft:42"}`,
		`{"all":true,"type":"A","key":"a.b_c-D:9","payload":1}`,
		`{"userIds":["u1"],"type":"A","volatile":true}`,
		`{"userIds":["u1"],"type":"A","volatile":false,"key":null}`,
		`{"userIds":["u1"],"type":"A","key":"k","volatile":true}`,
		`{"userIds":["u1"],"type":"A","key":"has space"}`,
		`{"userIds":["u1"],"type":"A","volatile":"true"}`,
		`{"userIds":["u1"],"type":"A","payload":{"a":[1,2,`,
		`{"userIds":["u1"],"type":"A"}{"x":1}`,
		`[]`, `null`, `""`, ``, `{`, "\xff",
		`{"userIds":["u1"],"type":"A","payload":"` + strings.Repeat("x", fuzzMaxPayload) + `"}`,
	} {
		f.Add([]byte(s))
	}
	newHandler := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		status, out := postFuzz(t, newHandler(), "/api/broadcast", body)
		if status == http.StatusAccepted {
			checkAnswer(t, out, body)
		}
	})
}

func FuzzBatchBody(f *testing.F) {
	for _, s := range []string{
		`{"messages":[{"userIds":["u1"],"type":"A","payload":1},{"all":true,"type":"B"},{"type":"C"}]}`,
		`{"messages":[]}`,
		`{"messages":null}`,
		`{"messages":{}}`,
		`{"messages":[1,"x",null,[]]}`,
		`{"messages":[{"userIds":["u1"],"type":"A","idempotencyKey":"k"},{"userIds":["u1"],"type":"A","idempotencyKey":"k"}]}`,
		`{"messages":[{"userIds":["u1"],"type":"hub.x"}],"other":1}`,
		`{"messages":[{"userIds":["u1"],"type":"A","key":"k"},{"all":true,"type":"B","volatile":true},{"type":"C","key":"k","volatile":true}]}`,
		`{"messages":[`, `[]`, ``, `{}`,
	} {
		f.Add([]byte(s))
	}
	newHandler := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		status, out := postFuzz(t, newHandler(), "/api/broadcast/batch", body)
		if status != http.StatusAccepted {
			return
		}
		var req struct{ Messages []json.RawMessage }
		if err := json.Unmarshal(body, &req); err != nil {
			t.Fatalf("batch %q accepted but does not decode: %v", body, err)
		}
		var results []map[string]json.RawMessage
		if len(out) != 1 || json.Unmarshal(out["results"], &results) != nil || len(results) != len(req.Messages) {
			t.Fatalf("batch %q: answer %v, want one result per message (%d)", body, out, len(req.Messages))
		}
		for i, r := range results {
			if _, ok := r["error"]; ok {
				checkError(t, r, "invalid_request")
				continue
			}
			// a repeated idempotencyKey answers with the first message's
			// events (the contract's "returns the first answer")
			if bytes.Contains(req.Messages[i], []byte(`"idempotencyKey"`)) {
				continue
			}
			checkAnswer(t, r, req.Messages[i])
		}
	})
}

// FuzzBroadcastUTF8 publishes arbitrary bytes as the payload (and the user
// id) of a broadcast to users or to all, through the real API: a body that
// is not valid UTF-8 is 400 invalid_json, and the envelope of every
// accepted one, as a recipient's connection gets it (WebSocket frame and
// SSE record), is valid UTF-8 and valid JSON. The fast paths of
// fastjson.go are on this path too.
func FuzzBroadcastUTF8(f *testing.F) {
	for _, s := range []struct {
		payload string
		user    string
		all     bool
	}{
		{`"a\xff\xfeb"`, "u1", false},
		{"\"a\xff\xfeb\"", "u1", false},
		{"{\"\xfe\":1}", "u1", true},
		{`"caf\u00e9 \ud800"`, "u1", false},
		{"\"caf\xc3\xa9 \xe2\x9c\x93\"", "u\xc3\xa9", false},
		{"\"\xed\xa0\x80\"", "u1", false},
		{"[\"\xf4\x90\x80\x80\"]", "u1", true},
		{`null`, "u1\xff", false},
	} {
		f.Add([]byte(s.payload), s.user, s.all)
	}
	h, v := fuzzHub(f)
	mux := fuzzAPI(h, v)
	s := &sink{wake: make(chan struct{}, 1)}
	conn, err := h.Register(hub.ConnInfo{UserID: "u1", Transport: hub.TransportWebSocket}, s)
	if err != nil {
		f.Fatalf("register: %v", err)
	}
	f.Cleanup(func() { h.Unregister(conn) })
	f.Fuzz(func(t *testing.T, payload []byte, user string, all bool) {
		target := `"userIds":["u1",` + string(mustJSONish(user)) + `]`
		if all {
			target = `"all":true`
		}
		body := []byte(`{` + target + `,"type":"T","payload":`)
		body = append(append(body, payload...), '}')
		status, out := postFuzz(t, mux, "/api/broadcast", body)
		if status != http.StatusAccepted {
			return
		}
		// u1 is a recipient either way: its envelope is the one sent
		var ans struct {
			ID     string
			Events []struct{ UserID, ID string }
		}
		raw, _ := json.Marshal(out)
		if err := json.Unmarshal(raw, &ans); err != nil {
			t.Fatalf("answer %s: %v", raw, err)
		}
		want := ans.ID
		for _, e := range ans.Events {
			if e.UserID == "u1" {
				want = e.ID
			}
		}
		deadline := time.NewTimer(5 * time.Second)
		defer deadline.Stop()
		var buf []*hub.Message
		for {
			buf, _ = conn.Next(buf[:0])
			for _, m := range buf {
				if !utf8.Valid(m.Frame) || !utf8.Valid(m.SSE) || !json.Valid(m.Frame) {
					t.Fatalf("body %q: envelope %q is not valid UTF-8 JSON", body, m.Frame)
				}
				if m.ID == want {
					return
				}
			}
			if len(buf) > 0 {
				continue
			}
			select {
			case <-s.wake:
			case <-deadline.C:
				t.Fatalf("body %q: event %s never reached u1", body, want)
			}
		}
	})
}

// mustJSONish quotes s as a JSON string without escaping its bytes, so
// that invalid UTF-8 in s reaches the body as it is (only quotes,
// backslashes and control bytes are escaped).
func mustJSONish(s string) []byte {
	b := []byte{'"'}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, []byte(`\u00`)...)
			b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
