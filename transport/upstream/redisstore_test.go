package upstream_test

import (
	"sync"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/transport/upstream"
)

// TestRedisStoreAcrossNodes runs two Upstreams (two nodes) on one Redis
// store: a key sent to both reaches the backend once, in sequence and
// concurrently, and both answer the first outcome.
func TestRedisStoreAcrossNodes(t *testing.T) {
	url := hubtest.RedisURL(t)
	c, prefix := hubtest.RedisClient(t, url), hubtest.RedisPrefix(t, url)
	be := newBackend(t)
	shared := func(o *upstream.Options) { o.Store = upstream.NewRedisStore(c, prefix) }
	e1, e2 := newEnv(t, be, shared), newEnv(t, be, shared)
	c1, c2 := e1.dial(t, "u1"), e2.dial(t, "u1")

	// one after the other
	a1 := c1.send("r1", "k-seq", "ORDER_UPDATE", 1)
	a2 := c2.send("r2", "k-seq", "ORDER_UPDATE", 1)
	if a1.kind != "hub.ack" || a2.kind != "hub.ack" || string(a1.Result) != string(a2.Result) {
		t.Fatalf("answers = %+v %s / %+v %s, want the same ack", a1, a1.Result, a2, a2.Result)
	}
	if n := be.count(); n != 1 {
		t.Fatalf("backend calls = %d, want 1", n)
	}

	// another user's same key is another operation
	c3 := e2.dial(t, "u2")
	if a := c3.send("r3", "k-seq", "ORDER_UPDATE", 1); a.kind != "hub.ack" {
		t.Fatalf("u2 answer = %+v", a)
	}
	if n := be.count(); n != 2 {
		t.Fatalf("backend calls = %d, want 2 (keys are per user)", n)
	}

	// concurrently: the second node waits for the first node's call
	release := be.blockReplies()
	defer release()
	c1.sendRaw(sendFrame("r4", "k-conc", "ORDER_UPDATE", 2))
	hubtest.Eventually(t, 10*time.Second, "the first call to reach the backend", func() bool { return be.count() == 3 })
	var wg sync.WaitGroup
	var a5 answer
	wg.Add(1)
	go func() {
		defer wg.Done()
		a5 = c2.answer("r5")
	}()
	c2.sendRaw(sendFrame("r5", "k-conc", "ORDER_UPDATE", 2))
	release()
	a4 := c1.answer("r4")
	wg.Wait()
	if a4.kind != "hub.ack" || a5.kind != "hub.ack" || string(a4.Result) != string(a5.Result) {
		t.Fatalf("answers = %+v %s / %+v %s, want the same ack", a4, a4.Result, a5, a5.Result)
	}
	if n := be.count(); n != 3 {
		t.Fatalf("backend calls = %d, want 3", n)
	}
}
