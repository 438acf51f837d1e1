package upstream_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubd/hub/transport/upstream"
)

// testRedis returns a client on the test Redis (HUB_REDIS_URL, default
// database 8 of 127.0.0.1:6379) and a key prefix of the test's own; the
// keys are deleted and the client closed when the test ends. It skips the
// test when Redis cannot be reached, or fails it when HUB_REQUIRE_REDIS=1.
func testRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	u := os.Getenv("HUB_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379/8"
	}
	o, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("HUB_REDIS_URL: %v", err)
	}
	c := redis.NewClient(o)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		if os.Getenv("HUB_REQUIRE_REDIS") == "1" {
			t.Fatalf("redis at %s: %v", o.Addr, err)
		}
		t.Skipf("redis at %s unreachable: %v", o.Addr, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "hubtest:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
		_ = c.Close()
	})
	return c, prefix
}

// TestRedisStoreAcrossNodes runs two Upstreams (two nodes) on one Redis
// store: a key sent to both reaches the backend once, in sequence and
// concurrently, and both answer the first outcome.
func TestRedisStoreAcrossNodes(t *testing.T) {
	c, prefix := testRedis(t)
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
	eventually(t, "the first call to reach the backend", func() bool { return be.count() == 3 })
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
