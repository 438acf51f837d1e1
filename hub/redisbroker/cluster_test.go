package redisbroker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
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

// A Redis still holding the keys of the layout before the hash tags (a
// user stream "u:<user>:<epoch>" that the hub no longer reads) does not
// make the hub resume an id of that layout as if the user's stream of the
// new name held everything after it: the new layout has an epoch of its
// own, and such an id is not recovered.
func TestEarlierLayoutIsAnotherEpoch(t *testing.T) {
	url := hubtest.RedisURL(t)
	pfx := hubtest.RedisPrefix(t, url)
	rc := hubtest.RedisClient(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The earlier layout: epoch "old" at seq 100, a checkpoint of seq 10
	// made just now (nothing lost after it), u1's stream holding 60 to 100.
	now := time.Now().UnixMilli()
	rc.HSet(ctx, pfx+"meta", "epoch", "old", "seq", 100, "ck", now)
	rc.XAdd(ctx, &redis.XAddArgs{Stream: pfx + "ck:old", ID: strconv.FormatInt(now, 10) + "-0", Values: []string{"s", "10"}})
	for seq := 60; seq <= 100; seq++ {
		frame := fmt.Sprintf(`{"id":"old-%d","type":"T","payload":1,"timestamp":"2026-12-06T00:00:00Z"}`, seq)
		rc.XAdd(ctx, &redis.XAddArgs{Stream: pfx + "u:u1:old", ID: fmt.Sprintf("%d-0", seq), Values: []string{"f", frame, "t", strconv.FormatInt(now, 10)}})
	}
	b, err := New(Options{URL: url, Prefix: pfx, HistorySize: 1000, HistoryTTL: time.Minute, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx, nopReceiver{}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	msgs, ok, err := b.History(ctx, "u1", "old-50", 100)
	if err != nil || ok {
		t.Errorf("History from old-50: %d events, recovered %v, %v; want not recovered", len(msgs), ok, err)
	}
	if pos, err := b.Position(ctx); err != nil || strings.HasPrefix(pos, "old-") {
		t.Errorf("Position %q, %v: want a new epoch", pos, err)
	}
}
