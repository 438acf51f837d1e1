package redisbroker_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
)

// A network cut between a node and Redis: publishes through the cut node
// fail (and are not acknowledged), Ready reports it, and once the network
// is back every event acknowledged meanwhile by another node reaches the
// cut node's connection, in order, exactly once. On a cluster the node
// loses one master (eachCut): it reaches the others, so its own publishes
// may still be taken; the rest holds.
func TestNetworkCut(t *testing.T) {
	// The history must hold everything published while the node is cut
	// off (two publishers flat out; on a slow machine more than 1000): a
	// longer gap is rightly closed with 1001 and recovered:false.
	eachCut(t, 100000, func(t *testing.T, s *cutSetup) {
		a, p := s.a, s.p
		cl := connect(t, a.hub, s.u1, "")
		first, err := p.hub.Publish(bg(t), []string{s.u1}, "E", json.RawMessage(`0`))
		if err != nil {
			t.Fatal(err)
		}
		cl.waitEvents(1)
		if err := a.broker.Ready(); err != nil {
			t.Fatalf("Ready before the cut: %v", err)
		}

		var (
			mu      sync.Mutex
			acked   = []string{first[0].ID}
			pFailed int // publishes through p refused or unanswered
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
						evs, err = publishOne(ctx, n, s.u1, k)
						if err == nil {
							id = evs[0].ID
						}
					}
					cancel()
					mu.Lock()
					if err == nil {
						acked = append(acked, id)
					} else if n == p {
						pFailed++
					}
					mu.Unlock()
					time.Sleep(time.Millisecond) // pacing, not synchronisation
				}
			}()
		}
		countAcked := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
		failedThroughP := func() int { mu.Lock(); defer mu.Unlock(); return pFailed }
		// the device is read all along: its queue is bounded (a device
		// that reads nothing is closed as a slow consumer)
		hubtest.Eventually(t, 15*time.Second, "events before the cut", func() bool { cl.poll(); return countAcked() > 20 })

		s.cut()
		cut := time.Now()
		hubtest.Eventually(t, 15*time.Second, "Ready to fail", func() bool { cl.poll(); return a.broker.Ready() != nil })
		t.Logf("not ready %v after the cut", time.Since(cut).Round(time.Millisecond))
		if !s.cluster {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			start := time.Now()
			_, err = a.hub.Publish(ctx, []string{s.u1}, "E", json.RawMessage(`1`))
			cancel()
			if err == nil {
				t.Fatal("Publish through the cut node succeeded")
			}
			t.Logf("publish through the cut node failed in %v: %v", time.Since(start).Round(100*time.Microsecond), err)
		}
		during, failed := countAcked(), failedThroughP()
		// on a cluster p's publishes are refused too once the cluster
		// turns to fail (ClusterNodeTimeout after the kill)
		hubtest.Eventually(t, 15*time.Second, "events acknowledged during the cut", func() bool {
			cl.poll()
			return countAcked() > during+20 || (s.cluster && failedThroughP() > failed+20)
		})
		t.Logf("%d events acknowledged during the cut", countAcked()-during)

		s.restoreWhile(t, cl.poll)
		restored := time.Now()
		hubtest.Eventually(t, 30*time.Second, "Ready again", func() bool { cl.poll(); return a.broker.Ready() == nil })
		t.Logf("ready %v after the network is back", time.Since(restored).Round(time.Millisecond))
		after := countAcked()
		hubtest.Eventually(t, 15*time.Second, "events after the cut", func() bool { cl.poll(); return countAcked() > after+20 })
		close(stopPub)
		wg.Wait()

		mu.Lock()
		want := slices.Clone(acked)
		mu.Unlock()
		// An event whose publish failed at the cut may still have been
		// applied (its answer was lost): the connection may hold more than
		// what was acknowledged, but never less, and always in order, once.
		var got []*hub.Message
		hubtest.Eventually(t, 15*time.Second, "every acknowledged event", func() bool {
			cl.poll()
			got = cl.events()
			return cl.end != nil || holdsAll(idsOf(got), want)
		})
		if cl.end != nil {
			t.Fatalf("connection closed: %v (%d of %d acknowledged events received)", *cl.end, len(got), len(want))
		}
		for i := 1; i < len(got); i++ {
			if got[i].Seq() <= got[i-1].Seq() {
				t.Fatalf("event %s after %s: out of order or duplicated", got[i].ID, got[i-1].ID)
			}
		}
		if !s.cluster { // one server: the ids themselves are in that order
			slices.SortFunc(want, func(x, y string) int { return cmpSeq(x, y) })
			if !isSubsequence(want, idsOf(got)) {
				t.Fatalf("the acknowledged events are not in id order")
			}
		}
	})
}

// holdsAll reports whether every element of want is in got.
func holdsAll(got, want []string) bool {
	in := make(map[string]bool, len(got))
	for _, id := range got {
		in[id] = true
	}
	for _, id := range want {
		if !in[id] {
			return false
		}
	}
	return true
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

func publishOne(ctx context.Context, n node, user string, k int) ([]hubEvent, error) {
	evs, err := n.hub.Publish(ctx, []string{user}, "E", json.RawMessage(strconv.Itoa(k)))
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
// its data) the node is ready again, the connection, which cannot be
// proven complete, is closed, and a resume from before is not recovered.
// On one server that is the server, and ids come from a new epoch; on a
// cluster the master of the connection's user (its own cluster: it is
// killed).
func TestRedisRestart(t *testing.T) {
	t.Parallel() // its own Redis; with the other tests that restart theirs (eachCut)
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		rs := hubtest.StartRedisServer(t)
		a := startNode(t, rs.URL(), "hub:", "a", 100, time.Minute)
		before, after := redisRestart(t, a, "u1", rs.Kill, rs.Start)
		if e1, e2 := before[:lastDash(before)], after[:lastDash(after)]; e1 == e2 {
			t.Fatalf("epoch %s kept across a restart that lost the data", e1)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		rc := hubtest.StartRedisCluster(t, 3)
		be := backend{url: rc.URL(), pfx: clusterPrefix(t, rc), rc: rc} // a prefix of its own: HUB_REDIS_CLUSTER_URL may name a shared cluster
		a := be.node(t, "a", 100, time.Minute)
		m := rc.MasterOf("{u1}")
		redisRestart(t, a, "u1", func() { rc.Kill(m) }, func() { rc.Start(m) })
	})
}

// redisRestart is TestRedisRestart on node a, user's Redis stopped by kill
// and started by start; it returns the ids of the events published before
// and after.
func redisRestart(t *testing.T, a node, user string, kill, start func()) (before, after string) {
	cl := connect(t, a.hub, user, "")
	evs, err := a.hub.Publish(bg(t), []string{user}, "E", json.RawMessage(`0`))
	if err != nil {
		t.Fatal(err)
	}
	before = evs[0].ID
	cl.waitEvents(1)

	kill()
	killed := time.Now()
	hubtest.Eventually(t, 15*time.Second, "Ready to fail", func() bool { return a.broker.Ready() != nil })
	t.Logf("not ready %v after the kill", time.Since(killed).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	begun := time.Now()
	_, err = a.hub.Publish(ctx, []string{user}, "E", json.RawMessage(`1`))
	cancel()
	if err == nil {
		t.Fatal("Publish with Redis down succeeded")
	}
	t.Logf("publish with Redis down failed in %v: %v", time.Since(begun).Round(100*time.Microsecond), err)

	start() // without its data
	restarted := time.Now()
	hubtest.Eventually(t, 30*time.Second, "Ready again", func() bool { return a.broker.Ready() == nil })
	t.Logf("ready %v after the restart", time.Since(restarted).Round(time.Millisecond))
	hubtest.Eventually(t, 15*time.Second, "a publish after the restart", func() bool {
		evs, err = a.hub.Publish(bg(t), []string{user}, "E", json.RawMessage(`2`))
		return err == nil
	})
	after = evs[0].ID
	// The connection could not be proven complete (the history of its last
	// id is lost): it is closed so that it reconnects with recovered:false.
	hubtest.Eventually(t, 15*time.Second, "the connection to be closed", func() bool { cl.poll(); return cl.end != nil })
	if rec, _ := connect(t, a.hub, user, before).connected(); rec {
		t.Fatalf("resume from %s, whose history was lost: recovered", before)
	}
	return before, after
}
