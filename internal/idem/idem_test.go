package idem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubd/hub/internal/hubtest"
)

// value is what the tests store: a struct, so that the Redis store's JSON
// round trip is exercised on more than bytes.
type value struct {
	N    int    `json:"n"`
	Note string `json:"note,omitempty"`
}

func mustClaim(t *testing.T, s Store[value], key string, ttl time.Duration, want bool) {
	t.Helper()
	got, err := s.Claim(context.Background(), key, ttl)
	if err != nil || got != want {
		t.Fatalf("Claim(%q) = %v, %v; want %v", key, got, err, want)
	}
}

// stores gives each test the two implementations; a second view of the
// same store stands for another node (for Memory, the same object).
func stores(t *testing.T) map[string][2]Store[value] {
	u := hubtest.RedisURL(t)
	c, prefix := hubtest.RedisClient(t, u), hubtest.RedisPrefix(t, u)
	m := NewMemory[value](10)
	out := map[string][2]Store[value]{
		"memory": {m, m},
		"redis":  {NewRedis[value](c, prefix, "t"), NewRedis[value](c, prefix, "t")},
	}
	// a key's value and claim share a slot (the claim script needs both);
	// without the Redis binaries (and HUB_REQUIRE_REDIS) only this case
	// is left out, not the others
	if clusterBinaries() {
		rc := hubtest.StartRedisCluster(t, 3).Client()
		out["redis-cluster"] = [2]Store[value]{NewRedis[value](rc, "hub:", "t"), NewRedis[value](rc, "hub:", "t")}
	}
	return out
}

// clusterBinaries reports whether a Redis Cluster can be started here
// (StartRedisCluster fails the test without them under HUB_REQUIRE_REDIS).
func clusterBinaries() bool {
	if os.Getenv("HUB_REQUIRE_REDIS") == "1" || os.Getenv("HUB_REDIS_CLUSTER_URL") != "" {
		return true
	}
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			return false
		}
	}
	return true
}

// TestStoreContract: claim once on either node, release, put ends the
// claim and holds the key, keys are independent, TTLs run out.
func TestStoreContract(t *testing.T) {
	ctx := context.Background()
	for name, ss := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s, other := ss[0], ss[1]
			mustClaim(t, s, "k", time.Minute, true)
			mustClaim(t, s, "k", time.Minute, false)
			mustClaim(t, other, "k", time.Minute, false)
			if _, ok, err := other.Get(ctx, "k"); ok || err != nil {
				t.Fatalf("Get before Put = %v, %v; want nothing", ok, err)
			}
			if err := s.Release(ctx, "k"); err != nil {
				t.Fatalf("Release: %v", err)
			}
			mustClaim(t, other, "k", time.Minute, true)

			want := value{N: 409, Note: "refused"}
			if err := other.Put(ctx, "k", want, time.Minute); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if got, ok, err := s.Get(ctx, "k"); err != nil || !ok || got != want {
				t.Fatalf("Get after Put = %+v, %v, %v; want %+v", got, ok, err, want)
			}
			mustClaim(t, s, "k", time.Minute, false) // answered

			mustClaim(t, s, "k2", time.Minute, true) // keys are independent
			if _, ok, _ := s.Get(ctx, "k2"); ok {
				t.Fatal("k2 has a value")
			}

			// a claim whose holder died lapses; a value is forgotten
			mustClaim(t, s, "claim", 50*time.Millisecond, true)
			hubtest.Eventually(t, 5*time.Second, "the claim to lapse", func() bool {
				ok, err := s.Claim(ctx, "claim", time.Minute)
				return err == nil && ok
			})
			if err := s.Put(ctx, "short", value{N: 1}, 50*time.Millisecond); err != nil {
				t.Fatalf("Put: %v", err)
			}
			hubtest.Eventually(t, 5*time.Second, "the value to expire", func() bool {
				_, ok, err := s.Get(ctx, "short")
				return err == nil && !ok
			})
		})
	}
}

// TestRedisLayout: the keys and TTLs other tools may look at.
func TestRedisLayout(t *testing.T) {
	ctx := context.Background()
	u := hubtest.RedisURL(t)
	c, prefix := hubtest.RedisClient(t, u), hubtest.RedisPrefix(t, u)
	s := NewRedis[value](c, prefix, "api")
	mustClaim(t, s, "k", time.Minute, true)
	if c.Exists(ctx, prefix+"idem:api:c:"+tag("k")+"k").Val() != 1 {
		t.Fatal("no claim key")
	}
	if err := s.Put(ctx, "k", value{N: 1}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if c.Exists(ctx, prefix+"idem:api:c:"+tag("k")+"k").Val() != 0 {
		t.Error("the claim outlived Put")
	}
	if ttl := c.PTTL(ctx, prefix+"idem:api:o:"+tag("k")+"k").Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("value TTL = %v, want in (0, 1m]", ttl)
	}
	if got := c.Get(ctx, prefix+"idem:api:o:"+tag("k")+"k").Val(); got != `{"n":1}` {
		t.Errorf("stored %q, want the JSON of the value", got)
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestMemoryClock(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := NewMemory[value](10)
	s.now = c.now
	mustClaim(t, s, "k", time.Second, true)
	c.advance(2 * time.Second)
	mustClaim(t, s, "k", time.Second, true) // an expired claim does not hold the key
	_ = s.Put(ctx, "k", value{N: 1}, time.Minute)
	c.advance(time.Minute - time.Nanosecond)
	if _, ok, _ := s.Get(ctx, "k"); !ok {
		t.Fatal("a value dropped before its TTL")
	}
	c.advance(time.Nanosecond)
	if _, ok, _ := s.Get(ctx, "k"); ok {
		t.Fatal("a value outlived its TTL")
	}
}

func TestMemoryBounded(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := NewMemory[value](3)
	s.now = c.now
	for i := range 5 {
		c.advance(time.Millisecond)
		_ = s.Put(ctx, fmt.Sprint(i), value{N: i}, time.Minute)
	}
	for i, want := range []bool{false, false, true, true, true} {
		if _, ok, _ := s.Get(ctx, fmt.Sprint(i)); ok != want {
			t.Errorf("key %d present = %v, want %v (oldest evicted first)", i, ok, want)
		}
	}
	// claims that end without a value leave nothing behind
	for i := range 10000 {
		k := "f" + strconv.Itoa(i)
		mustClaim(t, s, k, time.Minute, true)
		_ = s.Release(ctx, k)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.claims) != 0 || len(s.entries) != 3 {
		t.Errorf("%d claims and %d values held, want 0 and 3", len(s.claims), len(s.entries))
	}
}

func TestRedisUnreachable(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	s := NewRedis[value](c, "x:", "t")
	ctx := context.Background()
	if _, _, err := s.Get(ctx, "k"); err == nil {
		t.Error("Get on a dead Redis: no error")
	}
	if _, err := s.Claim(ctx, "k", time.Second); err == nil {
		t.Error("Claim on a dead Redis: no error")
	}
	if err := s.Put(ctx, "k", value{}, time.Second); err == nil {
		t.Error("Put on a dead Redis: no error")
	}
	if err := s.Release(ctx, "k"); err == nil {
		t.Error("Release on a dead Redis: no error")
	}
}

// counter is an operation safe for concurrent use: it answers its call
// number, not to be kept while fail is set.
type counter struct {
	mu   sync.Mutex
	n    int
	fail bool
	gate chan struct{} // when set, the operation waits for it to close
}

func (c *counter) op() (value, bool) {
	c.mu.Lock()
	c.n++
	n, fail, gate := c.n, c.fail, c.gate
	c.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return value{N: n}, !fail
}

func (c *counter) calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func newOnce(s Store[value]) *Once[value] {
	return &Once[value]{Store: s, TTL: time.Minute, ClaimTTL: 30 * time.Second, Poll: 20 * time.Millisecond,
		Wait: 10 * time.Second, Settle: time.Second, Log: slog.New(slog.DiscardHandler), Scope: "test"}
}

func TestOnce(t *testing.T) {
	ctx := context.Background()
	for name, ss := range stores(t) {
		t.Run(name, func(t *testing.T) {
			node1, node2 := newOnce(ss[0]), newOnce(ss[1])

			t.Run("a repeat on another node gets the first value", func(t *testing.T) {
				p := &counter{}
				v1, e1 := node1.Do(ctx, "rep", p.op)
				v2, e2 := node2.Do(ctx, "rep", p.op)
				if e1 != nil || e2 != nil || v1.N != 1 || v2 != v1 || p.calls() != 1 {
					t.Fatalf("values %+v %v / %+v %v after %d calls", v1, e1, v2, e2, p.calls())
				}
			})

			t.Run("a value not kept is not remembered", func(t *testing.T) {
				p := &counter{fail: true}
				if v, err := node1.Do(ctx, "fail", p.op); err != nil || v.N != 1 {
					t.Fatalf("first attempt: %+v %v, want its own value", v, err)
				}
				p.mu.Lock()
				p.fail = false
				p.mu.Unlock()
				if v, err := node2.Do(ctx, "fail", p.op); err != nil || v.N != 2 {
					t.Fatalf("retry: %+v %v, want a second call", v, err)
				}
			})

			t.Run("concurrent calls on one node wait for the first", func(t *testing.T) {
				p := &counter{gate: make(chan struct{})}
				const n = 8
				got := make([]value, n)
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() {
						v, err := node1.Do(ctx, "conc", p.op)
						if err != nil {
							t.Errorf("call %d: %v", i, err)
						}
						got[i] = v
					})
				}
				hubtest.Eventually(t, 5*time.Second, "the first call", func() bool { return p.calls() == 1 })
				close(p.gate)
				wg.Wait()
				for i, v := range got {
					if v.N != 1 {
						t.Errorf("value %d = %+v, want the first call's", i, v)
					}
				}
				if p.calls() != 1 {
					t.Fatalf("%d calls, want 1", p.calls())
				}
			})

			t.Run("a key in flight elsewhere", func(t *testing.T) {
				waiting := newOnce(ss[1])
				waiting.Wait = 100 * time.Millisecond
				if ok, err := ss[0].Claim(ctx, "held", time.Minute); !ok || err != nil {
					t.Fatalf("Claim: %v %v", ok, err)
				}
				p := &counter{}
				if _, err := waiting.Do(ctx, "held", p.op); !errors.Is(err, ErrInFlight) {
					t.Fatalf("while held elsewhere: %v, want ErrInFlight", err)
				}
				cctx, cancel := context.WithCancel(ctx)
				cancel()
				waiting.Wait = time.Minute
				if _, err := waiting.Do(cctx, "held", p.op); !errors.Is(err, context.Canceled) {
					t.Fatalf("with a cancelled context: %v, want context.Canceled", err)
				}
				done := make(chan value)
				go func() {
					v, _ := waiting.Do(ctx, "held", p.op)
					done <- v
				}()
				if err := ss[0].Put(ctx, "held", value{N: 99}, time.Minute); err != nil {
					t.Fatalf("Put: %v", err)
				}
				if v := <-done; v.N != 99 {
					t.Fatalf("value = %+v, want the other node's", v)
				}
				if p.calls() != 0 {
					t.Fatalf("%d calls, want 0", p.calls())
				}
			})
		})
	}
	t.Run("store unreachable", func(t *testing.T) {
		dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
		defer dead.Close()
		p := &counter{}
		if _, err := newOnce(NewRedis[value](dead, "x:", "t")).Do(ctx, "k", p.op); !errors.Is(err, ErrStore) {
			t.Fatalf("err = %v, want ErrStore", err)
		}
		if p.calls() != 0 {
			t.Fatalf("ran %d times without the store", p.calls())
		}
	})
}
