package api

import (
	"encoding/json"

	"github.com/redis/go-redis/v9"

	"github.com/hubd/hub/internal/idem"
)

// NewRedisIdempotency returns a store on client with its keys under prefix
// (for example "hub:"). The client stays the caller's: the store never
// closes it.
//
// Answers are kept under prefix+"idem:api:o:"+key and in-flight claims
// under prefix+"idem:api:c:"+key, both with a TTL.
func NewRedisIdempotency(client redis.UniversalClient, prefix string) IdempotencyStore {
	return idem.NewRedis[json.RawMessage](client, prefix, "api")
}
