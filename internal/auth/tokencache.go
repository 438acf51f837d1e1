package auth

import (
	"crypto/sha256"
	"slices"
	"sync"
	"time"
)

// DefaultTokenCache is the number of verified tokens a Verifier remembers
// (Options.TokenCache); about 250 bytes each.
const DefaultTokenCache = 4096

// tokenCache remembers the identities of tokens that passed verification,
// so that a device reconnecting with the same token is not verified again
// (DECISIONS.md, 29). An entry is keyed by the SHA-256 of the whole
// token, holds only the verified identity, the instant its exp stops being
// accepted (exp plus the leeway, as the full path compares) and the key
// set it was verified with; it is dropped when that instant has passed or
// the key set is another one. Refusals are never remembered. The cache
// holds at most size entries: a new one replaces the oldest (first in,
// first out).
type tokenCache struct {
	mu   sync.Mutex
	m    map[[sha256.Size]byte]tokenEntry
	ring [][sha256.Size]byte // insertion order; ring[next] is replaced next
	next int
	size int
}

type tokenEntry struct {
	id    Identity
	until time.Time // refused from this instant on (exp + leeway)
	keys  any       // the key set it was verified with (nil: a fixed key)
	slot  int       // its place in ring
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{m: make(map[[sha256.Size]byte]tokenEntry), size: size}
}

// get returns a copy of the identity remembered for key when it is still
// valid at now (truncated to the second, as jwx compares) and was verified
// with keys.
func (c *tokenCache) get(key [sha256.Size]byte, keys any, now time.Time) (*Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return nil, false
	}
	if e.keys != keys || !now.Truncate(time.Second).Before(e.until) {
		delete(c.m, key)
		return nil, false
	}
	id := e.id
	id.Roles = slices.Clone(e.id.Roles)
	return &id, true
}

// put remembers id for key until until.
func (c *tokenCache) put(key [sha256.Size]byte, id *Identity, keys any, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := tokenEntry{id: *id, until: until, keys: keys}
	e.id.Roles = slices.Clone(id.Roles)
	if old, ok := c.m[key]; ok {
		e.slot = old.slot
		c.m[key] = e
		return
	}
	if len(c.ring) < c.size {
		e.slot = len(c.ring)
		c.ring = append(c.ring, key)
	} else {
		e.slot = c.next
		if old, ok := c.m[c.ring[c.next]]; ok && old.slot == c.next {
			delete(c.m, c.ring[c.next])
		}
		c.ring[c.next] = key
		c.next = (c.next + 1) % c.size
	}
	c.m[key] = e
}

// len is the number of entries (tests).
func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
