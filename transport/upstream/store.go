package upstream

import (
	"container/list"
	"context"
	"encoding/json"
	"sync"
	"time"
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
// backend once. A store shared by several nodes (Redis) gives that guarantee
// across nodes; the in-memory store only within one process.
//
// Implementations must be safe for concurrent use. The Upstream calls, for
// every operation: Get; when there is no outcome, Claim; the claimant calls
// the backend and then either Put (final outcome, which also ends the claim)
// or Release (retryable outcome, nothing remembered). A caller that neither
// finds an outcome nor gets the claim waits and tries again.
type IdempotencyStore interface {
	// Get returns the outcome stored for key, if any.
	Get(ctx context.Context, key string) (Outcome, bool, error)
	// Claim marks key as in flight for at most ttl (so that a claimant that
	// died does not hold it forever). It reports false when key already has
	// an outcome or a live claim.
	Claim(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// Put stores the final outcome of key for ttl and ends its claim.
	Put(ctx context.Context, key string, o Outcome, ttl time.Duration) error
	// Release ends the claim of key without storing an outcome.
	Release(ctx context.Context, key string) error
}

// DefaultMaxEntries bounds the in-memory store.
const DefaultMaxEntries = 100_000

// MemoryStore is the in-process IdempotencyStore: at most a fixed number of
// outcomes (the oldest go first when it is full), each dropped after its TTL.
// Expired entries are dropped lazily; it starts no goroutine.
type MemoryStore struct {
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*list.Element // of *memEntry
	order   *list.List               // oldest first
	claims  map[string]time.Time     // key -> claim expiry
}

type memEntry struct {
	key     string
	expires time.Time
	out     Outcome
}

var _ IdempotencyStore = (*MemoryStore)(nil)

// NewMemoryStore returns an in-memory store holding at most maxEntries
// outcomes (DefaultMaxEntries when <= 0).
func NewMemoryStore(maxEntries int) *MemoryStore {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	return &MemoryStore{
		max:     maxEntries,
		now:     time.Now,
		entries: make(map[string]*list.Element),
		order:   list.New(),
		claims:  make(map[string]time.Time),
	}
}

// Len returns the number of outcomes held (expired ones not yet dropped
// included).
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// Get implements IdempotencyStore.
func (s *MemoryStore) Get(_ context.Context, key string) (Outcome, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.liveLocked(key, s.now())
	if e == nil {
		return Outcome{}, false, nil
	}
	return e.out, true, nil
}

// Claim implements IdempotencyStore.
func (s *MemoryStore) Claim(_ context.Context, key string, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.liveLocked(key, now) != nil {
		return false, nil
	}
	if exp, ok := s.claims[key]; ok && now.Before(exp) {
		return false, nil
	}
	s.claims[key] = now.Add(ttl)
	return true, nil
}

// Put implements IdempotencyStore.
func (s *MemoryStore) Put(_ context.Context, key string, o Outcome, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.claims, key)
	now := s.now()
	if el, ok := s.entries[key]; ok {
		s.order.Remove(el)
		delete(s.entries, key)
	}
	// drop expired entries from the front, then the oldest while full
	for el := s.order.Front(); el != nil; el = s.order.Front() {
		e := el.Value.(*memEntry)
		if len(s.entries) < s.max && now.Before(e.expires) {
			break
		}
		s.order.Remove(el)
		delete(s.entries, e.key)
	}
	s.entries[key] = s.order.PushBack(&memEntry{key: key, expires: now.Add(ttl), out: o})
	return nil
}

// Release implements IdempotencyStore.
func (s *MemoryStore) Release(_ context.Context, key string) error {
	s.mu.Lock()
	delete(s.claims, key)
	s.mu.Unlock()
	return nil
}

// liveLocked returns the unexpired entry of key, dropping an expired one.
func (s *MemoryStore) liveLocked(key string, now time.Time) *memEntry {
	el, ok := s.entries[key]
	if !ok {
		return nil
	}
	e := el.Value.(*memEntry)
	if !now.Before(e.expires) {
		s.order.Remove(el)
		delete(s.entries, key)
		return nil
	}
	return e
}
