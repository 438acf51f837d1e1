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
//
// Coalescing keys: an event with a key supersedes the stream's event with
// the same key. The superseded event's slot becomes a hole (nil) at once,
// found through keys (key -> the absolute index of its event's slot), so
// superseding costs O(1); the floor does not move (nothing was lost: the
// newer event stands for it), and the bounds count only the events held
// (n - holes), one per key. Holes are never at the head, and the ring is
// compacted when they are more than half of it, which costs O(1)
// amortised per hole.
type stream struct {
	buf   []*Message // ring buffer; nil slots are holes
	head  int
	n     int // slots in use from head, holes included
	holes int
	floor uint64
	bytes int64
	// base is the absolute index of the head slot: slot i from the head
	// has the absolute index base+i, which stays the same while the head
	// moves (compaction renumbers).
	base uint64
	keys map[string]uint64 // key -> absolute index of its event; nil until the first key
}

// held is the number of events the stream holds (holes not counted).
func (s *stream) held() int { return s.n - s.holes }

// push appends m, superseding the stream's event with m's key, then drops
// the oldest events while the stream holds more than size events or more
// than maxBytes bytes (maxBytes <= 0: no byte bound). An event bigger than
// maxBytes on its own is dropped at once: it was delivered live, and the
// floor makes a resume from before it recovered:false. Every event held or
// dropped is accounted in a.
func (s *stream) push(m *Message, size int, maxBytes int64, a *histAcct) {
	if size <= 0 {
		return
	}
	if m.key != "" {
		if at, ok := s.keys[m.key]; ok {
			s.supersede(at, a)
		}
	}
	if s.held() >= size { // full: drop the oldest
		s.dropHead(a)
	}
	if s.n == len(s.buf) {
		limit := size // the ring never needs more slots than events...
		if s.holes > 0 {
			limit = 2 * size // ...but holes take slots until compacted
		}
		switch {
		case s.holes > 0 && (2*s.holes >= s.n || len(s.buf) >= limit):
			s.compact(len(s.buf))
		default:
			// grow the ring gently: most users have few events
			s.compact(min(limit, max(4, 2*len(s.buf))))
		}
	}
	s.buf[(s.head+s.n)%len(s.buf)] = m
	if m.key != "" {
		if s.keys == nil {
			s.keys = make(map[string]uint64)
		}
		s.keys[m.key] = s.base + uint64(s.n)
	}
	s.n++
	s.bytes += int64(m.Size())
	a.hold(m)
	for maxBytes > 0 && s.bytes > maxBytes && s.n > 0 {
		s.dropHead(a)
	}
	s.release()
}

// supersede turns the slot at absolute index at into a hole: its event is
// no longer held, and the floor stays where it is.
func (s *stream) supersede(at uint64, a *histAcct) {
	i := (s.head + int(at-s.base)) % len(s.buf)
	old := s.buf[i]
	s.buf[i] = nil
	s.holes++
	s.bytes -= int64(old.Size())
	delete(s.keys, old.key)
	a.drop(old)
	s.skipHoles()
	if s.holes >= 16 && 2*s.holes > s.n {
		s.compact(len(s.buf))
	}
}

// skipHoles moves the head past the holes at the head.
func (s *stream) skipHoles() {
	for s.n > 0 && s.buf[s.head] == nil {
		s.head = (s.head + 1) % len(s.buf)
		s.n--
		s.holes--
		s.base++
	}
}

// compact moves the events to the front of a ring of length size (the
// same array, in place, when size is its length), without holes, and
// renumbers keys. The head is an event, so it keeps its absolute index.
func (s *stream) compact(size int) {
	if size == len(s.buf) {
		w := 0
		for i := 0; i < s.n; i++ {
			m := s.at(i)
			if m == nil {
				continue
			}
			if w != i { // w < i: slot w was read already
				s.buf[(s.head+w)%len(s.buf)] = m
				s.buf[(s.head+i)%len(s.buf)] = nil
			}
			if m.key != "" {
				s.keys[m.key] = s.base + uint64(w)
			}
			w++
		}
		s.n, s.holes = w, 0
		return
	}
	nb := make([]*Message, size)
	w := 0
	for i := 0; i < s.n; i++ {
		if m := s.at(i); m != nil {
			nb[w] = m
			if m.key != "" {
				s.keys[m.key] = s.base + uint64(w)
			}
			w++
		}
	}
	s.buf, s.head, s.n, s.holes = nb, 0, w, 0
}

// release lets an empty stream's ring go.
func (s *stream) release() {
	if s.n == 0 {
		s.buf, s.head, s.holes, s.keys = nil, 0, 0, nil
	}
}

// dropHead drops the oldest event (the stream is not empty, so the head is
// an event: holes are never at the head).
func (s *stream) dropHead(a *histAcct) {
	old := s.buf[s.head]
	s.floor = max(s.floor, old.seq)
	s.bytes -= int64(old.Size())
	if old.key != "" && s.keys[old.key] == s.base {
		delete(s.keys, old.key)
	}
	s.buf[s.head] = nil
	s.head = (s.head + 1) % len(s.buf)
	s.n--
	s.base++
	a.drop(old)
	s.skipHoles()
}

func (s *stream) at(i int) *Message { return s.buf[(s.head+i)%len(s.buf)] }

// trim drops events accepted before cutoff.
func (s *stream) trim(cutoff time.Time, a *histAcct) {
	for s.n > 0 && s.at(0).Accepted.Before(cutoff) {
		s.dropHead(a)
	}
	s.release()
}

// dropThrough drops the events with seq <= given (the node-wide bound
// evicting its oldest event from this stream).
func (s *stream) dropThrough(seq uint64, a *histAcct) {
	for s.n > 0 && s.at(0).seq <= seq {
		s.dropHead(a)
	}
	s.release()
}

// after returns the events with seq > given, in order. It walks back from
// the newest, so it costs the events returned and the holes among them.
func (s *stream) after(seq uint64) []*Message {
	i := s.n
	k := 0
	for i > 0 {
		m := s.at(i - 1)
		if m != nil {
			if m.seq <= seq {
				break
			}
			k++
		}
		i--
	}
	if k == 0 {
		return nil
	}
	out := make([]*Message, 0, k)
	for ; i < s.n; i++ {
		if m := s.at(i); m != nil {
			out = append(out, m)
		}
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
	mu sync.Mutex
	q  idxQueue // stored events, oldest first
	// queue is set when the history has a node-wide bound
	// (HistoryTotalBytes): without one nothing is ever evicted, so done
	// lists nothing and publishes share no lock here.
	queue bool

	// The counters are split in stripes, one per run of shards, each on
	// cache lines of its own: publishes to users of different shards on
	// different cores do not write the same line. A stripe's counters can
	// go below zero (an event held in one stripe, dropped in another);
	// only their sums mean something.
	acct [acctStripes]histAcct
}

// acctStripes is the number of stripes of histIndex's counters.
const acctStripes = 8

// histAcct is one stripe of histIndex's counters, padded to two cache
// lines (the processor fetches lines in adjacent pairs).
type histAcct struct {
	bytes atomic.Int64 // envelope bytes of the events held by some stream
	refs  atomic.Int64 // (stream, event) pairs held
	live  atomic.Int64 // entries of q whose event is still held
	_     [128 - 24]byte
}

// stripe is the stripe for shard number i.
func (ix *histIndex) stripe(i int) *histAcct { return &ix.acct[i%acctStripes] }

// heldBytes and heldRefs sum the stripes; live is the entries of q whose
// event is still held.
func (ix *histIndex) heldBytes() int64 {
	var n int64
	for i := range ix.acct {
		n += ix.acct[i].bytes.Load()
	}
	return n
}

func (ix *histIndex) heldRefs() int64 {
	var n int64
	for i := range ix.acct {
		n += ix.acct[i].refs.Load()
	}
	return n
}

func (ix *histIndex) live() int64 {
	var n int64
	for i := range ix.acct {
		n += ix.acct[i].live.Load()
	}
	return n
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
func (ix *histIndex) usage() int64 { return ix.heldBytes() + holdOverhead*ix.heldRefs() }

// idxEntry is one stored event and the streams that took it.
type idxEntry struct {
	m       *Message
	holders holders
}

// holders are the streams that took an event: the first inline (most
// events go to one user: no allocation for them), the others in rest.
type holders struct {
	first holder
	rest  []holder
	n     int
}

// add appends h.
func (hs *holders) add(h holder) {
	if hs.n == 0 {
		hs.first = h
	} else {
		hs.rest = append(hs.rest, h)
	}
	hs.n++
}

// at returns the i-th holder (0 <= i < n).
func (hs *holders) at(i int) holder {
	if i == 0 {
		return hs.first
	}
	return hs.rest[i-1]
}

// holder is a stream that took an event: a user's (us set) or the broadcast
// stream (us nil).
type holder struct {
	s  *shard
	us *userState
}

// start accounts a new event before the streams take it: it counts once
// against the node and holds one reference (the publisher's) until done.
func (a *histAcct) start(m *Message) {
	m.held.Store(1)
	a.bytes.Add(int64(m.Size()))
}

// hold records that one more stream holds m.
func (a *histAcct) hold(m *Message) {
	m.held.Add(1)
	a.refs.Add(1)
}

// drop records that a stream dropped m.
func (a *histAcct) drop(m *Message) {
	a.refs.Add(-1)
	a.release(m)
}

// release drops one reference to m (a stream's, or the publisher's); the
// last one gives its bytes back.
func (a *histAcct) release(m *Message) {
	if m.held.Add(-1) == 0 {
		a.bytes.Add(-int64(m.Size()))
		a.live.Add(-1)
	}
}

// done lists the event, taken by holders, for eviction (when the history
// has a node-wide bound) and drops the publisher's reference (which gives
// its bytes back when no stream kept it). It is called under the holders'
// shard locks, so no stream can drop the event before it is listed.
func (ix *histIndex) done(m *Message, hs holders, a *histAcct) {
	a.live.Add(1) // taken back by the release that finds it held by none
	if hs.n > 0 && ix.queue {
		ix.mu.Lock()
		ix.q.push(idxEntry{m: m, holders: hs})
		ix.compactLocked()
		ix.mu.Unlock()
	}
	a.release(m)
}

// compactLocked drops the entries of events that no stream holds any more
// (dropped by a stream's own bounds or by its TTL) once they are more than
// half of the queue, so that the queue keeps no dropped event alive for
// long. (The space of the entries popped goes back chunk by chunk.)
func (ix *histIndex) compactLocked() {
	n := ix.q.n
	if live := ix.live(); n >= 64 && live*2 < int64(n) {
		var kept idxQueue
		for c, i := 0, ix.q.head; c < len(ix.q.chunks); c, i = c+1, 0 {
			for _, e := range ix.q.chunks[c][i:] {
				if e.m.held.Load() > 0 {
					kept.push(e)
				}
			}
		}
		ix.q = kept
	}
}

// pop takes the oldest entry whose event is still held.
func (ix *histIndex) pop() (idxEntry, bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for ix.q.n > 0 {
		if e := ix.q.pop(); e.m.held.Load() > 0 {
			return e, true
		}
	}
	return idxEntry{}, false
}

// idxQueue is a FIFO of entries in chunks of idxChunk: a push never copies
// the queue (one slice grown by append copied all of it, under the lock
// every publish takes, once per doubling), and the popped chunks go.
type idxQueue struct {
	chunks [][]idxEntry // every chunk is full but the last
	head   int          // next entry of chunks[0]
	n      int          // entries from head
}

// idxChunk is the number of entries of a chunk of idxQueue (56 bytes each).
const idxChunk = 1024

func (q *idxQueue) push(e idxEntry) {
	if k := len(q.chunks); k == 0 || len(q.chunks[k-1]) == idxChunk {
		q.chunks = append(q.chunks, make([]idxEntry, 0, idxChunk))
	}
	k := len(q.chunks) - 1
	q.chunks[k] = append(q.chunks[k], e)
	q.n++
}

// pop removes and returns the oldest entry (q.n > 0).
func (q *idxQueue) pop() idxEntry {
	c := q.chunks[0]
	e := c[q.head]
	c[q.head] = idxEntry{}
	q.head++
	q.n--
	if q.head == len(c) { // chunk done: the only one left is reused
		q.head = 0
		if len(q.chunks) == 1 {
			q.chunks[0] = c[:0]
		} else {
			q.chunks[0] = nil
			q.chunks = q.chunks[1:]
		}
	}
	return e
}
