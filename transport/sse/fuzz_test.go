package sse_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/transport/sse"
)

// FuzzLastEventID opens a stream with an arbitrary Last-Event-ID header and
// last_event_id query value. The answer is either a JSON error or a stream
// that a strict text/event-stream parser reads to its end; hub.connected
// says recovered:true (with the right number of missed events, replayed in
// order) for an id or a position of the hub's epoch that is not from the
// future (an id the user's history does not hold counts as a position), and
// recovered:false with missed 0 for anything else.
func FuzzLastEventID(f *testing.F) {
	h := hub.New(hub.Options{Node: "hub-test", Epoch: "EP", HistorySize: 100, HistoryTTL: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	h.Start()
	v, err := auth.New(context.Background(), auth.Options{Secret: hubtest.Secret})
	if err != nil {
		f.Fatalf("auth.New: %v", err)
	}
	srv := httptest.NewServer(sse.New(sse.Options{Hub: h, Auth: v, Logger: slog.New(slog.DiscardHandler)}))
	f.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		h.Stop()
		v.Close()
	})
	tok := hubtest.Token(f, "u1", time.Hour)
	// u1's history: EP-1, EP-3, EP-4; EP-2 belongs to u2.
	var own []string
	for _, u := range []string{"u1", "u2", "u1", "u1"} {
		evs, err := h.Publish(context.Background(), []string{u}, "A", json.RawMessage(`{"u":"`+u+`"}`))
		if err != nil {
			f.Fatal(err)
		}
		if u == "u1" {
			own = append(own, evs[0].ID)
		}
	}
	for _, s := range [][2]string{
		{"", ""}, {"EP-1", ""}, {"", "EP-3"}, {"EP-4", "EP-1"}, {"EP-2", ""}, {"", "EP-2"},
		{"EP-999", ""}, {"OTHER-1", ""}, {"EP-0", ""}, {"EP-01", ""}, {"-1", "x"},
		{"EP-1\r\nevent: x", ""}, {"", "EP-1\ndata: {}"}, {"\x00", "\xff"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, header, query string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		defer waitGone(t, h) // also after a failure, so that one does not cascade
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/sse/realtime?"+url.Values{"last_event_id": {query}}.Encode(), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok)
		if header != "" {
			req.Header["Last-Event-Id"] = []string{header}
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			return // the client refuses to send this header value (CR, LF, NUL)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d for header %q query %q", resp.StatusCode, header, query)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("Content-Type %q", ct)
		}
		p := newParser(resp.Body)
		rec, err := p.next()
		if err != nil {
			t.Fatalf("first record: %v", err)
		}
		c := expectConnected(t, rec)
		// The id the server saw: net/http trims the header value's
		// surrounding blanks; the header takes precedence when not empty.
		last := trimOWS(header)
		if last == "" {
			last = query
		}
		// Any id or position of the epoch that is not from the future
		// resumes: nothing was dropped, and an id u1's history does not
		// hold (EP-2, u2's) counts as a position; a non-canonical spelling
		// (EP-01) names the same place. u1 is replayed its events after it.
		if from, ok := resumeSeq(last); !ok {
			if c.Recovered || c.Missed != 0 {
				t.Fatalf("last id %q (no place of this hub) gave recovered %v missed %d", last, c.Recovered, c.Missed)
			}
		} else if want := countAfter(own, from); !c.Recovered || c.Missed != want {
			t.Fatalf("last id %q gave recovered %v missed %d, want true %d", last, c.Recovered, c.Missed, want)
		}
		for _, want := range own[len(own)-c.Missed:] {
			rec, err := p.next()
			if err != nil {
				t.Fatalf("replayed record: %v", err)
			}
			id, typ, data, _, ok := rec.event()
			if !ok || id != want || typ != "A" || !json.Valid([]byte(data)) {
				t.Fatalf("replayed %q %q %q, want id %q", id, typ, data, want)
			}
		}
		// End the stream from the server side and read it to its end.
		if n := h.DisconnectUser("u1"); n != 1 {
			t.Fatalf("DisconnectUser = %d, want 1", n)
		}
		for {
			rec, err := p.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("stream after the replay: %v", err)
			}
			if _, typ, _, _, ok := rec.event(); ok && typ != "hub.closed" {
				t.Fatalf("unexpected event %q after the replay", typ)
			}
		}
	})
}

// waitGone closes any stream of u1 left over and waits until the hub has
// unregistered it.
func waitGone(t *testing.T, h *hub.Hub) {
	h.DisconnectUser("u1")
	hubtest.Eventually(t, 5*time.Second, "the stream to be unregistered after its end", func() bool {
		return h.UserConnections("u1") == 0
	})
}

// trimOWS drops the blanks HTTP strips around a header value.
func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// resumeSeq is the place in FuzzLastEventID's hub (epoch EP, 4 events
// published) that a resume from last starts after, as the hub reads it:
// a position ("<epoch>-<seq>p", seq 0 allowed) or an event id of the
// epoch, not from the future.
func resumeSeq(last string) (uint64, bool) {
	var (
		epoch string
		seq   uint64
		ok    bool
	)
	if at, isPos := hub.IsPosition(last); isPos {
		if e, zero := strings.CutSuffix(at, "-0"); zero && e != "" {
			epoch, seq, ok = e, 0, true
		} else {
			epoch, seq, ok = hub.ParseID(at)
		}
	} else {
		epoch, seq, ok = hub.ParseID(last)
	}
	return seq, ok && epoch == "EP" && seq <= 4
}

// countAfter is the number of ids (in seq order) with a seq above from.
func countAfter(ids []string, from uint64) int {
	n := 0
	for _, id := range ids {
		if _, s, _ := hub.ParseID(id); s > from {
			n++
		}
	}
	return n
}
