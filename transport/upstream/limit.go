package upstream

import (
	"sync"
	"time"
)

// limiter holds one token bucket (and an in-flight count) per key: a
// connection id for WebSocket sends, a user id for POST /api/send. Buckets
// that are full again and have nothing in flight are dropped now and then,
// so memory follows the number of recent senders.
type limiter struct {
	rate  float64 // tokens per second; <= 0: unlimited
	burst float64
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens   float64
	last     time.Time
	inflight int
}

// sweepEvery is how often idle buckets are looked for.
const sweepEvery = 30 * time.Second

func newLimiter(rate float64) *limiter {
	burst := 2 * rate
	if burst < 1 {
		burst = 1
	}
	return &limiter{rate: rate, burst: burst, now: time.Now, buckets: make(map[string]*bucket)}
}

// acquire takes a token for key and, when maxInflight > 0, an in-flight slot.
// It reports false (taking nothing) when the bucket is empty or the slots
// are all used. A caller that got true with maxInflight > 0 calls release.
func (l *limiter) acquire(key string, maxInflight int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.sweepLocked(now)
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if maxInflight > 0 && b.inflight >= maxInflight {
		return false
	}
	if l.rate > 0 {
		if b.tokens < 1 {
			return false
		}
		b.tokens--
	}
	if maxInflight > 0 {
		b.inflight++
	}
	return true
}

// release frees the in-flight slot taken by acquire.
func (l *limiter) release(key string) {
	l.mu.Lock()
	if b := l.buckets[key]; b != nil && b.inflight > 0 {
		b.inflight--
	}
	l.mu.Unlock()
}

func (l *limiter) refill(b *bucket, now time.Time) {
	if l.rate <= 0 {
		return
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
}

// sweepLocked drops the buckets that are full and idle.
func (l *limiter) sweepLocked(now time.Time) {
	l.lastSweep = now
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.inflight == 0 && (l.rate <= 0 || b.tokens >= l.burst) {
			delete(l.buckets, k)
		}
	}
}
