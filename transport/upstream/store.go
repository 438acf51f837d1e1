package upstream

import (
	"encoding/json"

	"github.com/redis/go-redis/v9"

	"github.com/hubd/hub/internal/idem"
)

// Outcome is the final answer to an operation, as remembered under its
// idempotency key: an ack, or a nack that is not retryable. It is plain data
// (JSON-encodable) so that a shared store can keep it.
type Outcome struct {
	// Ack is true for an ack, false for a nack.
	Ack bool `json:"ack"`
	// Status is the backend's HTTP status (0 when the backend was not called).
	Status int `json:"status,omitempty"`
	// Result is the backend's JSON answer (nil: null).
	Result json.RawMessage `json:"result,omitempty"`
	// Retryable tells a nack that may be tried again; never stored.
	Retryable bool `json:"retryable,omitempty"`
	// Code and Message describe a nack.
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// IdempotencyStore remembers final outcomes by key (the Upstream scopes keys
// by user) and holds in-flight claims, so that one operation reaches the
// backend once (see idem.Store). A store shared by several nodes
// (NewRedisStore) gives that guarantee across nodes; the in-memory store
// only within one process.
type IdempotencyStore = idem.Store[Outcome]

// NewRedisStore returns a store on client with its keys under prefix (for
// example "hub:"): outcomes (as JSON) under prefix+"idem:up:o:"+key and
// claims under prefix+"idem:up:c:"+key, both with a TTL. The client stays
// the caller's: the store never closes it.
func NewRedisStore(client redis.UniversalClient, prefix string) IdempotencyStore {
	return idem.NewRedis[Outcome](client, prefix, "up")
}
