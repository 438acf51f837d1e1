package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
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
