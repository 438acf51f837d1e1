package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore is the IdempotencyStore shared by the nodes of a cluster: the
// outcomes and claims live in Redis, so a key settled or in flight on one
// node is seen by all. Outcomes are kept under prefix+"idem:up:o:"+key and
// claims under prefix+"idem:up:c:"+key, both with a TTL.
type RedisStore struct {
	c      redis.UniversalClient
	prefix string
}

var _ IdempotencyStore = (*RedisStore)(nil)

// claimScript takes the claim (KEYS[2], for ARGV[1] ms) unless an outcome
// (KEYS[1]) or a live claim exists, in one step.
var claimScript = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
if redis.call("SET", KEYS[2], "1", "NX", "PX", ARGV[1]) then return 1 end
return 0
`)

// NewRedisStore returns a store on client with its keys under prefix (for
// example "hub:"). The client stays the caller's: the store never closes it.
func NewRedisStore(client redis.UniversalClient, prefix string) *RedisStore {
	return &RedisStore{c: client, prefix: prefix}
}

func (s *RedisStore) outKey(key string) string   { return s.prefix + "idem:up:o:" + key }
func (s *RedisStore) claimKey(key string) string { return s.prefix + "idem:up:c:" + key }

// Get implements IdempotencyStore.
func (s *RedisStore) Get(ctx context.Context, key string) (Outcome, bool, error) {
	data, err := s.c.Get(ctx, s.outKey(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Outcome{}, false, nil
	}
	if err != nil {
		return Outcome{}, false, fmt.Errorf("redis get outcome: %w", err)
	}
	var o Outcome
	if err := json.Unmarshal(data, &o); err != nil {
		return Outcome{}, false, fmt.Errorf("decode outcome: %w", err)
	}
	return o, true, nil
}

// Claim implements IdempotencyStore.
func (s *RedisStore) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	n, err := claimScript.Run(ctx, s.c, []string{s.outKey(key), s.claimKey(key)}, millis(ttl)).Int()
	if err != nil {
		return false, fmt.Errorf("redis claim: %w", err)
	}
	return n == 1, nil
}

// Put implements IdempotencyStore.
func (s *RedisStore) Put(ctx context.Context, key string, o Outcome, ttl time.Duration) error {
	data, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("encode outcome: %w", err)
	}
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.outKey(key), data, max(ttl, time.Millisecond))
		p.Del(ctx, s.claimKey(key))
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis put outcome: %w", err)
	}
	return nil
}

// Release implements IdempotencyStore.
func (s *RedisStore) Release(ctx context.Context, key string) error {
	if err := s.c.Del(ctx, s.claimKey(key)).Err(); err != nil {
		return fmt.Errorf("redis release claim: %w", err)
	}
	return nil
}

// millis is d in whole milliseconds, at least 1 (PX refuses 0).
func millis(d time.Duration) int64 {
	return max(d.Milliseconds(), 1)
}
