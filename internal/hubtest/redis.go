package hubtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// defaultRedisURL is the test Redis when HUB_REDIS_URL is not set.
const defaultRedisURL = "redis://127.0.0.1:6379/0"

// requireRedis reports whether HUB_REQUIRE_REDIS=1: a test that needs
// Redis (or redis-server) and cannot have it fails instead of skipping.
func requireRedis() bool { return os.Getenv("HUB_REQUIRE_REDIS") == "1" }

// noRedis skips t, or fails it when HUB_REQUIRE_REDIS=1.
func noRedis(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if requireRedis() {
		t.Fatal(msg)
	}
	t.Skip(msg + " (set HUB_REQUIRE_REDIS=1 to fail instead)")
}

// RedisURL returns the URL of the test Redis: HUB_REDIS_URL, else
// redis://127.0.0.1:6379/0. When that Redis does not answer a PING, t is
// skipped, or failed when HUB_REQUIRE_REDIS=1 (where a missing Redis must
// not pass as a skip). Tests that share its database keep apart with
// RedisPrefix; a test that needs a database of its own uses RedisDB.
func RedisURL(t testing.TB) string {
	t.Helper()
	u, err := reachRedis(t)
	if err != nil {
		noRedis(t, "redis at %s unreachable: %v", u, err)
	}
	return u
}

// OptionalRedisURL is RedisURL for a test that also runs without Redis:
// it returns "" instead of skipping (and still fails t when
// HUB_REQUIRE_REDIS=1).
func OptionalRedisURL(t testing.TB) string {
	t.Helper()
	u, err := reachRedis(t)
	if err != nil {
		if requireRedis() {
			t.Fatalf("redis at %s unreachable: %v", u, err)
		}
		t.Logf("redis at %s unreachable: %v", u, err)
		return ""
	}
	return u
}

// reachRedis returns the test Redis URL and the error of a PING to it.
func reachRedis(t testing.TB) (string, error) {
	t.Helper()
	u := os.Getenv("HUB_REDIS_URL")
	if u == "" {
		u = defaultRedisURL
	}
	c := newRedisClient(t, u)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return u, c.Ping(ctx).Err()
}

// RedisDB returns rawURL (from RedisURL) pointed at database db, after
// flushing that database: a database of the caller's own that starts
// empty. Each package that needs one picks a number no other package's
// tests use.
func RedisDB(t testing.TB, rawURL string, db int) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("redis url %q: %v", rawURL, err)
	}
	u.Path = "/" + strconv.Itoa(db)
	c := newRedisClient(t, u.String())
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.FlushDB(ctx).Err(); err != nil {
		t.Fatalf("flush redis database %d: %v", db, err)
	}
	return u.String()
}

// RedisPrefix returns a key prefix of t's own ("hubtest:<random>:") and
// deletes the keys under it from the Redis at rawURL when t ends.
func RedisPrefix(t testing.TB, rawURL string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	p := "hubtest:" + hex.EncodeToString(b[:]) + ":"
	c := RedisClient(t, rawURL)
	// Registered after the client's Close, so it runs before it.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, p+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return p
}

// RedisClient returns a plain client of the Redis at rawURL (to inspect
// or prepare keys), closed when t ends.
func RedisClient(t testing.TB, rawURL string) *redis.Client {
	t.Helper()
	c := newRedisClient(t, rawURL)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newRedisClient is a client of the Redis at rawURL; the caller closes it.
func newRedisClient(t testing.TB, rawURL string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		t.Fatalf("redis url %q: %v", rawURL, err)
	}
	return redis.NewClient(o)
}

// RedisServer is a redis-server of the test's own on a free loopback
// port, for tests that stop and restart Redis. It is killed when the test
// ends.
type RedisServer struct {
	t    testing.TB
	bin  string
	addr string
	args []string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartRedisServer runs redis-server (from PATH, else /usr/bin) without
// persistence, with args added to its command line (for example
// "--appendonly", "yes", "--dir", t.TempDir()), and waits until it
// answers. Without redis-server it skips t, or fails it when
// HUB_REQUIRE_REDIS=1.
func StartRedisServer(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	r := &RedisServer{t: t, bin: redisBin(t, "redis-server"), addr: FreeAddr(t), args: args}
	t.Cleanup(r.Kill)
	r.Start()
	return r
}

// redisBin returns the path of a Redis program (redis-server, redis-cli)
// from PATH, else /usr/bin. Without it, it skips t, or fails it when
// HUB_REQUIRE_REDIS=1.
func redisBin(t testing.TB, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		bin = "/usr/bin/" + name
		if _, err2 := os.Stat(bin); err2 != nil {
			noRedis(t, "%s not installed: %v", name, err)
		}
	}
	return bin
}

// Addr is the server's host:port.
func (r *RedisServer) Addr() string { return r.addr }

// URL is the server's database 0.
func (r *RedisServer) URL() string { return "redis://" + r.addr + "/0" }

// Start starts the server again on the same address after Kill, and
// waits until it answers.
func (r *RedisServer) Start() {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.addr)
	args := append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}, r.args...)
	cmd := exec.Command(r.bin, args...)
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	c := newRedisClient(r.t, r.URL())
	defer c.Close()
	Eventually(r.t, 10*time.Second, "redis-server up on "+r.addr, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err() == nil
	})
}

// Signal sends sig to the server: SIGSTOP stalls it (it keeps its
// connections and answers nothing), SIGCONT lets it go on.
func (r *RedisServer) Signal(sig os.Signal) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		r.t.Fatalf("signal %v: redis-server is not running", sig)
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("signal %v: %v", sig, err)
	}
}

// Kill kills the server (SIGKILL: what it had not persisted is lost) and
// waits for it; a stopped server is killed too. Killing a killed server
// does nothing.
func (r *RedisServer) Kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGCONT)
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}
