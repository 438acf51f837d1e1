package redisbroker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"
)

// goRedisLog sends go-redis's own log lines (a failed dial, a pool error)
// to a slog logger at warn level, instead of its default unstructured
// lines on stderr. go-redis has one logger per process: the last broker
// started sets it (every broker of a process logs to the same place in
// practice).
type goRedisLog struct{ log *slog.Logger }

func (l goRedisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis client", "msg", fmt.Sprintf(format, v...))
}

var setLoggerMu sync.Mutex

// routeGoRedisLog makes go-redis log through log.
func routeGoRedisLog(log *slog.Logger) {
	setLoggerMu.Lock()
	defer setLoggerMu.Unlock()
	redis.SetLogger(goRedisLog{log: log})
}
