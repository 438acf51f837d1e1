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
