package modules_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
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

	// expected holds, per user, the ids published to it (under emu)
	expected := map[string]map[string]bool{}
	for _, u := range users {
		expected[u] = map[string]bool{}
	}
	var emu sync.Mutex
	fl.published = func(user string) int {
		emu.Lock()
		defer emu.Unlock()
		return len(expected[user])
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
	fl.start(ctx, &wg)
	if f := fl.failures(); f != "" {
		t.Fatalf("seed %d: %s", seed, f)
	}

	// No warm-up: a device may be cut before its first event, and resumes
	// from hub.connected's position (the device model keeps it as its last
	// id), with recovered:true and nothing lost.

	// Publishers: each remembers, per user, the ids in the order its calls
	// returned them (one publisher's calls are sequential).
	const publishers = 4
	order := make([]map[string][]string, publishers)
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
					u := users[prng.IntN(len(users))]
					msgs := make([]map[string]any, 100)
					for k := range msgs {
						msgs[k] = map[string]any{"userIds": []string{u}, "type": "BURST", "payload": map[string]any{"p": p, "i": i, "k": k, "pad": pad}}
					}
					status, body := th.postNoFatal("/api/broadcast/batch", map[string]any{"messages": msgs})
					results, _ := body["results"].([]any)
					if status != http.StatusAccepted || len(results) != len(msgs) {
						fl.fail("publisher %d: batch: %d %v", p, status, body)
						return
					}
					emu.Lock()
					for _, res := range results {
						m, _ := res.(map[string]any)
						evs, _ := m["events"].([]any)
						ev, _ := evs[0].(map[string]any)
						id, _ := ev["id"].(string)
						if id == "" || expected[u][id] {
							fl.fail("publisher %d: bad batch result %v", p, m)
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
						fl.fail("publisher %d: broadcast all: %d %v", p, status, body)
						return
					}
					emu.Lock()
					for _, u := range users {
						order[p][u] = append(order[p][u], id)
						expected[u][id] = true
					}
					emu.Unlock()
					published.Add(1)
					continue
				}
				var to []string
				for range 1 + prng.IntN(3) {
					to = append(to, users[prng.IntN(len(users))])
				}
				status, body := th.postNoFatal("/api/broadcast", map[string]any{"userIds": to, "type": "USER", "payload": map[string]any{"p": p, "i": i, "pad": pad}})
				evs, _ := body["events"].([]any)
				if status != http.StatusAccepted || len(evs) == 0 {
					fl.fail("publisher %d: broadcast to %v: %d %v", p, to, status, body)
					return
				}
				emu.Lock()
				for _, ev := range evs {
					m, _ := ev.(map[string]any)
					u, _ := m["userId"].(string)
					id, _ := m["id"].(string)
					if expected[u] == nil || id == "" || expected[u][id] {
						fl.fail("publisher %d: bad or repeated event %v", p, m)
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
	sentinel := th.publish("END", nil, users...)
	for _, u := range users {
		expected[u][sentinel[u]] = true
	}
	close(fl.end)
	wg.Wait()
	t.Logf("seed %d: %d devices, %d publish calls, %d client drops, %d cuts, %d resumes, %d cuts before the first event, %d cuts during a replay",
		seed, len(fl.devices), published.Load(), fl.drops.Load(), fl.cuts.Load(), fl.resumes.Load(), fl.earlyCuts.Load(), fl.replayCuts.Load())
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

	// Every device has exactly its user's sequence; all devices of a user
	// agree on the order, which keeps each publisher's order.
	first := map[string]*simDevice{}
	for _, d := range fl.devices {
		want := expected[d.user]
		pos, err := d.check(want)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if len(d.seen) == 0 || d.seen[len(d.seen)-1] != sentinel[d.user] {
			t.Fatalf("seed %d: %s did not end with its sentinel %s", seed, d.name, sentinel[d.user])
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
