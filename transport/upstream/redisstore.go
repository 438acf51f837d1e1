package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubd/hub/internal/idem"
)

// RedisStore is the IdempotencyStore shared by the nodes of a cluster: the
// outcomes and claims live in Redis, so a key settled or in flight on one
// node is seen by all. Outcomes are kept (as JSON) under
// prefix+"idem:up:o:"+key and claims under prefix+"idem:up:c:"+key, both
// with a TTL.
type RedisStore struct {
	r *idem.Redis[[]byte]
}

var _ IdempotencyStore = (*RedisStore)(nil)

// NewRedisStore returns a store on client with its keys under prefix (for
// example "hub:"). The client stays the caller's: the store never closes it.
func NewRedisStore(client redis.UniversalClient, prefix string) *RedisStore {
	return &RedisStore{r: idem.NewRedis[[]byte](client, prefix, "up")}
}

// Get implements IdempotencyStore.
func (s *RedisStore) Get(ctx context.Context, key string) (Outcome, bool, error) {
	data, ok, err := s.r.Get(ctx, key)
	if err != nil || !ok {
		return Outcome{}, false, err
	}
	var o Outcome
	if err := json.Unmarshal(data, &o); err != nil {
		return Outcome{}, false, fmt.Errorf("decode outcome: %w", err)
	}
	return o, true, nil
}

// Claim implements IdempotencyStore.
func (s *RedisStore) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	return s.r.Claim(ctx, key, ttl)
}

// Put implements IdempotencyStore.
func (s *RedisStore) Put(ctx context.Context, key string, o Outcome, ttl time.Duration) error {
	data, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("encode outcome: %w", err)
	}
	return s.r.Put(ctx, key, data, ttl)
}

// Release implements IdempotencyStore.
func (s *RedisStore) Release(ctx context.Context, key string) error {
	return s.r.Release(ctx, key)
}
