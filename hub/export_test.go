package hub

import "time"

// UserStates counts the per-user entries held by the registry (connected
// users and users with a history), to check that memory stays bounded.
func (h *Hub) UserStates() int {
	n := 0
	for _, s := range h.shards {
		s.mu.Lock()
		n += len(s.users)
		s.mu.Unlock()
	}
	return n
}

// BroadcastHistoryLen is the number of events in the broadcast stream.
func (h *Hub) BroadcastHistoryLen() int {
	h.allMu.Lock()
	defer h.allMu.Unlock()
	return h.all.n
}

// MaintainAt runs one maintenance round as if the clock read now.
func (h *Hub) MaintainAt(now time.Time) { h.maintain(now) }

// HistoryBytes is the node-wide count of the envelope bytes held by the
// history (each event once).
func (h *Hub) HistoryBytes() int64 { return h.ix.heldBytes() }

// HistoryIndexLen is the number of entries of the node-wide eviction queue
// (events held, and dropped ones not compacted away yet).
func (h *Hub) HistoryIndexLen() int {
	h.ix.mu.Lock()
	defer h.ix.mu.Unlock()
	return h.ix.q.n
}

// UserHistoryBytes is the envelope bytes held by user's own history.
func (h *Hub) UserHistoryBytes(user string) int64 {
	s := h.shardOf(user)
	s.mu.Lock()
	defer s.mu.Unlock()
	if us := s.users[user]; us != nil {
		return us.hist.bytes
	}
	return 0
}

// HistoryUsage is what HistoryTotalBytes bounds: HistoryBytes plus the
// bookkeeping of every place an event is held.
func (h *Hub) HistoryUsage() int64 { return h.ix.usage() }

// HoldOverhead is the bookkeeping counted per place an event is held.
const HoldOverhead = holdOverhead

// UserRingLen is the number of slots of user's history ring (events and
// the holes superseded events left).
func (h *Hub) UserRingLen(user string) int {
	s := h.shardOf(user)
	s.mu.Lock()
	defer s.mu.Unlock()
	if us := s.users[user]; us != nil {
		return len(us.hist.buf)
	}
	return 0
}

// SetAfterPosition makes every registration through the broker call f once
// it read the history or the cluster's position (before hub.connected is
// queued). Set it before the first registration.
func (h *Hub) SetAfterPosition(f func()) { h.afterPosition = f }

// AppendTimestamp is appendTimestamp, for its test.
func AppendTimestamp(b []byte, t time.Time) []byte { return appendTimestamp(b, t) }

// FormatID is formatID, for its test.
func FormatID(epoch string, seq uint64) string { return formatID(epoch, seq) }
