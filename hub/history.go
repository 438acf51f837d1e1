package hub

import (
	"strings"
	"time"
)

// stream is a bounded, ordered history of events (ascending seq): one per
// user for personal events and one for broadcasts to everyone. Its floor is
// the highest seq ever dropped from it: a resume from a position below the
// floor cannot be proven complete.
type stream struct {
	buf   []*Message // ring buffer
	head  int
	n     int
	floor uint64
}

func (s *stream) push(m *Message, size int) {
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
		old := s.buf[s.head]
		s.floor = max(s.floor, old.seq)
		s.buf[s.head] = nil
		s.head = (s.head + 1) % len(s.buf)
		s.n--
	}
	s.buf[(s.head+s.n)%len(s.buf)] = m
	s.n++
}

func (s *stream) at(i int) *Message { return s.buf[(s.head+i)%len(s.buf)] }

// trim drops events accepted before cutoff.
func (s *stream) trim(cutoff time.Time) {
	for s.n > 0 {
		m := s.at(0)
		if !m.Accepted.Before(cutoff) {
			break
		}
		s.floor = max(s.floor, m.seq)
		s.buf[s.head] = nil
		s.head = (s.head + 1) % len(s.buf)
		s.n--
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
