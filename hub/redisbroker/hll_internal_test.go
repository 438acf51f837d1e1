package redisbroker

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
)

// TestHLLMatchesRedis builds HyperLogLogs here and with PFADD on Redis from
// the same elements and checks that Redis reads ours as a valid one with
// the very registers its own has.
func TestHLLMatchesRedis(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	c := hubtest.RedisClient(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range []int{0, 1, 3, 7, 8, 9, 100, 5000} {
		ours, theirs := pfx+fmt.Sprintf("ours%d", n), pfx+fmt.Sprintf("theirs%d", n)
		h := newHLL()
		var elems []any
		for i := range n {
			// lengths 1 to 30: every tail of the hash's 8-byte blocks
			e := fmt.Sprintf("%d", i) + "hub:c:user-"[:i%12] + "é\x00"[:i%3]
			hllAdd(h, e)
			elems = append(elems, e)
		}
		if err := c.Set(ctx, ours, h, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.PFAdd(ctx, theirs, elems...).Err(); err != nil {
			t.Fatal(err)
		}
		got, err := c.PFCount(ctx, ours).Result()
		if err != nil {
			t.Fatalf("%d elements: PFCOUNT of ours: %v", n, err)
		}
		want := c.PFCount(ctx, theirs).Val()
		if got != want {
			t.Errorf("%d elements: PFCOUNT %d, Redis's own %d", n, got, want)
		}
		if n <= 100 && got != int64(n) {
			t.Errorf("%d elements: PFCOUNT %d, want exact", n, got)
		}
		if n > 0 {
			// adding them again changes no register: each is as high as PFADD sets it
			if changed := c.PFAdd(ctx, ours, elems...).Val(); changed != 0 {
				t.Errorf("%d elements: PFADD of the same elements changed ours", n)
			}
		}
		// the registers themselves, where the server has the debug command
		a, errA := c.Do(ctx, "PFDEBUG", "GETREG", ours).Int64Slice()
		b, errB := c.Do(ctx, "PFDEBUG", "GETREG", theirs).Int64Slice()
		if errA == nil && errB == nil && !slices.Equal(a, b) {
			t.Errorf("%d elements: registers differ from Redis's", n)
		}
	}
}

// TestHLLKeysOnCluster checks, on a real Redis Cluster, that the nodes'
// HyperLogLog keys share a slot, so that ClusterStats's one PFCOUNT over
// them is allowed, and that it counts a user of two nodes once.
func TestHLLKeysOnCluster(t *testing.T) {
	rc := hubtest.StartRedisCluster(t, 3)
	c := rc.Client()
	b := &Broker{opts: Options{Prefix: "hubtest:hll:"}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var keys []string
	for i, users := range [][]string{{"u1", "u2"}, {"u1", "u3"}, {"u4"}, {}} {
		h := newHLL()
		for _, u := range users {
			hllAdd(h, b.userCh(u))
		}
		k := b.usersKey(fmt.Sprintf("node-%d", i))
		if err := c.Set(ctx, k, h, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	for _, k := range keys[1:] {
		if rc.Slot(k) != rc.Slot(keys[0]) {
			t.Fatalf("%s in slot %d, %s in %d", k, rc.Slot(k), keys[0], rc.Slot(keys[0]))
		}
	}
	n, err := c.PFCount(ctx, keys...).Result()
	if err != nil {
		t.Fatalf("PFCOUNT over the nodes' keys: %v", err)
	}
	if n != 4 {
		t.Errorf("PFCOUNT %d, want 4 users", n)
	}
	c.Del(ctx, keys...)
}

// BenchmarkHLLAdd is the node's cost per user and report.
func BenchmarkHLLAdd(b *testing.B) {
	users := make([]string, 1024)
	for i := range users {
		users[i] = fmt.Sprintf("hub:c:user-%08d", i)
	}
	h := newHLL()
	b.ResetTimer()
	for i := range b.N {
		hllAdd(h, users[i%len(users)])
	}
}
