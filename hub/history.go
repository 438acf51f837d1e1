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

// parsePosition is ParseID that also accepts sequence 0: the position a
// node hands out before its first event.
func parsePosition(id string) (epoch string, seq uint64, ok bool) {
	if e, ok := strings.CutSuffix(id, "-0"); ok && e != "" {
		return e, 0, true
	}
	return ParseID(id)
}
