package redisbroker

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubd/hub/hub"
)

// The broker on a Redis Cluster (Options.Cluster; docs/DECISIONS.md 31).
//
// On one server every event takes its id from one global sequence. A
// cluster has no place every publish could share without making it the
// hot spot, so here every key and channel of a user is in the user's hash
// slot, the broadcasts' in the slot of "{all}", and the order is made of
// the masters' clocks: a script gives its event the key 2t+1 (a user's
// event) or 2t (a broadcast), t being Redis's TIME in microseconds on the
// master that runs it, raised when needed so that each stream's keys grow.
// A user's order is the order of these keys over the user's events and the
// broadcasts.
//
// A node delivers in that order by merging what its masters send: it holds
// one Pub/Sub connection per master (sharded channels of one master only),
// and every message carries the clock of the master that published it.
// Once a master's message with clock T has arrived, every later event of
// that master has a key above 2T-1 (its watermark); an event is delivered
// when every master's watermark has reached its key. A master that has
// nothing to say is asked for its clock (a tick: a script that publishes
// TIME on the node's tick channel of that master), so an event waits about
// one round trip to the masters, more only while their clocks disagree.
//
// Ids: a broadcast's is "b<key>"; a publish to users has one id for every
// recipient, "o<token>", which each user's id index (a sorted set in the
// user's slot) resolves to that user's key; a position is "p<key>". A
// connection's place is reserved in the user's slot (rcReadUserScript
// raises the user's last key to cap, and rcReadAllScript raises the
// broadcasts' above it), so every event published later has a greater key
// and every earlier one a smaller, whatever the masters' clocks say.

// rcSlots is the number of hash slots of a Redis Cluster.
const rcSlots = 16384

// rcTickRetry is how long a tick may stay unanswered before it is sent
// again.
const rcTickRetry = 20 * time.Millisecond

type rcState struct {
	b  *Broker
	id string // names this node's tick channels (the node name may hold braces)

	// the current layout, guarded by b.mu (set before the loops start)
	masters []*rcMaster
	owner   []int // slot -> index in masters
	topo    uint64
	tcancel context.CancelFunc // stops the current layout's goroutines

	in chan rcItem // to the merge loop

	// merge loop only
	view       []*rcMaster // the layout it merges (masters, once subscribed)
	viewTopo   uint64
	heap       rcHeap
	down       int // masters whose Pub/Sub connection is not subscribed
	seq        uint64
	rebuilding bool
	waiting    uint64 // the wait for the cluster to serve every slot ('C'), 0: none
	waits      uint64
}

// rcMaster is one master and this node's Pub/Sub connection to it.
type rcMaster struct {
	idx    int
	tag    string // a hash tag in one of its slots
	tickCh string
	tick   chan struct{}
	ops    chan rcOp
	topo   uint64          // the layout it belongs to
	ctx    context.Context // ends when that layout is replaced

	// guarded by b.mu
	ps        *redis.PubSub
	sess      uint64
	subs      map[string]*chanState
	unsubPend map[string]int

	// merge loop only
	cur        uint64 // session the merge loop accepts messages of
	up         bool
	wm         uint64 // keys at or below it will not come from this master any more
	inflight   bool
	inflightAt time.Time
}

type rcOp struct {
	sub bool
	ch  string
	st  *chanState
}

// rcItem is what a master's reader hands to the merge loop.
type rcItem struct {
	m    *rcMaster
	sess uint64
	kind byte // 'e' event, 't' tick, 'x' connection lost, 'r' subscribed again, 'M' slots moved, 'T' new layout subscribed, 'C' the cluster serves every slot
	topo uint64
	view []*rcMaster // 'T'
	raw  uint64
	key  uint64
	user string
	msg  *hub.Message
	n    uint64 // arrival order
}

type rcHeap []rcItem

func (h rcHeap) Len() int { return len(h) }
func (h rcHeap) Less(i, j int) bool {
	if h[i].key != h[j].key {
		return h[i].key < h[j].key
	}
	return h[i].n < h[j].n
}
func (h rcHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *rcHeap) Push(x any)   { *h = append(*h, x.(rcItem)) }
func (h *rcHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = rcItem{}
	*h = old[:len(old)-1]
	return it
}

// Key names on a cluster (docs/DECISIONS.md 31).
func (b *Broker) rcUserMeta(user string) string   { return b.userKey("um", user) }
func (b *Broker) rcUserStream(user string) string { return b.userKey("us", user) }
func (b *Broker) rcUserIndex(user string) string  { return b.userKey("ui", user) }
func (b *Broker) rcAllMeta() string               { return b.opts.Prefix + "am:{all}" }
func (b *Broker) rcAllStream() string             { return b.opts.Prefix + "as:{all}" }
func (b *Broker) rcAllCh() string                 { return b.chPrefix + "b:{all}" }

// PerUserOrder reports whether the broker orders per user (on a Redis
// Cluster): the hub then uses Resume (hub.UserOrderBroker).
func (b *Broker) PerUserOrder() bool { return b.rc != nil }

// rcStart is Start's part on a cluster: the topology, one Pub/Sub
// connection per master, the broadcast meta hash, and the loops.
func (b *Broker) rcStart(ctx context.Context) error {
	r := &rcState{b: b, id: randomName(), in: make(chan rcItem, 4096)}
	if err := r.loadTopology(ctx); err != nil {
		return err
	}
	b.rc = r
	// the broadcasts' meta hash, made now if missing: older ids are not of
	// its history
	if err := rcReadAllScript.Run(ctx, b.client, []string{b.rcAllMeta(), b.rcAllStream()}, "", 1, 1, 0).Err(); err != nil {
		return fmt.Errorf("broadcast meta: %w", err)
	}
	allCh := b.rcAllCh()
	am := r.masters[r.owner[keySlot(allCh)]]
	am.subs[allCh] = &chanState{refs: 1, sent: true, done: make(chan struct{})}
	for _, m := range r.masters {
		ps, err := r.connect(ctx, m)
		if err != nil {
			for _, m := range r.masters {
				if m.ps != nil {
					_ = m.ps.Close()
				}
			}
			return err
		}
		m.ps, m.sess = ps, 1
	}
	return nil
}

// rcGo starts the cluster's goroutines (b.ctx is set).
func (b *Broker) rcGo() {
	r := b.rc
	tctx, tcancel := context.WithCancel(b.ctx)
	r.tcancel = tcancel
	for _, m := range r.masters {
		m.ctx = tctx
		m.cur, m.up = m.sess, true
	}
	r.view = r.masters
	b.wg.Add(1)
	go r.mergeLoop()
	r.goMasters(r.masters)
}

// goMasters starts the reader, the subscription writer and the ticker of
// each master of one layout; they stop when its context ends.
func (r *rcState) goMasters(ms []*rcMaster) {
	b := r.b
	for _, m := range ms {
		b.wg.Add(3)
		go r.readLoop(m, m.ps, m.sess)
		go r.opLoop(m)
		go r.tickLoop(m)
	}
}

// loadTopology reads which master serves which slot (one server: all).
func (r *rcState) loadTopology(ctx context.Context) error {
	b := r.b
	r.owner = make([]int, rcSlots)
	cc, ok := b.client.(*redis.ClusterClient)
	if !ok {
		r.masters = []*rcMaster{r.newMaster(0, "m0")}
		return nil
	}
	shards, err := cc.ClusterShards(ctx).Result()
	if err != nil {
		return fmt.Errorf("cluster shards: %w", err)
	}
	// one master per shard that serves slots, in the order of its first
	shards = slices.DeleteFunc(shards, func(s redis.ClusterShard) bool { return len(s.Slots) == 0 })
	if len(shards) == 0 {
		return errors.New("cluster shards: no master serves a slot")
	}
	first := func(s redis.ClusterShard) int64 {
		return slices.MinFunc(s.Slots, func(a, b redis.SlotRange) int { return int(a.Start - b.Start) }).Start
	}
	slices.SortFunc(shards, func(a, b redis.ClusterShard) int { return int(first(a) - first(b)) })
	for i := range r.owner {
		r.owner[i] = -1
	}
	for idx, sh := range shards {
		for _, sr := range sh.Slots {
			for i := sr.Start; i <= sr.End && i < rcSlots; i++ {
				if i >= 0 {
					r.owner[i] = idx
				}
			}
		}
	}
	for i, o := range r.owner {
		if o < 0 {
			return fmt.Errorf("cluster slots: slot %d has no master", i)
		}
	}
	for i := range shards {
		tag := ""
		for n := 0; tag == ""; n++ {
			t := "m" + strconv.Itoa(n)
			if r.owner[crc16([]byte(t))%rcSlots] == i {
				tag = t
			}
		}
		r.masters = append(r.masters, r.newMaster(i, tag))
	}
	return nil
}

func (r *rcState) newMaster(i int, tag string) *rcMaster {
	return &rcMaster{
		idx:       i,
		tag:       tag,
		tickCh:    r.b.chPrefix + "tk:" + r.id + ":{" + tag + "}",
		tick:      make(chan struct{}, 1),
		ops:       make(chan rcOp, 1024),
		subs:      make(map[string]*chanState),
		unsubPend: make(map[string]int),
	}
}

// masterOf returns the master that serves ch's slot; b.mu must be held.
func (r *rcState) masterOf(ch string) *rcMaster { return r.masters[r.owner[keySlot(ch)]] }

// connect opens a Pub/Sub connection to m (its tick channel first, which
// routes the connection to the master of that slot), subscribes every
// channel m has (one SSUBSCRIBE each: one command may not name several
// slots) and waits for every confirmation, closing the done channel of
// those waiting.
func (r *rcState) connect(ctx context.Context, m *rcMaster) (*redis.PubSub, error) {
	b := r.b
	ps := b.client.SSubscribe(ctx)
	if err := ps.SSubscribe(ctx, m.tickCh); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	b.mu.Lock()
	want := map[string]bool{m.tickCh: true}
	for ch := range m.subs {
		want[ch] = true
	}
	clear(m.unsubPend)
	b.mu.Unlock()
	for ch := range want {
		if ch == m.tickCh {
			continue
		}
		if err := ps.SSubscribe(ctx, ch); err != nil {
			_ = ps.Close()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
	}
	for len(want) > 0 {
		msg, err := ps.Receive(ctx)
		if err != nil {
			_ = ps.Close()
			if strings.Contains(err.Error(), "unknown command") {
				err = fmt.Errorf("%w (sharded Pub/Sub needs Redis 7 or later)", err)
			}
			return nil, fmt.Errorf("subscribe: %w", err)
		}
		if s, ok := msg.(*redis.Subscription); ok && s.Kind == "ssubscribe" {
			delete(want, s.Channel)
			b.mu.Lock()
			if st := m.subs[s.Channel]; st != nil && !isClosed(st.done) {
				st.sent = true
				close(st.done)
			}
			b.mu.Unlock()
		}
	}
	return ps, nil
}

// readLoop reads one session of m's Pub/Sub connection; when it breaks (an
// error, or no answer to a ping) it tells the merge loop and redials.
func (r *rcState) readLoop(m *rcMaster, ps *redis.PubSub, sess uint64) {
	b := r.b
	defer b.wg.Done()
	var pinged time.Time
	for {
		wait := b.opts.PingInterval
		if !pinged.IsZero() {
			wait = max(time.Until(pinged.Add(b.opts.PublishTimeout)), time.Millisecond)
		}
		msg, err := ps.ReceiveTimeout(m.ctx, wait)
		if m.ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				if pinged.IsZero() {
					pinged = time.Now()
					ctx, cancel := context.WithTimeout(m.ctx, b.opts.PublishTimeout)
					err = ps.Ping(ctx)
					cancel()
					if err == nil {
						continue
					}
				} else if time.Since(pinged) < b.opts.PublishTimeout {
					continue
				} else {
					err = errors.New("no answer to a ping")
				}
			}
			if moved(err) {
				r.send(rcItem{kind: 'M'})
				return
			}
			b.log.Warn("redis pubsub connection lost; redialling", "master", m.idx, "err", err)
			r.send(rcItem{m: m, sess: sess, kind: 'x'})
			_ = ps.Close()
			r.redial(m, sess)
			return
		}
		pinged = time.Time{}
		switch x := msg.(type) {
		case *redis.Subscription:
			if r.confirmed(m, x) {
				// Redis dropped a subscription of ours: its slot moved
				b.log.Warn("redis unsubscribed a channel by itself (its slot moved)", "master", m.idx, "channel", x.Channel)
				r.send(rcItem{kind: 'M'})
				_ = ps.Close()
				return
			}
		case *redis.Message:
			r.dispatch(m, sess, x)
		case *redis.Pong:
		}
	}
}

// redial connects m again until it works or the broker closes, then
// starts the reader of the new session and tells the merge loop.
func (r *rcState) redial(m *rcMaster, old uint64) {
	b := r.b
	for failures := 1; ; failures++ {
		if !sleepCtx(m.ctx, backoff(failures)) {
			return
		}
		ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
		ps, err := r.connect(ctx, m)
		cancel()
		if err != nil {
			b.opts.Metrics.Error(OpPubSub)
			b.kick()
			if moved(err) {
				r.send(rcItem{kind: 'M'})
				return
			}
			continue
		}
		b.mu.Lock()
		if m.ctx.Err() != nil {
			b.mu.Unlock()
			_ = ps.Close()
			return
		}
		m.ps, m.sess = ps, old+1
		b.mu.Unlock()
		b.log.Info("redis pubsub reconnected", "master", m.idx)
		b.opts.Metrics.Reconnected()
		b.wg.Add(1)
		go r.readLoop(m, ps, old+1)
		r.send(rcItem{m: m, sess: old + 1, kind: 'r'})
		return
	}
}

// sleepCtx waits d or until ctx ends; it reports false when ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *rcState) send(it rcItem) {
	select {
	case r.in <- it:
	case <-r.b.ctx.Done():
	}
}

// confirmed handles a (un)subscribe confirmation of a user channel; it
// reports an SUNSUBSCRIBE that nobody asked for (Redis unsubscribes the
// shard channels of a slot that moved to another master).
func (r *rcState) confirmed(m *rcMaster, s *redis.Subscription) bool {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch s.Kind {
	case "sunsubscribe":
		switch {
		case m.unsubPend[s.Channel] > 1:
			m.unsubPend[s.Channel]--
		case m.unsubPend[s.Channel] == 1:
			delete(m.unsubPend, s.Channel)
		default:
			return m.subs[s.Channel] != nil || s.Channel == m.tickCh
		}
	case "ssubscribe":
		if m.unsubPend[s.Channel] > 0 {
			return false
		}
		if st := m.subs[s.Channel]; st != nil && st.sent && !isClosed(st.done) {
			close(st.done)
		}
	}
	return false
}

// dispatch parses one message of m and hands it to the merge loop (a
// disconnect is handled at once: it has no place in any order).
func (r *rcState) dispatch(m *rcMaster, sess uint64, x *redis.Message) {
	b := r.b
	p := x.Payload
	if p == "" {
		return
	}
	switch p[0] {
	case 't':
		raw, err := strconv.ParseUint(strings.TrimPrefix(p, "t\n"), 10, 64)
		if err != nil {
			b.log.Warn("malformed tick on redis channel", "channel", x.Channel)
			return
		}
		r.send(rcItem{m: m, sess: sess, kind: 't', raw: raw})
	case 'd':
		if user, ok := b.rcChannelUser(x.Channel); ok {
			b.recv.DisconnectLocal(user)
		}
	case 'e':
		user := ""
		if x.Channel != b.rcAllCh() {
			u, ok := b.rcChannelUser(x.Channel)
			if !ok {
				return
			}
			user = u
		}
		parts := strings.SplitN(p, "\n", 7)
		if len(parts) != 7 {
			b.log.Warn("malformed message on redis channel", "channel", x.Channel)
			return
		}
		raw, err1 := strconv.ParseUint(parts[1], 10, 64)
		key, err2 := strconv.ParseUint(parts[2], 10, 64)
		ms, err3 := strconv.ParseInt(parts[5], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || key == 0 {
			b.log.Warn("malformed message on redis channel", "channel", x.Channel)
			return
		}
		msg := hub.NewMessage(parts[3], key, parts[4], hub.EventOptions{}, []byte(parts[6]), time.UnixMilli(ms))
		r.send(rcItem{m: m, sess: sess, kind: 'e', raw: raw, key: key, user: user, msg: msg})
	}
}

func (b *Broker) rcChannelUser(ch string) (string, bool) {
	u, ok := strings.CutPrefix(ch, b.chPrefix+"c:{")
	if ok {
		u, ok = strings.CutSuffix(u, "}")
	}
	return u, ok
}

// mergeLoop delivers the masters' events in key order: an event goes out
// once every master's watermark has reached its key; ticks are asked for
// the masters that keep one waiting. While a master's connection is down
// nothing is delivered and what comes is dropped: once every master is
// subscribed again the hub's Resync reads what the node's connections
// missed from the streams, before anything else is delivered.
func (r *rcState) mergeLoop() {
	b := r.b
	defer b.wg.Done()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case it := <-r.in:
			r.handle(it)
		drain:
			for range 256 {
				select {
				case it := <-r.in:
					r.handle(it)
				default:
					break drain
				}
			}
		case <-retry.C:
			now := time.Now()
			for _, m := range r.view {
				if m.inflight && now.Sub(m.inflightAt) >= rcTickRetry {
					m.inflight = false
				}
			}
		}
		r.release()
		if r.heap.Len() > 0 && r.askTicks() {
			retry.Reset(rcTickRetry)
		}
	}
}

func (r *rcState) handle(it rcItem) {
	b := r.b
	m := it.m
	switch it.kind {
	case 'M':
		if r.rebuilding {
			return
		}
		r.rebuilding = true
		for _, m := range r.view {
			if m.up {
				m.up = false
				r.down++
			}
		}
		b.live.Store(false)
		b.opts.Metrics.Error(OpPubSub)
		clear(r.heap)
		r.heap = r.heap[:0]
		b.log.Warn("redis cluster slots moved: reading the new layout and subscribing again")
		b.wg.Add(1)
		go r.rebuild()
		return
	case 'T':
		r.view, r.viewTopo, r.rebuilding = it.view, it.topo, false
		for _, m := range r.view {
			m.cur, m.up, m.wm, m.inflight = m.sess, true, 0, false
		}
		r.down = 0
		r.awaitCluster()
		return
	case 'C':
		if it.sess != r.waiting {
			return // a wait that was overtaken
		}
		r.waiting = 0
		r.down--
		if r.down == 0 {
			r.resync()
		}
		return
	}
	if m.topo != r.viewTopo || r.rebuilding {
		return // of a layout that is gone
	}
	switch it.kind {
	case 'x':
		if it.sess != m.cur || !m.up {
			return
		}
		m.up, m.wm, m.inflight = false, 0, false
		r.down++
		b.live.Store(false)
		b.opts.Metrics.Error(OpPubSub)
		b.kick()
		clear(r.heap)
		r.heap = r.heap[:0]
		return
	case 'r':
		if m.up {
			return
		}
		m.cur, m.up, m.wm = it.sess, true, 0
		r.down--
		if r.down == 0 {
			b.log.Info("redis pubsub connections back; resyncing once the cluster serves every slot")
			r.awaitCluster()
		}
		return
	}
	if it.sess != m.cur || !m.up {
		return
	}
	if w := 2*it.raw - 1; w > m.wm {
		m.wm = w
	}
	if it.kind == 't' {
		m.inflight = false
		return
	}
	if r.down > 0 {
		return // the Resync that follows reads it from the history
	}
	r.seq++
	it.n = r.seq
	heap.Push(&r.heap, it)
}

// awaitCluster counts one more master down (nothing is delivered, what
// comes is dropped: the Resync reads it) until every master serves its
// slots: after a master came back the cluster may answer CLUSTERDOWN for a
// while, and a Resync then would close every connection for want of its
// history. A goroutine ticks every master until all answer, then hands 'C'
// to the merge loop, which resyncs.
func (r *rcState) awaitCluster() {
	b := r.b
	r.waits++
	r.waiting = r.waits
	r.down++
	view, gen := r.view, r.waits
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for failures := 0; ; failures++ {
			if failures > 0 && !b.sleep(backoff(failures)) {
				return
			}
			ok := true
			for _, m := range view {
				ctx, cancel := context.WithTimeout(b.ctx, b.opts.PublishTimeout)
				err := rcTickScript.Run(ctx, b.client, []string{m.tickCh}).Err()
				cancel()
				if err != nil {
					if failures == 0 {
						b.log.Info("redis cluster not serving every slot yet; waiting to resync", "err", err)
					}
					ok = false
					break
				}
			}
			if ok {
				r.send(rcItem{kind: 'C', sess: gen})
				return
			}
		}
	}()
}

// resync runs the hub's Resync once every master is subscribed again and
// the cluster serves every slot, before anything else is delivered, and
// makes the node ready.
func (r *rcState) resync() {
	b := r.b
	ctx, cancel := context.WithTimeout(b.ctx, resyncTimeout)
	b.recv.Resync(ctx)
	cancel()
	b.opts.Metrics.Resynced()
	b.live.Store(true)
}

// rebuild follows the cluster to a new layout of its slots: it stops the
// old layout's connections and goroutines, reads the slots again, moves
// every subscription to the master that now serves it, subscribes them
// all, and hands the new layout to the merge loop, which resyncs.
func (r *rcState) rebuild() {
	b := r.b
	defer b.wg.Done()
	for failures := 0; ; failures++ {
		if failures > 0 {
			b.opts.Metrics.Error(OpPubSub)
			if !b.sleep(backoff(failures)) {
				return
			}
		}
		b.mu.Lock()
		r.tcancel()
		subs := make(map[string]*chanState)
		for _, m := range r.masters {
			for ch, st := range m.subs {
				subs[ch] = st
			}
			if m.ps != nil {
				_ = m.ps.Close()
				m.ps = nil
			}
		}
		b.mu.Unlock()
		nr := &rcState{b: b, id: r.id}
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		err := nr.loadTopology(ctx)
		cancel()
		if err != nil {
			b.log.Warn("redis cluster layout", "err", err)
			continue
		}
		tctx, tcancel := context.WithCancel(b.ctx)
		b.mu.Lock()
		if b.ctx.Err() != nil {
			b.mu.Unlock()
			tcancel()
			return
		}
		r.topo++
		for _, m := range nr.masters {
			m.topo, m.ctx = r.topo, tctx
		}
		for ch, st := range subs {
			m := nr.masters[nr.owner[keySlot(ch)]]
			m.subs[ch] = st
		}
		r.masters, r.owner, r.tcancel = nr.masters, nr.owner, tcancel
		topo, ms := r.topo, nr.masters
		b.mu.Unlock()
		ok := true
		for _, m := range ms {
			ctx, cancel := context.WithTimeout(tctx, 5*time.Second)
			ps, err := r.connect(ctx, m)
			cancel()
			if err != nil {
				b.log.Warn("redis pubsub subscribe on the new layout", "master", m.idx, "err", err)
				ok = false
				break
			}
			b.mu.Lock()
			m.ps, m.sess = ps, 1
			b.mu.Unlock()
		}
		if !ok {
			continue
		}
		b.log.Info("redis cluster layout followed", "masters", len(ms))
		r.goMasters(ms)
		r.send(rcItem{kind: 'T', topo: topo, view: ms})
		return
	}
}

// release delivers every held event at or below every master's watermark.
func (r *rcState) release() {
	if r.down > 0 || r.heap.Len() == 0 {
		return
	}
	w := r.view[0].wm
	for _, m := range r.view[1:] {
		w = min(w, m.wm)
	}
	for r.heap.Len() > 0 && r.heap[0].key <= w {
		it := heap.Pop(&r.heap).(rcItem)
		r.b.recv.Deliver(it.user, it.msg)
	}
}

// askTicks asks for a tick from every master whose watermark keeps the
// first held event waiting; it reports whether one is in flight.
func (r *rcState) askTicks() bool {
	if r.down > 0 {
		return false
	}
	first := r.heap[0].key
	any := false
	for _, m := range r.view {
		if m.wm >= first {
			continue
		}
		any = true
		if !m.inflight {
			m.inflight, m.inflightAt = true, time.Now()
			select {
			case m.tick <- struct{}{}:
			default:
			}
		}
	}
	return any
}

// tickLoop sends m's ticks when the merge loop asks for them.
func (r *rcState) tickLoop(m *rcMaster) {
	b := r.b
	defer b.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.tick:
		}
		ctx, cancel := context.WithTimeout(m.ctx, b.opts.PublishTimeout)
		err := rcTickScript.Run(ctx, b.client, []string{m.tickCh}).Err()
		cancel()
		if err != nil && m.ctx.Err() == nil {
			b.opts.Metrics.Error(OpPubSub)
			b.log.Debug("redis tick failed", "master", m.idx, "err", err)
		}
	}
}

// rcSubscribe is Subscribe on a cluster: the user's channel on the
// connection of its master.
func (b *Broker) rcSubscribe(ctx context.Context, user string) error {
	r := b.rc
	ch := b.userCh(user)
	b.mu.Lock()
	if b.ctx.Err() != nil {
		b.mu.Unlock()
		return errors.New("redisbroker: closed")
	}
	m := r.masterOf(ch)
	st := m.subs[ch]
	if st == nil || (isClosed(st.done) && st.err != nil) {
		st = &chanState{done: make(chan struct{})}
		m.subs[ch] = st
		r.queue(m, rcOp{sub: true, ch: ch, st: st})
	}
	st.refs++
	b.mu.Unlock()
	return b.awaitSubscribed(ctx, user, st)
}

func (b *Broker) rcUnsubscribe(user string) {
	r := b.rc
	ch := b.userCh(user)
	b.mu.Lock()
	defer b.mu.Unlock()
	m := r.masterOf(ch)
	st := m.subs[ch]
	if st == nil {
		return
	}
	st.refs--
	if st.refs > 0 {
		return
	}
	delete(m.subs, ch)
	r.queue(m, rcOp{ch: ch, st: st})
}

// queue hands an op to m's writer; b.mu must be held. A full queue fails a
// subscription (the caller answers 503) and leaves an unsubscription to the
// next reconnection.
func (r *rcState) queue(m *rcMaster, o rcOp) {
	select {
	case m.ops <- o:
	default:
		if o.sub && !isClosed(o.st.done) {
			o.st.err = errors.New("too many subscriptions waiting")
			close(o.st.done)
			delete(m.subs, o.ch)
		}
	}
}

// opLoop writes m's SSUBSCRIBE and SUNSUBSCRIBE commands in order, on the
// current session's connection.
func (r *rcState) opLoop(m *rcMaster) {
	b := r.b
	defer b.wg.Done()
	for {
		var o rcOp
		select {
		case <-m.ctx.Done():
			return
		case o = <-m.ops:
		}
		b.mu.Lock()
		ps := m.ps
		if ps == nil || m.ctx.Err() != nil {
			// the layout is being replaced: the new one subscribes what
			// is wanted then
			b.mu.Unlock()
			continue
		}
		if o.sub {
			if m.subs[o.ch] != o.st || isClosed(o.st.done) {
				b.mu.Unlock()
				continue // given up, or subscribed by a reconnection
			}
			o.st.sent = true
		} else {
			if m.subs[o.ch] != nil {
				b.mu.Unlock()
				continue // wanted again meanwhile
			}
			m.unsubPend[o.ch]++
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
		var err error
		if o.sub {
			err = ps.SSubscribe(ctx, o.ch)
		} else {
			err = ps.SUnsubscribe(ctx, o.ch)
		}
		cancel()
		if err == nil {
			continue
		}
		b.opts.Metrics.Error(OpSubscribe)
		if moved(err) {
			r.send(rcItem{kind: 'M'})
		}
		b.mu.Lock()
		if o.sub {
			if m.subs[o.ch] == o.st {
				delete(m.subs, o.ch)
			}
			if !isClosed(o.st.done) {
				o.st.err = err
				close(o.st.done)
			}
		} else if m.unsubPend[o.ch] > 0 {
			m.unsubPend[o.ch]--
		}
		b.mu.Unlock()
	}
}

// rcDisconnectUser asks the nodes holding user's connections (those
// subscribed to the user's channel) to close them.
func (b *Broker) rcDisconnectUser(ctx context.Context, user string) error {
	if err := b.client.SPublish(ctx, b.userCh(user), "d").Err(); err != nil {
		b.opts.Metrics.Error(OpDisconnect)
		return fmt.Errorf("publish disconnect: %w", err)
	}
	return nil
}

// rcCall is one publish script call: to a user or to everyone.
type rcCall struct {
	script *redis.Script
	keys   []string
	args   []any
	marker string
}

// rcPublish runs calls (one per user, or one broadcast) as publish does
// one script: bounded by the same budget, with each call's marker read
// when its answer is lost. It returns the id and each call's count. When
// some calls published and others did not (or may not have), the outcome
// is reported unknown: a retry with the same idempotency key completes it
// (each user's marker answers for that user).
func (b *Broker) rcPublish(ctx context.Context, mk func(id string, runBy int64, markerTTL time.Duration, key string) []rcCall, typ string, o hub.EventOptions, broadcast bool) (string, []int, error) {
	runBy, settle, deadline, err := b.publishBudget(ctx, typ, o)
	if err != nil {
		return "", nil, err
	}

	// the id, and the marker's name part and lifetime
	id, mkey, markerTTL := "", "", 2*b.opts.PublishTimeout+time.Second
	if key, ttl, ok := hub.IdempotencyKey(ctx); ok {
		if ttl <= 0 {
			ttl = defaultKeyTTL
		}
		sum := sha256.Sum256([]byte(key))
		mkey, markerTTL = "pk:"+base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:15]), ttl
		id = "o" + strings.ToLower(mkey[3:19])
	} else {
		id = "o" + randomName()
		mkey = "pt:" + id[1:]
	}
	if broadcast {
		id = ""
	}
	calls := mk(id, b.clock.toRedis(runBy), markerTTL, mkey)
	sctx, cancel := context.WithDeadline(ctx, runBy.Add(settle))
	cmds := make([]*redis.Cmd, len(calls))
	pipe := b.pub.Pipeline()
	for i, c := range calls {
		cmds[i] = c.script.EvalSha(sctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(sctx)
	// a master that does not know the script yet (a restart) ran nothing
	var again []int
	for i, c := range cmds {
		if err := c.Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		pipe := b.pub.Pipeline()
		for _, i := range again {
			cmds[i] = calls[i].script.Eval(sctx, pipe, calls[i].keys, calls[i].args...)
		}
		_, _ = pipe.Exec(sctx)
	}
	cancel()

	answers := make([]string, len(calls))
	var unknown []int
	published, refused, conflicts := 0, 0, 0
	var firstErr error
	for i, c := range cmds {
		res, err := c.StringSlice()
		switch {
		case err == nil && len(res) == 2 && (res[0] == "ok" || res[0] == "dup"):
			answers[i] = res[1]
			published++
		case err == nil && len(res) == 2 && res[0] == "conflict":
			conflicts++
			firstErr = orErr(firstErr, errors.New("the idempotency key was used earlier for a publish to other users"))
		case err == nil && len(res) == 1 && res[0] == "late":
			refused++
			firstErr = orErr(firstErr, errLate)
		case err == nil:
			refused++
			firstErr = orErr(firstErr, fmt.Errorf("unexpected script answer %q", res))
		default:
			var rerr redis.Error
			if !errors.As(err, &rerr) {
				b.kick()
			}
			if unsent(err) {
				refused++
			} else {
				unknown = append(unknown, i)
			}
			firstErr = orErr(firstErr, err)
		}
	}
	if len(unknown) > 0 && ctx.Err() == nil {
		// wait until the scripts can no longer run, then read their markers
		t := time.NewTimer(time.Until(runBy.Add(settle)))
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		cctx, cancel := context.WithDeadline(ctx, deadline)
		gets := make([]*redis.StringCmd, len(unknown))
		pipe := b.probe.Pipeline()
		for j, i := range unknown {
			gets[j] = pipe.Get(cctx, calls[i].marker)
		}
		_, _ = pipe.Exec(cctx)
		cancel()
		var still []int
		for j, i := range unknown {
			v, err := gets[j].Result()
			switch {
			case err == nil:
				answers[i] = v
				published++
			case errors.Is(err, redis.Nil):
				refused++
			default:
				still = append(still, i)
			}
		}
		unknown = still
	}
	switch {
	case published == len(calls):
	case published == 0 && len(unknown) == 0:
		return "", nil, fmt.Errorf("not published: %w", firstErr)
	case conflicts > 0 && len(unknown) == 0:
		// an idempotency key used again for more users: the new ones got it
		return "", nil, fmt.Errorf("%w: %v (published to %d of %d users)", hub.ErrOutcomeUnknown, firstErr, published, len(calls))
	default:
		return "", nil, fmt.Errorf("%w: %d of %d published, %d unknown: %v", hub.ErrOutcomeUnknown, published, len(calls), len(unknown), firstErr)
	}
	devices := make([]int, len(calls))
	outID := ""
	for i, a := range answers {
		aid, rest, ok := strings.Cut(a, ";")
		count, _, _ := strings.Cut(rest, ";")
		d, err := strconv.Atoi(count)
		if !ok || err != nil || d < 0 {
			return "", nil, fmt.Errorf("publish answer %q is not an id and a count", a)
		}
		if outID == "" {
			outID = aid
		} else if aid != outID {
			return "", nil, fmt.Errorf("publish answers name two ids (%q, %q): the idempotency key was used for another publish", outID, aid)
		}
		devices[i] = d
	}
	return outID, devices, nil
}

// moved reports a Redis Cluster redirection: a slot served elsewhere.
func moved(err error) bool {
	return err != nil && (strings.HasPrefix(err.Error(), "MOVED ") || strings.HasPrefix(err.Error(), "ASK "))
}

// orErr returns first, or err when first is nil.
func orErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// rcSignature names the users of a publish (their number and a hash of
// them, in order), so that an idempotency key used again for other users
// is refused rather than answered by each user's marker alone.
func rcSignature(users []string) string {
	h := sha256.New()
	for _, u := range users {
		h.Write([]byte(u))
		h.Write([]byte{0})
	}
	return strconv.Itoa(len(users)) + ":" + hex.EncodeToString(h.Sum(nil)[:8])
}

// rcIndexBound is the most ids a user's id index keeps: the stream's
// entries plus superseded and volatile events' ids, sixteen times the
// history's length (at least 1,024; about 80 bytes each).
func rcIndexBound(size int) int { return max(16*size, 1024) }

// rcArgs are a publish script's arguments after the id (rc_scripts.go).
func (b *Broker) rcArgs(id, typ string, payload []byte, ts time.Time, runBy int64, markerTTL time.Duration, o hub.EventOptions, parity int, sig string) []any {
	volatile := "0"
	if o.Volatile {
		volatile = "1"
	}
	if len(payload) == 0 {
		payload = []byte("null")
	}
	return []any{id, b.opts.HistorySize, b.opts.HistoryTTL.Milliseconds(), typ, string(payload),
		ts.UTC().Format(hub.TimeFormat), ts.UnixMilli(), runBy, markerTTL.Milliseconds(),
		b.opts.HistoryMaxBytes, o.Key, volatile, parity, rcIndexBound(b.opts.HistorySize), sig}
}

func (b *Broker) rcPublishUsers(ctx context.Context, users []string, typ string, payload []byte, ts time.Time, o hub.EventOptions) (string, []int, error) {
	mk := func(id string, runBy int64, markerTTL time.Duration, mkey string) []rcCall {
		calls := make([]rcCall, len(users))
		args := b.rcArgs(id, typ, payload, ts, runBy, markerTTL, o, 1, rcSignature(users))
		for i, u := range users {
			marker := b.userKey("pk", u) + ":" + mkey
			calls[i] = rcCall{script: rcPublishUserScript, marker: marker, args: args,
				keys: []string{b.rcUserMeta(u), b.rcUserStream(u), b.rcUserIndex(u), b.slotKey(u), marker, b.userCh(u)}}
		}
		return calls
	}
	return b.rcPublish(ctx, mk, typ, o, false)
}

func (b *Broker) rcPublishAll(ctx context.Context, typ string, payload []byte, ts time.Time, o hub.EventOptions) (string, int, error) {
	mk := func(id string, runBy int64, markerTTL time.Duration, mkey string) []rcCall {
		marker := b.opts.Prefix + "pk:{all}:" + mkey
		return []rcCall{{script: rcPublishAllScript, marker: marker,
			args: b.rcArgs("", typ, payload, ts, runBy, markerTTL, o, 0, "all"),
			keys: []string{b.rcAllMeta(), b.rcAllStream(), b.allSlotsKey(), marker, b.rcAllCh()}}}
	}
	id, devices, err := b.rcPublish(ctx, mk, typ, o, true)
	if err != nil {
		return "", 0, err
	}
	return id, devices[0], nil
}

// ValidID reports whether id has the form of an id or a position of the
// broker on a cluster ("o<token>", "b<key>", "p<key>"); on one server, of
// an id or position of the current epoch not ahead of what is known.
func (b *Broker) ValidID(id string) bool {
	if len(id) < 2 || len(id) > hub.MaxIDLen {
		return false
	}
	switch id[0] {
	case 'o':
		for _, c := range id[1:] {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
				return false
			}
		}
		return true
	case 'b', 'p':
		k, err := strconv.ParseUint(id[1:], 10, 64)
		return err == nil && k > 0
	}
	return false
}

// Resume is hub.UserOrderBroker's Resume: it reserves the connection's
// place in user's order (rcReadUserScript, then rcReadAllScript above it)
// and, when from is an id or position whose history is held, reads the
// user's events and the broadcasts after it up to that place.
func (b *Broker) Resume(ctx context.Context, user, from string, max int) ([]*hub.Message, bool, string, uint64, error) {
	if b.rc == nil {
		return nil, false, "", 0, errors.New("redisbroker: Resume is for a cluster")
	}
	kind, val := "", ""
	if from != "" && b.ValidID(from) && b.opts.HistorySize > 0 && max > 0 {
		if from[0] == 'o' {
			kind, val = "o", from
		} else {
			kind, val = "k", from[1:]
		}
	}
	count := max + 1
	res, err := rcReadUserScript.Run(ctx, b.client, []string{b.rcUserMeta(user), b.rcUserStream(user), b.rcUserIndex(user)}, kind, val, count, b.opts.HistoryTTL.Milliseconds()).Slice()
	if err != nil {
		b.opts.Metrics.Error(OpHistory)
		return nil, false, "", 0, fmt.Errorf("resume: %w", err)
	}
	if len(res) == 0 {
		return nil, false, "", 0, errors.New("resume: empty answer")
	}
	capKey := uint64(toInt(res[0]))
	caps := strconv.FormatUint(capKey, 10)
	complete := kind != "" && len(res) == 4 && toInt(res[1]) == 1
	after := ""
	var own []*hub.Message
	if complete {
		after, _ = res[2].(string)
		entries, _ := res[3].([]any)
		if len(entries) >= count {
			complete = false
		} else if own, err = rcParseEntries(entries); err != nil {
			return nil, false, "", 0, fmt.Errorf("resume: %w", err)
		}
	}
	ares, err := rcReadAllScript.Run(ctx, b.client, []string{b.rcAllMeta(), b.rcAllStream()}, after, caps, count, b.opts.HistoryTTL.Milliseconds()).Slice()
	if err != nil {
		b.opts.Metrics.Error(OpHistory)
		return nil, false, "", 0, fmt.Errorf("resume: %w", err)
	}
	var out []*hub.Message
	if complete {
		if len(ares) != 2 || toInt(ares[0]) != 1 {
			complete = false
		} else {
			entries, _ := ares[1].([]any)
			all, err := rcParseEntries(entries)
			if err != nil {
				return nil, false, "", 0, fmt.Errorf("resume: %w", err)
			}
			if len(entries) >= count {
				complete = false
			}
			out = hub.Coalesce(mergeBySeq(own, all))
			if len(out) > max {
				complete = false
			}
		}
	}
	if !complete {
		return nil, false, "p" + caps, capKey, nil
	}
	pos := from
	if len(out) > 0 {
		pos = out[len(out)-1].ID
	}
	return out, true, pos, capKey, nil
}

// rcParseEntries turns XRANGE entries [key-0, [f, frame, t, ms(, k, key)]]
// into messages ordered by their keys.
func rcParseEntries(entries []any) ([]*hub.Message, error) {
	out := make([]*hub.Message, 0, len(entries))
	for _, e := range entries {
		a, ok := e.([]any)
		if !ok || len(a) != 2 {
			return nil, fmt.Errorf("unexpected stream entry %T", e)
		}
		sid, _ := a[0].(string)
		ks, _, _ := strings.Cut(sid, "-")
		key, err := strconv.ParseUint(ks, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("stream entry id %q", sid)
		}
		frame, t, ckey := entryFields(a[1])
		id, typ, err := envelopeIDType(frame)
		if err != nil {
			return nil, err
		}
		ms, _ := strconv.ParseInt(t, 10, 64)
		out = append(out, hub.NewMessage(id, key, typ, hub.EventOptions{Key: ckey}, []byte(frame), time.UnixMilli(ms)))
	}
	return out, nil
}

// rcAcquire is AcquireConn on a cluster: the user's set (limit checked
// there), then the cluster's set.
func (b *Broker) rcAcquire(ctx context.Context, ref slotRef, limit int) (bool, error) {
	res, err := rcAcquireScript.Run(ctx, b.client, []string{b.slotKey(ref.user)}, ref.member, limit, b.opts.SlotTTL.Milliseconds()).Int64Slice()
	if err != nil {
		return false, err
	}
	if len(res) != 2 {
		return false, fmt.Errorf("acquire: script returned %d values", len(res))
	}
	if res[0] != 1 {
		return false, nil
	}
	exp := float64(res[1] + b.opts.SlotTTL.Milliseconds())
	_, err = b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, b.allSlotsKey(), redis.Z{Score: exp, Member: ref.conn})
		p.PExpire(ctx, b.allSlotsKey(), b.opts.SlotTTL)
		return nil
	})
	if err != nil {
		return false, err
	}
	return true, nil
}

// rcRefresh renews the slots a node holds, on a cluster (no script may
// name several users' sets): scored by this node's view of Redis's clock.
func (b *Broker) rcRefresh(ctx context.Context, keys []string, members []any) error {
	ttl := b.opts.SlotTTL
	exp := float64(b.clock.toRedis(time.Now())/1000 + ttl.Milliseconds())
	for i := 0; i < len(keys); i += refreshBatch {
		j := min(i+refreshBatch, len(keys))
		_, err := b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for k := i; k < j; k++ {
				m, _ := members[k].(string)
				conn, _, _ := strings.Cut(m, "\n")
				p.ZAdd(ctx, keys[k], redis.Z{Score: exp, Member: m})
				p.PExpire(ctx, keys[k], ttl)
				if b.opts.HistoryTTL > 0 {
					// the user's meta hash lives while the user is
					// connected: a resume from a broadcast id must not
					// find it gone (recovered:false) for want of own events
					p.PExpire(ctx, b.rcUserMeta(b.userOfSlotKey(keys[k])), b.opts.HistoryTTL+ttl)
				}
				p.ZAdd(ctx, b.allSlotsKey(), redis.Z{Score: exp, Member: conn})
			}
			p.PExpire(ctx, b.allSlotsKey(), ttl)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// userOfSlotKey is the user whose slot set key is.
func (b *Broker) userOfSlotKey(key string) string {
	u := strings.TrimPrefix(key, b.opts.Prefix+"uc:{")
	return strings.TrimSuffix(u, "}")
}

// rcSampleClocks asks every master for its time; the clock keeps the
// smallest offset (a deadline converted with it is early on every master,
// never late).
func (b *Broker) rcSampleClocks(ctx context.Context, client redis.UniversalClient) error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
	defer cancel()
	cc, ok := client.(*redis.ClusterClient)
	if !ok {
		rt, err := client.Time(ctx).Result()
		if err != nil {
			return err
		}
		b.clock.set(rt, time.Now())
		return nil
	}
	var mu sync.Mutex
	var best int64
	first := true
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		var tc *redis.TimeCmd
		var ic *redis.StringCmd
		if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			tc, ic = p.Time(ctx), p.ClusterInfo(ctx)
			return nil
		}); err != nil {
			return err
		}
		rt := tc.Val()
		if st := clusterState(ic.Val()); st != "ok" {
			return fmt.Errorf("%s: cluster_state:%s", c.Options().Addr, st)
		}
		off := rt.UnixMicro() - b.clock.micros(time.Now())
		mu.Lock()
		if first || off < best {
			best, first = off, false
		}
		mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	b.clock.mu.Lock()
	b.clock.off = best
	b.clock.mu.Unlock()
	return nil
}

// clusterState reads cluster_state from CLUSTER INFO.
func clusterState(info string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cluster_state:"); ok {
			return v
		}
	}
	return "unknown"
}

// keySlot is the hash slot of a key or channel (its hash tag's, if any).
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16([]byte(key)) % rcSlots)
}

// crc16 is CRC-16/XMODEM, Redis Cluster's key hash.
func crc16(p []byte) uint16 {
	var crc uint16
	for _, c := range p {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

var _ hub.UserOrderBroker = (*Broker)(nil)
