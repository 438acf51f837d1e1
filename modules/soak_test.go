package modules_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
)

var soakFlag = flag.Duration("soak", 0, "run TestSoak for this long (default: HUB_SOAK, else a short run of a few seconds)")

// soakSteady is the number of steady devices (fleet.addSteady).
const soakSteady = 4

const (
	soakShort     = 6 * time.Second // the CI run
	soakUsers     = 50
	soakDevices   = 4 // per user
	soakTokenTTL  = 4 * time.Second
	soakSendQueue = 16
)

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

// soakRun is the nodes of one TestSoak run.
type soakRun struct {
	redis bool

	// nodes are the running nodes; a node being restarted is marked down
	// under the write lock, so no publish is in flight to it while it stops.
	nodeMu sync.RWMutex
	nodes  []*testHub
	up     []bool
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

// soakRetries bounds how often the publisher sends a call again after a
// 503 (which means nothing was published).
const soakRetries = 50

// post sends one call through a random node that is up; ok is false when
// no node is up or the call got no answer.
func (r *soakRun) post(rng *rand.Rand, path string, body any) (status int, answer map[string]any, node string, ok bool) {
	th, release := r.pick(rng)
	defer release()
	if th == nil {
		return 0, nil, "no node", false
	}
	status, answer = th.postNoFatal(path, body)
	return status, answer, th.Config.NodeName, status != 0
}

// postRetry is post that sends the call again, through any node, while it
// is answered 503 (nothing published: a node stopping, Redis slow to
// answer its health check), counting the retries.
func (r *soakRun) postRetry(rng *rand.Rand, path string, body any, retries *atomic.Int64) (int, map[string]any, string, bool) {
	for attempt := 0; ; attempt++ {
		status, answer, node, ok := r.post(rng, path, body)
		if status != http.StatusServiceUnavailable || attempt >= soakRetries {
			return status, answer, node, ok
		}
		retries.Add(1)
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
// connection each for the whole run. At the end every device has exactly
// its user's events, in order, with no loss and no duplicate.
func TestSoak(t *testing.T) {
	duration := soakDuration(t)
	seed := time.Now().UnixNano()
	master := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	r := &soakRun{}
	// Devices dial a random node that is up and retry refusals (a node
	// restarting, a cut connection not yet unregistered) for up to about
	// 20 s; they drop their connection once in 600 reads; with Redis, a
	// node restarts mid-run.
	fl := &fleet{
		t: t, end: make(chan struct{}),
		node: func(rng *rand.Rand) (string, string, bool) {
			th, release := r.pick(rng)
			defer release()
			if th == nil {
				return "", "", false
			}
			return th.SSEURL, th.WSURL, true
		},
		steadyNode: func() (string, string) {
			r.nodeMu.RLock()
			defer r.nodeMu.RUnlock()
			return r.nodes[0].SSEURL, r.nodes[0].WSURL // the first node never restarts
		},
		dialAttempts: 100,
		dialBackoff:  func(attempt int) time.Duration { return time.Duration(min(attempt, 10)) * 20 * time.Millisecond },
		oneIn:        600, pauseBelow: 6, pauseMax: 900 * time.Millisecond,
		shortTTL:    soakTokenTTL,
		restarts:    true,
		strictClose: true,
	}

	base := func(c *config.Config) {
		c.SendQueue = soakSendQueue
		c.HistorySize = 1 << 20
		c.HistoryTTL = time.Hour
		// Every resume of the soak must be recovered, so no user's history
		// may drop an event it still needs: with the default 1 MiB per
		// user, a busy user's stream on Redis was trimmed past a slow
		// device's last id within the 70 s (its floor at seq ~55,000),
		// and that device was rightly told recovered:false. The byte
		// bounds have tests of their own.
		c.HistoryMaxBytes = 32 << 20
		c.JWTLeeway = 0
		c.LogLevel = "warn"
	}
	var ru, addrB string
	if ru = optionalRedisURL(t); ru != "" {
		r.redis = true
		addrB = hubtest.FreeAddr(t)
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
	var slowUsers []string
	for _, u := range users {
		for j := range soakDevices {
			transport := transports[master.IntN(2)]
			slow := master.IntN(10) == 0
			short := master.IntN(8) == 0
			fl.add(u, j, transport, slow, short, rand.New(rand.NewPCG(master.Uint64(), master.Uint64())))
			if slow {
				slowUsers = append(slowUsers, u)
			}
		}
	}
	if len(slowUsers) == 0 {
		slowUsers = users[:1]
	}
	// steady devices, of users of their own (fleet.addSteady); the WARMUP,
	// ALL and END events go to them too
	var steadyUsers []string
	for i := range soakSteady {
		u := fmt.Sprintf("steady-%d", i)
		steadyUsers = append(steadyUsers, u)
		exp.set[u] = map[string]bool{}
		fl.addSteady(u, transports[i%2])
	}
	everyone := append(append([]string(nil), users...), steadyUsers...)

	ctx, cancel := context.WithTimeout(context.Background(), duration+25*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	fl.start(ctx, &wg)
	if f := fl.failures(); f != "" {
		t.Fatalf("seed %d: %s", seed, f)
	}

	// One event to every user, and every device has it before the chaos.
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
		fl.waitWarm()
		if f := fl.failures(); f != "" {
			t.Fatalf("seed %d: %s", seed, f)
		}
	}

	// One publisher, so that the order of its acknowledgements is the
	// order every device must see.
	start := time.Now()
	var published, retries atomic.Int64
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
			switch n := prng.IntN(40); {
			case n == 0:
				// a burst for a user with a slow device fills its queue
				u := slowUsers[prng.IntN(len(slowUsers))]
				msgs := make([]any, 3*soakSendQueue)
				for k := range msgs {
					msgs[k] = map[string]any{"userIds": []string{u}, "type": "BURST", "payload": map[string]any{"i": i, "k": k, "pad": pad}}
				}
				// a 503 means the message was not published (the contract);
				// a batch stops at the first broker failure: send the rest again
				for attempt := 0; len(msgs) > 0; attempt++ {
					status, body, node, ok := r.post(prng, "/api/broadcast/batch", map[string]any{"messages": msgs})
					results, _ := body["results"].([]any)
					if !ok || status != http.StatusAccepted || len(results) != len(msgs) {
						fl.fail("batch through %s: %d %v", node, status, body)
						return
					}
					done := 0
					for _, res := range results {
						m, _ := res.(map[string]any)
						evs, _ := m["events"].([]any)
						if len(evs) != 1 {
							break
						}
						id, _ := evs[0].(map[string]any)["id"].(string)
						if err := exp.add(u, id); err != nil {
							fl.fail("batch: %v", err)
						}
						done++
					}
					if done < len(msgs) {
						m, _ := results[done].(map[string]any)
						if e, _ := m["error"].(map[string]any); e["code"] != "unavailable" || attempt >= soakRetries {
							fl.fail("batch result %v (attempt %d)", m, attempt)
							return
						}
						retries.Add(1)
					}
					msgs = msgs[done:]
				}
			case n < 5:
				status, body, node, ok := r.postRetry(prng, "/api/broadcast", map[string]any{"all": true, "type": "ALL", "payload": i}, &retries)
				id, _ := body["id"].(string)
				if !ok || status != http.StatusAccepted || id == "" {
					fl.fail("broadcast all through %s: %d %v", node, status, body)
					return
				}
				for _, u := range everyone {
					if err := exp.add(u, id); err != nil {
						fl.fail("all: %v", err)
					}
				}
			default:
				var to []string
				for range 1 + prng.IntN(3) {
					to = append(to, users[prng.IntN(len(users))])
				}
				status, body, node, ok := r.postRetry(prng, "/api/broadcast", map[string]any{"userIds": to, "type": "USER", "payload": map[string]any{"i": i, "pad": pad[:64]}}, &retries)
				evs, _ := body["events"].([]any)
				if !ok || status != http.StatusAccepted || len(evs) == 0 {
					fl.fail("broadcast through %s to %v: %d %v", node, to, status, body)
					return
				}
				for _, ev := range evs {
					m, _ := ev.(map[string]any)
					u, _ := m["userId"].(string)
					id, _ := m["id"].(string)
					if err := exp.add(u, id); err != nil {
						fl.fail("user: %v", err)
					}
				}
			}
			published.Add(1)
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
		old.Stop()
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
	close(fl.end)
	wg.Wait()
	elapsed := time.Since(start)

	mode := "memory"
	if r.redis {
		mode = "redis, 2 nodes"
	}
	line := fmt.Sprintf("soak (%s, seed %d): %d clients, %d publish calls (%d sent again after a 503), %d deliveries, %d resumes, %d client drops, %d slow cuts, %d expiries, %d refreshes, %d node restarts (%d connections moved), %v",
		mode, seed, len(fl.devices), published.Load(), retries.Load(), fl.deliveries.Load(), fl.resumes.Load(), fl.drops.Load(),
		fl.cuts.Load(), fl.expiries.Load(), fl.refreshes.Load(), restarts, fl.restartsSeen.Load(), elapsed.Round(time.Millisecond))
	t.Log(line)
	if testing.Verbose() {
		fmt.Println(line)
	}
	if f := fl.failures(); f != "" {
		t.Fatalf("seed %d: %s", seed, f)
	}

	// Every device has exactly its user's events in the publisher's order.
	for _, d := range fl.devices {
		want := exp.order[d.user]
		if _, err := d.check(exp.set[d.user]); err != nil {
			t.Fatal(err)
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
