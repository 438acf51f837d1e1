package api

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// idemCache remembers the answers of accepted broadcasts by idempotency key
// (already scoped by caller) for a fixed time. It holds at most max keys;
// expired keys are dropped lazily, and when it is full the oldest key goes
// first. A key being published is held by an in-flight entry, so that two
// concurrent requests with the same key publish once: the second waits for
// the first's answer.
type idemCache struct {
	max int
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*idemEntry
	order   []*idemEntry // insertion order (so expiry order); order[head:] live
	head    int
}

type idemEntry struct {
	key     string
	expires time.Time
	done    chan struct{} // closed when the answer is known or the attempt failed
	answer  json.RawMessage
	ok      bool // answer is valid (set before done is closed)
}

func newIdemCache(max int, ttl time.Duration, now func() time.Time) *idemCache {
	return &idemCache{max: max, ttl: ttl, now: now, entries: make(map[string]*idemEntry)}
}

// do returns the remembered answer of key, or runs publish and remembers
// its answer when it succeeds. A failed publish is not remembered: the
// waiting requests with the same key then try themselves, in turn.
func (c *idemCache) do(ctx context.Context, key string, publish func() (json.RawMessage, *apiError)) (json.RawMessage, *apiError) {
	for {
		c.mu.Lock()
		now := c.now()
		c.evictLocked(now, c.max)
		e := c.entries[key]
		if e != nil && !now.Before(e.expires) {
			c.dropLocked(e)
			e = nil
		}
		if e == nil {
			c.evictLocked(now, c.max-1) // room for the new key
			e = &idemEntry{key: key, expires: now.Add(c.ttl), done: make(chan struct{})}
			c.entries[key] = e
			c.order = append(c.order, e)
			c.mu.Unlock()
			return c.run(e, publish)
		}
		c.mu.Unlock()

		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "gave up waiting for a concurrent request with the same idempotencyKey"}
		}
		if e.ok {
			return e.answer, nil
		}
		// the first attempt failed and was forgotten: try again
	}
}

// run publishes for the in-flight entry e and settles it.
func (c *idemCache) run(e *idemEntry, publish func() (json.RawMessage, *apiError)) (answer json.RawMessage, err *apiError) {
	defer func() {
		if err != nil || answer == nil {
			c.mu.Lock()
			c.dropLocked(e)
			c.mu.Unlock()
		} else {
			e.answer, e.ok = answer, true
		}
		close(e.done)
	}()
	return publish()
}

// dropLocked forgets e if it is still the entry of its key.
func (c *idemCache) dropLocked(e *idemEntry) {
	if c.entries[e.key] == e {
		delete(c.entries, e.key)
	}
}

// evictLocked drops expired entries and then the oldest ones until at most
// keep are left. Entries already dropped are skipped on the way.
func (c *idemCache) evictLocked(now time.Time, keep int) {
	for c.head < len(c.order) {
		e := c.order[c.head]
		live := c.entries[e.key] == e
		if live && len(c.entries) <= keep && now.Before(e.expires) {
			break
		}
		if live {
			delete(c.entries, e.key)
		}
		c.order[c.head] = nil
		c.head++
	}
	switch {
	case len(c.order)-c.head > 2*c.max+1024:
		// many failed attempts left dead entries behind: keep the live ones
		live := make([]*idemEntry, 0, len(c.entries))
		for _, e := range c.order[c.head:] {
			if c.entries[e.key] == e {
				live = append(live, e)
			}
		}
		c.order, c.head = live, 0
	case c.head > 1024 && c.head*2 > len(c.order):
		// compact the queue once most of it is consumed
		n := copy(c.order, c.order[c.head:])
		clear(c.order[n:])
		c.order = c.order[:n]
		c.head = 0
	}
}

// len returns the number of keys held (for tests).
func (c *idemCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
