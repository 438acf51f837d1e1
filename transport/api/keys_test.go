package api_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/hubd/hub/hub"
)

// keyFields decodes an envelope's key and volatile fields (nil: absent).
func keyFields(t *testing.T, m *hub.Message) (key *string, volatile *bool) {
	t.Helper()
	var env struct {
		Key      *string `json:"key"`
		Volatile *bool   `json:"volatile"`
	}
	if err := json.Unmarshal(m.Frame, &env); err != nil {
		t.Fatalf("frame %s: %v", m.Frame, err)
	}
	return env.Key, env.Volatile
}

// TestKeyAndVolatile: the broadcast and batch APIs take a coalescing key
// and volatile; the envelope carries "key" or "volatile":true, neither for
// a plain event ("volatile":false and "key":null are plain); a resume
// replays the newest of each key and no volatile event; in a batch a
// refused message names its field and the others are applied.
func TestKeyAndVolatile(t *testing.T) {
	e := newEnv(t, nil)
	u1 := e.connect(t, "u1", hub.TransportWebSocket)
	bodies := []string{
		`{"userIds":["u1"],"type":"DRAFT","payload":1,"key":"draft:42"}`,
		`{"userIds":["u1"],"type":"TYPING","payload":2,"volatile":true}`,
		`{"userIds":["u1"],"type":"PLAIN","payload":3,"volatile":false}`,
		`{"userIds":["u1"],"type":"PLAIN","payload":4,"key":null,"volatile":null}`,
		`{"all":true,"type":"DRAFT","payload":5,"key":"draft:42"}`,
		`{"all":true,"type":"TYPING","payload":6,"volatile":true}`,
	}
	var ids []string
	for _, b := range bodies {
		got := e.post(t, "/api/broadcast", keyCred, b)
		if got.status != http.StatusAccepted {
			t.Fatalf("%s: status %d (%s)", b, got.status, got.body)
		}
		var ans struct {
			ID     string `json:"id"`
			Events []struct {
				ID string `json:"id"`
			} `json:"events"`
		}
		if err := json.Unmarshal(got.body, &ans); err != nil {
			t.Fatal(err)
		}
		if len(ans.Events) > 0 {
			ans.ID = ans.Events[0].ID
		}
		ids = append(ids, ans.ID)
	}
	wantKey := []string{"draft:42", "", "", "", "draft:42", ""}
	wantVolatile := []bool{false, true, false, false, false, true}
	for i, m := range u1.waitEvents(t, len(bodies)) {
		key, vol := keyFields(t, m)
		if m.ID != ids[i] || (key == nil) != (wantKey[i] == "") || (key != nil && *key != wantKey[i]) ||
			(vol != nil) != wantVolatile[i] || (vol != nil && !*vol) {
			t.Errorf("event %d: %s, want key %q volatile %v", i, m.Frame, wantKey[i], wantVolatile[i])
		}
	}

	// a resume from before them: the plain events and the newest draft
	// (the broadcast), no volatile event
	c, err := e.hub.Register(hub.ConnInfo{UserID: "u1", Transport: hub.TransportWebSocket, LastEventID: ids[0]}, &sink{wake: make(chan struct{}, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.hub.Unregister(c)
	msgs, _ := c.Next(nil)
	var replay []string
	for _, m := range msgs[1:] {
		replay = append(replay, m.ID)
	}
	if want := []string{ids[2], ids[3], ids[4]}; !slices.Equal(replay, want) {
		t.Fatalf("replay %v, want %v", replay, want)
	}
	if !strings.Contains(string(msgs[0].Frame), `"recovered":true,"missed":3`) {
		t.Fatalf("hub.connected %s, want recovered, missed 3", msgs[0].Frame)
	}

	// batch: keyed and volatile messages, and refused ones naming the field
	got := e.post(t, "/api/broadcast/batch", keyCred, `{"messages":[`+
		`{"userIds":["u1"],"type":"DRAFT","key":"draft:7"},`+
		`{"userIds":["u1"],"type":"TYPING","volatile":true},`+
		`{"userIds":["u1"],"type":"DRAFT","key":"no spaces"},`+
		`{"userIds":["u1"],"type":"DRAFT","key":"draft:7","volatile":true},`+
		`{"userIds":["u1"],"type":"DRAFT","volatile":"no"},`+
		`{"userIds":["u1"],"type":"LAST","volatile":false}]}`)
	if got.status != http.StatusAccepted {
		t.Fatalf("batch: status %d (%s)", got.status, got.body)
	}
	var res struct {
		Results []struct {
			Events []struct {
				ID string `json:"id"`
			} `json:"events"`
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(got.body, &res); err != nil || len(res.Results) != 6 {
		t.Fatalf("batch answer %s: %v", got.body, err)
	}
	for i, field := range map[int]string{2: "messages[2].key", 3: "messages[3].volatile", 4: "messages[4].volatile"} {
		r := res.Results[i]
		if r.Error == nil || r.Error.Code != "invalid_request" || !strings.Contains(r.Error.Message, field) {
			t.Errorf("result %d = %+v, want invalid_request naming %s", i, r.Error, field)
		}
	}
	evs := u1.waitType(t, "LAST")
	if n := len(evs); n != len(bodies)+2 {
		t.Fatalf("u1 got %d events before LAST, want %d", n, len(bodies)+2)
	}
	if key, _ := keyFields(t, evs[len(bodies)]); key == nil || *key != "draft:7" {
		t.Errorf("batch keyed event %s", evs[len(bodies)].Frame)
	}
	if _, vol := keyFields(t, evs[len(bodies)+1]); vol == nil || !*vol {
		t.Errorf("batch volatile event %s", evs[len(bodies)+1].Frame)
	}
}
