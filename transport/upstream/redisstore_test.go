package upstream_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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

func mustClaimRedis(t *testing.T, s upstream.IdempotencyStore, key string, ttl time.Duration, want bool) {
	t.Helper()
	got, err := s.Claim(context.Background(), key, ttl)
	if err != nil || got != want {
		t.Fatalf("Claim(%q) = %v, %v; want %v", key, got, err, want)
	}
}

func TestRedisStoreSemantics(t *testing.T) {
	ctx := context.Background()
	c, prefix := testRedis(t)
	s := upstream.NewRedisStore(c, prefix)
	other := upstream.NewRedisStore(c, prefix) // another node's view

	// claim once, on either node
	mustClaimRedis(t, s, "k", time.Minute, true)
	mustClaimRedis(t, s, "k", time.Minute, false)
	mustClaimRedis(t, other, "k", time.Minute, false)
	if _, ok, err := other.Get(ctx, "k"); ok || err != nil {
		t.Fatalf("Get before Put = %v, %v; want nothing", ok, err)
	}
	// release: the key may be claimed again
	if err := s.Release(ctx, "k"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	mustClaimRedis(t, other, "k", time.Minute, true)

	// put: round trip, the claim ends, no new claim while the outcome lives
	want := upstream.Outcome{Ack: false, Status: 409, Result: json.RawMessage(`{"why":"dup"}`),
		Code: upstream.CodeRejected, Message: "refused"}
	if err := other.Put(ctx, "k", want, time.Minute); err != nil {
		t.Fatalf("Put: %v", err)
	}
	got, ok, err := s.Get(ctx, "k")
	if err != nil || !ok {
		t.Fatalf("Get after Put = %v, %v", ok, err)
	}
	if got.Ack != want.Ack || got.Status != want.Status || string(got.Result) != string(want.Result) ||
		got.Code != want.Code || got.Message != want.Message {
		t.Fatalf("Get = %+v, want %+v", got, want)
	}
	if n := c.Exists(ctx, prefix+"idem:up:c:k").Val(); n != 0 {
		t.Errorf("the claim outlived Put")
	}
	if ttl := c.PTTL(ctx, prefix+"idem:up:o:k").Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("outcome TTL = %v, want in (0, 1m]", ttl)
	}
	mustClaimRedis(t, s, "k", time.Minute, false)

	// keys are independent
	mustClaimRedis(t, s, "k2", time.Minute, true)
	if _, ok, _ := s.Get(ctx, "k2"); ok {
		t.Fatal("k2 has an outcome")
	}
}

func TestRedisStoreExpiry(t *testing.T) {
	ctx := context.Background()
	c, prefix := testRedis(t)
	s := upstream.NewRedisStore(c, prefix)

	// a claim whose holder died lapses after its TTL
	mustClaimRedis(t, s, "claim", 50*time.Millisecond, true)
	eventually(t, "the claim to lapse", func() bool {
		ok, err := s.Claim(ctx, "claim", time.Minute)
		return err == nil && ok
	})

	// an outcome is forgotten after its TTL
	if err := s.Put(ctx, "out", upstream.Outcome{Ack: true, Status: 200}, 50*time.Millisecond); err != nil {
		t.Fatalf("Put: %v", err)
	}
	eventually(t, "the outcome to expire", func() bool {
		_, ok, err := s.Get(ctx, "out")
		return err == nil && !ok
	})
}

func TestRedisStoreUnreachable(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	s := upstream.NewRedisStore(c, "x:")
	ctx := context.Background()
	if _, _, err := s.Get(ctx, "k"); err == nil {
		t.Error("Get on a dead Redis: no error")
	}
	if _, err := s.Claim(ctx, "k", time.Second); err == nil {
		t.Error("Claim on a dead Redis: no error")
	}
	if err := s.Put(ctx, "k", upstream.Outcome{Ack: true}, time.Second); err == nil {
		t.Error("Put on a dead Redis: no error")
	}
	if err := s.Release(ctx, "k"); err == nil {
		t.Error("Release on a dead Redis: no error")
	}
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
