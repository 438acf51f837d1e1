package redisbroker

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
)

// Every key and channel of one user is in one hash slot of a Redis
// Cluster (the user is their hash tag), whatever the user id holds; the
// global ones are not tagged.
func TestUserKeysShareASlot(t *testing.T) {
	c := hubtest.StartRedisCluster(t, 3)
	b, err := New(Options{URL: "redis://127.0.0.1:1/0"}) // not started: names only
	if err != nil {
		t.Fatal(err)
	}
	const epoch = "e0p0ch"
	for _, user := range []string{"alice", "u1", "a:b", "a{b", "a}b", "{x}", "x{}", "ü", strings.Repeat("z", 200)} {
		names := []string{b.userStream(user) + epoch, b.userState(user) + epoch, b.slotKey(user), b.userCh(user)}
		if !strings.Contains(names[0], "{"+user+"}") {
			t.Errorf("%q: stream %q does not carry the user as a hash tag", user, names[0])
		}
		slot := c.Slot(names[0])
		for _, n := range names[1:] {
			if s := c.Slot(n); s != slot {
				t.Errorf("%q: %s in slot %d, %s in slot %d", user, names[0], slot, n, s)
			}
		}
	}
	for _, n := range []string{b.metaKey, b.nodesKey, b.allCh, b.ctlCh, b.allStream() + epoch, b.allState() + epoch, b.checkpoints() + epoch, b.allSlotsKey()} {
		if strings.ContainsAny(n, "{}") {
			t.Errorf("global key %q has a hash tag", n)
		}
	}
}

// Options.Cluster takes go-redis's cluster URL and makes cluster clients;
// without it the URL is one server's, and a cluster URL is refused.
func TestClusterOption(t *testing.T) {
	const u = "redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002"
	b, err := New(Options{URL: u, Cluster: true})
	if err != nil {
		t.Fatalf("New(cluster URL, Cluster): %v", err)
	}
	if want := []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"}; !slices.Equal(b.copts.Addrs, want) {
		t.Errorf("cluster addresses %v, want %v", b.copts.Addrs, want)
	}
	cl := b.newClient(true, 4)
	defer cl.Close()
	if _, ok := cl.(*redis.ClusterClient); !ok {
		t.Errorf("client %T, want a cluster client", cl)
	}
	if _, err := New(Options{URL: u}); err == nil || !strings.Contains(err.Error(), "addr") {
		t.Errorf("New(cluster URL) without Cluster: %v, want an error naming addr", err)
	}
	if _, err := New(Options{URL: "http://x", Cluster: true}); err == nil {
		t.Error("New(http URL, Cluster): no error")
	}
	b, err = New(Options{URL: "redis://127.0.0.1:7000/0"})
	if err != nil {
		t.Fatal(err)
	}
	cl = b.newClient(false, 0)
	defer cl.Close()
	if _, ok := cl.(*redis.Client); !ok {
		t.Errorf("client %T, want a one-server client", cl)
	}
}

type nopReceiver struct{}

func (nopReceiver) Deliver(string, *hub.Message) {}
func (nopReceiver) DisconnectLocal(string) int   { return 0 }
func (nopReceiver) Resync(context.Context)       {}
func (nopReceiver) Stats() hub.Stats             { return hub.Stats{} }

// On a Redis without sharded Pub/Sub (before 7; here the command is
// renamed away) Start fails and says what is needed.
func TestStartNeedsShardedPubSub(t *testing.T) {
	r := hubtest.StartRedisServer(t, "--rename-command", "SSUBSCRIBE", "")
	b, err := New(Options{URL: r.URL(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = b.Start(ctx, nopReceiver{})
	if err == nil {
		b.Close()
		t.Fatal("Start without SSUBSCRIBE: no error")
	}
	if !strings.Contains(err.Error(), "Redis 7 or later") {
		t.Errorf("Start: %v, want it to say Redis 7 or later is needed", err)
	}
}
