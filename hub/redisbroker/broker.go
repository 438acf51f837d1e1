// Package redisbroker implements hub.Broker on Redis, so that several hub
// nodes form one cluster.
//
// Every event gets its id from one Lua script that reads (or makes) the
// cluster's epoch, increments the global sequence, appends the envelope to
// the recipient's stream (the history used for resume) and publishes it on
// the recipient's Pub/Sub channel, atomically. Ids are "<epoch>-<seq>"; the
// sequence is global, so ids of a user's own events and of broadcasts are
// in one order. A node keeps one Pub/Sub connection, subscribed to the
// broadcast and control channels and to one channel per user that holds a
// connection on it; Redis delivers on it in publish order. The channels
// are sharded ones (SSUBSCRIBE, SPUBLISH: Redis 7 or later), so that on a
// Redis Cluster a user's channel lives in the user's hash slot, with the
// user's keys (the user is a hash tag in each name: userKey).
//
// Pub/Sub is at-most-once: after the connection to Redis broke and came
// back, the broker asks the hub to Resync, which reads what its
// connections missed from the streams. If Redis itself lost its data, a new
// epoch is made and older ids are no longer recognised (recovered:false).
// A Pub/Sub connection that stops answering without closing is found by
// pinging it and is redialled (loop.go).
//
// On a Redis Cluster (Options.Cluster) no sequence can be shared by every
// publish without making its slot the hot spot: there the order is made of
// the masters' clocks, and each node merges what its masters send (rc.go,
// docs/DECISIONS.md 31). Connection slots, stats, health and the outage
// handling are shared by both modes.
//
// Every Redis call on the publish and readiness paths is bounded:
// publishes by Options.PublishTimeout (publish.go, which also explains how
// a publish whose answer is lost is told apart from one that was not
// applied), readiness by a health loop that probes Redis in the background
// (health.go), so Ready answers from state.
package redisbroker

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/hubd/hub/hub"
)

// metaName is the name of the meta hash (epoch, sequence) under the
// prefix. It is "meta:2" since the user keys carry hash tags
// (docs/DECISIONS.md 24): a hub of the earlier layout and one of this one
// never share an epoch, so an id from before an upgrade is of another
// epoch (recovered:false) rather than resumed from a user stream of the
// new name that never held its events.
const metaName = "meta:2"

// Defaults.
const (
	DefaultPrefix = "hub:"
	// statsInterval is how often a node reports its stats; statsTTL is the
	// age beyond which a report no longer counts.
	statsInterval = 2 * time.Second
	statsTTL      = 10 * time.Second
	// resyncTimeout bounds the hub's Resync after a reconnection.
	resyncTimeout = 30 * time.Second
	// DefaultPublishTimeout is Options.PublishTimeout's default.
	DefaultPublishTimeout = time.Second
	// DefaultHealthInterval is Options.HealthInterval's default.
	DefaultHealthInterval = 500 * time.Millisecond
	// DefaultPingInterval is Options.PingInterval's default.
	DefaultPingInterval = time.Second
)

// Options configure a Broker.
type Options struct {
	// URL is the Redis URL, e.g. redis://127.0.0.1:6379/0; with Cluster,
	// a cluster URL in go-redis's syntax (redis.ParseClusterURL), e.g.
	// redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002.
	URL string
	// Cluster makes the broker a client of a Redis Cluster (go-redis's
	// ClusterClient) rather than of one server: every key and channel of
	// a user is in the user's hash slot, the broadcasts' in {all}'s, and
	// the order is made of the masters' clocks (rc.go; the hub resumes
	// through Resume).
	Cluster bool
	// Prefix is put before every key and channel (default "hub:").
	Prefix string
	// Node is this node's name (stats).
	Node string
	// HistorySize is the stream MAXLEN per user and of the broadcast
	// stream (0: no history; events are still published).
	HistorySize int
	// HistoryTTL is the streams' expiry (an idle user's history vanishes)
	// and the age beyond which an event no longer counts as held.
	HistoryTTL time.Duration
	// HistoryMaxBytes bounds each stream (a user's, the broadcasts') by
	// the envelope bytes it holds, oldest entries deleted first (0: no
	// byte bound).
	HistoryMaxBytes int64
	// Logger receives the broker's logs (default slog.Default()).
	Logger *slog.Logger
	// SlotTTL is how long a connection slot (AcquireConn) lives without
	// being renewed, so how long the slots of a crashed node keep counting
	// (default DefaultSlotTTL; renewed three times per SlotTTL).
	SlotTTL time.Duration
	// PublishTimeout bounds a publish when its context has no earlier
	// deadline, and one health probe (default DefaultPublishTimeout).
	PublishTimeout time.Duration
	// HealthInterval is how often the health loop probes Redis (default
	// DefaultHealthInterval).
	HealthInterval time.Duration
	// PingInterval is how long the Pub/Sub connection may stay quiet
	// before it is pinged; a ping unanswered within PublishTimeout counts
	// as a lost connection, which is redialled (default
	// DefaultPingInterval).
	PingInterval time.Duration
	// Metrics is told of publishes, reconnections, resyncs and failed
	// Redis calls (nil: nobody).
	Metrics Observer
}

// Receiver is what the broker delivers to; *hub.Hub implements it.
type Receiver interface {
	Deliver(user string, m *hub.Message)
	DisconnectLocal(user string) int
	Resync(ctx context.Context)
	Stats() hub.Stats
}

// ClusterTotals is the answer of ClusterStats.
type ClusterTotals struct {
	Nodes            int            `json:"nodes"`
	TotalConnections int            `json:"totalConnections"`
	ActiveUsers      int            `json:"activeUsers"`
	Connections      map[string]int `json:"connections"`
	// Members are the nodes counted, each with its own stats.
	Members []NodeStats `json:"members"`
}

// NodeStats is one node's last report: its hub.Stats and when it was
// made.
type NodeStats struct {
	hub.Stats
	ReportedAt time.Time `json:"reportedAt"`
	broker     string    // the reporting broker's Options.Node
}

// Broker is a hub.Broker on Redis. Create it with New, start it with Start
// and stop it with Close.
type Broker struct {
	opts  Options
	ropts *redis.Options        // one server, or
	copts *redis.ClusterOptions // a cluster (Options.Cluster)
	log   *slog.Logger
	// client serves the idempotent calls (reads, slots, stats) and the
	// Pub/Sub connection, with go-redis's retries; pub serves the publish
	// script, which must never be sent twice, so it has none; probe
	// serves the health loop and the check of a publish whose answer was
	// lost, on connections of its own (none of them retries either).
	client redis.UniversalClient
	pub    redis.UniversalClient
	probe  redis.UniversalClient
	ps     *redis.PubSub // one server only; a cluster has one per master (rc)
	rc     *rcState      // on a cluster (Options.Cluster): rc.go
	recv   Receiver
	clock  clock

	metaKey, nodesKey, allCh, ctlCh string
	// chPrefix starts every channel name: the prefix, and the database
	// number when it is not 0, because Pub/Sub channels are shared by
	// every database of a Redis server (two hubs kept apart by database
	// numbers must not hear each other).
	chPrefix string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	subs      map[string]*chanState // user channel -> state
	unsubPend map[string]int        // UNSUBSCRIBE sent, confirmation not yet seen
	ops       []op
	opSignal  chan struct{}

	slotMu    sync.Mutex
	held      map[string]map[string]string // user -> connection id -> slot member
	releases  []slotRef                    // slots given back, not yet removed
	relSignal chan struct{}

	latest atomic.Pointer[known] // the cluster's epoch and sequence, as last seen (Latest)
	// lastMsg is the last message dispatch built, with the payload it was
	// built from: the event of a publish to many users comes once per user
	// channel, and is built once (receive loop only).
	lastPayload string
	lastMsg     *hub.Message

	live      atomic.Bool           // the Pub/Sub connection is subscribed and in sync
	health    atomic.Pointer[error] // last probe's error; nil pointer or nil error: healthy
	probeNow  chan struct{}         // kick: probe at once
	closeOnce sync.Once
}

// chanState is this node's subscription to one user channel.
type chanState struct {
	refs int
	sent bool          // SUBSCRIBE written
	done chan struct{} // closed when confirmed (err nil) or failed
	err  error
}

type op struct {
	sub bool
	ch  string
	st  *chanState
}

var _ hub.Broker = (*Broker)(nil)

// New checks the options and parses the URL; it does not connect.
func New(o Options) (*Broker, error) {
	var ro *redis.Options
	var co *redis.ClusterOptions
	var err error
	if o.Cluster {
		co, err = redis.ParseClusterURL(o.URL)
	} else {
		ro, err = redis.ParseURL(o.URL)
	}
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	noMaint := maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if co != nil {
		co.MaintNotificationsConfig, co.DisableIdentity = &noMaint, true
	} else {
		ro.MaintNotificationsConfig, ro.DisableIdentity = &noMaint, true
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.HistorySize < 0 {
		return nil, errors.New("history size must not be negative")
	}
	if o.HistoryTTL < 0 {
		return nil, errors.New("history ttl must not be negative")
	}
	if o.HistoryMaxBytes < 0 {
		return nil, errors.New("history max bytes must not be negative")
	}
	if o.SlotTTL < 0 {
		return nil, errors.New("slot ttl must not be negative")
	}
	if o.SlotTTL == 0 {
		o.SlotTTL = DefaultSlotTTL
	}
	if o.PublishTimeout < 0 || o.HealthInterval < 0 || o.PingInterval < 0 {
		return nil, errors.New("timeouts and intervals must not be negative")
	}
	if o.PublishTimeout == 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.HealthInterval == 0 {
		o.HealthInterval = DefaultHealthInterval
	}
	if o.PingInterval == 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.Node == "" {
		o.Node = randomName()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = nopObserver{}
	}
	routeGoRedisLog(o.Logger)
	chPrefix := o.Prefix
	if ro != nil && ro.DB != 0 {
		chPrefix += "db" + strconv.Itoa(ro.DB) + ":"
	}
	return &Broker{
		opts:      o,
		ropts:     ro,
		copts:     co,
		log:       o.Logger,
		metaKey:   o.Prefix + metaName,
		nodesKey:  o.Prefix + "nodes",
		allCh:     chPrefix + "all",
		ctlCh:     chPrefix + "ctl",
		chPrefix:  chPrefix,
		subs:      make(map[string]*chanState),
		unsubPend: make(map[string]int),
		opSignal:  make(chan struct{}, 1),
		held:      make(map[string]map[string]string),
		relSignal: make(chan struct{}, 1),
		probeNow:  make(chan struct{}, 1),
	}, nil
}

func randomName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// userKey is the name of user's key or channel of a kind: the prefix,
// the kind, and the user as a hash tag ("hub:c:{alice}"), so that every
// key and channel of one user is in one hash slot of a Redis Cluster.
func (b *Broker) userKey(kind, user string) string {
	return b.opts.Prefix + kind + ":{" + user + "}"
}

func (b *Broker) userCh(user string) string { return b.chPrefix + "c:{" + user + "}" }

// userStream and allStream are key prefixes; the script appends the epoch.
// userState and allState are those of their state hashes (bytes, floor,
// horizon, coalescing keys: see publishScript), checkpoints that of the
// checkpoint stream.
func (b *Broker) userStream(user string) string { return b.userKey("u", user) + ":" }
func (b *Broker) allStream() string             { return b.opts.Prefix + "a:" }
func (b *Broker) userState(user string) string  { return b.userKey("uh", user) + ":" }
func (b *Broker) allState() string              { return b.opts.Prefix + "ah:" }
func (b *Broker) checkpoints() string           { return b.opts.Prefix + "ck:" }

// checkpointEvery is the granularity of the checkpoint stream: a hundredth
// of the TTL (at least a millisecond), so that a resume from an id the
// history does not hold is refused as too old at most 1% of the TTL early.
func (b *Broker) checkpointEvery() time.Duration {
	return max(b.opts.HistoryTTL/100, time.Millisecond)
}

// Start connects (an error if Redis cannot be reached), subscribes to the
// broadcast and control channels and starts the receive loop, the
// subscription writer and the stats reporter, which deliver to r.
func (b *Broker) Start(ctx context.Context, r Receiver) error {
	if b.client != nil {
		return errors.New("redisbroker: already started")
	}
	b.recv = r
	// Context deadlines bound every socket read and write (go-redis
	// otherwise waits its own ReadTimeout whatever the context says).
	client, pub, probe := b.newClient(false, 0), b.newClient(true, 0), b.newClient(true, 4)
	closeAll := func() {
		_ = client.Close()
		_ = pub.Close()
		_ = probe.Close()
	}
	b.clock.base = time.Now()
	if err := b.sampleClock(ctx, probe); err != nil {
		closeAll()
		return fmt.Errorf("connect redis: %w", err)
	}
	if b.copts != nil {
		b.client, b.pub, b.probe = client, pub, probe
		if err := b.rcStart(ctx); err != nil {
			b.client, b.pub, b.probe, b.rc = nil, nil, nil, nil
			closeAll()
			return fmt.Errorf("connect redis cluster: %w", err)
		}
		b.ctx, b.cancel = context.WithCancel(context.Background())
		b.live.Store(true)
		b.wg.Add(3)
		go b.statsLoop()
		go b.slotLoop()
		go b.healthLoop()
		b.rcGo()
		return nil
	}
	if err := publishScript.Load(ctx, pub).Err(); err != nil {
		closeAll()
		return fmt.Errorf("load script: %w", err)
	}
	ps := client.SSubscribe(ctx)
	if err := subscribeBase(ctx, ps, b.allCh, b.ctlCh); err != nil {
		_ = ps.Close()
		closeAll()
		if strings.Contains(err.Error(), "unknown command") {
			err = fmt.Errorf("%w (sharded Pub/Sub needs Redis 7 or later)", err)
		}
		return err
	}
	b.client, b.pub, b.probe, b.ps = client, pub, probe, ps
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.live.Store(true)
	b.wg.Add(5)
	go b.receiveLoop()
	go b.opLoop()
	go b.statsLoop()
	go b.slotLoop()
	go b.healthLoop()
	return nil
}

// newClient makes a client of the server or the cluster whose socket reads
// and writes are bounded by the context's deadline; noRetry turns
// go-redis's retries off, pool > 0 sets the pool size.
func (b *Broker) newClient(noRetry bool, pool int) redis.UniversalClient {
	tune := func(ctxTimeout *bool, retries, poolSize *int) {
		*ctxTimeout = true
		if noRetry {
			*retries = -1
		}
		if pool > 0 {
			*poolSize = pool
		}
	}
	if b.copts != nil {
		o := *b.copts
		tune(&o.ContextTimeoutEnabled, &o.MaxRetries, &o.PoolSize)
		if noRetry {
			// no second try on another node either: a master that refuses
			// the connection fails the call at once, sent nowhere (a
			// MOVED answer also means not run, and go-redis reloads the
			// slots for the next call)
			o.MaxRedirects = -1
		}
		return redis.NewClusterClient(&o)
	}
	o := *b.ropts
	tune(&o.ContextTimeoutEnabled, &o.MaxRetries, &o.PoolSize)
	return redis.NewClient(&o)
}

// subscribeBase subscribes to the broadcast and control channels (sharded
// channels, as every channel of the broker) and waits for both
// confirmations.
func subscribeBase(ctx context.Context, ps *redis.PubSub, channels ...string) error {
	if err := ps.SSubscribe(ctx, channels...); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	for n := 0; n < len(channels); {
		msg, err := ps.Receive(ctx)
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		if s, ok := msg.(*redis.Subscription); ok && s.Kind == "ssubscribe" {
			n++
		}
	}
	return nil
}

// Close stops every goroutine the broker started, waits for them and closes
// its connections. It removes this node's stats and the connection slots
// released so far; slots still held (connections not unregistered) expire
// after SlotTTL.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		if b.client == nil {
			return
		}
		b.cancel()
		if b.rc != nil {
			b.mu.Lock()
			for _, m := range b.rc.masters {
				if m.ps != nil {
					_ = m.ps.Close()
				}
			}
			b.mu.Unlock()
		} else {
			err = b.ps.Close()
		}
		b.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = b.client.HDel(ctx, b.nodesKey, b.opts.Node).Err()
		_ = b.client.Del(ctx, b.usersKey(b.opts.Node)).Err()
		b.flushReleases(ctx)
		cancel()
		b.mu.Lock()
		subs := []map[string]*chanState{b.subs}
		if b.rc != nil {
			for _, m := range b.rc.masters {
				subs = append(subs, m.subs)
			}
		}
		for _, ss := range subs {
			for _, st := range ss {
				if !isClosed(st.done) {
					st.err = errors.New("redisbroker: closed")
					close(st.done)
				}
			}
		}
		b.mu.Unlock()
		if cerr := b.client.Close(); err == nil {
			err = cerr
		}
		_ = b.pub.Close()
		_ = b.probe.Close()
		if errors.Is(err, redis.ErrClosed) {
			err = nil
		}
	})
	return err
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Ready reports nil when the health loop's last probe of Redis was
// answered in time and the Pub/Sub subscription is live. It answers from
// that state at once: it never waits on Redis.
func (b *Broker) Ready() error {
	if b.client == nil {
		return errors.New("redisbroker: not started")
	}
	if b.ctx.Err() != nil {
		return errors.New("redisbroker: closed")
	}
	if !b.live.Load() {
		return errors.New("redisbroker: subscription down")
	}
	return b.healthErr()
}

// Healthy reports the health loop's last probe of Redis: nil when it was
// answered in time. It never waits on Redis. Stores on the same Redis use
// it to fail at once while Redis does not answer, as publishes do.
func (b *Broker) Healthy() error {
	if b.client == nil {
		return errors.New("redisbroker: not started")
	}
	return b.healthErr()
}

// PublishUsers gives one event one id, appends it to the streams of users
// (distinct) and publishes it on their channels, in one atomic script that
// also counts each user's live connection slots; it returns the id and the
// counts in the order of users.
//
// A keyed event supersedes each user's entry with the same key in the same
// script; a volatile one is published and counted, never stored.
func (b *Broker) PublishUsers(ctx context.Context, users []string, typ string, payload []byte, ts time.Time, o hub.EventOptions) (string, []int, error) {
	if len(users) == 0 {
		return "", nil, nil
	}
	if b.rc != nil {
		start := time.Now()
		id, devices, err := b.rcPublishUsers(ctx, users, typ, payload, ts, o)
		b.opts.Metrics.PublishDone(OpPublish, time.Since(start), err)
		if err != nil {
			return "", nil, fmt.Errorf("publish: %w", err)
		}
		return id, devices, nil
	}
	targets := make([]target, len(users))
	for i, u := range users {
		targets[i] = target{stream: b.userStream(u), state: b.userState(u), channel: b.userCh(u), slots: b.slotKey(u)}
	}
	start := time.Now()
	id, devices, err := b.publish(ctx, targets, typ, payload, ts, o)
	b.opts.Metrics.PublishDone(OpPublish, time.Since(start), err)
	if err != nil {
		return "", nil, fmt.Errorf("publish: %w", err)
	}
	return id, devices, nil
}

// PublishAll appends one event to the broadcast stream and publishes it to
// every node; it returns its id and the cluster's live connection slots.
func (b *Broker) PublishAll(ctx context.Context, typ string, payload []byte, ts time.Time, o hub.EventOptions) (string, int, error) {
	if b.rc != nil {
		start := time.Now()
		id, devices, err := b.rcPublishAll(ctx, typ, payload, ts, o)
		b.opts.Metrics.PublishDone(OpBroadcast, time.Since(start), err)
		if err != nil {
			return "", 0, fmt.Errorf("broadcast: %w", err)
		}
		return id, devices, nil
	}
	t := target{stream: b.allStream(), state: b.allState(), channel: b.allCh, slots: b.allSlotsKey()}
	start := time.Now()
	id, devices, err := b.publish(ctx, []target{t}, typ, payload, ts, o)
	b.opts.Metrics.PublishDone(OpBroadcast, time.Since(start), err)
	if err != nil {
		return "", 0, fmt.Errorf("broadcast: %w", err)
	}
	return id, devices[0], nil
}

// History returns user's events after lastID (its own and the broadcasts,
// in id order, coalesced: of each key only the newest) and whether the
// list is provably complete: the id must be of the current epoch, nothing
// from it on may have been dropped (see read), an id held in one of the
// streams must be younger than HistoryTTL, and there must be at most max
// events. An id that neither stream holds (a superseded or a volatile
// event's) is taken as a position.
func (b *Broker) History(ctx context.Context, user, lastID string, max int) ([]*hub.Message, bool, error) {
	if b.rc != nil {
		return nil, false, errPerUser
	}
	epoch, last, ok := hub.ParseID(lastID)
	if !ok {
		return nil, false, nil
	}
	msgs, ok, err := b.read(ctx, user, epoch, last, max, false)
	if err != nil {
		b.opts.Metrics.Error(OpHistory)
		return nil, false, fmt.Errorf("history: %w", err)
	}
	return msgs, ok, nil
}

// Since returns user's events after pos, a position returned by Position,
// and whether the list is provably complete: pos must be of the current
// epoch, nothing after it may have been dropped (see read), and there must
// be at most max events. Unlike History it does not ask that pos be held
// (a position is no event of the user's).
func (b *Broker) Since(ctx context.Context, user, pos string, max int) ([]*hub.Message, bool, error) {
	if b.rc != nil {
		return nil, false, errPerUser
	}
	epoch, last, ok := parsePosition(pos)
	if !ok {
		return nil, false, nil
	}
	msgs, ok, err := b.read(ctx, user, epoch, last, max, true)
	if err != nil {
		b.opts.Metrics.Error(OpHistory)
		return nil, false, fmt.Errorf("since: %w", err)
	}
	return msgs, ok, nil
}

// Position returns the cluster's position: the current epoch and the seq
// of the last event published ("<epoch>-0" before the first one). It makes
// the epoch when Redis has none.
func (b *Broker) Position(ctx context.Context) (string, error) {
	if b.client == nil {
		return "", errors.New("redisbroker: not started")
	}
	if b.rc != nil {
		return "", errPerUser
	}
	res, err := positionScript.Run(ctx, b.client, []string{b.metaKey}, randomName()).StringSlice()
	if err != nil {
		b.opts.Metrics.Error(OpPosition)
		return "", fmt.Errorf("position: %w", err)
	}
	if len(res) != 2 {
		return "", fmt.Errorf("position: script returned %d values", len(res))
	}
	if seq, err := strconv.ParseUint(res[1], 10, 64); err == nil {
		b.note(res[0], seq, true)
	}
	return res[0] + "-" + res[1], nil
}

// parsePosition is hub.ParseID that also accepts seq 0.
func parsePosition(pos string) (epoch string, seq uint64, ok bool) {
	if e, ok := strings.CutSuffix(pos, "-0"); ok && e != "" {
		return e, 0, true
	}
	return hub.ParseID(pos)
}

// read reads user's events after seq last of epoch from both streams,
// coalesced. What proves them complete is that neither stream may have
// lost anything after last: each stream's floor (historyScript: the
// newest entry deleted for the bounds, or the horizon, which covers a
// stream that expired and everything an expired one held) must be below
// last, or at most last for a position (isPos), which names the place
// after its seq. An event id held in a stream must also be younger than
// HistoryTTL (an older one is outside the history's window); one that is
// held nowhere counts as a position would, apart from its own seq.
func (b *Broker) read(ctx context.Context, user, epoch string, last uint64, max int, isPos bool) ([]*hub.Message, bool, error) {
	if b.opts.HistorySize == 0 || max <= 0 || b.client == nil {
		return nil, false, nil
	}
	keys := []string{b.metaKey, b.userStream(user) + epoch, b.userState(user) + epoch,
		b.allStream() + epoch, b.allState() + epoch, b.checkpoints() + epoch}
	res, err := historyScript.Run(ctx, b.client, keys, epoch, last, max+1, b.opts.HistoryTTL.Milliseconds()).Slice()
	if err != nil {
		return nil, false, err
	}
	if len(res) != 3 {
		return nil, false, nil // another epoch
	}
	var out []*hub.Message
	minAge := time.Now().Add(-b.opts.HistoryTTL).UnixMilli()
	for _, r := range res[1:] {
		s, err := parseStreamResult(r)
		if err != nil {
			return nil, false, err
		}
		if s.floor > last || (!isPos && s.floor == last) {
			return nil, false, nil
		}
		if !isPos && s.heldAt >= 0 && b.opts.HistoryTTL > 0 && s.heldAt < minAge {
			return nil, false, nil
		}
		out = mergeBySeq(out, s.msgs)
	}
	out = hub.Coalesce(out)
	if len(out) > max {
		return nil, false, nil
	}
	return out, true, nil
}

type streamResult struct {
	floor  uint64 // the highest seq the stream may have lost
	heldAt int64  // -1: the last id is not in this stream
	msgs   []*hub.Message
}

func parseStreamResult(v any) (streamResult, error) {
	r := streamResult{heldAt: -1}
	a, ok := v.([]any)
	if !ok || len(a) != 3 {
		return r, fmt.Errorf("unexpected script result %T", v)
	}
	r.floor = uint64(toInt(a[0]))
	if s, _ := a[1].(string); s != "" {
		t, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return r, fmt.Errorf("entry time %q: %w", s, err)
		}
		r.heldAt = t
	}
	entries, _ := a[2].([]any)
	for _, e := range entries {
		m, err := parseEntry(e)
		if err != nil {
			return r, err
		}
		r.msgs = append(r.msgs, m)
	}
	return r, nil
}

func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

// parseEntry turns one XRANGE entry [id, [f, frame, t, millis(, k, key)]]
// into a message.
func parseEntry(e any) (*hub.Message, error) {
	a, ok := e.([]any)
	if !ok || len(a) != 2 {
		return nil, fmt.Errorf("unexpected stream entry %T", e)
	}
	frame, t, key := entryFields(a[1])
	id, typ, err := envelopeIDType(frame)
	if err != nil {
		return nil, err
	}
	_, seq, ok := hub.ParseID(id)
	if !ok {
		return nil, fmt.Errorf("stream entry id %q", id)
	}
	ms, _ := strconv.ParseInt(t, 10, 64)
	return hub.NewMessage(id, seq, typ, hub.EventOptions{Key: key}, []byte(frame), time.UnixMilli(ms)), nil
}

// entryFields reads a stream entry's fields: the envelope (f), its time in
// Unix milliseconds (t) and its coalescing key (k, "" for none).
func entryFields(v any) (frame, t, key string) {
	fields, _ := v.([]any)
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		v, _ := fields[i+1].(string)
		switch k {
		case "f":
			frame = v
		case "t":
			t = v
		case "k":
			key = v
		}
	}
	return frame, t, key
}

// envelopeIDType reads an envelope's id and type.
func envelopeIDType(frame string) (id, typ string, err error) {
	var env struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	if err := json.Unmarshal([]byte(frame), &env); err != nil {
		return "", "", fmt.Errorf("stream entry frame: %w", err)
	}
	return env.ID, env.Type, nil
}

// errPerUser: on a cluster the hub resumes through Resume.
var errPerUser = errors.New("redisbroker: ids are ordered per user on a cluster: use Resume")

// mergeBySeq merges two lists sorted by seq.
func mergeBySeq(a, b []*hub.Message) []*hub.Message {
	if len(a) == 0 {
		return b
	}
	if len(b) == 0 {
		return a
	}
	out := make([]*hub.Message, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if a[i].Seq() <= b[j].Seq() {
			out = append(out, a[i])
			i++
		} else {
			out = append(out, b[j])
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// DisconnectUser asks every node (this one included) to close user's
// connections.
func (b *Broker) DisconnectUser(ctx context.Context, user string) error {
	if b.client == nil {
		return errors.New("redisbroker: not started")
	}
	if b.rc != nil {
		return b.rcDisconnectUser(ctx, user)
	}
	if err := b.client.SPublish(ctx, b.ctlCh, "disconnect\n"+user).Err(); err != nil {
		b.opts.Metrics.Error(OpDisconnect)
		return fmt.Errorf("publish disconnect: %w", err)
	}
	return nil
}

// Subscribe makes this node receive user's events; it returns once Redis
// confirmed the subscription.
func (b *Broker) Subscribe(ctx context.Context, user string) error {
	if b.client == nil {
		return errors.New("redisbroker: not started")
	}
	if b.rc != nil {
		return b.rcSubscribe(ctx, user)
	}
	ch := b.userCh(user)
	b.mu.Lock()
	if b.ctx.Err() != nil {
		b.mu.Unlock()
		return errors.New("redisbroker: closed")
	}
	st := b.subs[ch]
	if st == nil || (isClosed(st.done) && st.err != nil) {
		st = &chanState{done: make(chan struct{})}
		b.subs[ch] = st
		b.queue(op{sub: true, ch: ch, st: st})
	}
	st.refs++
	b.mu.Unlock()
	return b.awaitSubscribed(ctx, user, st)
}

// awaitSubscribed waits for the subscription st of user to be confirmed
// (or to fail); when ctx ends first it undoes the caller's Subscribe.
func (b *Broker) awaitSubscribed(ctx context.Context, user string, st *chanState) error {
	select {
	case <-st.done:
		if st.err != nil {
			return fmt.Errorf("subscribe: %w", st.err)
		}
		return nil
	case <-ctx.Done():
		b.Unsubscribe(user)
		return fmt.Errorf("subscribe: %w", ctx.Err())
	}
}

// Unsubscribe undoes one Subscribe; the last one unsubscribes the channel
// (in the background: it does not block).
func (b *Broker) Unsubscribe(user string) {
	if b.rc != nil {
		b.rcUnsubscribe(user)
		return
	}
	ch := b.userCh(user)
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.subs[ch]
	if st == nil {
		return
	}
	st.refs--
	if st.refs > 0 {
		return
	}
	delete(b.subs, ch)
	b.queue(op{ch: ch, st: st})
}

// queue adds an op for opLoop; b.mu must be held.
func (b *Broker) queue(o op) {
	b.ops = append(b.ops, o)
	select {
	case b.opSignal <- struct{}{}:
	default:
	}
}

// ClusterStats sums the stats of the nodes that reported within the last
// ten seconds, and lists each of them (Members). ActiveUsers counts a user
// connected to several nodes once: it is the PFCOUNT of the nodes'
// HyperLogLogs (hll.go), exact for small counts and within about 1% for
// large ones; should that read fail, it is the sum of the nodes' counts.
func (b *Broker) ClusterStats(ctx context.Context) (any, error) {
	nodes, err := b.NodeStats(ctx)
	if err != nil {
		return nil, err
	}
	tot := ClusterTotals{Connections: map[string]int{hub.TransportWebSocket: 0, hub.TransportSSE: 0}, Members: nodes}
	keys := make([]string, 0, len(nodes))
	for _, r := range nodes {
		tot.Nodes++
		tot.TotalConnections += r.TotalConnections
		tot.ActiveUsers += r.ActiveUsers
		for k, n := range r.Connections {
			tot.Connections[k] += n
		}
		keys = append(keys, b.usersKey(r.broker))
	}
	if len(keys) > 0 {
		n, err := b.client.PFCount(ctx, keys...).Result()
		if err != nil {
			b.opts.Metrics.Error(OpStats)
			b.log.Debug("redis count of the cluster's users failed; summing the nodes' counts", "err", err)
		} else {
			tot.ActiveUsers = int(n)
		}
	}
	return tot, nil
}

// NodeStats returns the last report of every node that reported within
// the last ten seconds (a node reports every two), sorted by node name.
func (b *Broker) NodeStats(ctx context.Context) ([]NodeStats, error) {
	if b.client == nil {
		return nil, errors.New("redisbroker: not started")
	}
	all, err := b.client.HGetAll(ctx, b.nodesKey).Result()
	if err != nil {
		b.opts.Metrics.Error(OpStats)
		return nil, fmt.Errorf("cluster stats: %w", err)
	}
	nodes := []NodeStats{}
	cutoff := time.Now().Add(-statsTTL).UnixMilli()
	for name, v := range all {
		var r nodeReport
		if json.Unmarshal([]byte(v), &r) != nil || r.At < cutoff {
			continue
		}
		nodes = append(nodes, NodeStats{Stats: r.Stats, ReportedAt: time.UnixMilli(r.At).UTC(), broker: name})
	}
	slices.SortFunc(nodes, func(a, b NodeStats) int { return strings.Compare(a.Node, b.Node) })
	return nodes, nil
}

type nodeReport struct {
	Stats hub.Stats `json:"stats"`
	At    int64     `json:"at"` // Unix milliseconds
}

// known is the cluster's epoch and the highest sequence seen of it.
type known struct {
	epoch string
	seq   uint64
}

// note records that the cluster's epoch has reached seq. What Redis said
// of its epoch (authoritative: a probe or Position) replaces another
// epoch; an id seen elsewhere (a publish's answer, a delivery) only moves
// the sequence of the epoch known, or gives the first one.
func (b *Broker) note(epoch string, seq uint64, authoritative bool) {
	for {
		cur := b.latest.Load()
		switch {
		case cur == nil:
		case cur.epoch == epoch && cur.seq >= seq:
			return
		case cur.epoch != epoch && !authoritative:
			return
		}
		if b.latest.CompareAndSwap(cur, &known{epoch, seq}) {
			return
		}
	}
}

// Latest returns the cluster's epoch and the highest sequence this node
// has seen: from the health loop's probes (every HealthInterval), its own
// publishes and Position calls, and the events delivered to it. It never
// asks Redis.
func (b *Broker) Latest() (string, uint64) {
	if k := b.latest.Load(); k != nil {
		return k.epoch, k.seq
	}
	return "", 0
}
