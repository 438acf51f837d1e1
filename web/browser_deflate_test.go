package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/wsproto"
)

// testWebSocketCompression: Chromium, which always offers
// permessage-deflate, negotiates it with the hub, receives a large event
// intact while the hub sends a fraction of its size on the wire (a byte
// counting proxy between them), and its own compressed messages are
// understood, one after another.
func testWebSocketCompression(t *testing.T, b context.Context) {
	h := startHub(t, nil)
	px := hubtest.StartProxy(t, strings.TrimPrefix(h.URL, "http://"))
	p := openPage(t, b, "http://"+px.Addr())
	evalT[bool](t, p, fmt.Sprintf(`(() => {
		window.__z = {msgs: [], ext: null, closed: null};
		const ws = new WebSocket("ws://" + location.host + %q + "?token=" + %q);
		ws.onopen = () => { __z.ext = ws.extensions; };
		ws.onmessage = (e) => { __z.msgs.push(e.data); };
		ws.onclose = (e) => { __z.closed = e.code; };
		window.__zws = ws;
		return true;
	})()`, h.Config.WSPath, hubtest.Token(t, "u1", time.Hour)))
	p.waitFor(t, "hub.connected", `__z.msgs.length >= 1`, 10*time.Second)
	if ext := evalT[string](t, p, "__z.ext"); ext != wsproto.DeflateResponse {
		t.Fatalf("Chromium negotiated %q, want %q", ext, wsproto.DeflateResponse)
	}

	var rows []string
	for i := range 300 {
		rows = append(rows, fmt.Sprintf(`{"id":%d,"name":"item %d","status":"active","tags":["a","b"]}`, i, i))
	}
	payload := json.RawMessage("[" + strings.Join(rows, ",") + "]")
	before := px.FromTarget()
	id := h.publish(t, "BIG", payload, "u1")
	p.waitFor(t, "the large event", `__z.msgs.length >= 2`, 10*time.Second)
	raw := evalT[string](t, p, "__z.msgs[1]")
	var env struct {
		ID      string
		Type    string
		Payload json.RawMessage
	}
	if err := json.Unmarshal([]byte(raw), &env); err != nil || env.ID != id || env.Type != "BIG" || !jsonEqual(env.Payload, payload) {
		t.Fatalf("the page got %.200q (%v)", raw, err)
	}
	hubtest.Eventually(t, 5*time.Second, "the proxy to count the event", func() bool { return px.FromTarget() > before })
	sent := px.FromTarget() - before
	if sent*3 > int64(len(raw)) {
		t.Errorf("the hub sent %d bytes for an envelope of %d: not compressed 3x", sent, len(raw))
	}
	t.Logf("envelope %d bytes, %d on the wire", len(raw), sent)

	// Chromium compresses what it sends (fewer bytes reach the hub than it
	// sends); each message must inflate on its own.
	up := px.ToTarget()
	for i := range 3 {
		evalT[bool](t, p, fmt.Sprintf(`(__zws.send(JSON.stringify({type: "nope", n: %d, pad: "xy".repeat(500)})), true)`, i))
		p.waitFor(t, "hub.error", fmt.Sprintf(`__z.msgs.length >= %d`, 3+i), 10*time.Second)
		if typ := evalT[string](t, p, fmt.Sprintf(`JSON.parse(__z.msgs[%d]).type`, 2+i)); typ != "hub.error" {
			t.Fatalf("message %d answered with %q, want hub.error", i, typ)
		}
	}
	if got := px.ToTarget() - up; got > 1000 { // uncompressed: over 3,000
		t.Errorf("3 messages of over 1,000 bytes took %d bytes on the wire: Chromium did not compress", got)
	}
	if c := evalT[any](t, p, "__z.closed"); c != nil {
		t.Fatalf("closed with %v", c)
	}
	evalT[bool](t, p, `(__zws.close(1000), true)`)
}
