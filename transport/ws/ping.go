package ws

import (
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/hubd/hub/internal/netpoll"
	"github.com/hubd/hub/internal/wsproto"
)

// pinger sends the heartbeat ping frames and closes the connections whose
// pong does not come within the pong timeout: one goroutine and one timer
// for every connection of the endpoint (no per-connection timer), running
// while the endpoint has connections. Heartbeat only queues a connection
// here, so no socket is written under the hub's locks.
type pinger struct {
	h       *Handler
	mu      sync.Mutex
	send    []*conn     // to ping
	checks  []pingCheck // pings waiting for their pong, oldest first
	running bool
	wakeCh  chan struct{}
}

type pingCheck struct {
	c        *conn
	seq      uint64
	deadline time.Time
}

func (p *pinger) add(c *conn) {
	p.mu.Lock()
	p.send = append(p.send, c)
	if p.wakeCh == nil {
		p.wakeCh = make(chan struct{}, 1)
	}
	if !p.running {
		p.running = true
		p.h.wg.Add(1)
		go p.run()
	}
	p.mu.Unlock()
	p.wake()
}

func (p *pinger) wake() {
	p.mu.Lock()
	ch := p.wakeCh
	p.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (p *pinger) run() {
	defer p.h.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var batch, dead []*conn
	for {
		p.mu.Lock()
		if p.h.live.Load() == 0 {
			p.running, p.send, p.checks = false, nil, nil
			p.mu.Unlock()
			return
		}
		batch, p.send = p.send, batch[:0]
		p.mu.Unlock()

		now := time.Now()
		deadline := now.Add(p.h.o.PongTimeout)
		for _, c := range batch {
			if seq, ok := c.ping(); ok {
				p.mu.Lock()
				p.checks = append(p.checks, pingCheck{c: c, seq: seq, deadline: deadline})
				p.mu.Unlock()
			}
		}
		clear(batch)

		next := time.Hour
		p.mu.Lock()
		for len(p.checks) > 0 {
			e := p.checks[0]
			if d := e.deadline.Sub(now); d > 0 {
				next = d
				break
			}
			p.checks[0] = pingCheck{}
			p.checks = p.checks[1:]
			if e.c.pongSeq.Load() < e.seq && e.c.life.State() != netpoll.StateClosed {
				dead = append(dead, e.c)
			}
		}
		if len(p.checks) == 0 {
			p.checks = nil
		}
		p.mu.Unlock()
		for _, c := range dead {
			p.h.log.Debug("websocket pong timeout", "conn", c.hc.ID())
			c.fail()
		}
		clear(dead)
		dead = dead[:0]

		timer.Reset(next)
		select {
		case <-timer.C:
		case <-p.wakeCh:
		}
	}
}

// ping writes a ping frame; it reports the ping's number, or false when
// the connection is closing.
func (c *conn) ping() (uint64, bool) {
	if c.life.State() >= netpoll.StateClosing {
		return 0, false
	}
	seq := c.pingSeq.Add(1)
	var payload [8]byte
	binary.BigEndian.PutUint64(payload[:], seq)
	pending, err := c.cork.writeControl(wsproto.OpPing, payload[:])
	switch {
	case errors.Is(err, errClosed):
		return 0, false
	case err != nil:
		c.fail()
		return 0, false
	case pending:
		c.flushAsync(false)
	}
	return seq, true
}
