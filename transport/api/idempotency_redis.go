package api

import (
	"encoding/json"

	"github.com/redis/go-redis/v9"

	"github.com/hubd/hub/internal/idem"
)

// RedisIdempotency is the IdempotencyStore shared by the nodes of a
// cluster: answers are kept under prefix+"idem:api:o:"+key and in-flight
// claims under prefix+"idem:api:c:"+key, both with a TTL.
type RedisIdempotency = idem.Redis[json.RawMessage]

var _ IdempotencyStore = (*RedisIdempotency)(nil)

// NewRedisIdempotency returns a store on client with its keys under prefix
// (for example "hub:"). The client stays the caller's: the store never
// closes it.
func NewRedisIdempotency(client redis.UniversalClient, prefix string) *RedisIdempotency {
	return idem.NewRedis[json.RawMessage](client, prefix, "api")
}
