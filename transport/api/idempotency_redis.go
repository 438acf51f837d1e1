package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisIdempotency is the IdempotencyStore shared by the nodes of a
// cluster: answers are kept under prefix+"idem:api:o:"+key and in-flight
// claims under prefix+"idem:api:c:"+key, both with a TTL.
type RedisIdempotency struct {
	c      redis.UniversalClient
	prefix string
}

var _ IdempotencyStore = (*RedisIdempotency)(nil)

// claimScript takes the claim (KEYS[2], for ARGV[1] ms) unless an answer
// (KEYS[1]) or a live claim exists, in one step.
var claimScript = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
if redis.call("SET", KEYS[2], "1", "NX", "PX", ARGV[1]) then return 1 end
return 0
`)

// NewRedisIdempotency returns a store on client with its keys under prefix
// (for example "hub:"). The client stays the caller's: the store never
// closes it.
func NewRedisIdempotency(client redis.UniversalClient, prefix string) *RedisIdempotency {
	return &RedisIdempotency{c: client, prefix: prefix}
}

func (s *RedisIdempotency) answerKey(key string) string { return s.prefix + "idem:api:o:" + key }
func (s *RedisIdempotency) claimKey(key string) string  { return s.prefix + "idem:api:c:" + key }

// Get implements IdempotencyStore.
func (s *RedisIdempotency) Get(ctx context.Context, key string) (json.RawMessage, bool, error) {
	data, err := s.c.Get(ctx, s.answerKey(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("redis get answer: %w", err)
	}
	return data, true, nil
}

// Claim implements IdempotencyStore.
func (s *RedisIdempotency) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	n, err := claimScript.Run(ctx, s.c, []string{s.answerKey(key), s.claimKey(key)}, max(ttl.Milliseconds(), 1)).Int()
	if err != nil {
		return false, fmt.Errorf("redis claim: %w", err)
	}
	return n == 1, nil
}

// Put implements IdempotencyStore.
func (s *RedisIdempotency) Put(ctx context.Context, key string, answer json.RawMessage, ttl time.Duration) error {
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.answerKey(key), []byte(answer), max(ttl, time.Millisecond))
		p.Del(ctx, s.claimKey(key))
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis put answer: %w", err)
	}
	return nil
}

// Release implements IdempotencyStore.
func (s *RedisIdempotency) Release(ctx context.Context, key string) error {
	if err := s.c.Del(ctx, s.claimKey(key)).Err(); err != nil {
		return fmt.Errorf("redis release claim: %w", err)
	}
	return nil
}
