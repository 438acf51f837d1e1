package redisbroker

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubd/hub/hub"
)

// receiveLoop reads the shared Pub/Sub connection until Close. go-redis
// reconnects it and resubscribes its channels by itself after an error;
// the first subscription confirmation after an error means the node is
// subscribed again (every channel is a sharded one, so go-redis subscribes
// them all again in one SSUBSCRIBE), and the loop then runs the hub's
// Resync before it delivers anything else, so that the events published
// during the outage are queued before the live ones that follow.
//
// A connection that stops answering without closing raises no error: when
// nothing came for PingInterval the loop sends a PING, and when nothing
// (pong or message) came PublishTimeout after it, the connection counts as
// lost and is dropped (dropPubSubConn), which makes go-redis dial a new
// one on the next read.
func (b *Broker) receiveLoop() {
	defer b.wg.Done()
	broken := false // an error was seen: not subscribed until confirmed again
	var pinged time.Time
	failures := 0
	for {
		wait := b.opts.PingInterval
		if !pinged.IsZero() {
			wait = max(time.Until(pinged.Add(b.opts.PublishTimeout)), time.Millisecond)
		}
		msg, err := b.ps.ReceiveTimeout(b.ctx, wait)
		if b.ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				switch {
				case pinged.IsZero():
					pinged = time.Now()
					ctx, cancel := context.WithTimeout(b.ctx, b.opts.PublishTimeout)
					_ = b.ps.Ping(ctx) // a failed write makes go-redis reconnect
					cancel()
				case time.Since(pinged) >= b.opts.PublishTimeout:
					b.log.Warn("redis pubsub connection silent; redialling", "silent_for", time.Since(pinged)+b.opts.PingInterval)
					pinged = time.Time{}
					b.lost()
					broken = true
					b.dropPubSubConn()
				}
				continue
			}
			if !broken {
				b.log.Warn("redis pubsub connection lost", "err", err)
			}
			b.lost()
			broken = true
			pinged = time.Time{}
			failures++
			if !b.sleep(backoff(failures)) {
				return
			}
			continue
		}
		failures, pinged = 0, time.Time{}
		switch m := msg.(type) {
		case *redis.Subscription:
			if broken && m.Kind == "ssubscribe" {
				broken = false
				b.log.Info("redis pubsub reconnected; resyncing")
				b.opts.Metrics.Reconnected()
				ctx, cancel := context.WithTimeout(b.ctx, resyncTimeout)
				b.recv.Resync(ctx)
				cancel()
				b.opts.Metrics.Resynced()
				b.live.Store(true)
			}
			b.confirmed(m)
		case *redis.Message:
			b.dispatch(m)
		}
	}
}

// dropPubSubConn closes the Pub/Sub connection so that go-redis dials a
// new one, and subscribes it again to every channel, on the next read.
// go-redis has no call for this: a write that fails counts as a broken
// connection, and a write under a context whose deadline has passed always
// fails (TestSilentPubSub checks that the redial happens).
func (b *Broker) dropPubSubConn() {
	ctx, cancel := context.WithDeadline(b.ctx, time.Now().Add(-time.Second))
	defer cancel()
	_ = b.ps.Ping(ctx)
}

// lost records that the Pub/Sub connection broke: pending UNSUBSCRIBE
// confirmations will not come (the new connection subscribes only to what
// is wanted).
func (b *Broker) lost() {
	b.opts.Metrics.Error(OpPubSub)
	b.live.Store(false)
	b.kick()
	b.mu.Lock()
	clear(b.unsubPend)
	b.mu.Unlock()
}

func backoff(n int) time.Duration {
	d := 50 * time.Millisecond << min(n, 5)
	return min(d, time.Second)
}

// sleep waits d or until Close; it reports false on Close.
func (b *Broker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.ctx.Done():
		return false
	}
}

// confirmed handles a (un)subscribe confirmation: it wakes the Subscribe
// callers waiting for that channel. A "subscribe" confirmation that comes
// before the confirmation of an UNSUBSCRIBE sent earlier is stale.
func (b *Broker) confirmed(s *redis.Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch s.Kind {
	case "sunsubscribe":
		if b.unsubPend[s.Channel] > 1 {
			b.unsubPend[s.Channel]--
		} else {
			delete(b.unsubPend, s.Channel)
		}
	case "ssubscribe":
		if b.unsubPend[s.Channel] > 0 {
			return
		}
		if st := b.subs[s.Channel]; st != nil && st.sent && !isClosed(st.done) {
			close(st.done)
		}
	}
}

// dispatch parses one published message and hands it to the hub.
func (b *Broker) dispatch(m *redis.Message) {
	if m.Channel == b.ctlCh {
		if user, ok := strings.CutPrefix(m.Payload, "disconnect\n"); ok {
			b.recv.DisconnectLocal(user)
		}
		return
	}
	user := ""
	if m.Channel != b.allCh {
		u, ok := strings.CutPrefix(m.Channel, b.chPrefix+"c:{")
		if ok {
			u, ok = strings.CutSuffix(u, "}")
		}
		if !ok {
			return
		}
		user = u
	}
	msg := b.lastMsg
	if msg == nil || m.Payload != b.lastPayload {
		var ok bool
		if msg, ok = parsePublished(m.Payload); !ok {
			b.log.Warn("malformed message on redis channel", "channel", m.Channel)
			return
		}
		// one event published to many users comes once per user channel:
		// the next ones share this message
		b.lastPayload, b.lastMsg = m.Payload, msg
		epoch, seq, _ := hub.ParseID(msg.ID)
		b.note(epoch, seq, false)
	}
	b.recv.Deliver(user, msg)
}

// parsePublished parses "ID\nTYPE\nTSMILLIS\nFRAME".
func parsePublished(p string) (*hub.Message, bool) {
	parts := strings.SplitN(p, "\n", 4)
	if len(parts) != 4 {
		return nil, false
	}
	_, seq, ok := hub.ParseID(parts[0])
	if !ok {
		return nil, false
	}
	ms, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return nil, false
	}
	return hub.NewMessage(parts[0], seq, parts[1], hub.EventOptions{}, []byte(parts[3]), time.UnixMilli(ms)), true
}

// opLoop writes the queued SSUBSCRIBE and SUNSUBSCRIBE commands in order.
func (b *Broker) opLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.opSignal:
		}
		for {
			b.mu.Lock()
			if len(b.ops) == 0 {
				b.mu.Unlock()
				break
			}
			o := b.ops[0]
			b.ops[0] = op{}
			b.ops = b.ops[1:]
			if !o.sub {
				b.unsubPend[o.ch]++
			} else {
				o.st.sent = true
			}
			b.mu.Unlock()
			if o.sub {
				b.doSubscribe(o)
			} else {
				ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
				if err := b.ps.SUnsubscribe(ctx, o.ch); err != nil {
					b.opts.Metrics.Error(OpSubscribe)
					b.unsent(o.ch)
				}
				cancel()
			}
		}
	}
}

func (b *Broker) doSubscribe(o op) {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	err := b.ps.SSubscribe(ctx, o.ch)
	if err == nil {
		return // the receive loop sees the confirmation
	}
	// The command did not go out: fail the waiters now rather than at their
	// timeout, and drop the channel that go-redis would resubscribe.
	b.opts.Metrics.Error(OpSubscribe)
	b.mu.Lock()
	if b.subs[o.ch] == o.st {
		delete(b.subs, o.ch)
	}
	if !isClosed(o.st.done) {
		o.st.err = err
		close(o.st.done)
	}
	b.unsubPend[o.ch]++
	b.mu.Unlock()
	if b.ps.SUnsubscribe(ctx, o.ch) != nil {
		b.unsent(o.ch)
	}
}

// unsent undoes the count of an UNSUBSCRIBE that was not written (its
// confirmation will not come; a connection that broke meanwhile may have
// reset the count already).
func (b *Broker) unsent(ch string) {
	b.mu.Lock()
	if b.unsubPend[ch] > 0 {
		b.unsubPend[ch]--
	}
	if b.unsubPend[ch] == 0 {
		delete(b.unsubPend, ch)
	}
	b.mu.Unlock()
}

// statsLoop reports this node's stats every statsInterval.
func (b *Broker) statsLoop() {
	defer b.wg.Done()
	t := time.NewTicker(statsInterval)
	defer t.Stop()
	for {
		b.report()
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (b *Broker) report() {
	v, err := json.Marshal(nodeReport{Stats: b.recv.Stats(), At: time.Now().UnixMilli()})
	if err != nil {
		return
	}
	users := b.usersHLL() // the users it counts, for ClusterStats (hll.go)
	ctx, cancel := context.WithTimeout(b.ctx, time.Second)
	defer cancel()
	_, err = b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, b.nodesKey, b.opts.Node, v)
		p.Set(ctx, b.usersKey(b.opts.Node), users, statsTTL)
		return nil
	})
	if err != nil && b.ctx.Err() == nil {
		b.opts.Metrics.Error(OpStats)
		b.log.Debug("redis stats report failed", "err", err)
	}
}
