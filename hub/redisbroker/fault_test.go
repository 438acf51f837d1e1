package redisbroker_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
)

// A network cut between a node and Redis: publishes through the cut node
// fail (and are not acknowledged), Ready reports it, and once the network
// is back every event acknowledged meanwhile by another node reaches the
// cut node's connection, in order, exactly once.
func TestNetworkCut(t *testing.T) {
	rs := hubtest.StartRedisServer(t)
	direct := rs.URL()
	px := hubtest.StartProxy(t, rs.Addr())
	// The history must hold everything published while the node is cut
	// off (two publishers flat out; on a slow machine more than 1000): a
	// longer gap is rightly closed with 1001 and recovered:false.
	a := startNode(t, "redis://"+px.Addr()+"/0", "hub:", "a", 100000, time.Minute)
	p := startNode(t, direct, "hub:", "p", 100000, time.Minute)

	cl := connect(t, a.hub, "u1", "")
	first, err := p.hub.Publish(bg(t), []string{"u1"}, "E", json.RawMessage(`0`))
	if err != nil {
		t.Fatal(err)
	}
	cl.waitEvents(1)
	if err := a.broker.Ready(); err != nil {
		t.Fatalf("Ready before the cut: %v", err)
	}

	var (
		mu    sync.Mutex
		acked = []string{first[0].ID}
	)
	stopPub := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range []node{a, p} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stopPub:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				var id string
				var err error
				if k%7 == 0 {
					id, err = n.hub.Broadcast(ctx, "B", json.RawMessage(strconv.Itoa(k)))
				} else {
					var evs []hubEvent
					evs, err = publishOne(ctx, n, k)
					if err == nil {
						id = evs[0].ID
					}
				}
				cancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				}
				time.Sleep(time.Millisecond) // pacing, not synchronisation
			}
		}()
	}
	countAcked := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	hubtest.Eventually(t, 15*time.Second, "events before the cut", func() bool { return countAcked() > 20 })

	px.Cut()
	hubtest.Eventually(t, 15*time.Second, "Ready to fail", func() bool { return a.broker.Ready() != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err = a.hub.Publish(ctx, []string{"u1"}, "E", json.RawMessage(`1`))
	cancel()
	if err == nil {
		t.Fatal("Publish through the cut node succeeded")
	}
	during := countAcked()
	hubtest.Eventually(t, 15*time.Second, "events acknowledged during the cut", func() bool { return countAcked() > during+20 })

	px.Restore()
	hubtest.Eventually(t, 15*time.Second, "Ready again", func() bool { return a.broker.Ready() == nil })
	after := countAcked()
	hubtest.Eventually(t, 15*time.Second, "events after the cut", func() bool { return countAcked() > after+20 })
	close(stopPub)
	wg.Wait()

	mu.Lock()
	want := slices.Clone(acked)
	mu.Unlock()
	slices.SortFunc(want, func(x, y string) int { return cmpSeq(x, y) })
	// An event whose publish failed at the cut may still have been applied
	// (its answer was lost): the connection may hold more than what was
	// acknowledged, but never less, and always in order, once.
	var got []string
	hubtest.Eventually(t, 15*time.Second, "every acknowledged event", func() bool {
		cl.poll()
		got = idsOf(cl.events())
		return cl.end != nil || isSubsequence(want, got)
	})
	if cl.end != nil {
		t.Fatalf("connection closed: %v", *cl.end)
	}
	for i := 1; i < len(got); i++ {
		if cmpSeq(got[i-1], got[i]) >= 0 {
			t.Fatalf("event %s after %s: out of order or duplicated", got[i], got[i-1])
		}
	}
}

// isSubsequence reports whether every element of sub is in s, in order.
func isSubsequence(sub, s []string) bool {
	j := 0
	for _, x := range s {
		if j < len(sub) && x == sub[j] {
			j++
		}
	}
	return j == len(sub)
}

type hubEvent struct{ ID string }

func publishOne(ctx context.Context, n node, k int) ([]hubEvent, error) {
	evs, err := n.hub.Publish(ctx, []string{"u1"}, "E", json.RawMessage(strconv.Itoa(k)))
	if err != nil {
		return nil, err
	}
	return []hubEvent{{ID: evs[0].ID}}, nil
}

func cmpSeq(x, y string) int {
	a, _ := strconv.ParseUint(x[lastDash(x)+1:], 10, 64)
	b, _ := strconv.ParseUint(y[lastDash(y)+1:], 10, 64)
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func lastDash(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '-' {
			return i
		}
	}
	return -1
}

// Redis itself stops: publishes fail, Ready reports it; restarted (without
// its data) the node is ready again and ids come from a new epoch.
func TestRedisRestart(t *testing.T) {
	rs := hubtest.StartRedisServer(t)
	a := startNode(t, rs.URL(), "hub:", "a", 100, time.Minute)
	cl := connect(t, a.hub, "u1", "")
	before, err := a.hub.Publish(bg(t), []string{"u1"}, "E", json.RawMessage(`0`))
	if err != nil {
		t.Fatal(err)
	}
	cl.waitEvents(1)

	rs.Kill()
	hubtest.Eventually(t, 15*time.Second, "Ready to fail", func() bool { return a.broker.Ready() != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err = a.hub.Publish(ctx, []string{"u1"}, "E", json.RawMessage(`1`))
	cancel()
	if err == nil {
		t.Fatal("Publish with Redis down succeeded")
	}

	rs.Start() // without its data
	hubtest.Eventually(t, 15*time.Second, "Ready again", func() bool { return a.broker.Ready() == nil })
	after, err := a.hub.Publish(bg(t), []string{"u1"}, "E", json.RawMessage(`2`))
	if err != nil {
		t.Fatal(err)
	}
	if e1, e2 := before[0].ID[:lastDash(before[0].ID)], after[0].ID[:lastDash(after[0].ID)]; e1 == e2 {
		t.Fatalf("epoch %s kept across a restart that lost the data", e1)
	}
	// The connection could not be proven complete (its last id is of the
	// lost epoch): it is closed so that it reconnects with recovered:false.
	hubtest.Eventually(t, 15*time.Second, "the connection to be closed", func() bool { cl.poll(); return cl.end != nil })
}
