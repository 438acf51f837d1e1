package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisForTest returns a client on the test Redis (HUB_REDIS_URL, default
// database 8 of 127.0.0.1:6379) and a key prefix of the test's own; the
// keys are deleted and the client closed when the test ends. It skips the
// test when Redis cannot be reached, or fails it when HUB_REQUIRE_REDIS=1.
// It lives in a test file: it is not part of the package's API.
func RedisForTest(t testing.TB) (*redis.Client, string) {
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

func TestRedisIdempotencyStore(t *testing.T) {
	ctx := context.Background()
	c, prefix := RedisForTest(t)
	s := NewRedisIdempotency(c, prefix)
	claim := func(want bool) {
		t.Helper()
		if got, err := s.Claim(ctx, "k", time.Minute); err != nil || got != want {
			t.Fatalf("Claim = %v, %v; want %v", got, err, want)
		}
	}

	claim(true)
	claim(false) // held
	if _, ok, err := s.Get(ctx, "k"); ok || err != nil {
		t.Fatalf("Get while claimed = %v, %v; want nothing", ok, err)
	}
	if err := s.Release(ctx, "k"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	claim(true) // released: free again
	if err := s.Put(ctx, "k", json.RawMessage(`{"id":"e-1"}`), time.Minute); err != nil {
		t.Fatalf("Put: %v", err)
	}
	got, ok, err := s.Get(ctx, "k")
	if err != nil || !ok || string(got) != `{"id":"e-1"}` {
		t.Fatalf("Get = %s, %v, %v", got, ok, err)
	}
	if ttl := c.PTTL(ctx, prefix+"idem:api:o:k").Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("answer TTL = %v, want in (0, 1m]", ttl)
	}
	if c.Exists(ctx, prefix+"idem:api:c:k").Val() != 0 {
		t.Error("the claim outlived Put")
	}
	claim(false) // answered

	// a short TTL runs out
	if err := s.Put(ctx, "short", json.RawMessage(`1`), 20*time.Millisecond); err != nil {
		t.Fatalf("Put: %v", err)
	}
	waitFor(t, "the answer to expire", func() bool {
		_, ok, err := s.Get(ctx, "short")
		return err == nil && !ok
	})
}

// waitFor polls cond until it holds, failing t after 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// safeCounter is a publish function safe for concurrent use; it answers
// its call number, or fails while fail is set.
type safeCounter struct {
	mu   sync.Mutex
	n    int
	fail bool
	gate chan struct{} // when set, publish waits for it to close
}

func (c *safeCounter) publish() (json.RawMessage, *apiError) {
	c.mu.Lock()
	c.n++
	n, fail, gate := c.n, c.fail, c.gate
	c.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if fail {
		return nil, &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "boom"}
	}
	return json.RawMessage(`{"n":` + strconv.Itoa(n) + `}`), nil
}

func (c *safeCounter) calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func TestSharedIdem(t *testing.T) {
	ctx := context.Background()
	c, prefix := RedisForTest(t)
	quiet := slog.New(slog.DiscardHandler)
	store := NewRedisIdempotency(c, prefix)
	node1, node2 := newSharedIdem(store, quiet, time.Second), newSharedIdem(store, quiet, time.Second)

	t.Run("repeat on another node gets the first answer", func(t *testing.T) {
		p := &safeCounter{}
		a1, e1 := node1.do(ctx, "rep", p.publish)
		a2, e2 := node2.do(ctx, "rep", p.publish)
		if e1 != nil || e2 != nil || string(a1) != `{"n":1}` || string(a2) != string(a1) {
			t.Fatalf("answers %s %v / %s %v", a1, e1, a2, e2)
		}
		if p.calls() != 1 {
			t.Fatalf("%d publishes, want 1", p.calls())
		}
	})

	t.Run("a failure is not remembered", func(t *testing.T) {
		p := &safeCounter{fail: true}
		if _, e := node1.do(ctx, "fail", p.publish); e == nil || e.Code != codeInternal {
			t.Fatalf("first attempt: %v, want the publish error", e)
		}
		p.mu.Lock()
		p.fail = false
		p.mu.Unlock()
		a, e := node2.do(ctx, "fail", p.publish)
		if e != nil || string(a) != `{"n":2}` {
			t.Fatalf("retry: %s %v, want a second publish", a, e)
		}
	})

	t.Run("concurrent requests on one node wait for the first", func(t *testing.T) {
		p := &safeCounter{gate: make(chan struct{})}
		const n = 8
		answers := make([]json.RawMessage, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				a, e := node1.do(ctx, "conc", p.publish)
				if e != nil {
					t.Errorf("request %d: %v", i, e)
				}
				answers[i] = a
			})
		}
		waitFor(t, "the first publish", func() bool { return p.calls() == 1 })
		close(p.gate)
		wg.Wait()
		for i := range answers {
			if string(answers[i]) != `{"n":1}` {
				t.Errorf("answer %d = %s", i, answers[i])
			}
		}
		if p.calls() != 1 {
			t.Fatalf("%d publishes, want 1", p.calls())
		}
	})

	t.Run("a key in flight on another node", func(t *testing.T) {
		waiting := newSharedIdem(store, quiet, time.Second)
		waiting.wait = 300 * time.Millisecond
		if ok, err := store.Claim(ctx, "held", time.Minute); !ok || err != nil {
			t.Fatalf("Claim: %v %v", ok, err)
		}
		p := &safeCounter{}
		if _, e := waiting.do(ctx, "held", p.publish); e == nil || e.Status != http.StatusConflict || e.Code != codeInFlight {
			t.Fatalf("answer while held elsewhere: %v, want 409 in_flight", e)
		}
		// the other node settles while this one polls
		waiting.wait = time.Minute
		done := make(chan json.RawMessage)
		go func() {
			a, _ := waiting.do(ctx, "held", p.publish)
			done <- a
		}()
		if err := store.Put(ctx, "held", json.RawMessage(`{"other":true}`), time.Minute); err != nil {
			t.Fatalf("Put: %v", err)
		}
		if a := <-done; string(a) != `{"other":true}` {
			t.Fatalf("answer = %s, want the other node's", a)
		}
		if p.calls() != 0 {
			t.Fatalf("%d publishes, want 0", p.calls())
		}
	})

	t.Run("store unreachable", func(t *testing.T) {
		dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
		defer dead.Close()
		s := newSharedIdem(NewRedisIdempotency(dead, "x:"), quiet, time.Second)
		p := &safeCounter{}
		if _, e := s.do(ctx, "k", p.publish); e == nil || e.Status != http.StatusServiceUnavailable || e.Code != "unavailable" {
			t.Fatalf("answer = %v, want 503 unavailable", e)
		}
		if p.calls() != 0 {
			t.Fatalf("published %d times without the store", p.calls())
		}
	})
}
