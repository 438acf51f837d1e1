package idem

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Store shared by the nodes of a cluster, so that a key
// settled or in flight on one node is seen by all. Values are kept as JSON
// under prefix+"idem:"+ns+":o:{"+h+"}"+key and claims under
// prefix+"idem:"+ns+":c:{"+h+"}"+key, both with a TTL; h (a hash of the
// key) is a hash tag, so that a key's value and claim are in one slot of
// a Redis Cluster, as the claim script needs.
type Redis[V any] struct {
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
func NewRedis[V any](client redis.UniversalClient, prefix, ns string) *Redis[V] {
	return &Redis[V]{c: client, valuePfx: prefix + "idem:" + ns + ":o:", claimPfx: prefix + "idem:" + ns + ":c:"}
}

// tag is the hash tag of key's value and claim.
func tag(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "{" + hex.EncodeToString(sum[:8]) + "}"
}

func (s *Redis[V]) value(key string) string { return s.valuePfx + tag(key) + key }
func (s *Redis[V]) claim(key string) string { return s.claimPfx + tag(key) + key }

// Get implements Store.
func (s *Redis[V]) Get(ctx context.Context, key string) (V, bool, error) {
	var v V
	data, err := s.c.Get(ctx, s.value(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return v, false, nil
	}
	if err != nil {
		return v, false, fmt.Errorf("redis get idempotency value: %w", err)
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, false, fmt.Errorf("decode idempotency value: %w", err)
	}
	return v, true, nil
}

// Claim implements Store.
func (s *Redis[V]) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	n, err := claimScript.Run(ctx, s.c, []string{s.value(key), s.claim(key)}, max(ttl.Milliseconds(), 1)).Int()
	if err != nil {
		return false, fmt.Errorf("redis claim: %w", err)
	}
	return n == 1, nil
}

// Put implements Store: the value and the end of the claim in one
// transaction.
func (s *Redis[V]) Put(ctx context.Context, key string, value V, ttl time.Duration) error {
	data, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("encode idempotency value: %w", err)
	}
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.value(key), data, max(ttl, time.Millisecond))
		p.Del(ctx, s.claim(key))
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis put idempotency value: %w", err)
	}
	return nil
}

// Release implements Store.
func (s *Redis[V]) Release(ctx context.Context, key string) error {
	if err := s.c.Del(ctx, s.claim(key)).Err(); err != nil {
		return fmt.Errorf("redis release claim: %w", err)
	}
	return nil
}

var (
	_ Store[json.RawMessage] = (*Redis[json.RawMessage])(nil)
	_ Store[json.RawMessage] = (*Memory[json.RawMessage])(nil)
)
