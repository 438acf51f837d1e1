package api_test

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"
	"testing"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/transport/api"
)

// TestIdempotencyAcrossNodes runs two APIs (two nodes, each with its hub)
// on one Redis idempotency store: a key sent to both, one after the other
// or at the same time, gets the identical answer and publishes once.
func TestIdempotencyAcrossNodes(t *testing.T) {
	url := hubtest.RedisURL(t)
	c, prefix := hubtest.RedisClient(t, url), hubtest.RedisPrefix(t, url)
	shared := func(o *api.Options) { o.Idempotency = api.NewRedisIdempotency(c, prefix) }
	nodes := []*env{newEnv(t, shared), newEnv(t, shared)}
	clients := []*client{nodes[0].connect(t, "u1", hub.TransportWebSocket), nodes[1].connect(t, "u1", hub.TransportSSE)}

	// published counts the events each node delivered before a sentinel.
	published := func(t *testing.T, sentinel string) int {
		t.Helper()
		n := 0
		for i, e := range nodes {
			before := len(clients[i].events)
			if r := e.post(t, "/api/broadcast", keyCred, `{"userIds":["u1"],"type":"`+sentinel+`"}`); r.status != 202 {
				t.Fatalf("sentinel: %d %s", r.status, r.body)
			}
			n += len(clients[i].waitType(t, sentinel)) - before
			clients[i].events = clients[i].events[:0]
		}
		return n
	}

	tests := []struct {
		name       string
		concurrent bool
		batch      bool
	}{
		{"one after the other", false, false},
		{"at the same time", true, false},
		{"in batches at the same time", true, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "k-" + strconv.Itoa(i)
			body := `{"userIds":["u1"],"type":"ONCE","idempotencyKey":"` + key + `"}`
			path := "/api/broadcast"
			if tt.batch {
				path, body = "/api/broadcast/batch", `{"messages":[`+body+`]}`
			}
			const perNode = 4
			answers := make([][]byte, 2*perNode)
			send := func(j int) {
				r := nodes[j%2].post(t, path, keyCred, body)
				if r.status != 202 {
					t.Errorf("request %d: %d %s", j, r.status, r.body)
					return
				}
				answers[j] = bytes.TrimSpace(r.body)
			}
			var wg sync.WaitGroup
			for j := range answers {
				if tt.concurrent {
					wg.Go(func() { send(j) })
				} else {
					send(j)
				}
			}
			wg.Wait()
			for j := range answers {
				if !bytes.Equal(answers[j], answers[0]) {
					t.Errorf("answer %d %s differs from %s", j, answers[j], answers[0])
				}
			}
			if !tt.batch {
				var a struct {
					Events []struct{ ID string } `json:"events"`
				}
				if err := json.Unmarshal(answers[0], &a); err != nil || len(a.Events) != 1 || a.Events[0].ID == "" {
					t.Errorf("answer %s: want one event id", answers[0])
				}
			}
			if n := published(t, "S-"+key); n != 1 {
				t.Errorf("%d events published across the nodes, want 1", n)
			}
		})
	}

	// another caller's same key is another request
	r := nodes[1].post(t, "/api/broadcast", bearer(mint(t, "svc", "service")), `{"userIds":["u1"],"type":"ONCE","idempotencyKey":"k-0"}`)
	if r.status != 202 {
		t.Fatalf("other caller: %d %s", r.status, r.body)
	}
	if n := published(t, "S-other"); n != 1 {
		t.Errorf("other caller: %d events published, want 1", n)
	}
}
