package modules_test

import (
	"context"
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/transport/auth"
)

var soakFlag = flag.Duration("soak", 0, "run TestSoak for this long (default: HUB_SOAK, else a short run of a few seconds)")

const (
	soakShort      = 6 * time.Second // go test ./... (CI runs it for longer too: .ci/run)
	soakUsers      = 50
	soakDevices    = 4 // per user
	soakTokenTTL   = 4 * time.Second
	soakSendQueue  = 16
	soakMaxErrsKep = 20
)

// soakSteady devices, of users of their own, never drop, pause or
// renew: each holds one connection to the node that does not restart
// for the whole run, with the WARMUP, ALL and END events on it. Any end
// of it fails the run: a deadline or timer that is set and never reset
// (issue 22) cuts a connection within its period, which devices that
// reconnect and resume would hide.
const soakSteady = 4

// soakDuration is -soak, else $HUB_SOAK, else the short CI run.
func soakDuration(t *testing.T) time.Duration {
	if *soakFlag > 0 {
		return *soakFlag
	}
	if s := os.Getenv("HUB_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("HUB_SOAK=%q: want a positive duration", s)
		}
		return d
	}
	return soakShort
}

// soakRun is the shared state of one TestSoak run.
type soakRun struct {
	t     *testing.T
	redis bool

	// nodes are the running nodes; a node being restarted is marked down
	// under the write lock, so no publish is in flight to it while it stops.
	nodeMu sync.RWMutex
	nodes  []*testHub
	up     []bool

	errMu sync.Mutex
	errs  []string

	end chan struct{} // closed once the sentinel is published

	published, deliveries, resumes, drops, cuts, expiries, refreshes, restartsSeen atomic.Int64
}

func (r *soakRun) fail(format string, args ...any) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if len(r.errs) < soakMaxErrsKep {
		r.errs = append(r.errs, fmt.Sprintf(format, args...))
	}
}

func (r *soakRun) failures() string {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return strings.Join(r.errs, "\n")
}

// pick returns a random node that is up, holding its read lock; call the
// returned release when done with it.
func (r *soakRun) pick(rng *rand.Rand) (*testHub, func()) {
	r.nodeMu.RLock()
	var ups []int
	for i, ok := range r.up {
		if ok {
			ups = append(ups, i)
		}
	}
	if len(ups) == 0 {
		r.nodeMu.RUnlock()
		return nil, func() {}
	}
	return r.nodes[ups[rng.IntN(len(ups))]], r.nodeMu.RUnlock
}

func (r *soakRun) ending() bool {
	select {
	case <-r.end:
		return true
	default:
		return false
	}
}

// soakConn is one connection of a soak device.
type soakConn interface {
	read(ctx context.Context) (envelope, error)
	// refresh sends hub.refresh (WebSocket only).
	refresh(ctx context.Context, token string) error
	close()
}

type wsSoakConn struct{ c *websocket.Conn }

func (w wsSoakConn) read(ctx context.Context) (envelope, error) {
	_, b, err := w.c.Read(ctx)
	if err != nil {
		return envelope{}, err
	}
	return decodeEnvelope(b)
}

func (w wsSoakConn) refresh(ctx context.Context, token string) error {
	b, _ := json.Marshal(map[string]string{"type": "hub.refresh", "token": token})
	return w.c.Write(ctx, websocket.MessageText, b)
}

func (w wsSoakConn) close() { w.c.CloseNow() }

type sseSoakConn struct {
	c    *sseClient
	p    *sseParser
	stop func() bool
}

func (s sseSoakConn) read(context.Context) (envelope, error) {
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

func (sseSoakConn) refresh(context.Context, string) error { return nil }

func (s sseSoakConn) close() { s.stop(); s.c.close() }

// soakDevice is one device; its goroutine connects, reads, drops, pauses,
// refreshes its token and always resumes from its last id.
type soakDevice struct {
	r         *soakRun
	name      string
	user      string
	transport string
	slow      bool // pauses reading now and then, to be cut as a slow consumer
	steady    bool // one connection to the first node for the whole run (soakSteady)
	short     bool // short-lived tokens, refreshed (WebSocket) or renewed on hub.expired (SSE)
	rng       *rand.Rand
	lastID    string
	seen      []string
	tr        *http.Transport
	ready     chan struct{}
	readyOnce sync.Once
	warm      chan struct{} // closed after its first event (or at the end)
	warmOnce  sync.Once
}

func (d *soakDevice) markReady() { d.readyOnce.Do(func() { close(d.ready) }) }

func (d *soakDevice) markWarm() { d.warmOnce.Do(func() { close(d.warm) }) }

func (d *soakDevice) token() (string, error) {
	ttl := time.Hour
	if d.short {
		ttl = soakTokenTTL
	}
	tok, err := auth.Mint(testSecret, "HS256", d.user, nil, ttl)
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	return tok, nil
}

func soakRcvBufDialer(small bool) *net.Dialer {
	dl := &net.Dialer{Timeout: 5 * time.Second}
	if small {
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

// dial connects to a random node that is up, resuming from the last id;
// refusals (a node restarting, a cut connection not yet unregistered) are
// retried.
func (d *soakDevice) dial(ctx context.Context) (soakConn, error) {
	var lastErr error
	for attempt := range 100 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("dial: %w (last: %v)", ctx.Err(), lastErr)
			case <-time.After(time.Duration(min(attempt, 10)) * 20 * time.Millisecond):
			}
		}
		tok, err := d.token()
		if err != nil {
			return nil, err
		}
		th, release := d.r.pick(d.rng)
		if d.steady { // the first node never restarts
			release()
			d.r.nodeMu.RLock()
			th, release = d.r.nodes[0], d.r.nodeMu.RUnlock
		}
		if th == nil {
			release()
			lastErr = errors.New("no node up")
			continue
		}
		sseURL, wsURL := th.sseURL(), th.WSURL
		release()
		if d.transport == "sse" {
			c, status, body, err := dialSSE(d.r.t, sseDial{URL: sseURL, Token: tok, LastID: d.lastID, Manual: true, SmallRcvBuf: d.slow})
			if err == nil && c != nil {
				size := 64 << 10
				if d.slow {
					size = 4096
				}
				return sseSoakConn{c: c, p: c.parser(size), stop: context.AfterFunc(ctx, c.cancel)}, nil
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
			return wsSoakConn{c}, nil
		}
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		lastErr = fmt.Errorf("websocket dial: %v (status %d)", err, status)
	}
	return nil, lastErr
}

// run is the device's goroutine.
func (d *soakDevice) run(ctx context.Context) {
	defer d.tr.CloseIdleConnections()
	defer d.markReady()
	defer d.markWarm()
	first := true
	for ctx.Err() == nil {
		c, err := d.dial(ctx)
		if err != nil {
			d.r.fail("%s: %v", d.name, err)
			return
		}
		done, err := d.session(ctx, c, first)
		c.close()
		first = false
		if err != nil {
			d.r.fail("%s: %v", d.name, err)
			return
		}
		if done {
			return
		}
	}
}

// session reads one connection until it ends (false, nil: reconnect and
// resume), the device has its user's sentinel (true, nil) or the contract
// is broken (error).
func (d *soakDevice) session(ctx context.Context, c soakConn, first bool) (bool, error) {
	e, err := c.read(ctx)
	if err != nil {
		if first {
			return false, fmt.Errorf("no hub.connected: %w", err)
		}
		return false, nil // cut before it was live (a node stopping): reconnect
	}
	var p struct {
		ConnectionID string `json:"connectionId"`
		Recovered    bool   `json:"recovered"`
		Missed       int    `json:"missed"`
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
		d.r.resumes.Add(1)
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
		if !d.r.ending() && d.lastID != "" && !d.steady {
			switch n := d.rng.IntN(600); {
			case n == 0:
				d.r.drops.Add(1)
				return false, nil
			case n < 6 && d.slow:
				// stop reading for a while; the hub cuts the connection
				// when its queue fills, and the device resumes
				select {
				case <-time.After(time.Duration(300+d.rng.IntN(900)) * time.Millisecond):
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
				return false, fmt.Errorf("no sentinel in time (last %s, %d events)", d.lastID, len(d.seen))
			}
			var ce websocket.CloseError
			switch {
			case errors.As(err, &ce) && ce.Code == 4008:
				d.r.cuts.Add(1)
			case errors.As(err, &ce) && ce.Code == 4001:
				d.r.expiries.Add(1) // the refresh came too late: renew and resume
			case errors.As(err, &ce) && ce.Code == websocket.StatusGoingAway:
				d.r.restartsSeen.Add(1)
			case errors.As(err, &ce):
				return false, fmt.Errorf("closed with %d %q", ce.Code, ce.Reason)
			case d.transport == "sse" && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
				d.r.cuts.Add(1) // a slow SSE consumer's stream is cut
			}
			return false, nil
		}
		switch {
		case d.steady && (e.Type == "hub.expired" || e.Type == "hub.shutdown" || e.Type == "hub.closed"):
			return false, steadyEnd(e.Type)
		case e.Type == "hub.expired":
			d.r.expiries.Add(1)
			return false, nil // reconnect with a fresh token and resume
		case e.Type == "hub.shutdown":
			d.r.restartsSeen.Add(1)
			return false, nil
		case e.Type == "hub.refreshed":
			d.r.refreshes.Add(1)
			continue
		case strings.HasPrefix(e.Type, "hub."):
			continue
		}
		if e.ID == "" {
			return false, fmt.Errorf("event without id: %s", e.raw)
		}
		events++
		d.seen = append(d.seen, e.ID)
		d.lastID = e.ID
		d.markWarm()
		d.r.deliveries.Add(1)
		if e.Type == "END" {
			return true, nil
		}
	}
}

// refresher sends hub.refresh with a new token at half of each token's
// lifetime until the session ends.
func (d *soakDevice) refresher(ctx context.Context, c soakConn) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(soakTokenTTL / 2):
		}
		tok, err := d.token()
		if err != nil {
			d.r.fail("%s: %v", d.name, err)
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

// soakExpected is what the publisher had acknowledged, per user, in order.
type soakExpected struct {
	mu    sync.Mutex
	order map[string][]string
	set   map[string]map[string]bool
}

func (x *soakExpected) add(user, id string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.set[user] == nil || id == "" || x.set[user][id] {
		return fmt.Errorf("bad or repeated id %q for %q", id, user)
	}
	x.set[user][id] = true
	x.order[user] = append(x.order[user], id)
	return nil
}

// TestSoak runs a few hundred devices of both transports for -soak (a
// short run by default) while one publisher sends to users and to
// everyone; devices drop and resume, slow ones are cut and resume, short
// tokens are refreshed or renewed, and, with Redis, one node of two
// restarts on the same address mid-run. A few steady devices hold one
// connection each for the whole run (soakSteady). At the end every device
// has exactly its user's events, in order, with no loss and no duplicate.
func TestSoak(t *testing.T) {
	duration := soakDuration(t)
	seed := time.Now().UnixNano()
	master := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	r := &soakRun{t: t, end: make(chan struct{})}

	base := func(c *config.Config) {
		c.SendQueue = soakSendQueue
		c.HistorySize = 1 << 20
		c.HistoryTTL = time.Hour
		c.JWTLeeway = 0
		c.LogLevel = "warn"
	}
	var ru, addrB string
	if ru = optionalRedisURL(t); ru != "" {
		r.redis = true
		addrB = "127.0.0.1:" + strconv.Itoa(freePort(t))
		a := startNode(t, ru, "soak-a", base)
		b := startNode(t, ru, "soak-b", func(c *config.Config) { base(c); c.Addr = addrB })
		r.nodes, r.up = []*testHub{a, b}, []bool{true, true}
	} else {
		t.Log("Redis unreachable: one in-memory node, no restart")
		r.nodes, r.up = []*testHub{startHub(t, base)}, []bool{true}
	}

	users := make([]string, soakUsers)
	exp := &soakExpected{order: map[string][]string{}, set: map[string]map[string]bool{}}
	for i := range users {
		users[i] = fmt.Sprintf("soak-%02d", i)
		exp.set[users[i]] = map[string]bool{}
	}
	var steadyUsers []string
	for i := range soakSteady {
		u := fmt.Sprintf("steady-%d", i)
		steadyUsers = append(steadyUsers, u)
		exp.set[u] = map[string]bool{}
	}
	// everyone: the WARMUP, ALL and END events go to the steady users too
	everyone := append(append([]string(nil), users...), steadyUsers...)
	var slowUsers []string
	var devices []*soakDevice
	for _, u := range users {
		for j := range soakDevices {
			d := &soakDevice{
				r: r, user: u,
				transport: transports[master.IntN(2)],
				slow:      master.IntN(10) == 0,
				short:     master.IntN(8) == 0,
				rng:       rand.New(rand.NewPCG(master.Uint64(), master.Uint64())),
				ready:     make(chan struct{}),
				warm:      make(chan struct{}),
			}
			d.name = fmt.Sprintf("%s/%d(%s", u, j, d.transport)
			if d.slow {
				d.name += ",slow"
				slowUsers = append(slowUsers, u)
			}
			if d.short {
				d.name += ",short"
			}
			d.name += ")"
			d.tr = &http.Transport{DialContext: soakRcvBufDialer(d.slow).DialContext}
			devices = append(devices, d)
		}
	}
	if len(slowUsers) == 0 {
		slowUsers = users[:1]
	}
	for i, u := range steadyUsers {
		d := &soakDevice{
			r: r, user: u, steady: true,
			transport: transports[i%2],
			rng:       rand.New(rand.NewPCG(uint64(i), 0x57ead)), // not drawn from master: the seed replays the rest as before
			ready:     make(chan struct{}),
			warm:      make(chan struct{}),
		}
		d.name = fmt.Sprintf("%s(%s,steady)", u, d.transport)
		d.tr = &http.Transport{DialContext: soakRcvBufDialer(false).DialContext}
		devices = append(devices, d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), duration+25*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	// Every first connection is live before anything is published: a fresh
	// connect has nothing to resume from.
	for _, d := range devices {
		wg.Add(1)
		go func() { defer wg.Done(); d.run(ctx) }()
	}
	for _, d := range devices {
		<-d.ready
	}
	if f := r.failures(); f != "" {
		t.Fatalf("seed %d: %s", seed, f)
	}

	// One event to every user, and every device has it before the chaos: a
	// device cut before its first event would have no id to resume from.
	{
		th, release := r.pick(master)
		status, body := th.postNoFatal("/api/broadcast", map[string]any{"userIds": everyone, "type": "WARMUP"})
		release()
		evs, _ := body["events"].([]any)
		if status != http.StatusAccepted || len(evs) != len(everyone) {
			t.Fatalf("seed %d: warm-up broadcast: %d %v", seed, status, body)
		}
		for _, ev := range evs {
			m, _ := ev.(map[string]any)
			u, _ := m["userId"].(string)
			id, _ := m["id"].(string)
			if err := exp.add(u, id); err != nil {
				t.Fatal(err)
			}
		}
		for _, d := range devices {
			<-d.warm
		}
		if f := r.failures(); f != "" {
			t.Fatalf("seed %d: %s", seed, f)
		}
	}

	// One publisher, so that the order of its acknowledgements is the
	// order every device must see.
	start := time.Now()
	stopPub := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		prng := rand.New(rand.NewPCG(master.Uint64(), 1))
		pad := strings.Repeat("x", 512)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			case <-tick.C:
			}
			th, release := r.pick(prng)
			if th == nil {
				release()
				continue
			}
			switch n := prng.IntN(40); {
			case n == 0:
				// a burst for a user with a slow device fills its queue
				u := slowUsers[prng.IntN(len(slowUsers))]
				msgs := make([]map[string]any, 3*soakSendQueue)
				for k := range msgs {
					msgs[k] = map[string]any{"userIds": []string{u}, "type": "BURST", "payload": map[string]any{"i": i, "k": k, "pad": pad}}
				}
				status, body := th.postNoFatal("/api/broadcast/batch", map[string]any{"messages": msgs})
				release()
				results, _ := body["results"].([]any)
				if status != http.StatusAccepted || len(results) != len(msgs) {
					r.fail("batch through %s: %d %v", th.cfg.NodeName, status, body)
					return
				}
				for _, res := range results {
					m, _ := res.(map[string]any)
					evs, _ := m["events"].([]any)
					if len(evs) != 1 {
						r.fail("batch result %v", m)
						return
					}
					id, _ := evs[0].(map[string]any)["id"].(string)
					if err := exp.add(u, id); err != nil {
						r.fail("batch: %v", err)
					}
				}
			case n < 5:
				status, body := th.postNoFatal("/api/broadcast", map[string]any{"all": true, "type": "ALL", "payload": i})
				release()
				id, _ := body["id"].(string)
				if status != http.StatusAccepted || id == "" {
					r.fail("broadcast all through %s: %d %v", th.cfg.NodeName, status, body)
					return
				}
				for _, u := range everyone {
					if err := exp.add(u, id); err != nil {
						r.fail("all: %v", err)
					}
				}
			default:
				var to []string
				for range 1 + prng.IntN(3) {
					to = append(to, users[prng.IntN(len(users))])
				}
				status, body := th.postNoFatal("/api/broadcast", map[string]any{"userIds": to, "type": "USER", "payload": map[string]any{"i": i, "pad": pad[:64]}})
				release()
				evs, _ := body["events"].([]any)
				if status != http.StatusAccepted || len(evs) == 0 {
					r.fail("broadcast through %s to %v: %d %v", th.cfg.NodeName, to, status, body)
					return
				}
				for _, ev := range evs {
					m, _ := ev.(map[string]any)
					u, _ := m["userId"].(string)
					id, _ := m["id"].(string)
					if err := exp.add(u, id); err != nil {
						r.fail("user: %v", err)
					}
				}
			}
			r.published.Add(1)
		}
	}()
	stopPublishing := sync.OnceFunc(func() { close(stopPub); pwg.Wait() })
	defer stopPublishing()

	restarts := 0
	if r.redis {
		// Mid-run, node B stops (its devices get 1001 / hub.shutdown and
		// resume elsewhere) and a new node B starts on the same address.
		select {
		case <-time.After(duration / 2):
		case <-ctx.Done():
		}
		r.nodeMu.Lock()
		r.up[1] = false
		old := r.nodes[1]
		r.nodeMu.Unlock()
		old.stop()
		b := startNode(t, ru, "soak-b", func(c *config.Config) { base(c); c.Addr = addrB })
		r.nodeMu.Lock()
		r.nodes[1], r.up[1] = b, true
		r.nodeMu.Unlock()
		restarts++
	}
	select {
	case <-time.After(duration - time.Since(start)):
	case <-ctx.Done():
	}
	stopPublishing()

	// The sentinel: one last event per user, after everything else.
	th := r.nodes[0]
	status, body := th.postNoFatal("/api/broadcast", map[string]any{"userIds": everyone, "type": "END"})
	evs, _ := body["events"].([]any)
	if status != http.StatusAccepted || len(evs) != len(everyone) {
		t.Fatalf("sentinel: %d %v", status, body)
	}
	for _, ev := range evs {
		m, _ := ev.(map[string]any)
		u, _ := m["userId"].(string)
		id, _ := m["id"].(string)
		if err := exp.add(u, id); err != nil {
			t.Fatalf("sentinel: %v", err)
		}
	}
	close(r.end)
	wg.Wait()
	elapsed := time.Since(start)

	mode := "memory"
	if r.redis {
		mode = "redis, 2 nodes"
	}
	line := fmt.Sprintf("soak (%s, seed %d): %d clients, %d publish calls, %d deliveries, %d resumes, %d client drops, %d slow cuts, %d expiries, %d refreshes, %d node restarts (%d connections moved), %v",
		mode, seed, len(devices), r.published.Load(), r.deliveries.Load(), r.resumes.Load(), r.drops.Load(),
		r.cuts.Load(), r.expiries.Load(), r.refreshes.Load(), restarts, r.restartsSeen.Load(), elapsed.Round(time.Millisecond))
	t.Log(line)
	if testing.Verbose() {
		fmt.Println(line)
	}
	if f := r.failures(); f != "" {
		t.Fatalf("seed %d: %s", seed, f)
	}

	// Every device has exactly its user's events in the publisher's order.
	for _, d := range devices {
		want := exp.order[d.user]
		seen := map[string]int{}
		for i, id := range d.seen {
			if j, dup := seen[id]; dup {
				t.Fatalf("%s got %s twice (at %d and %d)", d.name, id, j, i)
			}
			seen[id] = i
			if !exp.set[d.user][id] {
				t.Fatalf("%s got %s, not an event of %s", d.name, id, d.user)
			}
		}
		for i := range min(len(want), len(d.seen)) {
			if want[i] != d.seen[i] {
				t.Fatalf("%s: event %d is %s, want %s (out of order or lost)", d.name, i, d.seen[i], want[i])
			}
		}
		if len(d.seen) != len(want) {
			t.Fatalf("%s got %d events, want %d", d.name, len(d.seen), len(want))
		}
	}
}
