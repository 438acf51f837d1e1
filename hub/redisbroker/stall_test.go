package redisbroker_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/internal/hubtest"
)

// publishBound is how late a publish may be answered past the publish
// timeout (scheduling on a loaded machine under -race).
const publishBound = redisbroker.DefaultPublishTimeout + 300*time.Millisecond

// waitFor waits for cond with the package's deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	hubtest.Eventually(t, 15*time.Second, what, cond)
}

// ownRedis is a redis-server of the test's own, which the test can stop
// (SIGSTOP) and continue.
type ownRedis struct{ *hubtest.RedisServer }

func startOwnRedis(t *testing.T) ownRedis { return ownRedis{hubtest.StartRedisServer(t)} }

func (r ownRedis) url() string { return r.URL() }

func (r ownRedis) signal(_ *testing.T, s syscall.Signal) { r.Signal(s) }

// commandCalls returns how many times Redis ran cmd (INFO commandstats).
func (r ownRedis) commandCalls(t *testing.T, cmd string) int {
	t.Helper()
	c := hubtest.RedisClient(t, r.url())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

// payloadOf returns the integer payload of an event.
func payloadOf(t *testing.T, m *hub.Message) int {
	t.Helper()
	var env struct {
		Payload int `json:"payload"`
	}
	if err := json.Unmarshal(m.Frame, &env); err != nil {
		t.Fatalf("event %s: %v", m.Frame, err)
	}
	return env.Payload
}

// outcome is what one publish call was answered.
type outcome struct {
	id      string // published with this id
	unknown bool   // no answer (hub.ErrOutcomeUnknown)
	failed  bool   // refused: nothing published
	took    time.Duration
}

// publisher publishes to user on n, one call after the other, each with
// its own payload k and idempotency key "call-k", until stop is closed.
type publisher struct {
	mu       sync.Mutex
	outcomes map[int]*outcome
}

func (p *publisher) run(n node, user string, first, step int, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for k := first; ; k += step {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		ctx := hub.WithIdempotencyKey(context.Background(), "call-"+strconv.Itoa(k), time.Minute)
		evs, err := n.hub.Publish(ctx, []string{user}, "S", json.RawMessage(strconv.Itoa(k)))
		o := &outcome{took: time.Since(start)}
		switch {
		case err == nil:
			o.id = evs[0].ID
		case errors.Is(err, hub.ErrOutcomeUnknown):
			o.unknown = true
		default:
			o.failed = true
		}
		p.mu.Lock()
		p.outcomes[k] = o
		p.mu.Unlock()
		time.Sleep(2 * time.Millisecond) // pacing, not synchronisation
	}
}

func (p *publisher) count(f func(*outcome) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, o := range p.outcomes {
		if f(o) {
			n++
		}
	}
	return n
}

// A stalled Redis (SIGSTOP for 3 s, two nodes, a device on each): publishes
// are answered within the publish timeout; nodes turn not ready and back;
// a call answered with an error published nothing, a call left without an
// answer retried with its key publishes once; every device receives every
// published event once, and nothing else.
func TestRedisStall(t *testing.T) {
	r := startOwnRedis(t)
	a := startNode(t, r.url(), "hub:", "a", 100000, time.Minute)
	b := startNode(t, r.url(), "hub:", "b", 100000, time.Minute)
	ca, cb := connect(t, a.hub, "u1", ""), connect(t, b.hub, "u1", "")
	if _, err := a.hub.Publish(bg(t), []string{"u1"}, "S", json.RawMessage(`0`)); err != nil {
		t.Fatal(err)
	}
	ca.waitEvents(1)
	cb.waitEvents(1)

	p := &publisher{outcomes: map[int]*outcome{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go p.run(a, "u1", 1, 2, stop, &wg)
	go p.run(b, "u1", 2, 2, stop, &wg)
	drain := func() { ca.poll(); cb.poll() }
	waitFor(t, "publishes before the stall", func() bool { drain(); return p.count(func(o *outcome) bool { return o.id != "" }) > 20 })

	r.signal(t, syscall.SIGSTOP)
	stalled := time.Now()
	waitFor(t, "both nodes not ready", func() bool { return a.broker.Ready() != nil && b.broker.Ready() != nil })
	t.Logf("not ready %v after SIGSTOP", time.Since(stalled).Round(time.Millisecond))
	before := p.count(func(o *outcome) bool { return o.failed })
	waitFor(t, "publishes refused during the stall", func() bool { return p.count(func(o *outcome) bool { return o.failed }) > before+20 })
	for time.Since(stalled) < 3*time.Second {
		if err := a.broker.Ready(); err == nil {
			t.Fatal("node a ready during the stall")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	r.signal(t, syscall.SIGCONT)
	resumed := time.Now()
	waitFor(t, "both nodes ready again", func() bool { drain(); return a.broker.Ready() == nil && b.broker.Ready() == nil })
	t.Logf("ready %v after SIGCONT", time.Since(resumed).Round(time.Millisecond))
	after := p.count(func(o *outcome) bool { return o.id != "" })
	waitFor(t, "publishes after the stall", func() bool { drain(); return p.count(func(o *outcome) bool { return o.id != "" }) > after+20 })
	close(stop)
	wg.Wait()

	// Every call was answered within the bound; the unanswered ones are
	// retried with their key.
	final := map[int]string{} // k -> the id its event has, when published
	var slowest time.Duration
	var unknown, failed int
	for k, o := range p.outcomes {
		slowest = max(slowest, o.took)
		if o.took > publishBound {
			t.Errorf("call %d answered after %v, want at most %v", k, o.took, publishBound)
		}
		switch {
		case o.id != "":
			final[k] = o.id
		case o.failed:
			failed++
		case o.unknown:
			unknown++
			n := a
			if k%2 == 0 {
				n = b
			}
			ctx := hub.WithIdempotencyKey(bg(t), "call-"+strconv.Itoa(k), time.Minute)
			evs, err := n.hub.Publish(ctx, []string{"u1"}, "S", json.RawMessage(strconv.Itoa(k)))
			if err != nil {
				t.Fatalf("retry of call %d: %v", k, err)
			}
			final[k] = evs[0].ID
		}
	}
	t.Logf("%d calls: %d published, %d refused, %d without an answer; slowest answer %v",
		len(p.outcomes), len(p.outcomes)-failed-unknown, failed, unknown, slowest.Round(time.Millisecond))

	for name, cl := range map[string]*client{"a": ca, "b": cb} {
		want := len(final) + 1 // and the first event
		var evs []*hub.Message
		waitFor(t, "every published event on "+name, func() bool {
			cl.poll()
			evs = cl.events()
			return cl.end != nil || len(evs) >= want
		})
		if cl.end != nil {
			t.Fatalf("device on %s closed: %v", name, *cl.end)
		}
		seen := map[int]string{}
		for _, m := range evs[1:] {
			k := payloadOf(t, m)
			if prev, dup := seen[k]; dup {
				t.Fatalf("device on %s: call %d delivered twice (%s and %s)", name, k, prev, m.ID)
			}
			seen[k] = m.ID
			if id, ok := final[k]; !ok {
				t.Fatalf("device on %s: event %s of call %d, which was answered as not published", name, m.ID, k)
			} else if id != m.ID {
				t.Fatalf("device on %s: call %d delivered as %s, answered %s", name, k, m.ID, id)
			}
		}
		for i := 2; i < len(evs); i++ {
			if cmpSeq(evs[i-1].ID, evs[i].ID) >= 0 {
				t.Fatalf("device on %s: %s after %s", name, evs[i].ID, evs[i-1].ID)
			}
		}
		if len(evs) != want {
			t.Fatalf("device on %s: %d events, want %d", name, len(evs), want)
		}
	}
}

// A publish sent into a stalled Redis, given up by the node, is refused by
// the script when Redis runs it after the stall: it is never delivered.
func TestStalledPublishRefused(t *testing.T) {
	r := startOwnRedis(t)
	a := startNode(t, r.url(), "hub:", "a", 100, time.Minute)
	cl := connect(t, a.hub, "u1", "")
	calls := r.commandCalls(t, "evalsha")

	r.signal(t, syscall.SIGSTOP)
	start := time.Now()
	_, err := a.hub.Publish(context.Background(), []string{"u1"}, "S", json.RawMessage(`1`))
	took := time.Since(start)
	if !errors.Is(err, hub.ErrOutcomeUnknown) {
		t.Fatalf("publish into the stalled Redis: %v, want an unknown outcome", err)
	}
	if took > publishBound {
		t.Fatalf("publish answered after %v, want at most %v", took, publishBound)
	}
	r.signal(t, syscall.SIGCONT)
	// Redis runs the stalled script (one EVALSHA more than before) ...
	waitFor(t, "the stalled script to run", func() bool { return r.commandCalls(t, "evalsha") > calls })
	waitFor(t, "ready", func() bool { return a.broker.Ready() == nil })
	// ... and refuses it: the next event is the only one the device gets.
	evs, err := a.hub.Publish(bg(t), []string{"u1"}, "S", json.RawMessage(`2`))
	if err != nil {
		t.Fatal(err)
	}
	got := cl.waitEvents(1)
	if len(got) != 1 || got[0].ID != evs[0].ID {
		t.Fatalf("device got %v, want only %s", idsOf(got), evs[0].ID)
	}
}

// A script that Redis runs after its deadline publishes nothing and is
// answered as refused (a clock skewed so that every deadline has passed).
func TestLatePublishRefused(t *testing.T) {
	r := startOwnRedis(t)
	a := startNode(t, r.url(), "hub:", "a", 100, time.Minute)
	cl := connect(t, a.hub, "u1", "")
	a.broker.SkewClock(-time.Minute)
	_, err := a.hub.Publish(bg(t), []string{"u1"}, "S", json.RawMessage(`1`))
	if err == nil || errors.Is(err, hub.ErrOutcomeUnknown) || !errors.Is(err, hub.ErrUnavailable) {
		t.Fatalf("late publish: %v, want refused", err)
	}
	a.broker.SkewClock(0)
	evs, err := a.hub.Publish(bg(t), []string{"u1"}, "S", json.RawMessage(`2`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cl.waitEvents(1); len(got) != 1 || got[0].ID != evs[0].ID {
		t.Fatalf("device got %v, want only %s", idsOf(got), evs[0].ID)
	}
}

// A publish repeated with the same idempotency key returns the first ids
// and publishes nothing.
func TestPublishKeyOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		a := be.node(t, "a", 100, time.Minute)
		cl := connect(t, a.hub, "u1", "")
		ctx := hub.WithIdempotencyKey(bg(t), "k1", time.Minute)
		first, err := a.hub.Publish(ctx, []string{"u1", "u2"}, "S", json.RawMessage(`1`))
		if err != nil {
			t.Fatal(err)
		}
		if first[0].Devices != 1 || first[1].Devices != 0 {
			t.Fatalf("first answer %+v, want 1 and 0 devices", first)
		}
		connect(t, a.hub, "u2", "") // the counts change; the repeat answers the first ones
		again, err := a.hub.Publish(ctx, []string{"u1", "u2"}, "S", json.RawMessage(`1`))
		if err != nil {
			t.Fatal(err)
		}
		if again[0] != first[0] || again[1] != first[1] {
			t.Fatalf("repeat answered %+v, want %+v", again, first)
		}
		if _, err := a.hub.Publish(ctx, []string{"u1"}, "S", json.RawMessage(`1`)); err == nil {
			t.Fatal("key reused for another number of users: accepted")
		}
		if _, err := a.hub.Publish(ctx, []string{"u1", "u2", "u3"}, "S", json.RawMessage(`1`)); err == nil || errors.Is(err, hub.ErrUnavailable) != !be.cluster() {
			// one server: refused, nothing published; a cluster: u3 got
			// it (each user's marker is its own), so not "unavailable"
			t.Fatalf("key reused for more users: %v", err)
		}
		next, err := a.hub.Publish(bg(t), []string{"u1"}, "S", json.RawMessage(`2`))
		if err != nil {
			t.Fatal(err)
		}
		got := cl.waitEvents(2)
		if len(got) != 2 || got[0].ID != first[0].ID || got[1].ID != next[0].ID {
			t.Fatalf("device got %v, want %s %s", idsOf(got), first[0].ID, next[0].ID)
		}
	})
}

// A backplane connection that stops answering without closing: the node
// notices (not ready until it redialled), redials by itself, resyncs and
// is ready again;
// its device gets every event published meanwhile on the other node, once,
// in order, and the node's own publishes during the silence are answered
// within the bound, an error meaning not published.
func TestSilentBackplane(t *testing.T) {
	r := startOwnRedis(t)
	f := hubtest.StartProxy(t, r.Addr())
	var logs hubtest.Buffer
	a := startWith(t,
		redisbroker.Options{URL: "redis://" + f.Addr() + "/0", Prefix: "hub:", Node: "a", HistorySize: 100000, HistoryTTL: time.Minute,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))},
		hub.Options{HistorySize: 100000, HistoryTTL: time.Minute, Node: "a"})
	b := startNode(t, r.url(), "hub:", "b", 100000, time.Minute)
	ca := connect(t, a.hub, "u1", "")
	if _, err := b.hub.Publish(bg(t), []string{"u1"}, "S", json.RawMessage(`0`)); err != nil {
		t.Fatal(err)
	}
	ca.waitEvents(1)

	pb := &publisher{outcomes: map[int]*outcome{}}
	pa := &publisher{outcomes: map[int]*outcome{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go pb.run(b, "u1", 2, 2, stop, &wg)
	go pa.run(a, "u1", 1, 2, stop, &wg)
	published := func() int {
		return pb.count(func(o *outcome) bool { return o.id != "" }) + pa.count(func(o *outcome) bool { return o.id != "" })
	}
	waitFor(t, "publishes before the freeze", func() bool { ca.poll(); return published() > 20 })

	f.Freeze()
	frozen := time.Now()
	// Only the connections open at the freeze are silent (a dead NAT
	// entry); a new one works at once, so the node is not ready only from
	// the moment it finds a connection silent until it dialled a new one:
	// too short a time for a poller to be sure to see. Its logs tell.
	waitFor(t, "node a to find its Pub/Sub connection silent", func() bool {
		ca.poll()
		return strings.Contains(logs.String(), "redis pubsub connection silent; redialling")
	})
	t.Logf("silence found %v after the freeze", time.Since(frozen).Round(time.Millisecond))
	waitFor(t, "node a to redial and resync", func() bool {
		ca.poll()
		return strings.Contains(logs.String(), "redis pubsub reconnected; resyncing")
	})
	waitFor(t, "node a ready again", func() bool { ca.poll(); return a.broker.Ready() == nil })
	t.Logf("ready again %v after the freeze", time.Since(frozen).Round(time.Millisecond))
	n := published()
	waitFor(t, "publishes after the redial", func() bool { ca.poll(); return published() > n+20 })
	close(stop)
	wg.Wait()

	final := map[int]string{}
	var slowest time.Duration
	for _, p := range []*publisher{pa, pb} {
		for k, o := range p.outcomes {
			slowest = max(slowest, o.took)
			if o.took > publishBound {
				t.Errorf("call %d answered after %v, want at most %v", k, o.took, publishBound)
			}
			switch {
			case o.id != "":
				final[k] = o.id
			case o.unknown:
				ctx := hub.WithIdempotencyKey(bg(t), "call-"+strconv.Itoa(k), time.Minute)
				evs, err := b.hub.Publish(ctx, []string{"u1"}, "S", json.RawMessage(strconv.Itoa(k)))
				if err != nil {
					t.Fatalf("retry of call %d: %v", k, err)
				}
				final[k] = evs[0].ID
			}
		}
	}
	t.Logf("node a: %d calls, %d published, %d refused, %d without an answer; slowest answer %v",
		len(pa.outcomes), pa.count(func(o *outcome) bool { return o.id != "" }),
		pa.count(func(o *outcome) bool { return o.failed }), pa.count(func(o *outcome) bool { return o.unknown }),
		slowest.Round(time.Millisecond))

	var evs []*hub.Message
	deadline := time.Now().Add(15 * time.Second)
	for {
		ca.poll()
		evs = ca.events()
		if ca.end != nil || len(evs) >= len(final)+1 {
			break
		}
		if time.Now().After(deadline) {
			got := map[string]bool{}
			for _, m := range evs {
				got[m.ID] = true
			}
			var missing []string
			for k, id := range final {
				if !got[id] {
					missing = append(missing, strconv.Itoa(k)+"="+id)
				}
			}
			t.Fatalf("device has %d events of %d; missing %v", len(evs), len(final)+1, missing)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	if ca.end != nil {
		t.Fatalf("device closed: %v", *ca.end)
	}
	seen := map[int]bool{}
	for i, m := range evs[1:] {
		k := payloadOf(t, m)
		if seen[k] {
			t.Fatalf("call %d delivered twice", k)
		}
		seen[k] = true
		if final[k] != m.ID {
			t.Fatalf("call %d delivered as %s, answered %q", k, m.ID, final[k])
		}
		if cmpSeq(evs[i].ID, m.ID) >= 0 {
			t.Fatalf("%s after %s", m.ID, evs[i].ID)
		}
	}
	if len(evs) != len(final)+1 {
		t.Fatalf("%d events, want %d", len(evs), len(final)+1)
	}
}
