package redisbroker

import "time"

// SkewClock shifts the broker's idea of Redis's clock by d (negative: the
// deadlines it sends are earlier in Redis's clock than they should be).
func (b *Broker) SkewClock(d time.Duration) {
	b.clock.mu.Lock()
	b.clock.skew = d.Microseconds()
	b.clock.mu.Unlock()
}
