package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrUnavailable: the broker cannot be reached, so the hub cannot promise
// delivery or durability (the transports answer 503).
// With a broker, an error wrapping ErrUnavailable from Publish or
// Broadcast means that nothing was published.
var ErrUnavailable = errors.New("hub: broker unavailable")

// ErrOutcomeUnknown: the broker's answer to a publish was lost and could not
// be checked in time, so the event may or may not have been published. A
// caller must not report it as refused; a retry with the same idempotency
// key (WithIdempotencyKey) publishes at most once.
var ErrOutcomeUnknown = errors.New("hub: publish outcome unknown")

// brokerError wraps an error of the broker's publish in ErrOutcomeUnknown
// or ErrUnavailable.
func brokerError(err error) error {
	if errors.Is(err, ErrOutcomeUnknown) {
		return fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

type idemKeyCtx struct{}

type idemKey struct {
	key string
	ttl time.Duration
}

// WithIdempotencyKey returns a context that carries the idempotency key of
// a publish (already scoped by caller) and how long it is remembered. A
// broker that sees it publishes at most once per key within ttl, even when
// the call is repeated after an answer was lost.
func WithIdempotencyKey(ctx context.Context, key string, ttl time.Duration) context.Context {
	return context.WithValue(ctx, idemKeyCtx{}, idemKey{key, ttl})
}

// IdempotencyKey returns the key and lifetime set by WithIdempotencyKey.
func IdempotencyKey(ctx context.Context) (key string, ttl time.Duration, ok bool) {
	k, ok := ctx.Value(idemKeyCtx{}).(idemKey)
	return k.key, k.ttl, ok
}

// clusterConn is what a node keeps about one of its connections in cluster
// mode (guarded by the shard lock).
type clusterConn struct {
	slot bool   // holds a cluster-wide connection slot of its user
	pos  string // the cluster's position when it went live (unless resumed)
}

// cluster returns c's cluster state in us, made on first use; the shard lock
// must be held.
func (us *userState) cluster(c *Conn) *clusterConn {
	if us.cl == nil {
		us.cl = make(map[*Conn]*clusterConn)
	}
	x := us.cl[c]
	if x == nil {
		x = &clusterConn{}
		us.cl[c] = x
	}
	return x
}

// registerCluster registers c through the broker: it takes one of the
// user's cluster-wide slots (checked against the per-user limit, if any;
// the slots are also what a publish counts as the user's devices and what
// Connections lists), then the node subscribes to the
// user (live events wait in the connection's pending buffer), reads the
// missed events from the shared history or, for a fresh start, the cluster's
// position, then queues hub.connected, the missed events and the pending
// ones (overlaps dropped by position), so nothing published after
// hub.connected can be missed: what a broker outage drops is found from the
// last event or the position by Resync.
func (h *Hub) registerCluster(c *Conn, info ConnInfo) (*Conn, error) {
	s, us, err := h.admitLocked(info.UserID)
	if err != nil {
		return nil, err
	}
	if len(us.conns) == 0 {
		h.users.Add(1)
	}
	c.pending = true
	us.conns = append(us.conns, c)
	s.addLocked(c)
	c.nextBeat = time.Now().UnixNano() + int64(h.opts.Heartbeat)/2 + int64(c.num*7919%uint64(h.opts.Heartbeat/2+1))
	s.mu.Unlock()
	h.transportCounter(info.Transport).Add(1)

	// A Resync that begins from now on may find c still pending and skip
	// it: then c closes its own gap once registered (below).
	resyncs := h.resyncs.Load()
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.BrokerTimeout)
	defer cancel()
	if err := h.acquireSlot(ctx, c, us); err != nil {
		h.Unregister(c)
		return nil, err
	}

	s.mu.Lock()
	sub, first := us.sub, false
	if sub == nil {
		sub, first = &subscription{done: make(chan struct{})}, true
		us.sub = sub
	}
	s.mu.Unlock()
	if first {
		sub.err = h.opts.Broker.Subscribe(ctx, info.UserID)
		if sub.err != nil {
			s.mu.Lock()
			if us.sub == sub {
				us.sub = nil
			}
			s.mu.Unlock()
		}
		close(sub.done)
	} else {
		select {
		case <-sub.done:
		case <-ctx.Done():
			sub = &subscription{err: ctx.Err()}
		}
	}
	if sub.err != nil {
		h.Unregister(c)
		h.log.Warn("broker subscribe failed", "err", sub.err)
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, sub.err)
	}

	if ub := h.userOrder(); ub != nil {
		return h.registerUserOrder(ctx, c, info, us, ub, resyncs)
	}

	var missed []*Message
	recovered := false
	if info.LastEventID != "" && h.opts.HistorySize > 0 {
		var err error
		if at, ok := IsPosition(info.LastEventID); ok {
			missed, recovered, err = h.opts.Broker.Since(ctx, info.UserID, at, h.opts.HistorySize)
		} else {
			missed, recovered, err = h.opts.Broker.History(ctx, info.UserID, info.LastEventID, h.opts.HistorySize)
		}
		if err != nil {
			h.log.Warn("broker history failed", "err", err)
			missed, recovered = nil, false
		}
		if recovered && !h.replayable(missed) { // over the user's byte bound, broadcasts counted
			recovered = false
		}
		if !recovered {
			missed = nil
		}
		if h.opts.Observer != nil {
			h.opts.Observer.Resumed(recovered)
		}
	}
	pos := info.LastEventID
	if !recovered {
		pos = ""
	}
	// A fresh start takes the cluster's position once the subscription is
	// live: every later event is delivered live or, after an outage, found
	// from there by Resync. (Without history Resync proves nothing.)
	var at string
	if !recovered && h.opts.HistorySize > 0 {
		var err error
		if at, err = h.opts.Broker.Position(ctx); err != nil {
			h.Unregister(c)
			h.log.Warn("broker position failed", "err", err)
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}

	if h.afterPosition != nil {
		h.afterPosition()
	}

	s.mu.Lock()
	c.mu.Lock()
	pend := c.pend
	c.pend, c.pending = nil, false
	c.limit += int32(len(missed) + 1)
	// from is the position the connection starts from when no event names
	// it: the cluster's (a fresh start) or the one it resumed from with
	// nothing replayed. Resync reads from it until an event arrives, and
	// nothing from before it is queued: what Pub/Sub delivers late
	// (published before the position was taken) waits in pend and is
	// dropped by enqueue's overlap check.
	from := at
	if pos != "" && len(missed) == 0 {
		if _, seq, ok := ParseID(pos); ok {
			c.lastSeq, c.lastID = seq, pos
		} else if p, ok := IsPosition(pos); ok {
			from = p
		}
	}
	if from != "" {
		if _, seq, ok := parsePosition(FormatPosition(from)); ok && seq > c.lastSeq {
			c.lastSeq = seq
		}
	}
	unreg := c.unreg
	c.mu.Unlock()
	if from != "" && !unreg {
		us.cluster(c).pos = from
	}
	position := ""
	if h.historyOn() {
		position = FormatPosition(at)
		if recovered {
			position = info.LastEventID
		}
	}
	return h.goLive(ctx, c, s, info, recovered, missed, position, 0, pend, resyncs)
}

// goLive ends a registration in cluster mode, under the shard lock s
// (which it releases): it queues hub.connected, the missed events, raises
// c's floor and queues the live events that waited (those at or below the
// floor dropped). When the backplane broke and came back while c was
// registering, what it published meanwhile may have been read neither by
// the registration's read nor by the Resync, which skipped c: c resyncs.
func (h *Hub) goLive(ctx context.Context, c *Conn, s *shard, info ConnInfo, recovered bool, missed []*Message, position string, floor uint64, pend []*Message, resyncs uint64) (*Conn, error) {
	c.enqueue(h.connected(c, info, recovered, missed, position))
	for _, m := range missed {
		c.enqueue(m)
	}
	c.raiseFloor(floor)
	for _, m := range pend {
		c.enqueue(m)
	}
	s.mu.Unlock()
	if h.resyncs.Load() != resyncs {
		h.resyncConn(ctx, c)
	}
	return c, nil
}

// acquireSlot takes one of the user's cluster-wide connection slots for c:
// a refusal is a *LimitError, a broker failure ErrUnavailable. The caller
// unregisters c on error.
func (h *Hub) acquireSlot(ctx context.Context, c *Conn, us *userState) error {
	ok, err := h.opts.Broker.AcquireConn(ctx, c.user, h.describe(c), h.opts.MaxConnsPerUser)
	if err != nil {
		h.log.Warn("broker acquire connection slot failed", "err", err)
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if !ok {
		return &LimitError{Scope: "user", Limit: h.opts.MaxConnsPerUser}
	}
	s := h.shardOf(c.user)
	s.mu.Lock()
	c.mu.Lock()
	unreg := c.unreg
	c.mu.Unlock()
	if !unreg {
		us.cluster(c).slot = true
	}
	s.mu.Unlock()
	if unreg { // unregistered meanwhile: Unregister saw no slot to give back
		h.opts.Broker.ReleaseConn(c.user, c.id)
	}
	return nil
}

// Deliver queues an event that the broker received for user ("" for a
// broadcast to everyone) on this node's connections of that user.
func (h *Hub) Deliver(user string, m *Message) {
	h.activity.Add(1)
	if user != "" {
		s := h.shardOf(user)
		s.mu.Lock()
		if us := s.users[user]; us != nil {
			for _, c := range us.conns {
				c.enqueue(m)
			}
		}
		s.mu.Unlock()
		return
	}
	for _, s := range h.shards {
		s.mu.Lock()
		for _, c := range s.all {
			c.enqueue(m)
		}
		s.mu.Unlock()
	}
}

// Users returns the users that hold a connection on this node.
func (h *Hub) Users() []string {
	var out []string
	for _, s := range h.shards {
		s.mu.Lock()
		for u, us := range s.users {
			if len(us.conns) > 0 {
				out = append(out, u)
			}
		}
		s.mu.Unlock()
	}
	return out
}

// Resync closes the gap left by a broker outage: for every connection on
// this node it reads the events after the last one it was given from the
// shared history and queues what it missed. A connection whose gap cannot
// be proven closed (history lost or too short) is closed with 1001 so that
// it reconnects and learns recovered:false.
func (h *Hub) Resync(ctx context.Context) {
	if h.opts.Broker == nil {
		return
	}
	h.resyncs.Add(1)
	for _, c := range h.connections() {
		h.resyncConn(ctx, c)
	}
}

// resyncConn is Resync for one connection; a pending one (still
// registering) is left to its registration.
func (h *Hub) resyncConn(ctx context.Context, c *Conn) {
	c.mu.Lock()
	last, pending := c.lastID, c.pending
	c.mu.Unlock()
	if pending {
		return
	}
	if h.opts.HistorySize == 0 {
		c.Close(ReasonShutdown) // no history: nothing can be proven
		return
	}
	var (
		missed []*Message
		ok     bool
		err    error
		floor  uint64
	)
	if ub := h.userOrder(); ub != nil {
		from := last
		if from == "" {
			from = h.positionOf(c)
		}
		if from == "" {
			return
		}
		missed, ok, _, floor, err = ub.Resume(ctx, c.user, from, h.opts.HistorySize)
	} else if last != "" {
		missed, ok, err = h.opts.Broker.History(ctx, c.user, last, h.opts.HistorySize)
	} else if at := h.positionOf(c); at != "" {
		// nothing received since it connected: from its position
		missed, ok, err = h.opts.Broker.Since(ctx, c.user, at, h.opts.HistorySize)
	} else {
		return // nothing to compare from
	}
	if err != nil {
		// the gap cannot be closed from here: the client resumes itself
		h.log.Warn("resync: history", "err", err)
		c.Close(ReasonShutdown)
		return
	}
	if !ok {
		c.Close(ReasonShutdown)
		return
	}
	s := h.shardOf(c.user)
	s.mu.Lock()
	c.mu.Lock()
	c.limit += int32(len(missed)) // a replay does not count against the queue's bound
	c.mu.Unlock()
	for _, m := range missed {
		c.enqueue(m)
	}
	c.raiseFloor(floor)
	s.mu.Unlock()
}

// positionOf returns the cluster position c went live at, or resumed from
// with nothing replayed ("" when it resumed from an id).
func (h *Hub) positionOf(c *Conn) string {
	s := h.shardOf(c.user)
	s.mu.Lock()
	defer s.mu.Unlock()
	if us := s.users[c.user]; us != nil {
		if x := us.cl[c]; x != nil {
			return x.pos
		}
	}
	return ""
}

// DisconnectLocal closes user's connections on this node only (the broker
// calls it when any node asks for a disconnect).
func (h *Hub) DisconnectLocal(user string) int {
	s := h.shardOf(user)
	s.mu.Lock()
	var conns []*Conn
	if us := s.users[user]; us != nil {
		conns = append(conns, us.conns...)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close(ReasonDisconnected)
	}
	return len(conns)
}

// describe returns what Connections says about c.
func (h *Hub) describe(c *Conn) Connection {
	return Connection{ConnectionID: c.id, Transport: c.transport, Node: h.opts.Node, ConnectedAt: time.UnixMilli(c.since).UTC()}
}

// Connections lists user's live connections on every node: from the
// broker's slots in a cluster, else this node's, oldest first.
func (h *Hub) Connections(ctx context.Context, user string) ([]Connection, error) {
	if h.opts.Broker != nil {
		out, err := h.opts.Broker.Connections(ctx, user)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return out, nil
	}
	s := h.shardOf(user)
	s.mu.Lock()
	var out []Connection
	if us := s.users[user]; us != nil {
		out = make([]Connection, 0, len(us.conns))
		for _, c := range us.conns {
			out = append(out, h.describe(c))
		}
	}
	s.mu.Unlock()
	sortConnections(out)
	return out, nil
}

// sortConnections orders connections by the time they connected, then id.
func sortConnections(cs []Connection) {
	slices.SortFunc(cs, func(a, b Connection) int {
		if c := a.ConnectedAt.Compare(b.ConnectedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ConnectionID, b.ConnectionID)
	})
}

// Resumable reports whether lastID is an id this hub could have issued: an
// event id or a position ("<id>p") of this node's epoch (the cluster's,
// with a broker) whose sequence is not ahead of the last one known. It is
// a cheap check of form and epoch, made before admission control (which
// lets resuming clients in first), and proves nothing about the history:
// Register decides whether the resume is recovered.
func (h *Hub) Resumable(lastID string) bool {
	if lastID == "" || len(lastID) > MaxIDLen {
		return false
	}
	if ub := h.userOrder(); ub != nil {
		return ub.ValidID(lastID)
	}
	epoch, seq, ok := parsePosition(lastID)
	if !ok {
		if epoch, seq, ok = ParseID(lastID); !ok {
			return false
		}
	}
	known, last := h.opts.Epoch, h.seq.Load()
	if h.opts.Broker != nil {
		known, last = h.opts.Broker.Latest()
	}
	return known != "" && epoch == known && seq <= last
}

// registerUserOrder is the end of registerCluster with a broker that orders
// per user: one Resume gives the missed events (or none) and the position
// the connection stands at, read once the subscription is live; pending
// live events at or below that position are dropped.
func (h *Hub) registerUserOrder(ctx context.Context, c *Conn, info ConnInfo, us *userState, ub UserOrderBroker, resyncs uint64) (*Conn, error) {
	var (
		missed    []*Message
		recovered bool
		pos       string
		floor     uint64
	)
	if h.opts.HistorySize > 0 {
		from := info.LastEventID
		var err error
		missed, recovered, pos, floor, err = ub.Resume(ctx, info.UserID, from, h.opts.HistorySize)
		if err == nil && from != "" && recovered && !h.replayable(missed) {
			// over the user's byte bound: start afresh
			missed, recovered, pos, floor, err = ub.Resume(ctx, info.UserID, "", h.opts.HistorySize)
		}
		if err != nil {
			h.Unregister(c)
			h.log.Warn("broker resume failed", "err", err)
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		if from == "" {
			recovered = false
		}
		if !recovered {
			missed = nil
		}
		if from != "" && h.opts.Observer != nil {
			h.opts.Observer.Resumed(recovered)
		}
	}
	if h.afterPosition != nil {
		h.afterPosition()
	}

	s := h.shardOf(c.user)
	s.mu.Lock()
	c.mu.Lock()
	pend := c.pend
	c.pend, c.pending = nil, false
	c.limit += int32(len(missed) + 1)
	unreg := c.unreg
	c.mu.Unlock()
	if pos != "" && len(missed) == 0 && !unreg {
		us.cluster(c).pos = pos
	}
	position := ""
	if h.historyOn() {
		position = pos
	}
	return h.goLive(ctx, c, s, info, recovered, missed, position, floor, pend, resyncs)
}
