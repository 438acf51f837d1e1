package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
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

// IdempotencyStore remembers the answers of accepted broadcasts by
// idempotency key and holds in-flight claims, so that a key publishes once.
// The API scopes keys by caller before they reach the store. A store shared
// by several nodes (NewRedisIdempotency) gives that guarantee across the
// nodes; without one (Options.Idempotency nil) each node remembers its own
// keys in memory.
//
// Implementations must be safe for concurrent use. For a request with a key
// the API calls Get; when there is no answer, Claim; the claimant publishes
// and then either Put (the accepted answer, which also ends the claim) or
// Release (the publish failed: nothing is remembered). A request that finds
// neither an answer nor the claim waits and tries again.
type IdempotencyStore interface {
	// Get returns the answer body stored for key, if any.
	Get(ctx context.Context, key string) (json.RawMessage, bool, error)
	// Claim marks key as in flight for at most ttl (so that a claimant that
	// died does not hold it forever). It reports false when key already has
	// an answer or a live claim.
	Claim(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// Put stores the answer body of key for ttl and ends its claim.
	Put(ctx context.Context, key string, answer json.RawMessage, ttl time.Duration) error
	// Release ends the claim of key without storing an answer.
	Release(ctx context.Context, key string) error
}

// Timing of a shared IdempotencyStore. Every call to the store is bounded
// by the publish's context (the publish timeout), so a hung store delays
// an answer no longer than a hung broker does.
const (
	// idemClaimTTLFactor times the publish timeout is a claim's lifetime:
	// longer than the claimant holds it (the claim, the publish and the
	// Put all end within one publish timeout), and short, so that a claim
	// whose Release was lost with a hung Redis blocks a retry briefly.
	// The claim only saves duplicate work: that a key publishes once rests
	// on the broker's marker of the key (hub.WithIdempotencyKey).
	idemClaimTTLFactor = 3
	// idemPollEvery is how often a request whose key is in flight on
	// another node looks for the answer.
	idemPollEvery = 50 * time.Millisecond
	// idemMaxWait bounds that wait (and so does the publish's context);
	// then the answer is 409 in_flight.
	idemMaxWait = 10 * time.Second
	// idemSettleMin is the least time given to the Put or Release after a
	// publish that used up its context.
	idemSettleMin = 50 * time.Millisecond
	codeInFlight  = "in_flight"
)

// idempotency runs publish at most once per key (see idemCache.do).
type idempotency interface {
	do(ctx context.Context, key string, publish func() (json.RawMessage, *apiError)) (json.RawMessage, *apiError)
}

var (
	_ idempotency = (*idemCache)(nil)
	_ idempotency = (*sharedIdem)(nil)
)

// sharedIdem runs publishes through an IdempotencyStore. Requests of this
// node waiting for a key claimed here are woken when it settles; a key
// claimed on another node is polled.
type sharedIdem struct {
	store IdempotencyStore
	log   *slog.Logger
	ttl   time.Duration
	claim time.Duration
	poll  time.Duration
	wait  time.Duration

	mu       sync.Mutex
	inflight map[string]chan struct{} // key -> closed when settled here
}

func newSharedIdem(s IdempotencyStore, log *slog.Logger, publishTimeout time.Duration) *sharedIdem {
	return &sharedIdem{store: s, log: log, ttl: IdempotencyTTL, claim: idemClaimTTLFactor * publishTimeout,
		poll: idemPollEvery, wait: idemMaxWait, inflight: make(map[string]chan struct{})}
}

var (
	errIdemStore = &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable",
		Message: "the idempotency store is unreachable; the event was not accepted", broker: true}
	errInFlight = &apiError{Status: http.StatusConflict, Code: codeInFlight,
		Message: "a request with this idempotencyKey is still in flight; retry in a moment"}
	errGaveUp = &apiError{Status: http.StatusInternalServerError, Code: codeInternal,
		Message: "gave up waiting for a concurrent request with the same idempotencyKey"}
)

// do returns the stored answer of key, or claims key, runs publish and
// stores its answer when it succeeds. A failed publish is not remembered.
// A request whose key stays in flight elsewhere longer than the wait bound
// or its context's deadline is answered 409 in_flight.
func (s *sharedIdem) do(ctx context.Context, key string, publish func() (json.RawMessage, *apiError)) (json.RawMessage, *apiError) {
	deadline := time.Now().Add(s.wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		answer, ok, err := s.store.Get(ctx, key)
		if err != nil {
			s.log.Error("idempotency store failed", "op", "get", "err", err)
			return nil, errIdemStore
		}
		if ok {
			return answer, nil
		}
		claimed, err := s.store.Claim(ctx, key, s.claim)
		if err != nil {
			s.log.Error("idempotency store failed", "op", "claim", "err", err)
			return nil, errIdemStore
		}
		if claimed {
			return s.run(ctx, key, publish)
		}
		if !time.Now().Before(deadline) {
			return nil, errInFlight
		}
		s.mu.Lock()
		done := s.inflight[key] // nil when claimed on another node: poll
		s.mu.Unlock()
		t := time.NewTimer(min(s.poll, time.Until(deadline)))
		select {
		case <-done:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, errInFlight
			}
			return nil, errGaveUp
		}
		t.Stop()
	}
}

// run publishes for the claimed key and settles the claim, within ctx's
// deadline (with at least idemSettleMin for the settling).
func (s *sharedIdem) run(ctx context.Context, key string, publish func() (json.RawMessage, *apiError)) (json.RawMessage, *apiError) {
	done := make(chan struct{})
	s.mu.Lock()
	s.inflight[key] = done
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.inflight, key)
		s.mu.Unlock()
		close(done)
	}()
	answer, e := publish()
	settleBy := time.Now().Add(idemSettleMin)
	if d, ok := ctx.Deadline(); ok && d.After(settleBy) {
		settleBy = d
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), settleBy)
	defer cancel()
	if e != nil || answer == nil {
		// Nothing is remembered: not a 503 (nothing was published), nor
		// an unknown outcome (a retry then finds the broker's marker).
		if err := s.store.Release(ctx, key); err != nil {
			s.log.Warn("idempotency store failed", "op", "release", "err", err)
		}
		return answer, e
	}
	if err := s.store.Put(ctx, key, answer, s.ttl); err != nil {
		// the event is published: answer it; a repeat may publish again
		s.log.Warn("idempotency store failed", "op", "put", "err", err)
	}
	return answer, nil
}
