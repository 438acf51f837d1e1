package hubtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterNodeTimeout is the cluster-node-timeout of the masters that
// StartRedisCluster starts: how long a master may be unreachable before
// the others flag it as failing (and the cluster's state turns to fail).
// Short, so that a test that kills a master sees its effect soon.
const ClusterNodeTimeout = 2 * time.Second

// clusterWait bounds the formation of a cluster and its recovery after a
// master was restarted (a failed master's flag is cleared two node
// timeouts after it was set, the state a little after).
const clusterWait = 30 * time.Second

// RedisCluster is a Redis Cluster for a test: masters without replicas,
// each a redis-server of the test's own on free loopback ports
// (StartRedisCluster), or the cluster HUB_REDIS_CLUSTER_URL names.
type RedisCluster struct {
	t     testing.TB
	url   string
	addrs []string       // the masters, in the order of their first slot
	nodes []*RedisServer // nil for an external cluster
}

// StartRedisCluster starts masters (at least 3) redis-server processes in
// cluster mode, without persistence, each with a cluster config file of
// its own in a temporary directory (so that a master restarted by Start
// rejoins with its slots), joins them with redis-cli --cluster create
// (no replicas) and waits until every master reports cluster_state:ok
// with all 16384 slots assigned. The processes are killed when t ends.
//
// When HUB_REDIS_CLUSTER_URL is set (go-redis's cluster URL syntax, see
// URL), that cluster is used instead and nothing is started; its
// masters cannot be killed (Kill and Start skip t) and masters is not
// checked against it. Without redis-server or redis-cli it skips t, or
// fails it when HUB_REQUIRE_REDIS=1.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	if u := os.Getenv("HUB_REDIS_CLUSTER_URL"); u != "" {
		return externalCluster(t, u)
	}
	if masters < 3 {
		t.Fatalf("redis cluster: %d masters; redis-cli --cluster create needs at least 3", masters)
	}
	server, cli := redisBin(t, "redis-server"), redisBin(t, "redis-cli")
	dir := t.TempDir()
	ports := freePorts(t, 2*masters) // a client port and a cluster bus port each
	c := &RedisCluster{t: t}
	for i := range masters {
		port, bus := ports[2*i], ports[2*i+1]
		r := &RedisServer{t: t, bin: server, addr: "127.0.0.1:" + port, args: []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes-"+port+".conf"),
			// the bus port is chosen too: the default (port+10000) may be
			// beyond 65535 or taken
			"--cluster-port", bus,
			"--cluster-node-timeout", strconv.FormatInt(ClusterNodeTimeout.Milliseconds(), 10),
			"--dir", dir,
			"--logfile", filepath.Join(dir, "redis-"+port+".log"),
		}}
		t.Cleanup(r.Kill)
		r.Start()
		c.nodes = append(c.nodes, r)
		c.addrs = append(c.addrs, r.addr)
	}
	args := append([]string{"--cluster", "create"}, c.addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.url = clusterURL(c.addrs)
	c.WaitOK()
	return c
}

// externalCluster is the cluster at rawURL, its masters read from CLUSTER
// SLOTS.
func externalCluster(t testing.TB, rawURL string) *RedisCluster {
	t.Helper()
	o, err := redis.ParseClusterURL(rawURL)
	if err != nil {
		t.Fatalf("HUB_REDIS_CLUSTER_URL %q: %v", rawURL, err)
	}
	cc := redis.NewClusterClient(o)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ranges, err := slotMap(ctx, cc)
	if err != nil {
		noRedis(t, "redis cluster at %s unreachable: %v", rawURL, err)
	}
	c := &RedisCluster{t: t, url: rawURL}
	for _, r := range ranges {
		if !slices.Contains(c.addrs, r.master) {
			c.addrs = append(c.addrs, r.master)
		}
	}
	c.WaitOK()
	return c
}

// slotRange is a range of slots and the address of its master.
type slotRange struct {
	start, end int64
	master     string
}

// slotMap reads the cluster's slot ranges (CLUSTER SHARDS), sorted.
func slotMap(ctx context.Context, cl interface {
	ClusterShards(context.Context) *redis.ClusterShardsCmd
}) ([]slotRange, error) {
	shards, err := cl.ClusterShards(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []slotRange
	for _, s := range shards {
		for _, n := range s.Nodes {
			if n.Role != "master" {
				continue
			}
			addr := net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
			for _, r := range s.Slots {
				out = append(out, slotRange{r.Start, r.End, addr})
			}
		}
	}
	slices.SortFunc(out, func(a, b slotRange) int { return int(a.start - b.start) })
	return out, nil
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	var ports []string
	var lns []net.Listener // held until all are chosen: no port twice
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		lns = append(lns, ln)
		_, p, _ := net.SplitHostPort(ln.Addr().String())
		ports = append(ports, p)
	}
	return ports
}

// clusterURL is go-redis's cluster URL of addrs (redis.ParseClusterURL):
// the first address as the host, the others as addr parameters.
func clusterURL(addrs []string) string {
	u, sep := "redis://"+addrs[0], "?"
	for _, a := range addrs[1:] {
		u += sep + "addr=" + a
		sep = "&"
	}
	return u
}

// URL is the cluster's URL in go-redis's cluster syntax
// (redis.ParseClusterURL): "redis://127.0.0.1:p1?addr=127.0.0.1:p2&addr=...",
// every master named.
func (c *RedisCluster) URL() string { return c.url }

// Addrs are the masters' host:port, in the order of the slots they own
// (Addrs()[0] owns slot 0). Indexes into it are what Kill, Start, Node
// and MasterOf take and return.
func (c *RedisCluster) Addrs() []string { return slices.Clone(c.addrs) }

// Client returns a cluster client of the cluster, closed when the test
// ends.
func (c *RedisCluster) Client() *redis.ClusterClient {
	c.t.Helper()
	o, err := redis.ParseClusterURL(c.url)
	if err != nil {
		c.t.Fatalf("redis cluster url %q: %v", c.url, err)
	}
	cc := redis.NewClusterClient(o)
	c.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// NodeClient returns a plain client of master i alone (no redirections:
// it sees only the keys of that master's slots), closed when the test
// ends.
func (c *RedisCluster) NodeClient(i int) *redis.Client {
	c.t.Helper()
	return RedisClient(c.t, "redis://"+c.addrs[i]+"/0")
}

// Node is the process of master i, to Kill, Start or Signal it directly
// (its Start waits for the process only; the cluster's Start also waits
// for the cluster). It skips t on an external cluster.
func (c *RedisCluster) Node(i int) *RedisServer {
	c.t.Helper()
	if c.nodes == nil {
		c.t.Skip("HUB_REDIS_CLUSTER_URL: the masters of an external cluster cannot be controlled")
	}
	return c.nodes[i]
}

// Kill kills master i (SIGKILL; its keys are lost, its slots stay its
// own): the other masters flag it as failing after ClusterNodeTimeout,
// and the cluster's state turns to fail (no replica takes over).
func (c *RedisCluster) Kill(i int) {
	c.t.Helper()
	c.Node(i).Kill()
}

// Start restarts master i after Kill, on the same ports and with the same
// cluster config file, so that it rejoins owning the same slots (empty),
// and waits until the whole cluster is ok again (WaitOK).
func (c *RedisCluster) Start(i int) {
	c.t.Helper()
	c.Node(i).Start()
	c.WaitOK()
}

// WaitOK waits until every master reports, in CLUSTER INFO,
// cluster_state:ok, all 16384 slots assigned and ok (none flagged as
// failing) and every master known; it fails t after 30 seconds, naming
// what was not ok.
func (c *RedisCluster) WaitOK() {
	c.t.Helper()
	clients := make([]*redis.Client, len(c.addrs))
	for i := range c.addrs {
		clients[i] = newRedisClient(c.t, "redis://"+c.addrs[i]+"/0")
		defer clients[i].Close()
	}
	var last error
	ok := func() bool {
		for i, cl := range clients {
			if err := clusterOK(cl, len(c.addrs)); err != nil {
				last = fmt.Errorf("%s: %w", c.addrs[i], err)
				return false
			}
		}
		return true
	}
	end := time.Now().Add(clusterWait)
	for wait := time.Millisecond; !ok(); wait = min(2*wait, 50*time.Millisecond) {
		if time.Now().After(end) {
			c.t.Fatalf("timed out after %s waiting for the redis cluster to be ok: %v", clusterWait, last)
		}
		time.Sleep(wait) // the polling interval, as in Eventually
	}
}

// clusterOK reads CLUSTER INFO from one master and reports what is not ok.
func clusterOK(cl *redis.Client, masters int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := cl.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	f := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			f[k] = v
		}
	}
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_assigned": "16384",
		"cluster_slots_ok":       "16384",
	}
	for k, v := range want {
		if f[k] != v {
			return fmt.Errorf("%s:%s, want %s", k, f[k], v)
		}
	}
	if n, _ := strconv.Atoi(f["cluster_known_nodes"]); n < masters {
		return fmt.Errorf("cluster_known_nodes:%d, want at least %d", n, masters)
	}
	return nil
}

// Slot is the hash slot of key (CLUSTER KEYSLOT: its {hash tag} when it
// has one).
func (c *RedisCluster) Slot(key string) int {
	c.t.Helper()
	slot, _ := c.route(key)
	return slot
}

// MasterOf is the index (in Addrs) of the master that owns key's slot,
// as the cluster says (CLUSTER KEYSLOT and CLUSTER SLOTS, asked of the
// first master that answers).
func (c *RedisCluster) MasterOf(key string) int {
	c.t.Helper()
	_, i := c.route(key)
	return i
}

func (c *RedisCluster) route(key string) (slot, master int) {
	c.t.Helper()
	var errs []string
	for _, addr := range c.addrs {
		cl := newRedisClient(c.t, "redis://"+addr+"/0")
		slot, master, err := routeOn(cl, key, c.addrs)
		_ = cl.Close()
		if err == nil {
			return slot, master
		}
		errs = append(errs, addr+": "+err.Error())
	}
	c.t.Fatalf("slot of %q: %s", key, strings.Join(errs, "; "))
	return 0, 0
}

func routeOn(cl *redis.Client, key string, addrs []string) (int, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	slot, err := cl.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return 0, 0, err
	}
	ranges, err := slotMap(ctx, cl)
	if err != nil {
		return 0, 0, err
	}
	for _, r := range ranges {
		if r.start <= slot && slot <= r.end {
			if i := slices.Index(addrs, r.master); i >= 0 {
				return int(slot), i, nil
			}
			return 0, 0, fmt.Errorf("slot %d is owned by %s, not one of %v", slot, r.master, addrs)
		}
	}
	return 0, 0, fmt.Errorf("slot %d is owned by no master", slot)
}
