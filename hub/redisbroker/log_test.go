package redisbroker_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/internal/hubtest"
)

// TestGoRedisLogsThroughSlog: go-redis's own log lines (here: dials to a
// server that is gone) reach the broker's slog logger as structured
// records, not go-redis's default lines on stderr.
func TestGoRedisLogsThroughSlog(t *testing.T) {
	rs := hubtest.StartRedisServer(t)
	var buf hubtest.Buffer
	b, err := redisbroker.New(redisbroker.Options{URL: rs.URL(), Node: "log-test",
		Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	h := hub.New(hub.Options{Broker: b, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rs.Kill() // the pool's redials fail and go-redis says so
	hubtest.Eventually(t, 20*time.Second, "a go-redis line in the broker's log", func() bool {
		return strings.Contains(buf.String(), `"msg":"redis client"`)
	})
}
