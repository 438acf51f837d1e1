package hub

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// stream is a bounded, ordered history of events (ascending seq): one per
// user for personal events and one for broadcasts to everyone. Its floor is
// the highest seq ever dropped from it: a resume from a position below the
// floor cannot be proven complete. bytes is the envelope bytes it holds
// (Message.Size), which the hub bounds per stream (Options.HistoryMaxBytes).
type stream struct {
	buf   []*Message // ring buffer
	head  int
	n     int
	floor uint64
	bytes int64
}

// push appends m, then drops the oldest events while the stream holds more
// than size events or more than maxBytes bytes (maxBytes <= 0: no byte
// bound). An event bigger than maxBytes on its own is dropped at once: it
// was delivered live, and the floor makes a resume from before it
// recovered:false. Every event held or dropped is accounted in ix.
func (s *stream) push(m *Message, size int, maxBytes int64, ix *histIndex) {
	if size <= 0 {
		return
	}
	if len(s.buf) < size && s.n == len(s.buf) {
		// grow the ring gently: most users have few events
		nb := make([]*Message, min(size, max(4, 2*len(s.buf))))
		for i := 0; i < s.n; i++ {
			nb[i] = s.buf[(s.head+i)%len(s.buf)]
		}
		s.buf, s.head = nb, 0
	}
	if s.n == len(s.buf) { // full: drop the oldest
		s.dropHead(ix)
	}
	s.buf[(s.head+s.n)%len(s.buf)] = m
	s.n++
	s.bytes += int64(m.Size())
	ix.hold(m)
	for maxBytes > 0 && s.bytes > maxBytes && s.n > 0 {
		s.dropHead(ix)
	}
	if s.n == 0 {
		s.buf, s.head = nil, 0
	}
}

// dropHead drops the oldest event (the stream is not empty).
func (s *stream) dropHead(ix *histIndex) {
	old := s.buf[s.head]
	s.floor = max(s.floor, old.seq)
	s.bytes -= int64(old.Size())
	s.buf[s.head] = nil
	s.head = (s.head + 1) % len(s.buf)
	s.n--
	ix.drop(old)
}

func (s *stream) at(i int) *Message { return s.buf[(s.head+i)%len(s.buf)] }

// trim drops events accepted before cutoff.
func (s *stream) trim(cutoff time.Time, ix *histIndex) {
	for s.n > 0 && s.at(0).Accepted.Before(cutoff) {
		s.dropHead(ix)
	}
	if s.n == 0 {
		s.buf, s.head = nil, 0
	}
}

// dropThrough drops the events with seq <= given (the node-wide bound
// evicting its oldest event from this stream).
func (s *stream) dropThrough(seq uint64, ix *histIndex) {
	for s.n > 0 && s.at(0).seq <= seq {
		s.dropHead(ix)
	}
	if s.n == 0 {
		s.buf, s.head = nil, 0
	}
}

// search returns the index of the first event with seq >= given.
func (s *stream) search(seq uint64) int {
	lo, hi := 0, s.n
	for lo < hi {
		mid := (lo + hi) / 2
		if s.at(mid).seq < seq {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// after appends to out the events with seq > given, in order.
func (s *stream) after(seq uint64) []*Message {
	i := s.search(seq + 1)
	if i >= s.n {
		return nil
	}
	out := make([]*Message, 0, s.n-i)
	for ; i < s.n; i++ {
		out = append(out, s.at(i))
	}
	return out
}

// mergeSeq merges two ascending lists by seq.
func mergeSeq(a, b []*Message) []*Message {
	if len(a) == 0 {
		return b
	}
	if len(b) == 0 {
		return a
	}
	out := make([]*Message, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].seq < b[0].seq {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	out = append(out, a...)
	return append(out, b...)
}

// contains reports whether the event with seq is held.
func (s *stream) contains(seq uint64) bool {
	i := s.search(seq)
	return i < s.n && s.at(i).seq == seq
}

// A position (hub.connected's, when nothing is replayed) names a place in
// the node's or cluster's sequence rather than an event: "<epoch>-<seq>p",
// where seq is that of the last event published before it (0 before the
// first). The suffix keeps it apart from event ids, which a resume must
// find in the user's own history or the broadcasts; a position only needs
// nothing after it to have been dropped.
const positionSuffix = "p"

// FormatPosition returns the position after the event id (or the cluster
// position from Broker.Position) at, "" for "".
func FormatPosition(at string) string {
	if at == "" {
		return ""
	}
	return at + positionSuffix
}

// IsPosition reports whether id has a position's form, and returns the id
// part (for Broker.Since).
func IsPosition(id string) (at string, ok bool) {
	at, ok = strings.CutSuffix(id, positionSuffix)
	return at, ok && at != ""
}

// parsePosition splits a position into its epoch and sequence (0 allowed).
func parsePosition(id string) (epoch string, seq uint64, ok bool) {
	at, ok := IsPosition(id)
	if !ok {
		return "", 0, false
	}
	if e, ok := strings.CutSuffix(at, "-0"); ok && e != "" {
		return e, 0, true
	}
	return ParseID(at)
}

// histIndex is the node-wide account of the history: the envelope bytes of
// every event some stream holds, each event counted once however many
// streams hold it, the number of places the events are held (each costs a
// ring slot and a holder entry: holdOverhead), which Options.
// HistoryTotalBytes bounds together (usage), and the events in the order
// they were stored, with the streams that took each, so that the oldest can
// be evicted from all of them.
//
// Locking: add runs under the shard locks of the event's holders, pop under
// none; mu is never held while a shard lock is taken (evict takes the shard
// locks after pop returned), so the order is shard locks, then mu.
type histIndex struct {
	mu   sync.Mutex
	q    []idxEntry // stored events, oldest first from head
	head int

	bytes atomic.Int64 // envelope bytes of the events held by some stream
	refs  atomic.Int64 // (stream, event) pairs held
	live  atomic.Int64 // entries of q whose event is still held
}

// holdOverhead is what the history spends, besides the envelope, for each
// stream holding an event: its slot in the stream's ring (8 bytes, up to
// twice that while the ring has room to grow) and its holder entry in the
// eviction queue (16 bytes). The node-wide bound counts it, so that one
// small event sent to 10,000 users cannot hold ten thousand times its size
// unaccounted.
const holdOverhead = 32

// usage is what HistoryTotalBytes bounds: the envelopes, each once, and the
// overhead of every place they are held.
func (ix *histIndex) usage() int64 { return ix.bytes.Load() + holdOverhead*ix.refs.Load() }

// idxEntry is one stored event and the streams that took it.
type idxEntry struct {
	m       *Message
	holders []holder
}

// holder is a stream that took an event: a user's (us set) or the broadcast
// stream (us nil).
type holder struct {
	s  *shard
	us *userState
}

// start accounts a new event before the streams take it: it counts once
// against the node and holds one reference (the publisher's) until done.
func (ix *histIndex) start(m *Message) {
	m.held.Store(1)
	ix.bytes.Add(int64(m.Size()))
}

// hold records that one more stream holds m.
func (ix *histIndex) hold(m *Message) {
	m.held.Add(1)
	ix.refs.Add(1)
}

// drop records that a stream dropped m.
func (ix *histIndex) drop(m *Message) {
	ix.refs.Add(-1)
	ix.release(m)
}

// release drops one reference to m (a stream's, or the publisher's); the
// last one gives its bytes back.
func (ix *histIndex) release(m *Message) {
	if m.held.Add(-1) == 0 {
		ix.bytes.Add(-int64(m.Size()))
		ix.live.Add(-1)
	}
}

// done lists the event, taken by holders, for eviction and drops the
// publisher's reference (which gives its bytes back when no stream kept
// it). It is called under the holders' shard locks, so no stream can drop
// the event before it is listed.
func (ix *histIndex) done(m *Message, holders []holder) {
	ix.live.Add(1) // taken back by the release that finds it held by none
	if len(holders) > 0 {
		ix.mu.Lock()
		ix.q = append(ix.q, idxEntry{m: m, holders: holders})
		ix.compactLocked()
		ix.mu.Unlock()
	}
	ix.release(m)
}

// compactLocked drops the entries of events that no stream holds any more
// (dropped by a stream's own bounds or by its TTL) once they are more than
// half of the queue, so that the queue keeps no dropped event alive for
// long, and gives back the space of the entries popped so far.
func (ix *histIndex) compactLocked() {
	n := len(ix.q) - ix.head
	if n >= 64 && ix.live.Load()*2 < int64(n) {
		kept := make([]idxEntry, 0, max(64, 2*ix.live.Load()))
		for _, e := range ix.q[ix.head:] {
			if e.m.held.Load() > 0 {
				kept = append(kept, e)
			}
		}
		ix.q, ix.head = kept, 0
		return
	}
	if ix.head >= 64 && ix.head*2 >= len(ix.q) {
		k := copy(ix.q, ix.q[ix.head:])
		clear(ix.q[k:])
		ix.q, ix.head = ix.q[:k], 0
	}
}

// pop takes the oldest entry whose event is still held.
func (ix *histIndex) pop() (idxEntry, bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for ix.head < len(ix.q) {
		e := ix.q[ix.head]
		ix.q[ix.head] = idxEntry{}
		ix.head++
		if ix.head == len(ix.q) {
			ix.q, ix.head = ix.q[:0], 0
		}
		if e.m.held.Load() > 0 {
			return e, true
		}
	}
	return idxEntry{}, false
}
