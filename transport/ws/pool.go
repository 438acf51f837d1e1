package ws

import "sync"

// writerPool is a few goroutines that drain the connections the hub woke,
// in the order they woke. Under load a connection waits its turn while more
// events reach its queue, so one socket write carries several frames; a
// goroutine per woken connection would write each event on its own. Writers
// exist only while there is work: none is left when every queue is empty.
type writerPool struct {
	mu      sync.Mutex
	q       []*conn
	head    int
	workers int
	max     int
	wg      *sync.WaitGroup
}

// push queues c (woken: its queue went from empty to non-empty) and starts
// a writer if fewer than max are running.
func (p *writerPool) push(c *conn) {
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

// pop returns the next connection, or nil (and the writer stops) when
// there is none.
func (p *writerPool) pop() *conn {
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
		return nil
	}
	c := p.q[p.head]
	p.q[p.head] = nil
	p.head++
	return c
}

func (p *writerPool) work() {
	defer p.wg.Done()
	for c := p.pop(); c != nil; c = p.pop() {
		c.drain()
	}
}
