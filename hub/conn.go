package hub

import (
	"sync"
	"sync/atomic"
	"time"
)

// Sink is what a transport gives the hub for one connection. The hub calls
// its methods from publishing goroutines, sometimes with its own locks held:
// they must return at once and must not call back into the hub synchronously.
type Sink interface {
	// Wake says the connection's queue went from empty to non-empty, or a
	// close was requested: the transport should drain it with Conn.Next. It is
	// called once per transition, so a transport that starts a writer per Wake
	// never has two writers. A Wake that comes before Register returns may be
	// ignored: the transport drains once after Register in any case.
	Wake()
	// Abort closes the connection at once with the reason (slow consumer,
	// drain timeout), without flushing the queue. Called at most once.
	Abort(Reason)
	// Heartbeat says a heartbeat interval has passed for this connection;
	// idle is true when nothing was queued for it during that interval.
	Heartbeat(idle bool)
}

// Conn is one registered connection. Its queue is filled by the hub and
// drained by the transport's single writer through Next.
type Conn struct {
	// What enqueue touches comes first, so that a broadcast's walk over
	// thousands of connections reads one or two cache lines of each.
	mu        sync.Mutex
	scheduled bool
	dead      bool
	active    bool
	unreg     bool
	pending   bool // registering in cluster mode: live events wait in pend
	closing   *Reason
	limit     int32 // queue bound (send queue plus what a replay added)
	// slot is the index in the shard's list of connections; guarded by
	// the shard lock. An int32 next to limit: 8 bytes for both.
	slot    int32
	q       []*Message
	lastSeq uint64 // position of the last event queued (deduplicates replay overlaps)
	sink    Sink
	hub     *Hub
	lastID  string     // id of the last event queued, or the position at connect
	pend    []*Message // live events that came while pending

	id        string
	num       uint64
	user      string
	transport string
	since     int64 // when Register was called, Unix milliseconds (8 bytes, not a time.Time's 24)

	expires  atomic.Int64 // token expiry, unix nanoseconds; 0 = none
	nextBeat int64        // unix nanoseconds; guarded by the shard lock
}

// ID is the connection id, unique per connection ("c-...").
func (c *Conn) ID() string { return c.id }

// UserID is the user the connection belongs to.
func (c *Conn) UserID() string { return c.user }

// Transport is the transport name given at registration.
func (c *Conn) Transport() string { return c.transport }

// SetTokenExpiry moves the time at which the connection is closed with
// ReasonTokenExpired (zero: never), after a token refresh.
func (c *Conn) SetTokenExpiry(t time.Time) {
	if t.IsZero() {
		c.expires.Store(0)
		return
	}
	c.expires.Store(t.UnixNano())
}

// TokenExpiry returns the current token expiry (zero when none).
func (c *Conn) TokenExpiry() time.Time {
	n := c.expires.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Send queues a message for this connection only (a control event from the
// transport, such as hub.error). It reports false when the connection is
// closing or its queue is full (then it is aborted as a slow consumer).
func (c *Conn) Send(m *Message) bool { return c.enqueue(m) }

// enqueue appends m to the queue; callers may hold a shard lock.
func (c *Conn) enqueue(m *Message) bool {
	c.mu.Lock()
	if c.dead || c.closing != nil {
		c.mu.Unlock()
		return false
	}
	if m.seq != 0 && m.seq <= c.lastSeq { // already queued (a replay overlap)
		c.mu.Unlock()
		return true
	}
	if c.pending {
		if len(c.pend) >= int(c.limit) {
			dropped := len(c.pend) + 1
			c.dead, c.pend = true, nil
			c.mu.Unlock()
			c.hub.slowConsumer(c, dropped)
			return false
		}
		c.pend = append(c.pend, m)
		c.mu.Unlock()
		return true
	}
	if len(c.q) >= int(c.limit) {
		dropped := len(c.q) + 1 // what was queued and the event that did not fit
		c.dead = true
		c.q = nil
		c.mu.Unlock()
		c.hub.slowConsumer(c, dropped)
		return false
	}
	c.q = append(c.q, m)
	if m.seq != 0 {
		c.lastSeq, c.lastID = m.seq, m.ID
	}
	c.active = true
	wake := !c.scheduled
	c.scheduled = true
	c.mu.Unlock()
	if wake {
		c.sink.Wake()
	}
	return true
}

// Next moves every queued message into buf and returns it. With the queue
// empty it returns no message and, once, the reason of a requested close
// (the transport then closes the connection with it); otherwise nil. After
// an empty return the next enqueue calls Sink.Wake again.
func (c *Conn) Next(buf []*Message) ([]*Message, *Reason) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.q) > 0 {
		buf = append(buf, c.q...)
		clear(c.q)
		if cap(c.q) > 256 { // let an idle connection drop a burst's buffer
			c.q = nil
		} else {
			c.q = c.q[:0]
		}
		return buf, nil
	}
	c.scheduled = false
	if c.closing != nil && !c.dead {
		c.dead = true
		r := *c.closing
		return buf, &r
	}
	return buf, nil
}

// Close asks for the connection to be closed with r once the messages
// already queued are written. Later events are not queued (they stay in the
// history for a resume). It is a no-op on a closing or closed connection.
func (c *Conn) Close(r Reason) {
	c.mu.Lock()
	if c.dead || c.closing != nil {
		c.mu.Unlock()
		return
	}
	c.closing = &r
	wake := !c.scheduled
	c.scheduled = true
	c.mu.Unlock()
	if wake {
		c.sink.Wake()
	}
}

// abort marks the connection dead and tells the sink to close it now.
func (c *Conn) abort(r Reason) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	c.q = nil
	c.mu.Unlock()
	c.sink.Abort(r)
}

// takeActive reports whether anything was queued since the last call.
func (c *Conn) takeActive() bool {
	c.mu.Lock()
	a := c.active
	c.active = false
	c.mu.Unlock()
	return a
}

// raiseFloor makes c drop, from now on, every event whose order key is at
// or below floor (a broker that orders per user: what Resume read up to).
func (c *Conn) raiseFloor(floor uint64) {
	c.mu.Lock()
	if floor > c.lastSeq {
		c.lastSeq = floor
	}
	c.mu.Unlock()
}
