package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hubd/hub/internal/auth"
)

// The storm scenario: --conns devices (WebSocket and SSE mixed by
// --sse-share, --devices-per-user per user) each hold a position, lose
// their connection at once, miss a few events, and reconnect at once
// through the hub's admission control, retrying as web/hub.js does. Two
// modes:
//
//   - drop: a network drop on one node. Every device aborts its socket
//     (RST: SO_LINGER 0, no close frame); while they are away --missed
//     broadcasts and one personal event per user are published; then the
//     network is back (t0) and every device reconnects after hub.js's
//     first backoff (full jitter in [0, 500 ms)) with its last id.
//   - restart: two nodes on Redis (started by hubbench from --hubd, on
//     --url and --url2; devices alternate between them). The node of
//     --url2 gets SIGTERM (t0): its devices get close 1001 or hub.shutdown
//     and come back after hub.js's delay for it; once it has exited the
//     events are published through --api-url (the other node), and the
//     node is started again on the same address.
//
// After a refusal a device waits Retry-After (when given) plus hub.js's
// full-jitter backoff; a 429 without it waits at least 5 s (hub.js's
// throttle), a 503 without it a random [0, 3 s) (hub.js's "shutdown"),
// a failed dial the backoff alone. A device is live when its hub.connected
// has come and every event it missed has arrived; it is recovered when
// hub.connected said recovered:true with missed equal to what it missed,
// and the replay had each missed event once. At the end one more broadcast
// checks that every device (the other node's too) is live.

// stormOptions are the storm scenario's flags.
type stormOptions struct {
	mode     string
	csv      string
	sseShare float64
	missed   int
	url2     string
	hubd     string
	pin      string
}

// hub.js's reconnect defaults (web/hub.js DEFAULTS).
const (
	jsBackoffBase = 500 * time.Millisecond
	jsBackoffMax  = 30 * time.Second
	jsShutdown    = 3 * time.Second // 1001 / 503 without a hint: random [0, this)
	jsThrottle    = 5 * time.Second // 429
)

// personalBatch is the number of personal events per API call: about 90
// bytes each, under the hub's default 64 KiB body limit.
const personalBatch = 500

// stormSeqBase is the sequence number of the first storm event; the
// personal event of the missed ones is stormSeqBase+missed+1, the live
// check after the storm one more.
const stormSeqBase = 0

func addStormFlags(fs *flag.FlagSet, o *options) {
	s := &o.storm
	fs.StringVar(&s.mode, "mode", "drop", "storm: drop (network drop on one node) or restart (SIGTERM and restart of one node of two on Redis)")
	fs.StringVar(&s.csv, "csv", "", "storm: write devices live over time (every 10 ms from t0) to this CSV file")
	fs.Float64Var(&s.sseShare, "sse-share", 0.5, "storm: share of devices on SSE, 0 to 1 (the rest WebSocket)")
	fs.IntVar(&o.perUser, "devices-per-user", 1, "storm: devices per user (the same as --per-user)")
	fs.IntVar(&s.missed, "missed", 3, "storm: broadcasts published while the devices are away (each also misses one personal event)")
	fs.StringVar(&s.url2, "url2", "", "storm --mode restart: the second node's base URL (the one restarted)")
	fs.StringVar(&s.hubd, "hubd", "", "storm: command line of hubd (split at spaces); hubbench starts the node(s) with it, setting HUB_ADDR and HUB_NODE_NAME (required for restart)")
	fs.StringVar(&s.pin, "hubd-cpus", "", "storm: run the hubd nodes with taskset -c CPUS (e.g. 0)")
}

func (s stormOptions) check(o options) error {
	switch {
	case s.mode != "drop" && s.mode != "restart":
		return fmt.Errorf("--mode %q: want drop or restart", s.mode)
	case !(s.sseShare >= 0 && s.sseShare <= 1):
		return fmt.Errorf("--sse-share %v: want 0 to 1", s.sseShare)
	case s.missed < 0 || s.missed > 1000:
		return fmt.Errorf("--missed %d: want 0 to 1000", s.missed)
	case s.mode == "restart" && (s.url2 == "" || s.hubd == ""):
		return errors.New("--mode restart needs --url2 and --hubd")
	case s.mode == "restart" && o.conns < 2:
		return errors.New("--mode restart needs --conns 2 or more")
	case o.apiKey == "":
		return errors.New("--api-key is required to publish")
	}
	return nil
}

// refusedError is a handshake answered with an HTTP error.
type refusedError struct {
	status     int
	retryAfter string // the Retry-After header, "" when absent
	body       string
}

// retryAfterOr is the Retry-After header, or def when e is nil.
func (e *refusedError) retryAfterOr(def string) string {
	if e == nil {
		return def
	}
	return e.retryAfter
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("handshake: status %d: %s", e.status, e.body)
}

// stormResult is the storm's part of the JSON line. Times are from t0.
type stormResult struct {
	Mode            string  `json:"mode"`
	Devices         int     `json:"devices"`
	SSE             int     `json:"sseDevices"`
	Reconnecting    int     `json:"reconnectingDevices"`
	MissedPerDevice int     `json:"missedPerDevice"`
	Live            int     `json:"live"`
	AllLiveMs       float64 `json:"allLiveMs,omitempty"`
	LiveMs          *pcts   `json:"timeToLiveMs,omitempty"`
	ConnectedMs     *pcts   `json:"timeToConnectedMs,omitempty"`
	Recovered       int     `json:"recovered"`
	RecoveredShare  float64 `json:"recoveredShare"`
	// Why devices were not recovered: hub.connected said recovered:false,
	// or said another missed count, or the events did not come once each.
	NotRecovered  int   `json:"notRecovered,omitempty"`
	WrongMissed   int   `json:"wrongMissedCount,omitempty"`
	MissingEvents int64 `json:"missingEvents"`
	ExtraEvents   int64 `json:"extraEvents"`
	// Reconnect attempts, refusals by "status code" and whether they had
	// Retry-After, failed dials by kind; attempts per device.
	Attempts             int            `json:"attempts"`
	Refusals             map[string]int `json:"refusals,omitempty"`
	RefusalsNoRetryAfter int            `json:"refusalsWithoutRetryAfter"`
	RetryAfterSeconds    map[string]int `json:"retryAfterSeconds,omitempty"`
	DialErrors           map[string]int `json:"dialErrors,omitempty"`
	AttemptsPerDevice    map[string]int `json:"attemptsPerDevice,omitempty"`
	// When the retries after a refusal were made (ms from t0), and their
	// delays: how the jitter spread them.
	RetryAtMs      *pcts  `json:"retryAtMs,omitempty"`
	RetryDelayMs   *pcts  `json:"retryDelayMs,omitempty"`
	RetriesPer500  []int  `json:"retriesPer500ms,omitempty"`
	ListenOverflow *int64 `json:"listenOverflows,omitempty"`
	// drop: the connections the hub still held at t0 (hub_connections),
	// cut sockets it had not torn down yet.
	HeldAtT0 *int64 `json:"hubConnectionsAtT0,omitempty"`
	// restart: SIGTERM → exit, and exit → ready again.
	DrainMs   float64 `json:"drainMs,omitempty"`
	RestartMs float64 `json:"restartMs,omitempty"`
	// The broadcast after the storm reached every device.
	LiveCheck int `json:"liveCheckReceived"`
}

// device is one client of the storm: its connection, position and record.
// Its goroutine owns everything but the atomics.
type device struct {
	i, user int
	node    int
	sse     bool
	src     net.IP
	c       atomic.Pointer[client]
	lastID  string
	seqs    []uint32 // every event received, over the whole run

	storm      atomic.Bool  // it reconnects in the storm (once)
	last       atomic.Int64 // the last event's seq + 1, 0 before any
	done       atomic.Bool  // its goroutine has ended
	hello      hello
	attempts   int
	connAt     time.Duration // hub.connected of the reconnect, from t0
	liveAt     atomic.Int64  // ns from t0 when live, 0 before
	waitSeqs   []uint32      // missed events still to come
	shutdownMs int64         // SSE hub.shutdown's retry hint, -1 when none
	closeCode  int           // the WebSocket close code that ended it
	ended      chan struct{} // the current read loop ended
	err        error
}

type hello struct {
	Payload struct {
		Recovered bool   `json:"recovered"`
		Missed    int    `json:"missed"`
		Position  string `json:"position"`
	} `json:"payload"`
}

// stormRun is the state of one storm.
type stormRun struct {
	b       *bench
	log     io.Writer // b.stderr, for the hubd children and the storm
	nodes   []*hubNode
	bases   []*url.URL
	devs    []*device
	tokens  []string
	t0      time.Time
	started chan struct{} // closed at t0 (drop: the network is back)
	missed  []uint32      // the seqs every device misses
	live    atomic.Int64
	conned  atomic.Int64

	mu        sync.Mutex
	refusals  map[string]int
	noRA      int
	raSecs    map[string]int
	dialErrs  map[string]int
	retryAt   []int64
	retryWait []int64
}

func (b *bench) runStorm(ctx context.Context, res *result) {
	sr := &stormResult{Mode: b.o.storm.mode, Devices: b.o.conns, MissedPerDevice: b.o.storm.missed + 1}
	res.Storm = sr
	s := &stormRun{b: b, log: &lockedWriter{w: b.stderr}, started: make(chan struct{}), refusals: map[string]int{}, raSecs: map[string]int{}, dialErrs: map[string]int{}}
	defer s.stopNodes()
	sctx, cancel := context.WithCancel(ctx)
	err := s.run(sctx, res, sr)
	cancel() // the devices still reconnecting stop
	for _, d := range s.devs {
		if c := d.c.Load(); c != nil {
			_ = c.nc.Close()
		}
	}
	for _, d := range s.devs {
		if d.ended != nil {
			<-d.ended
		}
	}
	if !s.t0.IsZero() {
		s.tally(res, sr)
	}
	switch {
	case err != nil:
		res.Error = err.Error()
	case sr.Live < sr.Reconnecting || sr.Recovered < sr.Reconnecting || sr.MissingEvents > 0 || sr.ExtraEvents > 0 || sr.LiveCheck < sr.Devices:
		res.Error = fmt.Sprintf("storm: %d of %d live, %d recovered, %d missing and %d extra events, the live check reached %d of %d",
			sr.Live, sr.Reconnecting, sr.Recovered, sr.MissingEvents, sr.ExtraEvents, sr.LiveCheck, sr.Devices)
	}
}

func (s *stormRun) run(ctx context.Context, res *result, sr *stormResult) error {
	b, o := s.b, s.b.o
	s.bases = []*url.URL{b.base}
	if o.storm.mode == "restart" {
		u2, err := loopbackURL(ctx, o.storm.url2)
		if err != nil {
			return fmt.Errorf("--url2: %w", err)
		}
		s.bases = append(s.bases, u2)
	}
	if o.storm.hubd != "" {
		for i, u := range s.bases {
			n := &hubNode{b: b, base: u, name: "storm-" + strconv.Itoa(i+1), out: s.log}
			s.nodes = append(s.nodes, n)
			if err := n.start(ctx); err != nil {
				return err
			}
		}
		if o.pid == 0 {
			b.o.pid = s.nodes[0].cmd.Process.Pid
		}
	}
	if err := s.connectAll(ctx, res, sr); err != nil {
		return err
	}
	// Every device sees one event first, so that its last id is an
	// event's, as a device's that has been up a while.
	if err := s.publishAll(ctx, stormSeqBase); err != nil {
		return err
	}
	if err := s.await(ctx, "the first event", func(d *device) bool { return d.last.Load() > 0 || d.done.Load() }); err != nil {
		return err
	}
	for i := range o.storm.missed + 1 {
		s.missed = append(s.missed, uint32(stormSeqBase+1+i))
	}
	overflow0, ovOK := listenOverflows()
	cpu0, cpuOK := procCPU(b.o.pid)
	self0, selfOK := procCPU(os.Getpid())

	var monitored <-chan struct{}
	if o.storm.mode == "drop" {
		s.drop(sr)
		if err := s.publishMissed(ctx); err != nil {
			return err
		}
		if n, ok := s.hubConnections(ctx); ok {
			sr.HeldAtT0 = &n
		}
		monitored = s.begin(ctx, sr)
	} else {
		var err error
		if monitored, err = s.restart(ctx, sr); err != nil {
			return err
		}
	}
	<-monitored

	if v, ok := listenOverflows(); ok && ovOK {
		v -= overflow0
		sr.ListenOverflow = &v
	}
	if cpu1, ok := procCPU(b.o.pid); ok && cpuOK {
		v := cpu1 - cpu0
		res.ServerCPUSecs = &v
	}
	if self1, ok := procCPU(os.Getpid()); ok && selfOK {
		v := self1 - self0
		res.ClientCPUSecs = &v
	}
	// The live check: one more broadcast reaches every device.
	check := s.check()
	if err := s.publishAll(ctx, int(check)); err != nil {
		return err
	}
	_ = s.await(ctx, "the live check", func(d *device) bool { return d.done.Load() || d.last.Load() == int64(check)+1 })
	time.Sleep(200 * time.Millisecond) // late duplicates, if any
	return nil
}

// check is the sequence number of the broadcast after the storm.
func (s *stormRun) check() uint32 { return uint32(stormSeqBase + 1 + len(s.missed)) }

// connectAll connects every device (not timed) and starts its read loop.
func (s *stormRun) connectAll(ctx context.Context, res *result, sr *stormResult) error {
	o := s.b.o
	users := (o.conns + o.perUser - 1) / o.perUser
	s.tokens = make([]string, users)
	for u := range users {
		tok, err := auth.Mint(o.secret, "HS256", userID(u), nil, 2*maxTimeout)
		if err != nil {
			return err
		}
		s.tokens[u] = tok
	}
	nodes := len(s.bases)
	s.devs = make([]*device, o.conns)
	for i := range s.devs {
		j := i / nodes // index among the node's devices: each node gets the SSE share
		d := &device{i: i, user: i / o.perUser, node: i % nodes, src: sourceAddr(i, o.perSource), shutdownMs: -1}
		d.sse = int(float64(j+1)*o.storm.sseShare) > int(float64(j)*o.storm.sseShare)
		if d.sse {
			sr.SSE++
		}
		s.devs[i] = d
	}
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		errs     int
	)
	start := time.Now()
	for range o.dialConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(s.devs) || ctx.Err() != nil {
					return
				}
				d := s.devs[i]
				c, err := s.dial(ctx, d)
				for n := 1; err != nil && n < 100 && ctx.Err() == nil; n++ {
					// refused by admission control: as told, then again
					re, ok := errors.AsType[*refusedError](err)
					ra, raErr := strconv.Atoi(re.retryAfterOr(""))
					if !ok || raErr != nil {
						break
					}
					select {
					case <-time.After(time.Duration(ra)*time.Second + jsBackoff(n)):
					case <-ctx.Done():
					}
					c, err = s.dial(ctx, d)
				}
				if err != nil {
					mu.Lock()
					errs++
					if firstErr == nil {
						firstErr = fmt.Errorf("device %d: %w", i, err)
					}
					mu.Unlock()
					continue
				}
				d.c.Store(c)
				d.lastID = d.position(c)
				d.ended = make(chan struct{})
				go s.serve(ctx, d)
			}
		}()
	}
	wg.Wait()
	res.ConnectSeconds = time.Since(start).Seconds()
	res.Connected = len(s.devs) - errs
	res.ConnectRate = float64(res.Connected) / res.ConnectSeconds
	res.ConnectErrors = errs
	res.Users = users
	if firstErr != nil {
		return fmt.Errorf("%d of %d devices failed to connect; first: %w", errs, len(s.devs), firstErr)
	}
	return ctx.Err()
}

func (s *stormRun) dial(ctx context.Context, d *device) (*client, error) {
	o := s.b.o
	path := o.wsPath
	if d.sse {
		path = o.ssePath
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req := request(s.bases[d.node], path, s.tokens[d.user], d.lastID, !d.sse, false)
	return dial(dctx, s.bases[d.node], nil, req, d.src, !d.sse, false, 4096)
}

// position reads hub.connected: the device's id to resume from.
func (d *device) position(c *client) string {
	d.hello = hello{}
	_ = json.Unmarshal(c.hello, &d.hello)
	if d.hello.Payload.Position != "" {
		return d.hello.Payload.Position
	}
	return d.lastID
}

var (
	idMark       = []byte(`{"id":"`)
	shutdownMark = []byte(`"type":"hub.shutdown"`)
	retryMsMark  = []byte(`"retryMs":`)
)

// serve reads the device's connection until it ends; a device of the
// storm then reconnects, and serves the new connection.
func (s *stormRun) serve(ctx context.Context, d *device) {
	defer close(d.ended)
	defer d.done.Store(true)
	for {
		err := s.read(d)
		_ = d.c.Load().nc.Close() // the hub closed it (restart), or the cut did
		// one storm per device
		if ctx.Err() != nil || !d.storm.CompareAndSwap(true, false) {
			d.err = err
			return
		}
		if err := s.reconnect(ctx, d); err != nil {
			d.err = err
			return
		}
	}
}

// read runs the connection's read loop: events move the last id and are
// recorded; it returns the error that ended it.
func (s *stormRun) read(d *device) error {
	c := d.c.Load()
	for {
		msg, err := c.next()
		if err != nil {
			if code, ok := closeCode(err); ok {
				d.closeCode = code
			}
			return err
		}
		if rest, ok := bytes.CutPrefix(msg, idMark); ok {
			if i := bytes.IndexByte(rest, '"'); i > 0 {
				d.lastID = string(rest[:i])
			}
			i := bytes.Index(msg, payloadMark)
			if i < 0 {
				continue
			}
			_, r, ok1 := parseInt(msg[i+len(payloadMark):])
			if !ok1 || len(r) == 0 || r[0] != ',' {
				continue
			}
			seq, _, ok2 := parseInt(r[1:])
			if !ok2 {
				continue
			}
			d.seqs = append(d.seqs, uint32(seq))
			d.last.Store(seq + 1)
			if len(d.waitSeqs) > 0 {
				d.waitSeqs = slices.DeleteFunc(d.waitSeqs, func(w uint32) bool { return w == uint32(seq) })
				if len(d.waitSeqs) == 0 {
					s.markLive(d)
				}
			}
			continue
		}
		if bytes.Contains(msg, shutdownMark) {
			if i := bytes.Index(msg, retryMsMark); i >= 0 {
				if ms, _, ok := parseInt(msg[i+len(retryMsMark):]); ok {
					d.shutdownMs = ms
				}
			}
		}
	}
}

func (s *stormRun) markLive(d *device) {
	d.liveAt.Store(max(1, time.Since(s.t0).Nanoseconds()))
	s.live.Add(1)
}

// closeCode is the code of a WebSocket close frame that ended a read.
func closeCode(err error) (int, bool) {
	rest, ok := strings.CutPrefix(err.Error(), "closed by server: ")
	if !ok {
		return 0, false
	}
	f, _, _ := strings.Cut(rest, " ")
	n, err := strconv.Atoi(f)
	return n, err == nil
}

// reconnect waits as hub.js would and dials until the device is connected.
func (s *stormRun) reconnect(ctx context.Context, d *device) error {
	select { // drop: the network is back at t0
	case <-s.started:
	case <-ctx.Done():
		return ctx.Err()
	}
	var delay time.Duration
	switch {
	case s.b.o.storm.mode == "drop":
		delay = jsBackoff(0)
	case d.sse && d.shutdownMs >= 0:
		delay = time.Duration(d.shutdownMs) * time.Millisecond
	case !d.sse && d.closeCode == 1001:
		delay = rand.N(jsShutdown)
	default:
		delay = jsBackoff(0)
	}
	for n := 1; ; n++ {
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		d.attempts++
		if d.attempts > 1 {
			s.noteRetry(time.Since(s.t0), delay)
		}
		c, err := s.dial(ctx, d)
		if err == nil {
			d.c.Store(c)
			d.connAt = time.Since(s.t0)
			s.conned.Add(1)
			d.lastID = d.position(c)
			d.waitSeqs = slices.Clone(s.missed)
			if d.hello.Payload.Missed == 0 || len(d.waitSeqs) == 0 {
				// nothing replayed (not recovered, or nothing missed):
				// live at hub.connected
				d.waitSeqs = nil
				s.markLive(d)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		delay = s.noteFailure(err, n)
	}
}

// noteFailure records a failed attempt and returns the delay before the
// next one (n: the attempt's number, 1 for the first).
func (s *stormRun) noteFailure(err error, n int) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if re, ok := errors.AsType[*refusedError](err); ok {
		code := strconv.Itoa(re.status) + " " + errorCode(re.body)
		s.refusals[code]++
		ra, raErr := strconv.Atoi(re.retryAfter)
		if re.retryAfter == "" || raErr != nil || ra < 0 {
			s.noRA++
			if re.status == http.StatusTooManyRequests {
				return max(jsThrottle, jsBackoff(n))
			}
			return rand.N(jsShutdown)
		}
		s.raSecs[strconv.Itoa(ra)]++
		return time.Duration(ra)*time.Second + jsBackoff(n)
	}
	s.dialErrs[dialErrorKind(err)]++
	return jsBackoff(n)
}

func (s *stormRun) noteRetry(at, delay time.Duration) {
	s.mu.Lock()
	s.retryAt = append(s.retryAt, at.Nanoseconds())
	s.retryWait = append(s.retryWait, delay.Nanoseconds())
	s.mu.Unlock()
}

// errorCode is the error.code of a JSON error body.
func errorCode(body string) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(body), &e) != nil || e.Error.Code == "" {
		return "(no code)"
	}
	return e.Error.Code
}

func dialErrorKind(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	default:
		msg := err.Error()
		return msg[:min(len(msg), 80)]
	}
}

// jsBackoff is hub.js's backoffDelay(n): full jitter in
// [0, min(30 s, 500 ms × 2^n)).
func jsBackoff(n int) time.Duration {
	limit := jsBackoffMax
	if n < 16 {
		limit = min(jsBackoffMax, jsBackoffBase<<n)
	}
	return rand.N(limit)
}

// drop cuts every device's connection at once, with an RST.
func (s *stormRun) drop(sr *stormResult) {
	for _, d := range s.devs {
		d.storm.Store(true)
	}
	sr.Reconnecting = len(s.devs)
	for _, d := range s.devs {
		nc := d.c.Load().nc
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = nc.Close()
	}
}

// restart sends SIGTERM to the second node (t0), waits for it to exit,
// publishes the missed events through the first node and starts the
// second again.
func (s *stormRun) restart(ctx context.Context, sr *stormResult) (<-chan struct{}, error) {
	n := s.nodes[1]
	for _, d := range s.devs {
		if d.node == 1 {
			d.storm.Store(true)
			sr.Reconnecting++
		}
	}
	monitored := s.begin(ctx, sr)
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return nil, fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-n.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	sr.DrainMs = ms(time.Since(s.t0))
	down := time.Now()
	if err := s.publishMissed(ctx); err != nil {
		return nil, err
	}
	if err := n.start(ctx); err != nil {
		return nil, err
	}
	sr.RestartMs = ms(time.Since(down))
	return monitored, nil
}

// begin is t0: it starts the monitor, whose channel is closed when it
// ends.
func (s *stormRun) begin(ctx context.Context, sr *stormResult) <-chan struct{} {
	s.t0 = time.Now()
	close(s.started)
	done := make(chan struct{})
	reconnecting := sr.Reconnecting
	go func() {
		defer close(done)
		s.monitor(ctx, reconnecting)
	}()
	return done
}

// monitor waits until every storm device is live (or the run's bound),
// writing the live count every 10 ms to --csv.
func (s *stormRun) monitor(ctx context.Context, reconnecting int) {
	var w *csv.Writer
	if path := s.b.o.storm.csv; path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(s.log, s.b.name+": --csv:", err)
		} else {
			defer f.Close()
			bw := bufio.NewWriter(f)
			defer bw.Flush()
			w = csv.NewWriter(bw)
			defer w.Flush()
			_ = w.Write([]string{"ms", "live", "connected", "refusals", "dial_errors"})
		}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	lastChange, last := time.Now(), int64(-1)
	for {
		live := s.live.Load()
		if w != nil {
			s.mu.Lock()
			ref, de := 0, 0
			for _, v := range s.refusals {
				ref += v
			}
			for _, v := range s.dialErrs {
				de += v
			}
			s.mu.Unlock()
			_ = w.Write([]string{strconv.FormatInt(time.Since(s.t0).Milliseconds(), 10), strconv.FormatInt(live, 10),
				strconv.FormatInt(s.conned.Load(), 10), strconv.Itoa(ref), strconv.Itoa(de)})
		}
		if live >= int64(reconnecting) {
			return
		}
		if live != last {
			last, lastChange = live, time.Now()
		} else if time.Since(lastChange) > 45*time.Second {
			fmt.Fprintf(s.log, "%s: storm: no device went live for 45 s (%d of %d live)\n", s.b.name, live, reconnecting)
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// tally fills the result after every read loop has ended.
func (s *stormRun) tally(res *result, sr *stormResult) {
	check := s.check()
	var lives, conns []int64
	want := []uint32{stormSeqBase}
	want = append(want, s.missed...)
	want = append(want, check)
	apd := map[string]int{}
	for _, d := range s.devs {
		miss, extra := compare(want, d.seqs)
		sr.MissingEvents += miss
		sr.ExtraEvents += extra
		if len(d.seqs) > 0 && d.seqs[len(d.seqs)-1] == check {
			sr.LiveCheck++
		}
		if !d.reconnected() {
			continue
		}
		apd[strconv.Itoa(d.attempts)]++
		if at := d.liveAt.Load(); at > 0 {
			sr.Live++
			lives = append(lives, at)
			conns = append(conns, d.connAt.Nanoseconds())
		}
		switch {
		case !d.hello.Payload.Recovered:
			sr.NotRecovered++
		case d.hello.Payload.Missed != len(s.missed):
			sr.WrongMissed++
		case miss == 0 && extra == 0 && inOrder(d.seqs):
			sr.Recovered++
		}
		if d.err != nil && d.liveAt.Load() == 0 && res.FirstClientErr == "" {
			res.FirstClientErr = fmt.Sprintf("device %d: %v", d.i, d.err)
		}
	}
	sr.LiveMs, sr.ConnectedMs = percentiles(lives), percentiles(conns)
	if sr.LiveMs != nil && sr.Live == sr.Reconnecting {
		sr.AllLiveMs = sr.LiveMs.Max
	}
	if sr.Reconnecting > 0 {
		sr.RecoveredShare = float64(sr.Recovered) / float64(sr.Reconnecting)
	}
	sr.AttemptsPerDevice = apd
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devs {
		sr.Attempts += d.attempts
	}
	if len(s.refusals) > 0 {
		sr.Refusals = s.refusals
	}
	sr.RefusalsNoRetryAfter = s.noRA
	if len(s.raSecs) > 0 {
		sr.RetryAfterSeconds = s.raSecs
	}
	if len(s.dialErrs) > 0 {
		sr.DialErrors = s.dialErrs
	}
	for _, at := range s.retryAt {
		k := int(at / int64(500*time.Millisecond))
		if k >= 0 && k < 200 {
			for len(sr.RetriesPer500) <= k {
				sr.RetriesPer500 = append(sr.RetriesPer500, 0)
			}
			sr.RetriesPer500[k]++
		}
	}
	sr.RetryAtMs, sr.RetryDelayMs = percentiles(s.retryAt), percentiles(s.retryWait)
}

// reconnected reports whether the device took part in the storm.
func (d *device) reconnected() bool { return d.attempts > 0 }

// inOrder reports whether the seqs ascend (the replay in order, before the
// live check).
func inOrder(seqs []uint32) bool {
	return slices.IsSorted(seqs)
}

// await waits until cond holds for every device, bounded by the run and
// by 60 s.
func (s *stormRun) await(ctx context.Context, what string, cond func(*device) bool) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := 0
		for _, d := range s.devs {
			if cond(d) {
				n++
			}
		}
		if n == len(s.devs) {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: %d of %d devices", what, n, len(s.devs))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// publishAll broadcasts one event of sequence seq to everyone.
func (s *stormRun) publishAll(ctx context.Context, seq int) error {
	b := s.b
	body := fmt.Appendf(nil, `{"all":true,"type":"BENCH","payload":%s}`, b.payload(time.Now().UnixNano(), seq))
	return b.post(ctx, "/api/broadcast", body)
}

// publishMissed publishes what every device misses: the broadcasts, then
// one personal event per user (batches of personalBatch).
func (s *stormRun) publishMissed(ctx context.Context) error {
	for _, seq := range s.missed[:len(s.missed)-1] {
		if err := s.publishAll(ctx, int(seq)); err != nil {
			return err
		}
	}
	personal := s.missed[len(s.missed)-1]
	users := len(s.tokens)
	for first := 0; first < users; first += personalBatch {
		var body bytes.Buffer
		body.WriteString(`{"messages":[`)
		for u := first; u < min(first+personalBatch, users); u++ {
			if u > first {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"userIds":[%q],"type":"BENCH","payload":%s}`, userID(u), s.b.payload(time.Now().UnixNano(), int(personal)))
		}
		body.WriteString(`]}`)
		if err := s.b.post(ctx, "/api/broadcast/batch", body.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

func (s *stormRun) stopNodes() {
	for _, n := range s.nodes {
		n.stop()
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// hubConnections is the sum of the hub's hub_connections gauges.
func (s *stormRun) hubConnections(ctx context.Context) (int64, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.b.api.JoinPath("/metrics").String(), nil)
	if err != nil {
		return 0, false
	}
	resp, err := s.b.http.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var n int64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("hub_connections{")); ok {
			if i := bytes.LastIndexByte(rest, ' '); i >= 0 {
				if v, err := strconv.ParseFloat(string(rest[i+1:]), 64); err == nil {
					n += int64(v)
					found = true
				}
			}
		}
	}
	return n, found && resp.StatusCode == http.StatusOK
}

// listenOverflows is the machine's TcpExt ListenOverflows counter: SYNs
// dropped because a listen queue was full.
func listenOverflows() (int64, bool) {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return 0, false
	}
	lines := bytes.Split(b, []byte("\n"))
	for i := 0; i+1 < len(lines); i++ {
		if !bytes.HasPrefix(lines[i], []byte("TcpExt:")) || !bytes.HasPrefix(lines[i+1], []byte("TcpExt:")) {
			continue
		}
		names, vals := bytes.Fields(lines[i]), bytes.Fields(lines[i+1])
		for j, n := range names {
			if string(n) == "ListenOverflows" && j < len(vals) {
				v, err := strconv.ParseInt(string(vals[j]), 10, 64)
				return v, err == nil
			}
		}
	}
	return 0, false
}

// hubNode is a hubd child process of the storm.
type hubNode struct {
	b    *bench
	base *url.URL
	name string
	out  io.Writer // its stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
}

// start starts hubd on the node's address and waits for /readyz.
func (n *hubNode) start(ctx context.Context) error {
	o := n.b.o.storm
	args := strings.Fields(o.hubd)
	if o.pin != "" {
		args = append([]string{"taskset", "-c", o.pin}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "HUB_ADDR="+n.base.Host, "HUB_NODE_NAME="+n.name, "HUB_INTERNAL_ADDR=")
	cmd.Stdout, cmd.Stderr = n.out, n.out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(n.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.base.JoinPath("/readyz").String(), nil)
		if resp, err := n.b.http.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-n.done:
			return fmt.Errorf("%s exited at start: %v", n.name, cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within 30 s", n.name)
		}
	}
}

// stop sends SIGTERM and waits (SIGKILL after 20 s).
func (n *hubNode) stop() {
	if n.cmd == nil {
		return
	}
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// lockedWriter serialises the writes of several goroutines to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
