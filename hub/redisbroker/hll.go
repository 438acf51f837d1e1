package redisbroker

import "math/bits"

// The cluster's activeUsers counts a user connected to several nodes once
// (docs/DECISIONS.md). Each node builds, every statsInterval, a HyperLogLog
// of the user channels it is subscribed to (one per user with a connection
// on it) and stores it in Redis with SET, under usersKey, expiring after
// statsTTL; ClusterStats asks PFCOUNT over the keys of the live nodes,
// which merges them: a user held by two nodes sets the same register in
// both. The HyperLogLog is built here, in Redis's own dense encoding
// (hyperloglog.c: header "HYLL", 16384 six-bit registers, MurmurHash64A
// with Redis's seed), so Redis does no work per user: a report is one SET
// of 12 KiB however many users a node holds, where PFADD would send and
// hash every user id every interval.

const (
	hllP         = 14 // Redis's HLL_P
	hllRegisters = 1 << hllP
	hllBits      = 6
	hllHeader    = 16
	// hllDenseSize is Redis's HLL_DENSE_SIZE: a dense string of any other
	// length is refused as corrupt.
	hllDenseSize = hllHeader + (hllRegisters*hllBits+7)/8
	hllSeed      = 0xadc83b19
)

// usersKey is the key of node's HyperLogLog. The keys of all nodes share
// one hash tag, "{stats}" (or the first one of a Prefix that has one), so
// that one PFCOUNT may read them on Redis Cluster too.
func (b *Broker) usersKey(node string) string {
	return b.opts.Prefix + "{stats}:users:" + node
}

// newHLL returns an empty dense HyperLogLog, its cached cardinality
// marked invalid (Redis computes it on the first PFCOUNT).
func newHLL() []byte {
	h := make([]byte, hllDenseSize)
	copy(h, "HYLL")
	h[4] = 0 // HLL_DENSE
	h[15] = 0x80
	return h
}

// hllAdd adds s to h as PFADD would.
func hllAdd(h []byte, s string) {
	x := murmur64A(s, hllSeed)
	reg := int(x & (hllRegisters - 1))
	x >>= hllP
	x |= 1 << (64 - hllP) // the run ends, at most 64-P+1
	count := byte(bits.TrailingZeros64(x) + 1)
	regs := h[hllHeader:]
	i, shift := reg*hllBits/8, uint(reg*hllBits&7)
	cur := regs[i] >> shift
	if i+1 < len(regs) {
		cur |= regs[i+1] << (8 - shift)
	}
	if cur&63 >= count {
		return
	}
	regs[i] = regs[i]&^(63<<shift) | count<<shift
	if i+1 < len(regs) {
		regs[i+1] = regs[i+1]&^(63>>(8-shift)) | count>>(8-shift)
	}
}

// murmur64A is Redis's MurmurHash64A (little-endian reads).
func murmur64A(s string, seed uint64) uint64 {
	const m, r = 0xc6a4a7935bd1e995, 47
	h := seed ^ uint64(len(s))*m
	i := 0
	for ; i+8 <= len(s); i += 8 {
		k := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		k *= m
		k ^= k >> r
		k *= m
		h ^= k
		h *= m
	}
	if rest := s[i:]; len(rest) > 0 {
		for j := len(rest) - 1; j >= 0; j-- {
			h ^= uint64(rest[j]) << (8 * j)
		}
		h *= m
	}
	h ^= h >> r
	h *= m
	h ^= h >> r
	return h
}

// usersHLL is the HyperLogLog of the user channels this node is
// subscribed to.
func (b *Broker) usersHLL() []byte {
	h := newHLL()
	b.mu.Lock()
	for ch := range b.subs {
		hllAdd(h, ch)
	}
	if b.rc != nil {
		all := b.rcAllCh()
		for _, m := range b.rc.masters {
			for ch := range m.subs {
				if ch != all {
					hllAdd(h, ch)
				}
			}
		}
	}
	b.mu.Unlock()
	return h
}
