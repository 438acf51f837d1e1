// Package idem is the Redis side of idempotency keys, shared by the
// broadcast API (answers) and the upstream (outcomes): per key, a settled
// value and an in-flight claim, both with a TTL, so that a key settled or
// in flight on one node is seen by every node of a cluster.
package idem

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keeps values under prefix+"idem:"+ns+":o:"+key and claims under
// prefix+"idem:"+ns+":c:"+key. V is the stored bytes' type (json.RawMessage
// for the API).
type Redis[V ~[]byte] struct {
	c                  redis.UniversalClient
	valuePfx, claimPfx string
}

// claimScript takes the claim (KEYS[2], for ARGV[1] ms) unless a value
// (KEYS[1]) or a live claim exists, in one step.
var claimScript = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
if redis.call("SET", KEYS[2], "1", "NX", "PX", ARGV[1]) then return 1 end
return 0
`)

// NewRedis returns a store on client with its keys under prefix (for
// example "hub:") and the namespace ns ("api", "up"). The client stays the
// caller's: the store never closes it.
func NewRedis[V ~[]byte](client redis.UniversalClient, prefix, ns string) *Redis[V] {
	return &Redis[V]{c: client, valuePfx: prefix + "idem:" + ns + ":o:", claimPfx: prefix + "idem:" + ns + ":c:"}
}

// Get returns the value stored for key, if any.
func (s *Redis[V]) Get(ctx context.Context, key string) (V, bool, error) {
	data, err := s.c.Get(ctx, s.valuePfx+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("redis get idempotency value: %w", err)
	}
	return V(data), true, nil
}

// Claim marks key as in flight for at most ttl; false when key has a value
// or a live claim.
func (s *Redis[V]) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	n, err := claimScript.Run(ctx, s.c, []string{s.valuePfx + key, s.claimPfx + key}, max(ttl.Milliseconds(), 1)).Int()
	if err != nil {
		return false, fmt.Errorf("redis claim: %w", err)
	}
	return n == 1, nil
}

// Put stores key's value for ttl and ends its claim, in one transaction.
func (s *Redis[V]) Put(ctx context.Context, key string, value V, ttl time.Duration) error {
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.valuePfx+key, []byte(value), max(ttl, time.Millisecond))
		p.Del(ctx, s.claimPfx+key)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis put idempotency value: %w", err)
	}
	return nil
}

// Release ends key's claim without storing a value.
func (s *Redis[V]) Release(ctx context.Context, key string) error {
	if err := s.c.Del(ctx, s.claimPfx+key).Err(); err != nil {
		return fmt.Errorf("redis release claim: %w", err)
	}
	return nil
}
