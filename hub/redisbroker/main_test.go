package redisbroker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// redisURL returns the test Redis URL; it skips the test when Redis cannot
// be reached, or fails it when HUB_REQUIRE_REDIS=1.
func redisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("HUB_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379/0"
	}
	if err := pingURL(u); err != nil {
		if os.Getenv("HUB_REQUIRE_REDIS") == "1" {
			t.Fatalf("redis at %s: %v", u, err)
		}
		t.Skipf("redis at %s unreachable: %v", u, err)
	}
	return u
}

func pingURL(u string) error {
	o, err := redis.ParseURL(u)
	if err != nil {
		return err
	}
	c := redis.NewClient(o)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// prefix returns a key prefix of its own for t and deletes its keys when t
// ends.
func prefix(t testing.TB, url string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	p := "hubtest:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		o, err := redis.ParseURL(url)
		if err != nil {
			return
		}
		c := redis.NewClient(o)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, p+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return p
}

// rawClient is a plain client for inspecting keys.
func rawClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type node struct {
	hub    *hub.Hub
	broker *redisbroker.Broker
}

// startNode starts a hub with a broker on url/prefix; both stop when t
// ends.
func startNode(t testing.TB, url, pfx, name string, size int, ttl time.Duration) node {
	t.Helper()
	b, err := redisbroker.New(redisbroker.Options{URL: url, Prefix: pfx, Node: name, HistorySize: size, HistoryTTL: ttl, Logger: quiet})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h := hub.New(hub.Options{Broker: b, HistorySize: size, HistoryTTL: ttl, Node: name, Logger: quiet})
	h.Start()
	t.Cleanup(h.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Start(ctx, h); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return node{hub: h, broker: b}
}

// sink is a fake transport: it counts wakes and records aborts.
type sink struct {
	mu     sync.Mutex
	aborts []hub.Reason
}

func (s *sink) Wake()              {}
func (s *sink) Heartbeat(bool)     {}
func (s *sink) Abort(r hub.Reason) { s.mu.Lock(); s.aborts = append(s.aborts, r); s.mu.Unlock() }

// client is a registered connection and what it received so far.
type client struct {
	t    testing.TB
	h    *hub.Hub
	c    *hub.Conn
	msgs []*hub.Message
	end  *hub.Reason
}

func connect(t testing.TB, h *hub.Hub, user, last string) *client {
	t.Helper()
	c, err := h.Register(hub.ConnInfo{UserID: user, Transport: hub.TransportWebSocket, LastEventID: last}, &sink{})
	if err != nil {
		t.Fatalf("Register(%s): %v", user, err)
	}
	cl := &client{t: t, h: h, c: c}
	t.Cleanup(func() { h.Unregister(c) })
	return cl
}

// poll moves what is queued into cl.msgs.
func (cl *client) poll() {
	for {
		n := len(cl.msgs)
		var r *hub.Reason
		cl.msgs, r = cl.c.Next(cl.msgs)
		if r != nil {
			cl.end = r
		}
		if len(cl.msgs) == n {
			return
		}
	}
}

// events returns the application events received so far.
func (cl *client) events() []*hub.Message {
	var out []*hub.Message
	for _, m := range cl.msgs {
		if !m.Control() {
			out = append(out, m)
		}
	}
	return out
}

// waitEvents polls until the client holds n application events.
func (cl *client) waitEvents(n int) []*hub.Message {
	cl.t.Helper()
	waitFor(cl.t, "events", func() bool { cl.poll(); return len(cl.events()) >= n })
	return cl.events()
}

// connected decodes the hub.connected payload received first.
func (cl *client) connected() (recovered bool, missed int) {
	cl.t.Helper()
	waitFor(cl.t, "hub.connected", func() bool { cl.poll(); return len(cl.msgs) > 0 })
	if cl.msgs[0].Type != "hub.connected" {
		cl.t.Fatalf("first message %q, want hub.connected", cl.msgs[0].Type)
	}
	var env struct {
		Payload struct {
			Recovered bool `json:"recovered"`
			Missed    int  `json:"missed"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(cl.msgs[0].Frame, &env); err != nil {
		cl.t.Fatal(err)
	}
	return env.Payload.Recovered, env.Payload.Missed
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not synchronisation
	}
}

func idsOf(msgs []*hub.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// proxy is a TCP proxy the test can cut (closing every connection and
// refusing new ones) and restore.
type proxy struct {
	target string
	ln     net.Listener
	addr   string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{target: target, ln: ln, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// setCut cuts (true) or restores (false) the network.
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
	p.mu.Unlock()
}

func (p *proxy) close() {
	p.ln.Close()
	p.setCut(true)
	p.wg.Wait()
}
