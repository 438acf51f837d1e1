package hubtest_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubd/hub/internal/hubtest"
)

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// keyOn returns a key (with prefix) whose slot master i owns.
func keyOn(t *testing.T, c *hubtest.RedisCluster, prefix string, i int) string {
	t.Helper()
	for n := range 1000 {
		k := prefix + strconv.Itoa(n)
		if c.MasterOf(k) == i {
			return k
		}
	}
	t.Fatalf("no key of master %d among 1000", i)
	return ""
}

func TestRedisCluster(t *testing.T) {
	c := hubtest.StartRedisCluster(t, 3)
	addrs := c.Addrs()
	if len(addrs) != 3 {
		t.Fatalf("masters %v, want 3", addrs)
	}
	if os.Getenv("HUB_REDIS_CLUSTER_URL") == "" { // an external cluster's URL is as given
		want := fmt.Sprintf("redis://%s?addr=%s&addr=%s", addrs[0], addrs[1], addrs[2])
		if c.URL() != want {
			t.Errorf("URL %q, want %q", c.URL(), want)
		}
		o, err := redis.ParseClusterURL(c.URL())
		if err != nil || !slices.Equal(o.Addrs, addrs) {
			t.Errorf("URL %q parsed: %v, %v; want addresses %v", c.URL(), o, err, addrs)
		}
	}

	// Every master has the same map: all 16384 slots, each once, over the
	// three masters.
	for i := range addrs {
		shards, err := c.NodeClient(i).ClusterShards(ctx5(t)).Result()
		if err != nil {
			t.Fatalf("CLUSTER SHARDS on %s: %v", addrs[i], err)
		}
		var ranges []redis.SlotRange
		owners := map[string]bool{}
		for _, s := range shards {
			ranges = append(ranges, s.Slots...)
			for _, n := range s.Nodes {
				if n.Role == "master" && len(s.Slots) > 0 {
					owners[fmt.Sprintf("%s:%d", n.IP, n.Port)] = true
				}
			}
		}
		slices.SortFunc(ranges, func(a, b redis.SlotRange) int { return int(a.Start - b.Start) })
		next := int64(0)
		for _, r := range ranges {
			if r.Start != next {
				t.Fatalf("%s: slots %d to %d not covered", addrs[i], next, r.Start-1)
			}
			next = r.End + 1
		}
		if next != 16384 || len(owners) != 3 {
			t.Errorf("%s: slots covered up to %d by %v, want all 16384 by the 3 masters", addrs[i], next, owners)
		}
	}

	// A key set through a cluster client is on the master MasterOf names
	// (and only there), and read back through the client.
	cc := c.Client()
	prefix := "hubtest:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":k" // an external cluster may be shared
	for i := range addrs {
		k := keyOn(t, c, prefix, i)
		t.Cleanup(func() { cc.Del(context.Background(), k) })
		if err := cc.Set(ctx5(t), k, "v"+k, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		if v, err := cc.Get(ctx5(t), k).Result(); err != nil || v != "v"+k {
			t.Errorf("GET %s through the cluster client: %q, %v", k, v, err)
		}
		for j := range addrs {
			n, err := c.NodeClient(j).Exists(ctx5(t), k).Result()
			if j == i && (err != nil || n != 1) {
				t.Errorf("%s not on master %d (MasterOf): %d, %v", k, i, n, err)
			}
			if j != i && n != 0 {
				t.Errorf("%s on master %d too", k, j)
			}
		}
	}

	// A hash tag puts keys in one slot.
	if a, b := c.Slot("x:{alice}:1"), c.Slot("y:{alice}:2"); a != b || a != c.Slot("alice") {
		t.Errorf("slots of {alice} keys %d and %d, of alice %d: want one", a, b, c.Slot("alice"))
	}
}

func TestRedisClusterRestart(t *testing.T) {
	c := hubtest.StartRedisCluster(t, 3)
	cc := c.Client()
	k := keyOn(t, c, "k", 1)
	if err := cc.Set(ctx5(t), k, "before", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}

	c.Kill(1)
	// The others flag it as failing and the cluster's state turns to fail.
	other := c.NodeClient(0)
	hubtest.Eventually(t, 10*hubtest.ClusterNodeTimeout, "cluster_state:fail once a master is gone", func() bool {
		info, err := other.ClusterInfo(ctx5(t)).Result()
		return err == nil && strings.Contains(info, "cluster_state:fail")
	})

	c.Start(1) // waits for cluster_state:ok, every slot ok, on every master
	info, err := c.NodeClient(1).ClusterInfo(ctx5(t)).Result()
	if err != nil || !strings.Contains(info, "cluster_state:ok") {
		t.Fatalf("restarted master: %q, %v", info, err)
	}
	if i := c.MasterOf(k); i != 1 {
		t.Errorf("after the restart %s is on master %d, want 1 (its slots kept)", k, i)
	}
	// Its data is gone (no persistence); it serves its slots again.
	hubtest.Eventually(t, 10*time.Second, "a write to the restarted master's slot through the cluster client", func() bool {
		return cc.Set(ctx5(t), k, "after", 0).Err() == nil
	})
	if v, err := c.NodeClient(1).Get(ctx5(t), k).Result(); err != nil || v != "after" {
		t.Errorf("GET %s on the restarted master: %q, %v", k, v, err)
	}
}
