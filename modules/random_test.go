package modules_test

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// TestRandomized runs many devices of many users on both transports while
// several publishers send to users and to everyone; devices drop, pause
// (and get cut) and resume at random. Some events carry a coalescing key
// (single ones, bursts of keystrokes to one key, broadcasts) and some are
// volatile. At the end every device must have seen its user's sequence in
// id order with no duplicate: every plain event; a keyed event unless a
// newer one of the same key reached it (skipped on a resume only: never
// one it was sent live); a volatile event unless it was away, and never in
// a replay. After every resume, and at the end, its state per key is the
// newest value published for the key (see the device model).
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
	// One node; a refused dial (a cut connection not yet unregistered) is
	// retried at once and then more slowly; a device drops its connection
	// once in 400 reads.
	fl := &fleet{
		t: t, end: make(chan struct{}),
		node:         func(*rand.Rand) (string, string, bool) { return th.SSEURL, th.WSURL, true },
		dialAttempts: 50,
		dialBackoff:  func(attempt int) time.Duration { return time.Duration(attempt) * 10 * time.Millisecond },
		oneIn:        400, pauseBelow: 4, pauseMax: 1200 * time.Millisecond,
	}
	var users []string
	for i := range 20 {
		users = append(users, fmt.Sprintf("user-%02d", i))
	}

	var wg, pwg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), duration+20*time.Second)
	defer cancel()
	for _, u := range users {
		for j := range 2 + master.IntN(3) {
			transport := transports[master.IntN(2)]
			slow := master.IntN(8) == 0
			d := fl.add(u, j, transport, slow, false, rand.New(rand.NewPCG(master.Uint64(), master.Uint64())))
			d.cutEarly = master.IntN(4) == 0
		}
	}
	// newest is, per user, the seq of the newest event of each key
	// published so far (and answered), which the devices' state must reach
	// after a resume (the fleet's snapshot); emu guards it and what the
	// publishers record below.
	var emu sync.Mutex
	newest := map[string]map[string]uint64{}
	for _, u := range users {
		newest[u] = map[string]uint64{}
	}
	fl.snapshot = func(u string) map[string]uint64 {
		emu.Lock()
		defer emu.Unlock()
		return maps.Clone(newest[u])
	}
	// Publishers: each remembers, per user, the ids in the order its calls
	// returned them (one publisher's calls are sequential), and every event
	// published to a user: its seq, key, volatile flag and when its call
	// began; and newest. (Made before the devices run: the cutEarly ones
	// count what is published to their user.)
	const publishers = 4
	order := make([]map[string][]string, publishers)
	expected := map[string]map[string]bool{}
	events := map[string]map[string]pubEvent{}
	for _, u := range users {
		expected[u] = map[string]bool{}
		events[u] = map[string]pubEvent{}
	}
	fl.published = func(user string) int {
		emu.Lock()
		defer emu.Unlock()
		return len(expected[user])
	}
	fl.start(ctx, &wg)
	if f := fl.failures(); f != "" {
		t.Fatalf("seed %d: %s", seed, f)
	}
	// No warm-up: a device may be cut before its first event, and resumes
	// from hub.connected's position (the device model keeps it as its last
	// id), with recovered:true and nothing lost; a quarter of the devices
	// are cut so on purpose, and again during the replay that follows.

	// record notes one event of user u (emu held).
	record := func(p int, u, id string, ev pubEvent) bool {
		if expected[u] == nil || id == "" || expected[u][id] {
			return false
		}
		ev.seq = seqOf(id)
		order[p][u] = append(order[p][u], id)
		expected[u][id] = true
		events[u][id] = ev
		if ev.key != "" {
			newest[u][ev.key] = max(newest[u][ev.key], ev.seq)
		}
		return true
	}
	var keyedN, volatileN atomic.Int64
	count := func(ev pubEvent) {
		if ev.key != "" {
			keyedN.Add(1)
		}
		if ev.volatile {
			volatileN.Add(1)
		}
	}
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
				// shape gives a body its key or volatile flag
				shape := func(body map[string]any, ev pubEvent) map[string]any {
					if ev.key != "" {
						body["key"] = ev.key
					}
					if ev.volatile {
						body["volatile"] = true
					}
					return body
				}
				if prng.IntN(40) == 0 {
					// a burst: many events for one user in one call, which
					// fills the queue of a device that is not reading: plain,
					// keystrokes to one key, or every other one volatile
					u := users[prng.IntN(len(users))]
					kind := prng.IntN(3)
					msgs := make([]map[string]any, 100)
					evs := make([]pubEvent, len(msgs))
					start := time.Now()
					for k := range msgs {
						evs[k].start = start
						switch {
						case kind == 1:
							evs[k].key = fmt.Sprintf("draft:%d", p)
						case kind == 2 && k%2 == 1:
							evs[k].volatile = true
						}
						msgs[k] = shape(map[string]any{"userIds": []string{u}, "type": "BURST", "payload": map[string]any{"p": p, "i": i, "k": k, "pad": pad}}, evs[k])
					}
					status, body := th.postNoFatal("/api/broadcast/batch", map[string]any{"messages": msgs})
					results, _ := body["results"].([]any)
					if status != http.StatusAccepted || len(results) != len(msgs) {
						fl.fail("publisher %d: batch: %d %v", p, status, body)
						return
					}
					emu.Lock()
					for k, res := range results {
						m, _ := res.(map[string]any)
						es, _ := m["events"].([]any)
						ev, _ := es[0].(map[string]any)
						id, _ := ev["id"].(string)
						if !record(p, u, id, evs[k]) {
							fl.fail("publisher %d: bad batch result %v", p, m)
							continue
						}
						count(evs[k])
					}
					emu.Unlock()
					published.Add(1)
					continue
				}
				// one event: keyed one time in four, volatile one in eight
				var ev pubEvent
				switch r := prng.IntN(8); {
				case r < 2:
					ev.key = fmt.Sprintf("k%d", prng.IntN(5))
				case r == 2:
					ev.volatile = true
				}
				if prng.IntN(10) == 0 {
					if ev.key != "" && prng.IntN(2) == 0 {
						ev.key = fmt.Sprintf("banner:%d", prng.IntN(2)) // broadcasts' own keys, or a user's
					}
					ev.start = time.Now()
					status, body := th.postNoFatal("/api/broadcast", shape(map[string]any{"all": true, "type": "ALL", "payload": map[string]any{"p": p, "i": i, "pad": pad}}, ev))
					id, _ := body["id"].(string)
					if status != http.StatusAccepted || id == "" {
						fl.fail("publisher %d: broadcast all: %d %v", p, status, body)
						return
					}
					emu.Lock()
					for _, u := range users {
						if !record(p, u, id, ev) {
							fl.fail("publisher %d: bad or repeated broadcast id %s", p, id)
						}
					}
					count(ev)
					emu.Unlock()
					published.Add(1)
					continue
				}
				var to []string
				for range 1 + prng.IntN(3) {
					to = append(to, users[prng.IntN(len(users))])
				}
				ev.start = time.Now()
				status, body := th.postNoFatal("/api/broadcast", shape(map[string]any{"userIds": to, "type": "USER", "payload": map[string]any{"p": p, "i": i, "pad": pad}}, ev))
				evs, _ := body["events"].([]any)
				if status != http.StatusAccepted || len(evs) == 0 {
					fl.fail("publisher %d: broadcast to %v: %d %v", p, to, status, body)
					return
				}
				emu.Lock()
				for _, e := range evs {
					m, _ := e.(map[string]any)
					u, _ := m["userId"].(string)
					id, _ := m["id"].(string)
					if !record(p, u, id, ev) {
						fl.fail("publisher %d: bad or repeated event %v", p, m)
						continue
					}
					count(ev)
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
	sentinel := th.publish("END", nil, users...)
	for _, u := range users {
		expected[u][sentinel[u]] = true
		events[u][sentinel[u]] = pubEvent{seq: seqOf(sentinel[u])}
	}
	close(fl.end)
	wg.Wait()
	t.Logf("seed %d: %d devices, %d publish calls (%d keyed and %d volatile events), %d client drops, %d cuts, %d resumes (%d checked per key, %d events replayed), %d cuts before the first event, %d during a replay",
		seed, len(fl.devices), published.Load(), keyedN.Load(), volatileN.Load(), fl.drops.Load(), fl.cuts.Load(), fl.resumes.Load(),
		fl.stateChecks.Load(), fl.replayed.Load(), fl.earlyCuts.Load(), fl.replayCuts.Load())
	if f := fl.failures(); f != "" {
		t.Fatalf("seed %d: %s", seed, f)
	}
	early := 0
	for _, d := range fl.devices {
		if d.cutEarly {
			early++
		}
	}
	if n := fl.earlyCuts.Load(); n != int64(early) || early > 0 && fl.replayCuts.Load() == 0 {
		t.Fatalf("seed %d: %d of %d devices were cut before their first event, %d during a replay: the run did not exercise them",
			seed, n, early, fl.replayCuts.Load())
	}

	// Every device has its user's sequence: each event once at most, in id
	// order (so in each publisher's order, and all devices of a user agree),
	// ending with the sentinel; every plain event; a keyed event unless a
	// newer one of its key reached the device, never one it was sent live;
	// a volatile event unless the device was away; and its final state of
	// each key is the newest event of the key.
	var skippedKeyed, missedVolatile int
	for _, d := range fl.devices {
		want := expected[d.user]
		pos, err := d.check(want)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if len(d.seen) == 0 || d.seen[len(d.seen)-1] != sentinel[d.user] {
			t.Fatalf("seed %d: %s did not end with its sentinel %s", seed, d.name, sentinel[d.user])
		}
		for i := 1; i < len(d.seen); i++ {
			if seqOf(d.seen[i]) <= seqOf(d.seen[i-1]) {
				t.Fatalf("seed %d: %s got %s after %s: not in id order", seed, d.name, d.seen[i], d.seen[i-1])
			}
		}
		seenKey := map[string]uint64{} // key -> newest seq seen
		for _, id := range d.seen {
			if ev := events[d.user][id]; ev.key != "" {
				seenKey[ev.key] = max(seenKey[ev.key], ev.seq)
			}
		}
		for id, ev := range events[d.user] {
			if _, ok := pos[id]; ok {
				continue
			}
			switch {
			case ev.key == "" && !ev.volatile:
				t.Fatalf("seed %d: %s lost %s", seed, d.name, id)
			case d.liveFor(ev.start, ev.seq):
				t.Fatalf("seed %d: %s did not get %s (key %q, volatile %v), published while it was connected", seed, d.name, id, ev.key, ev.volatile)
			case ev.key != "" && seenKey[ev.key] <= ev.seq:
				t.Fatalf("seed %d: %s skipped %s of key %s, and got no newer event of the key", seed, d.name, id, ev.key)
			case ev.key != "":
				skippedKeyed++
			default:
				missedVolatile++
			}
		}
		for k, seq := range newest[d.user] {
			if d.state[k] != seq {
				t.Fatalf("seed %d: %s ends with key %s at seq %d, the newest published is %d", seed, d.name, k, d.state[k], seq)
			}
		}
	}
	t.Logf("seed %d: keyed events skipped on resume (superseded): %d; volatile events missed while away: %d", seed, skippedKeyed, missedVolatile)
}

// pubEvent is what TestRandomized knows of an event it published to a
// user: its seq, key, volatile flag and when its call began.
type pubEvent struct {
	seq      uint64
	key      string
	volatile bool
	start    time.Time
}
