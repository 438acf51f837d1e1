package redisbroker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/internal/hubtest"
)

// One test suite for both backends (issue 18): a test of hub-level
// behaviour runs its body through eachBackend, once on one Redis server
// (subtest "redis") and once on a Redis Cluster (subtest "cluster"); what
// only one of them has (epochs, History/Since/Position, key names) is
// asked of that one alone.

// backend is where a test's nodes keep their state.
type backend struct {
	url string
	pfx string                // the test's own key prefix
	rc  *hubtest.RedisCluster // nil on one server
}

// eachBackend runs f as subtest "redis", on the Redis of hubtest.RedisURL
// under a prefix of its own, and as subtest "cluster", on the run's
// three-master cluster (runCluster) under a prefix of its own. The two
// run side by side (t.Parallel: they share nothing, and most of their time
// is waiting); the test that calls eachBackend must not be parallel (one
// test at a time uses the run's cluster).
func eachBackend(t *testing.T, f func(t *testing.T, be backend)) {
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		url := hubtest.RedisURL(t)
		f(t, backend{url: url, pfx: hubtest.RedisPrefix(t, url)})
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		rc := runCluster(t)
		f(t, backend{url: rc.URL(), pfx: clusterPrefix(t, rc), rc: rc})
	})
}

// another is the backend under another prefix of t's own.
func (be backend) another(t testing.TB) backend {
	t.Helper()
	if be.cluster() {
		be.pfx = clusterPrefix(t, be.rc)
	} else {
		be.pfx = hubtest.RedisPrefix(t, be.url)
	}
	return be
}

// cluster reports whether the backend is a Redis Cluster.
func (be backend) cluster() bool { return be.rc != nil }

// options are the broker options of a node named name.
func (be backend) options(name string, size int, ttl time.Duration) redisbroker.Options {
	return redisbroker.Options{URL: be.url, Cluster: be.cluster(), Prefix: be.pfx, Node: name, HistorySize: size, HistoryTTL: ttl}
}

// node is startNode on the backend.
func (be backend) node(t testing.TB, name string, size int, ttl time.Duration) node {
	t.Helper()
	return startWith(t, be.options(name, size, ttl), hub.Options{HistorySize: size, HistoryTTL: ttl, Node: name})
}

// client is a client of the backend (a cluster client on a cluster), to
// inspect keys; closed when t ends.
func (be backend) client(t testing.TB) redis.UniversalClient {
	t.Helper()
	if !be.cluster() {
		return hubtest.RedisClient(t, be.url)
	}
	o, err := redis.ParseClusterURL(be.url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClusterClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// keys returns the backend's keys matching pattern (on every master).
func (be backend) keys(t testing.TB, pattern string) []string {
	t.Helper()
	c := be.client(t)
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		keys, err := c.Keys(bg(t), pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	var mu sync.Mutex
	var out []string
	err := cc.ForEachMaster(bg(t), func(ctx context.Context, m *redis.Client) error {
		keys, err := m.Keys(ctx, pattern).Result()
		mu.Lock()
		out = append(out, keys...)
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The names of a user's stream and state hash and of the broadcast stream
// and state hash: on one server of the epoch of id (an id of that epoch),
// on a cluster of no epoch (docs/DECISIONS.md 31).
func (be backend) userStream(user, id string) string {
	if be.cluster() {
		return be.pfx + "us:{" + user + "}"
	}
	return be.pfx + "u:{" + user + "}:" + epochOf(id)
}

func (be backend) userState(user, id string) string {
	if be.cluster() {
		return be.pfx + "um:{" + user + "}"
	}
	return be.pfx + "uh:{" + user + "}:" + epochOf(id)
}

func (be backend) allStream(id string) string {
	if be.cluster() {
		return be.pfx + "as:{all}"
	}
	return be.pfx + "a:" + epochOf(id)
}

// epochOf is the epoch of a one-server id.
func epochOf(id string) string {
	epoch, _, _ := hub.ParseID(id)
	return epoch
}

// connectedPosition is the position the client's hub.connected names.
func connectedPosition(cl *client) string {
	cl.t.Helper()
	cl.connected()
	var env struct {
		Payload struct {
			Position string `json:"position"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(cl.msgs[0].Frame, &env); err != nil {
		cl.t.Fatal(err)
	}
	return env.Payload.Position
}

// clusterPrefix returns a key prefix of t's own on rc and deletes its keys
// when t ends.
func clusterPrefix(t testing.TB, rc *hubtest.RedisCluster) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	p := "hubtest:" + hex.EncodeToString(b[:]) + ":"
	o, err := redis.ParseClusterURL(rc.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClusterClient(o)
	t.Cleanup(func() {
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			iter := m.Scan(ctx, 0, p+"*", 1000).Iterator()
			for iter.Next(ctx) {
				m.Del(ctx, iter.Val())
			}
			return iter.Err()
		})
	})
	return p
}

// The run's cluster: one three-master cluster for every test of the run
// that does not kill or stop a master (each under a prefix of its own),
// started by the first that asks and stopped when the tests are done
// (TestMain). Starting a cluster takes about two seconds.
var shared struct {
	mu    sync.Mutex
	tried bool
	tb    *runTB
	rc    *hubtest.RedisCluster
}

// runTB is the testing.TB the run's cluster is started with: its
// cleanups run when the tests are done, its temporary directories last as
// long, and what the cluster reports (failures, skips) goes to the test
// that uses it at the time. Tests that use it must not run in parallel.
type runTB struct {
	testing.TB // the test using the cluster now
	cleanups   []func()
	dirs       []string
}

func (r *runTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

func (r *runTB) TempDir() string {
	d, err := os.MkdirTemp("", "hubtest-cluster-")
	if err != nil {
		r.Fatalf("cluster directory: %v", err)
	}
	r.dirs = append(r.dirs, d)
	return d
}

// runCluster returns the run's cluster, starting it for t if it is the
// first to ask.
func runCluster(t *testing.T) *hubtest.RedisCluster {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.tb == nil {
		shared.tb = &runTB{}
	}
	shared.tb.TB = t
	if !shared.tried {
		shared.tried = true
		shared.rc = hubtest.StartRedisCluster(shared.tb, 3) // may end t (skip or failure)
	}
	if shared.rc == nil {
		if os.Getenv("HUB_REQUIRE_REDIS") == "1" {
			t.Fatal("the run's redis cluster did not start (see the first test that asked)")
		}
		t.Skip("no redis cluster (see the first test that asked)")
	}
	return shared.rc
}

// stopRunCluster stops the run's cluster, if one was started.
func stopRunCluster() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.tb == nil {
		return
	}
	for i := len(shared.tb.cleanups) - 1; i >= 0; i-- {
		shared.tb.cleanups[i]()
	}
	for _, d := range shared.tb.dirs {
		_ = os.RemoveAll(d)
	}
	shared.tb, shared.rc = nil, nil
}

// stopsCluster runs the tests, then stops the run's cluster (before
// goleak looks for goroutines left behind).
type stopsCluster struct{ *testing.M }

func (m stopsCluster) Run() int {
	code := m.M.Run()
	stopRunCluster()
	return code
}

// isPosition reports whether s has the form of a position of the backend.
func (be backend) isPosition(s string) bool {
	if be.cluster() {
		return strings.HasPrefix(s, "p")
	}
	return strings.HasSuffix(s, "p")
}

// cutSetup is a node a, a publisher p and two users, u1 and u2, for a
// test that cuts a off from its backend while p goes on publishing: cut
// and restore do it (the test then waits for a's Ready). publish
// publishes through p, first restoring when the backend refuses it (on a
// cluster the cut cannot last long, see eachCut).
type cutSetup struct {
	cluster       bool // on a cluster (eachCut)
	a, p          node
	u1, u2        string
	cut, restore  func()
	restored      bool
	publishFailed int
}

// publish publishes to users through p (a broadcast when users is nil)
// and returns the id; a refusal restores the backend first (at most
// once), then it tries again until the backend takes it.
func (s *cutSetup) publish(t *testing.T, users []string, typ string, payload json.RawMessage) string {
	t.Helper()
	var id string
	hubtest.Eventually(t, 30*time.Second, "a publish through p", func() bool {
		var err error
		if users == nil {
			id, err = s.p.hub.Broadcast(bg(t), typ, payload)
		} else {
			var evs []hub.UserEvent
			evs, err = s.p.hub.Publish(bg(t), users, typ, payload)
			if err == nil {
				id = evs[0].ID
			}
		}
		if err != nil {
			s.publishFailed++
			if !s.restored {
				s.restore()
			}
		}
		return err == nil
	})
	return id
}

// doRestore is restore, once.
func (s *cutSetup) doRestore() {
	if !s.restored {
		s.restore()
	}
}

// restoreWhile is doRestore, calling poll all along (a device's queue is
// bounded: one that is not read while a cluster's master restarts, which
// takes seconds, may be closed as a slow consumer).
func (s *cutSetup) restoreWhile(t *testing.T, poll func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); s.doRestore() }()
	hubtest.Eventually(t, 60*time.Second, "the backend restored", func() bool {
		poll()
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
}

// eachCut runs f as subtest "redis" and "cluster", side by side, each on
// a backend of its own:
//
//   - redis: a Redis server of the test's own; node a reaches it through a
//     proxy, which cut cuts (every connection dropped, new ones refused) and
//     restore restores; p reaches it directly.
//   - cluster: a three-master cluster of the test's own; cut kills a
//     master that holds neither u1's nor u2's keys nor the broadcasts'
//     (every node's subscription to it is lost, so a is not ready), and
//     restore starts it again (empty, rejoining its slots). p's health
//     probe does not run (HealthInterval of an hour), so that p goes on
//     publishing to the masters that are up, until the cluster itself
//     turns to fail (ClusterNodeTimeout after the kill): publish then
//     restores, and the rest is published after the restart.
//
// The test runs in parallel with the other tests that do (each has its own
// Redis; restarting a master takes seconds of waiting).
func eachCut(t *testing.T, size int, f func(t *testing.T, s *cutSetup)) {
	t.Parallel()
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		rs := hubtest.StartRedisServer(t)
		px := hubtest.StartProxy(t, rs.Addr())
		s := &cutSetup{
			a:  startNode(t, "redis://"+px.Addr()+"/0", "hub:", "a", size, time.Minute),
			p:  startNode(t, rs.URL(), "hub:", "p", size, time.Minute),
			u1: "u1", u2: "u2",
			cut: px.Cut,
		}
		s.restore = func() { px.Restore(); s.restored = true }
		f(t, s)
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		rc := hubtest.StartRedisCluster(t, 3)
		be := backend{url: rc.URL(), pfx: clusterPrefix(t, rc), rc: rc} // a prefix of its own: HUB_REDIS_CLUSTER_URL may name a shared cluster
		m := (rc.MasterOf("{all}") + 1) % 3
		userOff := func(pfx string) string {
			for i := 0; ; i++ {
				if u := fmt.Sprintf("%s%d", pfx, i); rc.MasterOf("{"+u+"}") != m {
					return u
				}
			}
		}
		po := be.options("p", size, time.Minute)
		po.HealthInterval = time.Hour
		s := &cutSetup{
			cluster: true,
			a:       be.node(t, "a", size, time.Minute),
			p:       startWith(t, po, hub.Options{HistorySize: size, HistoryTTL: time.Minute, Node: "p"}),
			u1:      userOff("u"), u2: userOff("v"),
			cut: func() { rc.Kill(m) },
		}
		s.restore = func() { rc.Start(m); s.restored = true }
		f(t, s)
		if s.publishFailed > 0 {
			t.Logf("%d publishes through p refused during the cut (the cluster failed before they were made)", s.publishFailed)
		}
	})
}
