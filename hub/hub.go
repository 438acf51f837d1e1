package hub

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Transport names, as reported in hub.connected and stats.
const (
	TransportWebSocket = "websocket"
	TransportSSE       = "sse"
)

// Options configure a Hub. The zero value of each field is its default.
type Options struct {
	// Node is this node's name, shown in hub.connected and stats.
	Node string
	// Shards is the number of registry shards (default 64).
	Shards int
	// SendQueue is the number of events queued per connection before it
	// counts as slow (default 1024).
	SendQueue int
	// HistorySize is the number of events kept per user for resume; with
	// HistoryTTL it bounds the history. Either being 0 disables history.
	HistorySize int
	// HistoryTTL is how long an event stays in the history.
	HistoryTTL time.Duration
	// HistoryMaxBytes bounds each user's history (and the broadcast
	// history) by the envelope bytes it holds, oldest events dropped first
	// (0: no byte bound). An event sent to many users counts in full
	// against each user's bound.
	HistoryMaxBytes int64
	// HistoryTotalBytes bounds this node's whole history: the envelope
	// bytes of every event held, each counted once however many users it
	// went to, plus 32 bytes of bookkeeping per user holding it; beyond it
	// the oldest events are dropped from every history that holds them (0:
	// no bound).
	HistoryTotalBytes int64
	// MaxConnsPerUser and MaxConns limit connections (0: no limit).
	MaxConnsPerUser int
	MaxConns        int
	// Heartbeat is the heartbeat interval (default 25s).
	Heartbeat time.Duration
	// Epoch names this in-memory history; it changes with every process so
	// that ids from before a restart are not taken for known ones (default:
	// random).
	Epoch string
	// Logger receives the hub's logs (default: slog.Default()).
	Logger *slog.Logger
	// Observer is told about deliveries and closes, for metrics (optional).
	Observer Observer
	// Broker makes this hub one node of a cluster (nil: a single node with
	// in-memory ids, history and delivery).
	Broker Broker
	// BrokerTimeout bounds each call to the broker (default 5s).
	BrokerTimeout time.Duration
}

// Observer receives the hub's events for metrics. Methods must be cheap and
// must not block.
type Observer interface {
	SlowConsumer(transport string)
	Resumed(recovered bool)
	Published(n int)
	// Dropped counts queued events thrown away when a connection was cut
	// (they stay in the history; the client gets them when it resumes).
	Dropped(transport string, n int)
}

// ConnInfo describes a connection being registered.
type ConnInfo struct {
	UserID         string
	Transport      string
	TokenExpiresAt time.Time
	// LastEventID is the id the client resumes from ("" for a fresh start).
	LastEventID string
}

// UserEvent is the id given to the event of one user by Publish, and the
// number of that user's connections, cluster-wide, that were live when it
// was published.
type UserEvent struct {
	UserID  string `json:"userId"`
	ID      string `json:"id"`
	Devices int    `json:"devices"`
}

// AllEvent is the answer of BroadcastAll: the event's id and the number of
// connections, cluster-wide, that were live when it was published.
type AllEvent struct {
	ID      string `json:"id"`
	Devices int    `json:"devices"`
}

// Connection describes one live connection (Connections).
type Connection struct {
	ConnectionID string    `json:"connectionId"`
	Transport    string    `json:"transport"`
	Node         string    `json:"node"`
	ConnectedAt  time.Time `json:"connectedAt"`
}

// Stats is a snapshot of this node's connections.
type Stats struct {
	TotalConnections int            `json:"totalConnections"`
	ActiveUsers      int            `json:"activeUsers"`
	Connections      map[string]int `json:"connections"`
	Node             string         `json:"node"`
	UptimeSeconds    int64          `json:"uptimeSeconds"`
}

// paddedUint64 is an atomic.Uint64 alone on its pair of cache lines.
type paddedUint64 struct {
	_ [128]byte
	atomic.Uint64
	_ [120]byte
}

// Hub is the per-user registry and publisher. Create it with New, start its
// maintenance with Start, and stop it with Shutdown.
type Hub struct {
	opts    Options
	log     *slog.Logger
	seed    maphash.Seed
	shards  []*shard
	started time.Time

	// seq is written by every publish, on whichever core: it has its cache
	// lines to itself, so that the fields read beside it do not move with it.
	seq    paddedUint64
	connID atomic.Uint64
	// forgotten is the highest floor of a user history dropped by
	// maintain: a user's new history starts with it as its floor, so that
	// a resume from before what a dropped history held is never proven.
	forgotten atomic.Uint64

	allMu sync.Mutex // guards all (appends also hold every shard lock)
	all   stream

	// ix accounts the history node-wide; evictMu makes one publisher at a
	// time evict for HistoryTotalBytes.
	ix      histIndex
	evictMu sync.Mutex
	evicted atomic.Uint64 // events dropped by HistoryTotalBytes

	total    atomic.Int64
	users    atomic.Int64
	byTransp sync.Map // transport name -> *atomic.Int64

	draining atomic.Bool
	activity atomic.Uint64 // publishes through the broker and its deliveries (local publishes count in seq), see Activity
	// resyncs counts the Resyncs begun: a registration that saw it move
	// closes its own gap (registerCluster).
	resyncs atomic.Uint64
	// afterPosition, when set (tests), runs in registerCluster once the
	// history or the position was read.
	afterPosition func()
	drained       chan struct{} // closed when draining and no connection is left
	once          sync.Once

	stop chan struct{}
	wg   sync.WaitGroup
}

type shard struct {
	mu    sync.Mutex
	users map[string]*userState
	acct  *histAcct // its stripe of the history's counters
	// all is every connection of the shard, for a broadcast to walk one
	// flat slice: walking the users map and then each user's slice was a
	// large share of a fan-out's cost (docs/BENCHMARKS.md, history).
	all []*Conn
	// Shards are allocated one by one, side by side: the padding keeps
	// each shard's lock off its neighbours' cache lines (128 bytes with the
	// fields above, the processor fetching lines in pairs).
	_ [128 - 48]byte
}

// addLocked and removeLocked keep s.all (s.mu held).
func (s *shard) addLocked(c *Conn) {
	c.slot = int32(len(s.all))
	s.all = append(s.all, c)
}

func (s *shard) removeLocked(c *Conn) {
	i := int(c.slot)
	if i < 0 || i >= len(s.all) || s.all[i] != c {
		return
	}
	last := len(s.all) - 1
	s.all[i] = s.all[last]
	s.all[i].slot = int32(i)
	s.all[last] = nil
	s.all = s.all[:last]
	c.slot = -1
	if cap(s.all) > 64 && len(s.all) < cap(s.all)/4 {
		s.all = append([]*Conn(nil), s.all...) // let a past peak's array go
	}
}

type userState struct {
	conns []*Conn
	hist  stream
	sub   *subscription // cluster mode: this node's subscription to the user
	cl    map[*Conn]*clusterConn
}

type subscription struct {
	done chan struct{}
	err  error
}

// New builds a hub; it starts no goroutine until Start.
func New(o Options) *Hub {
	if o.Shards <= 0 {
		o.Shards = 64
	}
	if o.SendQueue <= 0 {
		o.SendQueue = 1024
	}
	o.SendQueue = min(o.SendQueue, 1<<30) // a Conn keeps its bound in an int32
	if o.Heartbeat <= 0 {
		o.Heartbeat = 25 * time.Second
	}
	if o.HistorySize <= 0 || o.HistoryTTL <= 0 {
		o.HistorySize, o.HistoryTTL = 0, 0
	}
	if o.Epoch == "" {
		var b [5]byte
		_, _ = rand.Read(b[:])
		o.Epoch = base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.BrokerTimeout <= 0 {
		o.BrokerTimeout = 5 * time.Second
	}
	h := &Hub{
		opts:    o,
		log:     o.Logger,
		seed:    maphash.MakeSeed(),
		shards:  make([]*shard, o.Shards),
		started: time.Now(),
		drained: make(chan struct{}),
		stop:    make(chan struct{}),
	}
	h.ix.queue = o.HistoryTotalBytes > 0
	for i := range h.shards {
		h.shards[i] = &shard{users: make(map[string]*userState), acct: h.ix.stripe(i)}
	}
	return h
}

// Node returns the node name.
func (h *Hub) Node() string { return h.opts.Node }

// Heartbeat returns the heartbeat interval.
func (h *Hub) Heartbeat() time.Duration { return h.opts.Heartbeat }

// Clustered reports whether the hub publishes through a broker (then a
// publish may wait for it, within its context); without one a publish
// never waits.
func (h *Hub) Clustered() bool { return h.opts.Broker != nil }

// Draining reports whether Shutdown has begun.
func (h *Hub) Draining() bool { return h.draining.Load() }

func (h *Hub) shardOf(user string) *shard { return h.shards[h.shardIndex(user)] }

func (h *Hub) transportCounter(name string) *atomic.Int64 {
	if v, ok := h.byTransp.Load(name); ok {
		return v.(*atomic.Int64)
	}
	v, _ := h.byTransp.LoadOrStore(name, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// Start starts the maintenance loop (heartbeats, token expiry, history
// expiry). It does not block.
func (h *Hub) Start() {
	tick := min(time.Second, h.opts.Heartbeat/4)
	tick = max(tick, 10*time.Millisecond)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case now := <-t.C:
				h.maintain(now)
			}
		}
	}()
}

type beat struct {
	c *Conn
}

// maintain runs one round of heartbeats, expiries and history trimming.
func (h *Hub) maintain(now time.Time) {
	nowN := now.UnixNano()
	hb := int64(h.opts.Heartbeat)
	// The broadcast stream is trimmed first, so that its floor is never
	// behind what a user history dropped below had seen.
	if h.opts.HistoryTTL > 0 {
		h.allMu.Lock()
		h.all.trim(now.Add(-h.opts.HistoryTTL), h.ix.stripe(0))
		h.allMu.Unlock()
	}
	var beats []beat
	var expired []*Conn
	for _, s := range h.shards {
		s.mu.Lock()
		for user, us := range s.users {
			for _, c := range us.conns {
				if e := c.expires.Load(); e != 0 && nowN >= e {
					expired = append(expired, c)
					continue
				}
				if nowN >= c.nextBeat {
					c.nextBeat = nowN + hb
					beats = append(beats, beat{c: c})
				}
			}
			if h.opts.HistoryTTL > 0 {
				us.hist.trim(now.Add(-h.opts.HistoryTTL), s.acct)
			}
			if len(us.conns) == 0 && us.hist.n == 0 {
				h.forget(us.hist.floor)
				delete(s.users, user)
			}
		}
		s.mu.Unlock()
	}
	for _, c := range expired {
		c.Close(ReasonTokenExpired)
	}
	for i := range beats {
		c := beats[i].c
		c.sink.Heartbeat(!c.takeActive())
	}
}

// Register adds a connection of info.UserID. Under the user's lock it
// queues hub.connected and, when resuming, the missed events, so that no live
// event can come between or before them. The transport must drain the
// connection (Next) after Register returns, and call Unregister when the
// connection ends.
func (h *Hub) Register(info ConnInfo, sink Sink) (*Conn, error) {
	if h.draining.Load() {
		return nil, ErrShuttingDown
	}
	if n := h.total.Add(1); h.opts.MaxConns > 0 && n > int64(h.opts.MaxConns) {
		h.release()
		return nil, &LimitError{Scope: "node", Limit: h.opts.MaxConns}
	}
	c := &Conn{
		hub:       h,
		num:       h.connID.Add(1),
		user:      info.UserID,
		transport: info.Transport,
		sink:      sink,
		limit:     int32(h.opts.SendQueue),
		since:     time.Now().UnixMilli(),
	}
	c.id = "c-" + h.opts.Epoch + "-" + strconv.FormatUint(c.num, 36)
	c.SetTokenExpiry(info.TokenExpiresAt)
	if h.opts.Broker != nil {
		return h.registerCluster(c, info)
	}

	s, us, err := h.admitLocked(info.UserID)
	if err != nil {
		return nil, err
	}
	var missed []*Message
	recovered := false
	if info.LastEventID != "" {
		missed, recovered = h.recover(us, info.LastEventID)
		if h.opts.Observer != nil {
			h.opts.Observer.Resumed(recovered)
		}
	}
	if len(us.conns) == 0 {
		h.users.Add(1)
	}
	us.conns = append(us.conns, c)
	s.addLocked(c)
	// a connection's first heartbeat is spread over one interval
	c.nextBeat = time.Now().UnixNano() + int64(h.opts.Heartbeat)/2 + int64(c.num*7919%uint64(h.opts.Heartbeat/2+1))
	c.limit += int32(len(missed) + 1)
	// The position is taken under the shard lock: no event of this user
	// (nor a broadcast, which holds every shard lock) can come between it
	// and hub.connected.
	pos := ""
	if h.historyOn() {
		pos = FormatPosition(formatID(h.opts.Epoch, h.seq.Load()))
	}
	c.enqueue(h.connected(c, info, recovered, missed, pos))
	for _, m := range missed {
		c.enqueue(m)
	}
	s.mu.Unlock()
	h.transportCounter(info.Transport).Add(1)
	return c, nil
}

// historyOn reports whether events are kept for resume (both settings
// non-zero).
func (h *Hub) historyOn() bool { return h.opts.HistorySize > 0 && h.opts.HistoryTTL > 0 }

// connected builds the hub.connected control event of c. Its position is
// the last replayed event's id, else pos (an id that precedes every event
// published after hub.connected; "" when history is off). When nothing is
// replayed, the SSE record is followed by a data-less "id: <position>"
// record, so that a plain EventSource takes the position as its last
// event id.
func (h *Hub) connected(c *Conn, info ConnInfo, recovered bool, missed []*Message, pos string) *Message {
	payload := connectedPayload{
		ConnectionID:     c.id,
		UserID:           info.UserID,
		Transport:        info.Transport,
		HeartbeatSeconds: int(h.opts.Heartbeat.Round(time.Second) / time.Second),
		Recovered:        recovered,
		Missed:           len(missed),
		Node:             h.opts.Node,
	}
	if !info.TokenExpiresAt.IsZero() {
		payload.TokenExpiresAt = info.TokenExpiresAt.UTC().Format(TimeFormat)
	}
	if pos != "" {
		payload.Position = pos
		if len(missed) > 0 {
			payload.Position = missed[len(missed)-1].ID
		}
	}
	m := Control("hub.connected", payload)
	if pos != "" && len(missed) == 0 {
		m.SSE = append(m.SSE[:len(m.SSE):len(m.SSE)], "id: "+pos+"\n\n"...)
	}
	return m
}

type connectedPayload struct {
	ConnectionID     string `json:"connectionId"`
	UserID           string `json:"userId"`
	Transport        string `json:"transport"`
	HeartbeatSeconds int    `json:"heartbeatSeconds"`
	Recovered        bool   `json:"recovered"`
	Missed           int    `json:"missed"`
	Node             string `json:"node"`
	TokenExpiresAt   string `json:"tokenExpiresAt,omitempty"`
	Position         string `json:"position,omitempty"`
}

// recover returns the events after lastID in us's history merged with the
// broadcasts and coalesced (of each key, only the newest), and whether that
// list is provably complete. The shard lock is held, so no event of this
// user can be published meanwhile; broadcasts hold every shard lock when
// they append, so the broadcast stream is stable too.
func (h *Hub) recover(us *userState, lastID string) ([]*Message, bool) {
	if h.opts.HistorySize == 0 {
		return nil, false
	}
	epoch, seq, isPos := parsePosition(lastID)
	if !isPos {
		var ok bool
		if epoch, seq, ok = ParseID(lastID); !ok {
			return nil, false
		}
	}
	if epoch != h.opts.Epoch || seq > h.seq.Load() {
		return nil, false
	}
	h.allMu.Lock()
	defer h.allMu.Unlock()
	// What proves the list complete is that nothing after the id was
	// dropped: from this user's history, from the broadcasts, or with a
	// history of this user that was forgotten (newUser). The floors are
	// the highest seqs dropped. A position names the place after an
	// event, so a floor equal to its seq is fine; an event id must not
	// have been dropped itself (it would be older than the history). An
	// id the history no longer holds because it was superseded, or never
	// held because it was volatile, is not dropped: it counts as a
	// position, and so does an id that names no event of this user (what
	// comes after it for the user is all there all the same).
	if floor := max(us.hist.floor, h.all.floor); floor > seq || (!isPos && floor == seq) {
		return nil, false
	}
	missed := Coalesce(mergeSeq(us.hist.after(seq), h.all.after(seq)))
	if !h.replayable(missed) {
		return nil, false
	}
	return missed, true
}

// replayable reports whether a replay (coalesced) fits the user's history
// bounds: at most HistorySize events and HistoryMaxBytes bytes, broadcasts
// counted with the user's own events, one per key. A replay beyond them
// needs events that the bounds evicted, so the resume is not recovered.
func (h *Hub) replayable(missed []*Message) bool {
	if len(missed) > h.opts.HistorySize {
		return false
	}
	if h.opts.HistoryMaxBytes > 0 {
		var n int64
		for _, m := range missed {
			n += int64(m.Size())
		}
		if n > h.opts.HistoryMaxBytes {
			return false
		}
	}
	return true
}

// Unregister removes a connection; the transport calls it once its
// connection has ended. It is safe to call more than once.
func (h *Hub) Unregister(c *Conn) {
	s := h.shardOf(c.user)
	s.mu.Lock()
	c.mu.Lock()
	if c.unreg {
		c.mu.Unlock()
		s.mu.Unlock()
		return
	}
	c.unreg, c.dead, c.q, c.pend = true, true, nil, nil
	c.mu.Unlock()
	unsubscribe, slot := false, false
	us := s.users[c.user]
	if us != nil {
		if x := us.cl[c]; x != nil {
			slot = x.slot
			delete(us.cl, c)
		}
		s.removeLocked(c)
		for i, x := range us.conns {
			if x == c {
				last := len(us.conns) - 1
				us.conns[i] = us.conns[last]
				us.conns[last] = nil
				us.conns = us.conns[:last]
				break
			}
		}
		if len(us.conns) == 0 {
			h.users.Add(-1)
			us.conns, us.cl = nil, nil
			if us.sub != nil {
				us.sub = nil
				unsubscribe = true
			}
			if us.hist.n == 0 {
				delete(s.users, c.user)
			}
		}
	}
	s.mu.Unlock()
	if unsubscribe {
		h.opts.Broker.Unsubscribe(c.user)
	}
	if slot {
		h.opts.Broker.ReleaseConn(c.user, c.id)
	}
	h.transportCounter(c.transport).Add(-1)
	h.release()
}

// admitLocked locks user's shard and returns it with the user's entry
// (created if need be), unless the node is draining or the user is at the
// per-user limit; then the shard is unlocked and the node-wide slot taken by
// Register is given back.
func (h *Hub) admitLocked(user string) (*shard, *userState, error) {
	s := h.shardOf(user)
	s.mu.Lock()
	if h.draining.Load() {
		s.mu.Unlock()
		h.release()
		return nil, nil, ErrShuttingDown
	}
	us := s.users[user]
	if us != nil && h.opts.MaxConnsPerUser > 0 && len(us.conns) >= h.opts.MaxConnsPerUser {
		s.mu.Unlock()
		h.release()
		return nil, nil, &LimitError{Scope: "user", Limit: h.opts.MaxConnsPerUser}
	}
	if us == nil {
		us = h.newUser()
		s.users[user] = us
	}
	return s, us, nil
}

// release gives back a connection slot and, when the hub is draining and
// that was the last one, tells Shutdown that the hub is drained.
func (h *Hub) release() {
	if h.total.Add(-1) == 0 && h.draining.Load() {
		h.once.Do(func() { close(h.drained) })
	}
}

// newUser returns the state of a user the node holds nothing of. Its
// history's floor is the highest floor of the histories dropped so far: the
// user may have had one, and what it held is gone.
func (h *Hub) newUser() *userState {
	us := &userState{}
	us.hist.floor = h.forgotten.Load()
	return us
}

// forget raises the floor given to new user histories to floor.
func (h *Hub) forget(floor uint64) {
	for {
		f := h.forgotten.Load()
		if floor <= f || h.forgotten.CompareAndSwap(f, floor) {
			return
		}
	}
}

func (h *Hub) slowConsumer(c *Conn, dropped int) {
	if h.opts.Observer != nil {
		h.opts.Observer.SlowConsumer(c.transport)
		h.opts.Observer.Dropped(c.transport, dropped)
	}
	h.log.Warn("slow consumer closed", "conn", c.id, "transport", c.transport, "dropped", dropped)
	c.sink.Abort(ReasonSlowConsumer)
}

func (h *Hub) now() time.Time { return time.Now() }

// Publish sends one event of type typ to each user in userIDs (duplicates
// are sent once) and returns, in the order of userIDs, the id each user's
// event was given and how many of the user's connections were live when it
// was published. The payload must be valid JSON.
//
// The users of one call get one event: the same id (one place in the id
// order for all of them) and, on this node, one message shared by every
// recipient's queue and history, so a payload sent to many users is held
// once.
//
// Keyed(k) makes the event supersede each user's last event with key k in
// that user's history; Volatile() delivers it to the connections live now
// and stores it nowhere (EventOptions).
func (h *Hub) Publish(ctx context.Context, userIDs []string, typ string, payload json.RawMessage, opts ...EventOption) ([]UserEvent, error) {
	if err := ValidateType(typ); err != nil {
		return nil, fmt.Errorf("type: %w", err)
	}
	eo, err := eventOptions(opts)
	if err != nil {
		return nil, err
	}
	p, err := compactPayload(payload)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, u := range userIDs {
		if u == "" {
			return nil, errors.New("userIds: must not contain an empty id")
		}
	}
	users := userIDs
	if len(userIDs) > 1 { // duplicates; not needed for one user
		seen := make(map[string]struct{}, len(userIDs))
		users = make([]string, 0, len(userIDs))
		for _, u := range userIDs {
			if _, dup := seen[u]; !dup {
				seen[u] = struct{}{}
				users = append(users, u)
			}
		}
	}
	if len(users) == 0 {
		return []UserEvent{}, nil
	}
	out := make([]UserEvent, len(users))
	for i, u := range users {
		out[i].UserID = u
	}
	if h.opts.Broker != nil {
		h.activity.Add(1)
		id, devices, err := h.opts.Broker.PublishUsers(ctx, users, typ, p, h.now(), eo)
		if err != nil {
			return nil, brokerError(err)
		}
		for i := range out {
			out[i].ID, out[i].Devices = id, devices[i]
		}
		if h.opts.Observer != nil {
			h.opts.Observer.Published(len(out))
		}
		return out, nil
	}
	h.publishLocal(users, typ, eo, p, out)
	if h.opts.Observer != nil {
		h.opts.Observer.Published(len(out))
	}
	return out, nil
}

// publishLocal publishes one event to users (distinct) on a hub without a
// broker, filling out's ids and device counts. It holds the shard locks of
// every user while it takes the id, stores the event (unless volatile) and
// queues it, so that each user's events keep the order of their ids.
func (h *Hub) publishLocal(users []string, typ string, eo EventOptions, p []byte, out []UserEvent) {
	var one [1]*shard
	locked := one[:0]
	if len(users) == 1 {
		locked = append(locked, h.shardOf(users[0]))
	} else {
		var small [256]bool // the usual shard counts: no allocation
		idx := small[:]
		if len(h.shards) > len(small) {
			idx = make([]bool, len(h.shards))
		}
		idx = idx[:len(h.shards)]
		for _, u := range users {
			idx[h.shardIndex(u)] = true
		}
		locked = make([]*shard, 0, min(len(users), len(h.shards)))
		for i, on := range idx {
			if on {
				locked = append(locked, h.shards[i])
			}
		}
	}
	for _, s := range locked { // in shard order, as Broadcast takes them
		s.mu.Lock()
	}
	seq := h.seq.Add(1)
	m := newEvent(formatID(h.opts.Epoch, seq), typ, eo, p, h.now(), seq)
	history := h.historyOn() && !eo.Volatile
	var hs holders
	acct := locked[0].acct
	if history {
		acct.start(m)
		if len(users) > 1 {
			hs.rest = make([]holder, 0, len(users)-1)
		}
	}
	for i, u := range users {
		s := h.shardOf(u)
		us := s.users[u]
		if us == nil && history {
			us = h.newUser()
			s.users[u] = us
		}
		out[i].ID = m.ID
		if us == nil {
			continue
		}
		out[i].Devices = len(us.conns)
		if history {
			us.hist.push(m, h.opts.HistorySize, h.opts.HistoryMaxBytes, s.acct)
			hs.add(holder{s: s, us: us})
		}
		for _, c := range us.conns {
			c.enqueue(m)
		}
	}
	if history {
		h.ix.done(m, hs, acct)
	}
	for _, s := range locked {
		s.mu.Unlock()
	}
	h.evictOverTotal()
}

// shardIndex is the index of user's shard.
func (h *Hub) shardIndex(user string) int {
	return int(maphash.String(h.seed, user) % uint64(len(h.shards)))
}

// evictOverTotal drops the oldest events of the node's history, from every
// stream that holds them, while the history uses more than
// HistoryTotalBytes (histIndex.usage). It takes no lock of the caller's:
// call it after unlocking.
func (h *Hub) evictOverTotal() {
	limit := h.opts.HistoryTotalBytes
	if limit <= 0 || h.ix.usage() <= limit {
		return
	}
	h.evictMu.Lock()
	defer h.evictMu.Unlock()
	for h.ix.usage() > limit {
		e, ok := h.ix.pop()
		if !ok {
			return
		}
		h.evicted.Add(1)
		for i := range e.holders.n {
			ho := e.holders.at(i)
			if ho.us == nil {
				h.allMu.Lock()
				h.all.dropThrough(e.m.seq, h.ix.stripe(0))
				h.allMu.Unlock()
				continue
			}
			ho.s.mu.Lock()
			ho.us.hist.dropThrough(e.m.seq, ho.s.acct)
			ho.s.mu.Unlock()
		}
	}
}

// Broadcast sends one event to every connected user (and into every user's
// resume history) and returns its id, the same for every recipient. The
// options are Publish's: a key supersedes the last broadcast with that key
// (and, on resume, any older event of the user with that key).
func (h *Hub) Broadcast(ctx context.Context, typ string, payload json.RawMessage, opts ...EventOption) (string, error) {
	ev, err := h.BroadcastAll(ctx, typ, payload, opts...)
	return ev.ID, err
}

// BroadcastAll is Broadcast that also returns the number of connections,
// cluster-wide, that were live when the event was published.
func (h *Hub) BroadcastAll(ctx context.Context, typ string, payload json.RawMessage, opts ...EventOption) (AllEvent, error) {
	if err := ValidateType(typ); err != nil {
		return AllEvent{}, fmt.Errorf("type: %w", err)
	}
	eo, err := eventOptions(opts)
	if err != nil {
		return AllEvent{}, err
	}
	p, err := compactPayload(payload)
	if err != nil {
		return AllEvent{}, err
	}
	if err := ctx.Err(); err != nil {
		return AllEvent{}, err
	}
	if h.opts.Broker != nil {
		h.activity.Add(1)
		id, devices, err := h.opts.Broker.PublishAll(ctx, typ, p, h.now(), eo)
		if err != nil {
			return AllEvent{}, brokerError(err)
		}
		if h.opts.Observer != nil {
			h.opts.Observer.Published(1)
		}
		return AllEvent{ID: id, Devices: devices}, nil
	}
	// Take every shard lock so that this event's position is the same for
	// every user relative to their own events; release shard by shard.
	for _, s := range h.shards {
		s.mu.Lock()
	}
	seq := h.seq.Add(1)
	m := newEvent(formatID(h.opts.Epoch, seq), typ, eo, p, h.now(), seq)
	if h.historyOn() && !eo.Volatile {
		acct := h.ix.stripe(0)
		acct.start(m)
		h.allMu.Lock()
		h.all.push(m, h.opts.HistorySize, h.opts.HistoryMaxBytes, acct)
		h.allMu.Unlock()
		h.ix.done(m, holders{n: 1}, acct) // the broadcast stream
	}
	devices := 0
	for _, s := range h.shards {
		devices += len(s.all)
		for _, c := range s.all {
			c.enqueue(m)
		}
		s.mu.Unlock()
	}
	h.evictOverTotal()
	if h.opts.Observer != nil {
		h.opts.Observer.Published(1)
	}
	return AllEvent{ID: m.ID, Devices: devices}, nil
}

// Activity counts the publishes made on this hub and the events its broker
// delivered: a transport's writers compare two readings to tell whether
// publishers are at work (and should be let in before more writes). A
// local publish is counted by the sequence it takes an id from, so that it
// writes no other shared counter.
func (h *Hub) Activity() uint64 { return h.activity.Load() + h.seq.Load() }

// DisconnectUser closes every connection of user with ReasonDisconnected
// (after what is queued) on this node and, with a broker, on every node; it
// returns how many this node had.
func (h *Hub) DisconnectUser(user string) int {
	// Count (and close) this node's connections first: the broker's message
	// comes back to this node too and would otherwise race the count.
	n := h.DisconnectLocal(user)
	if h.opts.Broker != nil {
		ctx, cancel := context.WithTimeout(context.Background(), h.opts.BrokerTimeout)
		if err := h.opts.Broker.DisconnectUser(ctx, user); err != nil {
			h.log.Warn("cluster disconnect failed", "err", err)
		}
		cancel()
	}
	return n
}

// UserConnections returns the number of connections user holds on this node.
func (h *Hub) UserConnections(user string) int {
	s := h.shardOf(user)
	s.mu.Lock()
	defer s.mu.Unlock()
	if us := s.users[user]; us != nil {
		return len(us.conns)
	}
	return 0
}

// HistoryMemory is what the node's history holds in memory.
type HistoryMemory struct {
	// Bytes is what HistoryTotalBytes bounds: the envelopes held, each
	// once, and 32 bytes per place (a user's history, the broadcasts')
	// one is held.
	Bytes int64
	// Evicted counts the events dropped so far by HistoryTotalBytes.
	Evicted uint64
}

// HistoryMemory returns what the node's history holds (with a broker the
// history is in the broker, and this is zero).
func (h *Hub) HistoryMemory() HistoryMemory {
	return HistoryMemory{Bytes: h.ix.usage(), Evicted: h.evicted.Load()}
}

// Stats returns this node's connection counts.
func (h *Hub) Stats() Stats {
	st := Stats{
		TotalConnections: int(h.total.Load()),
		ActiveUsers:      int(h.users.Load()),
		Connections:      map[string]int{TransportWebSocket: 0, TransportSSE: 0},
		Node:             h.opts.Node,
		UptimeSeconds:    int64(time.Since(h.started) / time.Second),
	}
	h.byTransp.Range(func(k, v any) bool {
		st.Connections[k.(string)] = int(v.(*atomic.Int64).Load())
		return true
	})
	return st
}

// Shutdown drains the hub: it refuses new connections, asks every
// connection to close with ReasonShutdown after its queue is flushed, spread
// over the first half of ctx's deadline (default 5 s), waits for them to end,
// and aborts whatever is left when ctx is done. It stops the maintenance loop
// and returns once every goroutine it started has ended.
func (h *Hub) Shutdown(ctx context.Context) error {
	first := !h.draining.Swap(true)
	if h.total.Load() == 0 {
		h.once.Do(func() { close(h.drained) })
	}
	window := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		window = time.Until(dl)
	}
	window /= 2
	conns := h.connections()
	if len(conns) > 0 {
		step := window / time.Duration(len(conns))
		next := time.Now()
		for _, c := range conns {
			c.Close(ReasonShutdown)
			if step <= 0 {
				continue
			}
			next = next.Add(step)
			if d := time.Until(next); d > time.Millisecond {
				select {
				case <-time.After(d):
				case <-ctx.Done():
				case <-h.drained:
				}
			}
		}
	}
	var err error
	select {
	case <-h.drained:
	case <-ctx.Done():
		for _, c := range h.connections() {
			c.abort(ReasonShutdown)
		}
		err = fmt.Errorf("hub shutdown: %w", ctx.Err())
	}
	if first {
		close(h.stop)
	}
	h.wg.Wait()
	return err
}

// Stop ends the maintenance loop without draining (for tests and for hubs
// whose transports are already gone).
func (h *Hub) Stop() {
	if !h.draining.Swap(true) {
		close(h.stop)
	}
	h.wg.Wait()
}

func (h *Hub) connections() []*Conn {
	var out []*Conn
	for _, s := range h.shards {
		s.mu.Lock()
		out = append(out, s.all...)
		s.mu.Unlock()
	}
	return out
}
