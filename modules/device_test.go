package modules_test

// The device model of TestRandomized and TestSoak: a simulated device of a
// user connects over WebSocket or SSE, reads, drops its connection or
// stops reading at random, and always resumes from the last event id it
// saw. At the end each test compares what every device saw with what was
// published: no loss, no duplicate, in order.
//
// With coalescing keys and volatile events (fleet.snapshot set, as
// TestRandomized does), a device also keeps, per key, the newest event of
// the key it saw (its state), and checks on every resume that it is given
// no volatile event in the replay and that, once the replay is read, its
// state per key is at least what was published for the key before it
// reconnected; it records its sessions (when hub.connected came, the
// highest seq read), from which the test tells what it was sent live.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
)

// fleet is what the devices of one run share: where and how they connect,
// how often they misbehave, the counters the test logs and the failures.
// The test sets the fields above end before the devices run.
type fleet struct {
	t *testing.T
	// node returns the SSE and WebSocket endpoints of a node to dial, or
	// ok false when no node is up.
	node func(rng *rand.Rand) (sseURL, wsURL string, ok bool)
	// steadyNode returns the endpoints of the node that never restarts,
	// for steady devices (see addSteady).
	steadyNode func() (sseURL, wsURL string)
	// A dial is tried dialAttempts times, waiting dialBackoff(attempt)
	// between two (a node restarting, a cut connection not yet
	// unregistered).
	dialAttempts int
	dialBackoff  func(attempt int) time.Duration
	// Before each read, a device that has an id to resume from draws n in
	// [0, oneIn): 0 drops the connection; under pauseBelow, a slow device
	// stops reading for 300 ms and up to pauseMax more (the hub cuts it
	// when its queue fills, and it resumes).
	oneIn, pauseBelow int
	pauseMax          time.Duration
	// shortTTL is the lifetime of a short device's tokens; over WebSocket
	// it sends hub.refresh at half of it.
	shortTTL time.Duration
	// restarts: nodes stop during the run, so a reconnection that ends
	// before hub.connected is retried whatever the reason (without
	// restarts, only when it was cut as a slow consumer).
	restarts bool
	// published, when set, returns how many events were published to user
	// so far: a device with cutEarly uses it to stay away until events
	// for it are published.
	published func(user string) int
	// strictClose: a WebSocket closed with a code the model does not
	// expect (not 4008, 4001 or 1001) fails the device instead of
	// reconnecting.
	strictClose bool
	// snapshot, when set, turns the keys part of the model on: it returns
	// the seq of the newest event published (and answered) so far for each
	// key of user, which a device's state must reach after a resume.
	snapshot func(user string) map[string]uint64

	end chan struct{} // closed once the sentinel is published: no more drops or pauses

	devices []*simDevice

	errMu sync.Mutex
	errs  []string

	drops, cuts, resumes, expiries, refreshes, restartsSeen, deliveries atomic.Int64
	// earlyCuts and replayCuts count the cutEarly devices' cuts before
	// their first event and during a replay.
	earlyCuts, replayCuts atomic.Int64
	// stateChecks counts the resumes whose state per key was checked;
	// replayed the events replayed to them.
	stateChecks, replayed atomic.Int64
}

// maxErrs is how many failures a fleet keeps.
const maxErrs = 20

func (f *fleet) fail(format string, args ...any) {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	if len(f.errs) < maxErrs {
		f.errs = append(f.errs, fmt.Sprintf(format, args...))
	}
}

// failures returns the failures so far, one a line ("" when none).
func (f *fleet) failures() string {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return strings.Join(f.errs, "\n")
}

func (f *fleet) ending() bool {
	select {
	case <-f.end:
		return true
	default:
		return false
	}
}

// add adds the n-th device of user; slow devices pause and have a tiny
// socket receive buffer, short ones have short-lived tokens.
func (f *fleet) add(user string, n int, transport string, slow, short bool, rng *rand.Rand) *simDevice {
	d := &simDevice{
		f: f, user: user, transport: transport, slow: slow, short: short, rng: rng,
		name:  fmt.Sprintf("%s/%d(%s", user, n, transport),
		tr:    &http.Transport{DialContext: deviceDialer(slow).DialContext},
		ready: make(chan struct{}),
		warm:  make(chan struct{}),
	}
	if slow {
		d.name += ",slow"
	}
	if short {
		d.name += ",short"
	}
	d.name += ")"
	f.devices = append(f.devices, d)
	return d
}

// addSteady adds a steady device of user: it never drops, pauses or
// renews, and holds one connection to the node that never restarts for
// the whole run. Any end of that connection fails the run: a deadline or
// timer that is set and never reset (issue 22) cuts a connection within
// its period, which devices that reconnect and resume would hide.
func (f *fleet) addSteady(user, transport string) *simDevice {
	d := f.add(user, 0, transport, false, false, rand.New(rand.NewPCG(uint64(len(f.devices)), 0x57ead)))
	d.steady = true
	d.name = fmt.Sprintf("%s(%s,steady)", user, transport)
	return d
}

// start runs every device in a goroutine of wg and waits until each has
// its first connection live (or has failed). Nothing is published before:
// a fresh connect has nothing to resume from.
func (f *fleet) start(ctx context.Context, wg *sync.WaitGroup) {
	for _, d := range f.devices {
		wg.Add(1)
		go func() { defer wg.Done(); d.run(ctx) }()
	}
	for _, d := range f.devices {
		<-d.ready
	}
}

// waitWarm waits until every device has its first event (or has failed):
// a device cut before its first event would have no id to resume from.
func (f *fleet) waitWarm() {
	for _, d := range f.devices {
		<-d.warm
	}
}

// simDevice is one simulated device; its goroutine is run.
type simDevice struct {
	f         *fleet
	name      string
	user      string
	transport string // "websocket" or "sse"
	slow      bool   // pauses reading now and then, to be cut as a slow consumer
	short     bool   // short-lived tokens, refreshed (WebSocket) or renewed on hub.expired (SSE)
	steady    bool   // one connection for the whole run (see addSteady)
	// cutEarly: the device drops its first connection right after
	// hub.connected, before any event, stays away until two events for its
	// user are published, and drops again in the middle of the replay
	// that follows (fleet.published must be set).
	cutEarly, cutReplay bool
	rng                 *rand.Rand
	tr                  *http.Transport
	lastID              string
	seen                []string      // the ids of its events, in the order it got them
	ready               chan struct{} // closed after the first hub.connected (or a failure)
	readyOnce           sync.Once
	warm                chan struct{} // closed after its first event (or a failure)
	warmOnce            sync.Once

	// the keys part of the model (fleet.snapshot set)
	lastSeq  uint64            // seq of the last event seen: seqs only grow
	state    map[string]uint64 // key -> seq of the newest event of the key seen
	sessions []*session
}

// session is one connection of a device that got its hub.connected.
type session struct {
	connectedAt time.Time // when hub.connected was read
	maxSeq      uint64    // seq of the last event read on it
}

// liveFor reports whether an event published by a call that started at
// start, with seq seq, must have reached d live: some session of d had
// its hub.connected before the call began (so the hub sent it to that
// connection) and read past seq (so it read it, events coming in order).
func (d *simDevice) liveFor(start time.Time, seq uint64) bool {
	for _, s := range d.sessions {
		if start.After(s.connectedAt) && seq < s.maxSeq {
			return true
		}
	}
	return false
}

func (d *simDevice) markReady() { d.readyOnce.Do(func() { close(d.ready) }) }

func (d *simDevice) markWarm() { d.warmOnce.Do(func() { close(d.warm) }) }

// check returns where each event stands in what d saw, or what is wrong
// with it: an event seen twice, or one that is not in want (its user's).
func (d *simDevice) check(want map[string]bool) (map[string]int, error) {
	pos := make(map[string]int, len(d.seen))
	for i, id := range d.seen {
		if j, dup := pos[id]; dup {
			return nil, fmt.Errorf("%s got %s twice (at %d and %d)", d.name, id, j, i)
		}
		if !want[id] {
			return nil, fmt.Errorf("%s got %s, not an event of %s", d.name, id, d.user)
		}
		pos[id] = i
	}
	return pos, nil
}

// token mints the token of one connection; it runs on the device's
// goroutine, so it returns its error.
func (d *simDevice) token() (string, error) {
	ttl := time.Hour
	if d.short {
		ttl = d.f.shortTTL
	}
	tok, err := auth.Mint(hubtest.Secret, "HS256", d.user, nil, ttl)
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	return tok, nil
}

// deviceConn is one connection of a device, either transport.
type deviceConn interface {
	// read returns the next envelope (ctx bounds it for WebSocket; the SSE
	// stream is bound by the context it was dialled with).
	read(ctx context.Context) (envelope, error)
	// refresh sends hub.refresh (WebSocket only).
	refresh(ctx context.Context, token string) error
	close()
}

type wsDeviceConn struct{ c *websocket.Conn }

func (w wsDeviceConn) read(ctx context.Context) (envelope, error) {
	_, b, err := w.c.Read(ctx)
	if err != nil {
		return envelope{}, err
	}
	return decodeEnvelope(b)
}

func (w wsDeviceConn) refresh(ctx context.Context, token string) error {
	b, _ := json.Marshal(map[string]string{"type": "hub.refresh", "token": token})
	return w.c.Write(ctx, websocket.MessageText, b)
}

func (w wsDeviceConn) close() { w.c.CloseNow() }

type sseDeviceConn struct {
	c    *sseClient
	p    *sseParser
	stop func() bool
}

func (s sseDeviceConn) read(context.Context) (envelope, error) {
	rec, err := s.p.next()
	if err != nil {
		return envelope{}, err
	}
	e, err := decodeEnvelope([]byte(rec.Data))
	if err == nil && (rec.ID != e.ID || rec.Event != e.Type) {
		err = fmt.Errorf("sse fields id=%q event=%q disagree with %s", rec.ID, rec.Event, rec.Data)
	}
	return e, err
}

func (sseDeviceConn) refresh(context.Context, string) error { return nil }

func (s sseDeviceConn) close() { s.stop(); s.c.close() }

// deviceDialer dials a device's connections; a slow device's sockets get
// a tiny receive buffer, so that one that stops reading backs the server
// up quickly.
func deviceDialer(slow bool) *net.Dialer {
	dl := &net.Dialer{Timeout: 5 * time.Second}
	if slow {
		dl.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = smallRcvBuf(fd)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return dl
}

// dial connects to a node, resuming from the last id, and retries
// refusals.
func (d *simDevice) dial(ctx context.Context) (deviceConn, error) {
	var lastErr error
	for attempt := range d.f.dialAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("dial: %w (last: %v)", ctx.Err(), lastErr)
			case <-time.After(d.f.dialBackoff(attempt)):
			}
		}
		tok, err := d.token()
		if err != nil {
			return nil, err
		}
		sseURL, wsURL, ok := d.f.node(d.rng)
		if d.steady {
			sseURL, wsURL = d.f.steadyNode()
			ok = true
		}
		if !ok {
			lastErr = errors.New("no node up")
			continue
		}
		if d.transport == "sse" {
			c, status, body, err := dialSSE(d.f.t, sseDial{URL: sseURL, Token: tok, LastID: d.lastID, Manual: true, SmallRcvBuf: d.slow})
			if err == nil && c != nil {
				size := 64 << 10
				if d.slow {
					size = 4096
				}
				return sseDeviceConn{c: c, p: c.parser(size), stop: context.AfterFunc(ctx, c.cancel)}, nil
			}
			lastErr = fmt.Errorf("sse dial: %v %d %v", err, status, body)
			continue
		}
		u := wsURL + "?token=" + tok
		if d.lastID != "" {
			u += "&last_event_id=" + url.QueryEscape(d.lastID)
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: &http.Client{Transport: d.tr}})
		cancel()
		if err == nil {
			c.SetReadLimit(1 << 20)
			return wsDeviceConn{c}, nil
		}
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		lastErr = fmt.Errorf("websocket dial: %v (status %d)", err, status)
	}
	return nil, lastErr
}

// run is the device's goroutine: connect, read, reconnect and resume
// until its user's sentinel, the end of ctx or a failure.
func (d *simDevice) run(ctx context.Context) {
	defer d.tr.CloseIdleConnections()
	defer d.markReady()
	defer d.markWarm()
	first := true
	for ctx.Err() == nil {
		var snap map[string]uint64
		if d.f.snapshot != nil {
			snap = d.f.snapshot(d.user) // before the dial: published before hub.connected
		}
		c, err := d.dial(ctx)
		if err != nil {
			d.f.fail("%s: %v", d.name, err)
			return
		}
		done, err := d.session(ctx, c, first, snap)
		c.close()
		first = false
		if err != nil {
			d.f.fail("%s: %v", d.name, err)
			return
		}
		if done {
			return
		}
	}
}

// cutOff reports whether err is how the hub cuts a slow consumer: close
// 4008 on WebSocket, the end of the stream on SSE.
func cutOff(err error) bool {
	var ce websocket.CloseError
	return errors.As(err, &ce) && ce.Code == 4008 || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// session reads one connection until it ends (false, nil: reconnect and
// resume), the device has its user's sentinel (true, nil) or the contract
// is broken (error). snap is the fleet's snapshot taken before the dial
// (keys model only).
func (d *simDevice) session(ctx context.Context, c deviceConn, first bool, snap map[string]uint64) (bool, error) {
	f := d.f
	e, err := c.read(ctx)
	if err != nil {
		switch {
		case first:
		case f.restarts:
			return false, nil // ended before it was live (a node stopping): reconnect
		case ctx.Err() == nil && cutOff(err):
			// cut as a slow consumer while it registered (its replay and
			// the live events filled the queue before the writer started):
			// the contract says reconnect and resume, which it does
			f.cuts.Add(1)
			return false, nil
		}
		return false, fmt.Errorf("no hub.connected: %w", err)
	}
	var p struct {
		ConnectionID string `json:"connectionId"`
		Recovered    bool   `json:"recovered"`
		Missed       int    `json:"missed"`
		Position     string `json:"position"`
	}
	if e.Type != "hub.connected" || json.Unmarshal(e.Payload, &p) != nil {
		return false, fmt.Errorf("first event %s, want hub.connected", e.raw)
	}
	switch {
	case first:
		d.markReady()
	case d.steady:
		return false, errors.New("steady device reconnected") // never: its session fails first
	case d.lastID == "":
		return false, errors.New("reconnected before any event: nothing to resume from")
	case !p.Recovered:
		return false, fmt.Errorf("resume from %s: recovered:false (missed %d)", d.lastID, p.Missed)
	default:
		f.resumes.Add(1)
	}
	// With nothing replayed, the position is where to resume from (as
	// hub.js does): a device cut before its first event, or before the
	// next one, loses nothing.
	if p.Missed == 0 && p.Position != "" {
		d.lastID = p.Position
	}
	replaying := p.Missed
	if first && d.cutEarly {
		// cut before any event, and away while events are published
		c.close()
		f.earlyCuts.Add(1)
		n := f.published(d.user)
		for f.published(d.user) < n+2 {
			select {
			case <-ctx.Done():
				return false, fmt.Errorf("cut early: no event published for %s", d.user)
			case <-time.After(time.Millisecond):
			}
		}
		d.cutReplay = true
		return false, nil
	}
	// the keys model: the replay (missed events, before any live one)
	// holds no volatile event, and once it is read the state per key has
	// caught up with snap
	keys := f.snapshot != nil
	replay := 0
	var sess *session
	if keys {
		sess = &session{connectedAt: time.Now()}
		d.sessions = append(d.sessions, sess)
		if !first {
			replay = p.Missed
			f.replayed.Add(int64(p.Missed))
			if replay == 0 {
				if err := d.checkState(snap); err != nil {
					return false, err
				}
			}
		}
	}
	if d.short && d.transport == "websocket" {
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go d.refresher(sctx, c)
	}
	opened, events := time.Now(), 0
	steadyEnd := func(why string) error {
		return fmt.Errorf("steady connection %s ended %v after it opened, after %d events: %s",
			p.ConnectionID, time.Since(opened).Round(time.Millisecond), events, why)
	}
	for {
		if !f.ending() && d.lastID != "" && !d.steady {
			switch n := d.rng.IntN(f.oneIn); {
			case n == 0:
				f.drops.Add(1)
				return false, nil
			case n < f.pauseBelow && d.slow:
				pause := 300*time.Millisecond + time.Duration(d.rng.IntN(int(f.pauseMax.Milliseconds())))*time.Millisecond
				select {
				case <-time.After(pause):
				case <-ctx.Done():
					return false, ctx.Err()
				}
			}
		}
		e, err := c.read(ctx)
		if err != nil {
			if d.steady && ctx.Err() == nil {
				return false, steadyEnd(err.Error())
			}
			if ctx.Err() != nil {
				return false, fmt.Errorf("no sentinel in time (last %s, %d events, first connection %v)", d.lastID, len(d.seen), first)
			}
			var ce websocket.CloseError
			switch {
			case errors.As(err, &ce) && ce.Code == 4008:
				f.cuts.Add(1)
			case errors.As(err, &ce) && ce.Code == 4001:
				f.expiries.Add(1) // the refresh came too late: renew and resume
			case errors.As(err, &ce) && ce.Code == websocket.StatusGoingAway:
				f.restartsSeen.Add(1)
			case errors.As(err, &ce) && f.strictClose:
				return false, fmt.Errorf("closed with %d %q", ce.Code, ce.Reason)
			case cutOff(err):
				f.cuts.Add(1) // a slow SSE consumer's stream is cut
			}
			return false, nil // reconnect and resume
		}
		switch {
		case d.steady && (e.Type == "hub.expired" || e.Type == "hub.shutdown" || e.Type == "hub.closed"):
			return false, steadyEnd(e.Type)
		case e.Type == "hub.expired":
			f.expiries.Add(1)
			return false, nil // reconnect with a fresh token and resume
		case e.Type == "hub.shutdown":
			f.restartsSeen.Add(1)
			return false, nil
		case e.Type == "hub.refreshed":
			f.refreshes.Add(1)
			continue
		case strings.HasPrefix(e.Type, "hub."):
			continue // hub.ping; hub.closed, right before the stream ends
		}
		if e.ID == "" {
			return false, fmt.Errorf("event without id: %s", e.raw)
		}
		events++
		if keys {
			_, seq, ok := hub.ParseID(e.ID)
			switch {
			case !ok:
				return false, fmt.Errorf("event id %q is not the hub's", e.ID)
			case seq <= d.lastSeq:
				return false, fmt.Errorf("event %s after seq %d: ids must keep increasing, through a replay too", e.ID, d.lastSeq)
			case replay > 0 && e.Volatile:
				return false, fmt.Errorf("volatile event %s replayed", e.raw)
			}
			d.lastSeq, sess.maxSeq = seq, seq
			if e.Key != "" {
				if d.state == nil {
					d.state = map[string]uint64{}
				}
				d.state[e.Key] = seq
			}
			if replay > 0 {
				if replay--; replay == 0 {
					if err := d.checkState(snap); err != nil {
						return false, err
					}
				}
			}
		}
		d.seen = append(d.seen, e.ID)
		d.lastID = e.ID
		if replaying--; replaying > 0 && d.cutReplay {
			d.cutReplay = false // cut in the middle of the replay, once
			f.replayCuts.Add(1)
			return false, nil
		}
		d.markWarm()
		f.deliveries.Add(1)
		if e.Type == "END" {
			// the sentinel; the final check makes sure it is the last event
			return true, nil
		}
	}
}

// checkState checks, after a resume's replay, that the device's state of
// every key is at least the newest event published for the key before it
// reconnected (snap): the replay gave it the newest of each key.
func (d *simDevice) checkState(snap map[string]uint64) error {
	d.f.stateChecks.Add(1)
	for k, seq := range snap {
		if d.state[k] < seq {
			return fmt.Errorf("after a resume (last id %s) its state of key %s is at seq %d; seq %d was published before it reconnected", d.lastID, k, d.state[k], seq)
		}
	}
	return nil
}

// refresher sends hub.refresh with a new token at half of each token's
// lifetime until the session ends.
func (d *simDevice) refresher(ctx context.Context, c deviceConn) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.f.shortTTL / 2):
		}
		tok, err := d.token()
		if err != nil {
			d.f.fail("%s: %v", d.name, err)
			return
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = c.refresh(wctx, tok)
		cancel()
		if err != nil {
			return // the connection is going away; the reader sees why
		}
	}
}
