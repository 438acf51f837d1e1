package idem

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// DefaultMaxEntries bounds a Memory store made with a size of 0.
const DefaultMaxEntries = 100_000

// Memory is the in-process Store: at most a fixed number of values (the
// oldest go first when it is full), each dropped after its TTL. Expired
// entries are dropped lazily; it starts no goroutine.
type Memory[V any] struct {
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*list.Element // of *memEntry[V]
	order   *list.List               // oldest first
	claims  map[string]time.Time     // key -> claim expiry
}

type memEntry[V any] struct {
	key     string
	expires time.Time
	v       V
}

// NewMemory returns a store holding at most maxEntries values
// (DefaultMaxEntries when <= 0).
func NewMemory[V any](maxEntries int) *Memory[V] {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	return &Memory[V]{
		max:     maxEntries,
		now:     time.Now,
		entries: make(map[string]*list.Element),
		order:   list.New(),
		claims:  make(map[string]time.Time),
	}
}

// Get implements Store.
func (s *Memory[V]) Get(_ context.Context, key string) (V, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.liveLocked(key, s.now())
	if e == nil {
		var zero V
		return zero, false, nil
	}
	return e.v, true, nil
}

// Claim implements Store.
func (s *Memory[V]) Claim(_ context.Context, key string, ttl time.Duration) (bool, error) {
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

// Put implements Store.
func (s *Memory[V]) Put(_ context.Context, key string, v V, ttl time.Duration) error {
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
		e := el.Value.(*memEntry[V])
		if len(s.entries) < s.max && now.Before(e.expires) {
			break
		}
		s.order.Remove(el)
		delete(s.entries, e.key)
	}
	s.entries[key] = s.order.PushBack(&memEntry[V]{key: key, expires: now.Add(ttl), v: v})
	return nil
}

// Release implements Store.
func (s *Memory[V]) Release(_ context.Context, key string) error {
	s.mu.Lock()
	delete(s.claims, key)
	s.mu.Unlock()
	return nil
}

// liveLocked returns the unexpired entry of key, dropping an expired one.
func (s *Memory[V]) liveLocked(key string, now time.Time) *memEntry[V] {
	el, ok := s.entries[key]
	if !ok {
		return nil
	}
	e := el.Value.(*memEntry[V])
	if !now.Before(e.expires) {
		s.order.Remove(el)
		delete(s.entries, key)
		return nil
	}
	return e
}
