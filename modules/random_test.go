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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/config"
)

var (
	seedFlag = flag.Int64("seed", 0, "seed of TestRandomized (default: HUB_SEED, else the time)")
	longFlag = flag.Bool("long", false, "run TestRandomized for a minute instead of a few seconds")
)

// randomSeed is -seed, else $HUB_SEED, else the time.
func randomSeed(t *testing.T) int64 {
	if *seedFlag != 0 {
		return *seedFlag
	}
	if s := os.Getenv("HUB_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("HUB_SEED=%q: %v", s, err)
		}
		return n
	}
	return time.Now().UnixNano()
}

// randomRun is the shared state of one TestRandomized run.
type randomRun struct {
	th    *testHub
	seed  int64
	users []string

	mu   sync.Mutex
	errs []string

	// end is closed when publishing is over; sentinel then holds the id of
	// the last event (type END) of every user.
	end      chan struct{}
	sentinel map[string]string

	drops, cuts, resumes atomic.Int64
}

func (r *randomRun) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) < 20 {
		r.errs = append(r.errs, fmt.Sprintf(format, args...))
	}
}

func (r *randomRun) failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs) > 0
}

// randomDevice is one device of a user; its goroutine connects, reads,
// drops and pauses at random, and always resumes from its last id.
type randomDevice struct {
	r         *randomRun
	name      string
	user      string
	token     string
	transport string
	slow      bool // pauses reading now and then, to be cut as a slow consumer
	rng       *rand.Rand
	lastID    string
	seen      []string
	tr        *http.Transport
	ready     chan struct{} // closed after the first hub.connected (or failure)
	readyOnce sync.Once
	warm      chan struct{} // closed after its first event (or failure)
	warmOnce  sync.Once
}

func (d *randomDevice) markReady() { d.readyOnce.Do(func() { close(d.ready) }) }

func (d *randomDevice) markWarm() { d.warmOnce.Do(func() { close(d.warm) }) }

// conn is one connection of a device, either transport.
type randomConn interface {
	// read returns the next envelope (ctx bounds it for WebSocket; the SSE
	// stream is bound by its own context).
	read(ctx context.Context) (envelope, error)
	close()
}

type wsRandomConn struct{ c *websocket.Conn }

func (w wsRandomConn) read(ctx context.Context) (envelope, error) {
	_, b, err := w.c.Read(ctx)
	if err != nil {
		return envelope{}, err
	}
	return decodeEnvelope(b)
}

func (w wsRandomConn) close() { w.c.CloseNow() }

type sseRandomConn struct {
	c *sseClient
	p *sseParser
}

func (s sseRandomConn) read(context.Context) (envelope, error) {
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

func (s sseRandomConn) close() { s.c.close() }

func smallRcvBufDialer() *net.Dialer {
	return &net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = smallRcvBuf(fd)
		}); err != nil {
			return err
		}
		return serr
	}}
}

// dial opens a connection resuming from the device's last id, retrying
// refusals (a cut connection may not be unregistered yet).
func (d *randomDevice) dial(ctx context.Context) (randomConn, error) {
	var lastErr error
	for attempt := range 50 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * 10 * time.Millisecond):
			}
		}
		if d.transport == "sse" {
			c, status, body, err := dialSSE(d.r.th.t, sseDial{URL: d.r.th.sseURL(), Token: d.token, LastID: d.lastID,
				Manual: true, SmallRcvBuf: d.slow})
			if err == nil && c != nil {
				size := 64 << 10
				if d.slow {
					size = 4096
				}
				context.AfterFunc(ctx, c.cancel)
				return sseRandomConn{c: c, p: c.parser(size)}, nil
			}
			lastErr = fmt.Errorf("sse dial: %v %d %v", err, status, body)
			continue
		}
		u := d.r.th.WSURL + "?token=" + d.token
		if d.lastID != "" {
			u += "&last_event_id=" + url.QueryEscape(d.lastID)
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: &http.Client{Transport: d.tr}})
		cancel()
		if err == nil {
			c.SetReadLimit(1 << 20)
			return wsRandomConn{c}, nil
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
func (d *randomDevice) run(ctx context.Context) {
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
		if first {
			d.markReady()
			first = false
		}
		if done || err != nil {
			if err != nil {
				d.r.fail("%s: %v", d.name, err)
			}
			return
		}
	}
}

// session reads one connection until it ends (false, nil: reconnect), the
// device has its user's sentinel (true) or a contract violation (error).
func (d *randomDevice) session(ctx context.Context, c randomConn, first bool) (bool, error) {
	e, err := c.read(ctx)
	if err != nil {
		var ce websocket.CloseError
		cut := errors.As(err, &ce) && ce.Code == 4008 || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if !first && ctx.Err() == nil && cut {
			// cut as a slow consumer while it registered (its replay and the
			// live events filled the queue before the writer started): the
			// contract says reconnect and resume, which it does
			d.r.cuts.Add(1)
			return false, nil
		}
		return false, fmt.Errorf("no hub.connected: %w", err)
	}
	var p struct {
		Recovered bool `json:"recovered"`
		Missed    int  `json:"missed"`
	}
	if e.Type != "hub.connected" || json.Unmarshal(e.Payload, &p) != nil {
		return false, fmt.Errorf("first event %s, want hub.connected", e.raw)
	}
	switch {
	case first:
		d.markReady()
		if d.lastID != "" {
			return false, errors.New("first connection with a last id")
		}
	case d.lastID == "":
		return false, errors.New("reconnected before any event: nothing to resume from")
	case !p.Recovered:
		return false, fmt.Errorf("resume from %s: recovered:false (missed %d)", d.lastID, p.Missed)
	default:
		d.r.resumes.Add(1)
	}
	for {
		if !d.ending() {
			switch n := d.rng.IntN(400); {
			case n == 0 && d.lastID != "":
				d.r.drops.Add(1)
				return false, nil
			case n < 4 && d.slow && d.lastID != "":
				// stop reading for a while; the hub cuts the connection
				// when its queue fills, and the device resumes
				select {
				case <-time.After(time.Duration(300+d.rng.IntN(1200)) * time.Millisecond):
				case <-ctx.Done():
					return false, ctx.Err()
				}
			}
		}
		e, err := c.read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if ctx.Err() != nil {
				return false, fmt.Errorf("did not get its sentinel in time (last %s, %d events, first connection %v)", d.lastID, len(d.seen), first)
			}
			if errors.As(err, &ce) && ce.Code == 4008 || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				d.r.cuts.Add(1)
				return false, nil
			}
			if ctx.Err() != nil {
				return false, fmt.Errorf("did not get its sentinel in time (last %s, %d events, first connection %v)", d.lastID, len(d.seen), first)
			}
			return false, nil // any other end: reconnect and resume
		}
		if e.Type == "hub.closed" {
			continue // the stream ends right after it
		}
		if strings.HasPrefix(e.Type, "hub.") {
			continue
		}
		if e.ID == "" {
			return false, fmt.Errorf("event without id: %s", e.raw)
		}
		d.seen = append(d.seen, e.ID)
		d.lastID = e.ID
		d.markWarm()
		if e.Type == "END" {
			// the sentinel; the final check makes sure it is the last event
			return true, nil
		}
	}
}

func (d *randomDevice) ending() bool {
	select {
	case <-d.r.end:
		return true
	default:
		return false
	}
}

// TestRandomized runs many devices of many users on both transports while
// several publishers send to users and to everyone; devices drop, pause
// (and get cut) and resume at random. At the end every device must have
// seen exactly its user's sequence: no loss, no duplicate, in order.
func TestRandomized(t *testing.T) {
	seed := randomSeed(t)
	t.Logf("seed %d (rerun with -seed %d or HUB_SEED=%d)", seed, seed, seed)
	duration := 8 * time.Second
	if *longFlag {
		duration = time.Minute
	}
	master := rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))
	th := startHub(t, func(c *config.Config) {
		c.SendQueue = 32
		c.HistorySize = 1 << 20
		c.HistoryTTL = time.Hour
		c.MaxConnectionsPerUser = 64
		c.LogLevel = "warn"
	})
	r := &randomRun{th: th, seed: seed, end: make(chan struct{}), sentinel: map[string]string{}}
	for i := range 20 {
		r.users = append(r.users, fmt.Sprintf("user-%02d", i))
	}

	var wg, pwg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), duration+20*time.Second)
	defer cancel()
	var devices []*randomDevice
	for _, u := range r.users {
		tok := th.token(u, time.Hour)
		for j := range 2 + master.IntN(3) {
			d := &randomDevice{
				r: r, user: u, token: tok,
				name:      fmt.Sprintf("%s/%d", u, j),
				transport: transports[master.IntN(2)],
				slow:      master.IntN(8) == 0,
				rng:       rand.New(rand.NewPCG(master.Uint64(), master.Uint64())),
				ready:     make(chan struct{}),
				warm:      make(chan struct{}),
			}
			d.name += "(" + d.transport + ")"
			if d.slow {
				d.tr = &http.Transport{DialContext: smallRcvBufDialer().DialContext}
			} else {
				d.tr = &http.Transport{}
			}
			devices = append(devices, d)
		}
	}
	// The first connections must be live before anything is published: a
	// fresh connect has nothing to resume from.
	for _, d := range devices {
		wg.Add(1)
		go func() { defer wg.Done(); d.run(ctx) }()
	}
	for _, d := range devices {
		<-d.ready
	}
	if r.failed() {
		t.Fatalf("seed %d: %s", seed, strings.Join(r.errs, "\n"))
	}

	// One event to every user first, and wait until every device has it:
	// a device cut before its first event would have no id to resume from
	// (the contract's answer, recovered:false and a refetch, is not what
	// this test checks).
	warmIDs := th.publish("WARMUP", nil, r.users...)
	for _, d := range devices {
		<-d.warm
	}
	if r.failed() {
		t.Fatalf("seed %d: %s", seed, strings.Join(r.errs, "\n"))
	}

	// Publishers: each remembers, per user, the ids in the order its calls
	// returned them (one publisher's calls are sequential).
	const publishers = 4
	order := make([]map[string][]string, publishers)
	expected := map[string]map[string]bool{}
	for _, u := range r.users {
		expected[u] = map[string]bool{warmIDs[u]: true}
	}
	var emu sync.Mutex
	stopPub := make(chan struct{})
	var stopOnce sync.Once
	stopPublishing := func() { stopOnce.Do(func() { close(stopPub) }); pwg.Wait() }
	defer stopPublishing()
	var published atomic.Int64
	for p := range publishers {
		order[p] = map[string][]string{}
		prng := rand.New(rand.NewPCG(master.Uint64(), uint64(p)))
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			pad := strings.Repeat("x", 256)
			tick := time.NewTicker(3 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stopPub:
					return
				case <-tick.C:
				}
				if prng.IntN(40) == 0 {
					// a burst: many events for one user in one call, which
					// fills the queue of a device that is not reading
					u := r.users[prng.IntN(len(r.users))]
					msgs := make([]map[string]any, 100)
					for k := range msgs {
						msgs[k] = map[string]any{"userIds": []string{u}, "type": "BURST", "payload": map[string]any{"p": p, "i": i, "k": k, "pad": pad}}
					}
					status, body := th.postNoFatal("/api/broadcast/batch", map[string]any{"messages": msgs})
					results, _ := body["results"].([]any)
					if status != http.StatusAccepted || len(results) != len(msgs) {
						r.fail("publisher %d: batch: %d %v", p, status, body)
						return
					}
					emu.Lock()
					for _, res := range results {
						m, _ := res.(map[string]any)
						evs, _ := m["events"].([]any)
						ev, _ := evs[0].(map[string]any)
						id, _ := ev["id"].(string)
						if id == "" || expected[u][id] {
							r.fail("publisher %d: bad batch result %v", p, m)
							continue
						}
						order[p][u] = append(order[p][u], id)
						expected[u][id] = true
					}
					emu.Unlock()
					published.Add(1)
					continue
				}
				if prng.IntN(10) == 0 {
					status, body := th.postNoFatal("/api/broadcast", map[string]any{"all": true, "type": "ALL", "payload": map[string]any{"p": p, "i": i, "pad": pad}})
					id, _ := body["id"].(string)
					if status != http.StatusAccepted || id == "" {
						r.fail("publisher %d: broadcast all: %d %v", p, status, body)
						return
					}
					emu.Lock()
					for _, u := range r.users {
						order[p][u] = append(order[p][u], id)
						expected[u][id] = true
					}
					emu.Unlock()
					published.Add(1)
					continue
				}
				var to []string
				for range 1 + prng.IntN(3) {
					to = append(to, r.users[prng.IntN(len(r.users))])
				}
				status, body := th.postNoFatal("/api/broadcast", map[string]any{"userIds": to, "type": "USER", "payload": map[string]any{"p": p, "i": i, "pad": pad}})
				evs, _ := body["events"].([]any)
				if status != http.StatusAccepted || len(evs) == 0 {
					r.fail("publisher %d: broadcast to %v: %d %v", p, to, status, body)
					return
				}
				emu.Lock()
				for _, ev := range evs {
					m, _ := ev.(map[string]any)
					u, _ := m["userId"].(string)
					id, _ := m["id"].(string)
					if expected[u] == nil || id == "" || expected[u][id] {
						r.fail("publisher %d: bad or repeated event %v", p, m)
						continue
					}
					order[p][u] = append(order[p][u], id)
					expected[u][id] = true
				}
				emu.Unlock()
				published.Add(1)
			}
		}()
	}
	deadline := time.NewTimer(duration)
	select {
	case <-deadline.C:
	case <-ctx.Done():
	}
	stopPublishing()

	// The sentinel: one last event per user, after everything else.
	ids := th.publish("END", nil, r.users...)
	for _, u := range r.users {
		r.sentinel[u] = ids[u]
		expected[u][ids[u]] = true
	}
	close(r.end)
	wg.Wait()
	t.Logf("seed %d: %d devices, %d publish calls, %d client drops, %d cuts, %d resumes",
		seed, len(devices), published.Load(), r.drops.Load(), r.cuts.Load(), r.resumes.Load())
	if r.failed() {
		t.Fatalf("seed %d: %s", seed, strings.Join(r.errs, "\n"))
	}

	// Every device has exactly its user's sequence; all devices of a user
	// agree on the order, which keeps each publisher's order.
	first := map[string]*randomDevice{}
	for _, d := range devices {
		want := expected[d.user]
		pos := make(map[string]int, len(d.seen))
		for i, id := range d.seen {
			if _, dup := pos[id]; dup {
				t.Fatalf("seed %d: %s got %s twice (at %d and %d)", seed, d.name, id, pos[id], i)
			}
			if !want[id] {
				t.Fatalf("seed %d: %s got %s, not an event of %s", seed, d.name, id, d.user)
			}
			pos[id] = i
		}
		if len(d.seen) == 0 || d.seen[len(d.seen)-1] != r.sentinel[d.user] {
			t.Fatalf("seed %d: %s did not end with its sentinel %s", seed, d.name, r.sentinel[d.user])
		}
		if len(d.seen) != len(want) {
			t.Fatalf("seed %d: %s got %d events, want %d (lost %d)", seed, d.name, len(d.seen), len(want), len(want)-len(d.seen))
		}
		for p := range publishers {
			prev := -1
			for _, id := range order[p][d.user] {
				if pos[id] < prev {
					t.Fatalf("seed %d: %s got publisher %d's %s out of order", seed, d.name, p, id)
				}
				prev = pos[id]
			}
		}
		if f := first[d.user]; f == nil {
			first[d.user] = d
		} else if !slices.Equal(f.seen, d.seen) {
			i := 0
			for i < len(f.seen) && f.seen[i] == d.seen[i] {
				i++
			}
			t.Fatalf("seed %d: %s and %s disagree on the order from event %d: %s vs %s", seed, f.name, d.name, i, f.seen[i], d.seen[i])
		}
	}
}
