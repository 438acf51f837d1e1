package web_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
)

// TestDraftBrowser: two tabs of one user show the same draft, each with a
// small editor view built on hub.js (a <pre> that shows the newest
// DRAFT_UPDATED). One tab loses its network (cut by a proxy) while the
// draft is edited 100 times (each edit published through the API with the
// coalescing key "draft:1", as the application's backend would); the tab
// that stayed sees all 100 live. The other, once back, resumes with one
// event, carrying the key, and shows the final draft.
func TestDraftBrowser(t *testing.T) {
	b := startBrowser(t)
	for _, transport := range []string{"websocket", "sse"} {
		t.Run(transport, func(t *testing.T) { testDraft(t, b, transport) })
	}
}

// draftView adds the editor view to a started page: the draft's text in
// <pre id="draft">, and every DRAFT_UPDATED as the listener got it (id,
// key, text) in __t.drafts.
const draftView = `(() => {
  const pre = document.createElement("pre");
  pre.id = "draft";
  document.body.append(pre);
  __t.drafts = [];
  __hub.on("DRAFT_UPDATED", (e) => {
    pre.textContent = e.payload.text;
    __t.drafts.push({ id: e.id, key: e.key ?? null, volatile: e.volatile ?? null, text: e.payload.text });
  });
  return true;
})()`

type draftEvent struct {
	ID       string  `json:"id"`
	Key      *string `json:"key"`
	Volatile *bool   `json:"volatile"`
	Text     string  `json:"text"`
}

func testDraft(t *testing.T, b context.Context, transport string) {
	h := startHub(t, nil)
	px := hubtest.StartProxy(t, h.Servers.Addr())
	user := "u-draft-" + transport
	tok := hubtest.Token(t, user, time.Hour)

	stay := openPage(t, b, h.URL)
	stay.start(t, map[string]any{"token": tok, "transports": []string{transport}})
	away := openPage(t, b, "http://"+px.Addr())
	away.start(t, map[string]any{"token": tok, "transports": []string{transport}, "backoff": map[string]int{"baseMs": 50, "maxMs": 200}})
	for _, p := range []*page{stay, away} {
		p.waitFor(t, "connected", `__hub.state === "connected"`, 10*time.Second)
		evalT[bool](t, p, draftView)
	}

	edit := func(text string) string {
		t.Helper()
		ids, err := postBroadcast(context.Background(), h.client, h.API,
			map[string]any{"userIds": []string{user}, "type": "DRAFT_UPDATED", "payload": map[string]string{"text": text}, "key": "draft:1"})
		if err != nil {
			t.Fatalf("publish an edit: %v", err)
		}
		return ids[0]
	}
	first := edit("Dear team,")
	for _, p := range []*page{stay, away} {
		p.waitFor(t, "the first draft", `document.getElementById("draft").textContent === "Dear team,"`, 10*time.Second)
	}

	px.Cut()
	away.waitFor(t, "the tab to lose its connection", `__hub.state === "reconnecting"`, 10*time.Second)
	var text, last string
	for i := 1; i <= 100; i++ {
		text = fmt.Sprintf("Dear team, edit %d of 100: the meeting moves to %02d:00.", i, 8+i%10)
		last = edit(text)
	}
	stay.waitFor(t, "all 100 edits live", fmt.Sprintf(`__t.drafts.length === 101 && __t.drafts[100].id === %q`, last), 10*time.Second)
	if got := evalT[string](t, stay, `document.getElementById("draft").textContent`); got != text {
		t.Fatalf("the tab that stayed shows %q, want %q", got, text)
	}

	px.Restore()
	away.waitFor(t, "the tab back", `__t.connected.length >= 2 && __hub.state === "connected"`, 15*time.Second)
	away.waitFor(t, "the final draft", fmt.Sprintf(`document.getElementById("draft").textContent === %q`, text), 10*time.Second)

	drafts := evalT[[]draftEvent](t, away, "__t.drafts")
	if len(drafts) != 2 || drafts[0].ID != first || drafts[1].ID != last {
		t.Fatalf("the tab that was away got %+v, want the first edit and, on resume, the last one only (%s)", drafts, last)
	}
	for _, d := range drafts {
		if d.Key == nil || *d.Key != "draft:1" || d.Volatile != nil {
			t.Errorf("listener got %+v, want key draft:1 on the envelope", d)
		}
	}
	c := away.connected(t)
	if got := c[len(c)-1]; got["recovered"] != true || got["missed"] != float64(1) {
		t.Errorf("resumed hub.connected recovered=%v missed=%v, want true, 1", got["recovered"], got["missed"])
	}
	st := away.states(t)
	if s := st[len(st)-1]; s.State != "connected" || s.Recovered == nil || !*s.Recovered || s.Missed == nil || *s.Missed != 1 {
		t.Errorf("last state %+v, want connected, recovered, missed 1", s)
	}
	if lid := evalT[string](t, away, "__hub.lastEventId"); lid != last {
		t.Errorf("lastEventId %q, want %q", lid, last)
	}
	assertNoPageErrors(t, away)
	assertNoPageErrors(t, stay)
}
