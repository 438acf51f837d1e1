package netpoll

import (
	"sync"
	"time"
)

// Pool is a few writer goroutines (one per processor) that drain the
// connections the hub woke, in the order they woke. Under load a connection waits its turn
// while more events reach its queue, so one socket write carries several
// frames; a goroutine per woken connection would write each event on its
// own. Writers exist only while there is work: none is left when every
// queue is empty. A Drainer must never block on a socket: one that cannot
// write at once hands the rest to a goroutine of its own.
//
// A writer that has worked for a slice parks for a moment, so that the
// scheduler polls the network: a publishing request that arrived meanwhile
// runs before more writes. Without it a busy writer holds the processor
// until the runtime's own network poll (up to 10 ms later), publishers
// queue behind it, and each event is written to each connection alone.
// This is a heuristic about Go's scheduler, not a guarantee of any API:
// docs/DECISIONS.md says why, docs/BENCHMARKS.md what it measured.
type Pool struct {
	mu       sync.Mutex
	q        []Drainer
	head     int
	workers  int
	max      int
	slice    time.Duration
	activity func() uint64
	wg       *sync.WaitGroup
}

// Drainer is a connection a Pool writes: Drain writes everything its queue
// holds without waiting on the socket.
type Drainer interface{ Drain() }

// WriterSlice is how long a pool writer works before it lets publishers in.
const WriterSlice = time.Millisecond

// NewPool returns a pool of at most writers writers (at least one), counted
// in wg.
// activity (hub.Hub.Activity) changes while publishers work; writers pause
// for them every slice only then.
func NewPool(writers int, slice time.Duration, activity func() uint64, wg *sync.WaitGroup) *Pool {
	return &Pool{max: max(1, writers), slice: slice, activity: activity, wg: wg}
}

// Push queues c (woken: its queue went from empty to non-empty; once per
// such change, so that a connection never has two writers) and starts a
// writer if fewer than max are running.
func (p *Pool) Push(c Drainer) {
	p.mu.Lock()
	p.q = append(p.q, c)
	start := p.workers < p.max
	if start {
		p.workers++
	}
	p.mu.Unlock()
	if start {
		p.wg.Add(1)
		go p.work()
	}
}

// popBatch is the most connections a writer takes from the queue at once.
const popBatch = 32

// pop moves the next connections, up to popBatch of them in the order
// they woke, into batch; an empty batch means there is none (and the
// writer stops). Taking several at once keeps writers off the lock that
// publishers take for every connection they wake: with one pop per
// connection, a broadcast on one core and writers on the others contended
// on it for every delivery (hub's BenchmarkFanoutScaling).
func (p *Pool) pop(batch []Drainer) []Drainer {
	batch = batch[:0]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.head == len(p.q) {
		if cap(p.q) > 4096 {
			p.q = nil // let a burst's backlog go
		} else {
			p.q = p.q[:0]
		}
		p.head = 0
		p.workers--
		return batch
	}
	end := min(len(p.q), p.head+popBatch)
	batch = append(batch, p.q[p.head:end]...)
	clear(p.q[p.head:end])
	p.head = end
	return batch
}

func (p *Pool) work() {
	defer p.wg.Done()
	start := time.Now()
	var seen uint64
	var busy time.Time // when publishers were last seen at work
	if p.activity != nil {
		seen, busy = p.activity(), start
	}
	var buf [popBatch]Drainer
	for batch := p.pop(buf[:0]); len(batch) > 0; batch = p.pop(batch) {
		for i, c := range batch {
			batch[i] = nil
			c.Drain()
			if p.slice <= 0 {
				continue
			}
			if now := time.Now(); now.Sub(start) > p.slice {
				// While publishers are at work, let the scheduler poll
				// the network: their requests waiting there get the
				// processor before more writes. The pause costs up to a
				// millisecond when nothing is waiting, so not once
				// publishers are quiet.
				if a := p.activity(); a != seen {
					seen, busy = a, now
				}
				if now.Sub(busy) < publishersQuiet {
					time.Sleep(time.Microsecond)
				}
				start = time.Now()
			}
		}
	}
}

// publishersQuiet is how long without a publish before pool writers stop
// pausing for publishers.
const publishersQuiet = 50 * time.Millisecond
