package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultSlotTTL is how long a connection slot lives without being renewed:
// the slots of a node that stopped without giving them back (a crash) are
// free again after it.
const DefaultSlotTTL = time.Minute

// refreshBatch is the number of slots renewed by one script call.
const refreshBatch = 500

type slotRef struct{ user, conn string }

func (b *Broker) slotKey(user string) string { return b.opts.Prefix + "uc:" + user }

// AcquireConn takes one of user's connection slots for connID, across every
// node sharing this Redis; it reports false when user holds limit slots
// already (limit <= 0: no limit). The broker renews the slots it took until
// ReleaseConn; a slot that is not renewed expires after Options.SlotTTL.
func (b *Broker) AcquireConn(ctx context.Context, user, connID string, limit int) (bool, error) {
	if limit <= 0 {
		return true, nil
	}
	if b.client == nil {
		return false, errors.New("redisbroker: not started")
	}
	n, err := acquireScript.Run(ctx, b.client, []string{b.slotKey(user)}, connID, limit, b.opts.SlotTTL.Milliseconds()).Int()
	if err != nil {
		// The script may have run with its answer lost: give the slot back
		// rather than let it live out its lifetime.
		b.queueRelease(slotRef{user, connID})
		return false, fmt.Errorf("acquire connection slot: %w", err)
	}
	if n != 1 {
		return false, nil
	}
	b.slotMu.Lock()
	conns := b.held[user]
	if conns == nil {
		conns = make(map[string]struct{})
		b.held[user] = conns
	}
	conns[connID] = struct{}{}
	b.slotMu.Unlock()
	return true, nil
}

// ReleaseConn gives back the slot of connID; it does not block (the slot is
// removed in the background; if that fails it expires on its own).
func (b *Broker) ReleaseConn(user, connID string) {
	b.slotMu.Lock()
	if conns := b.held[user]; conns != nil {
		delete(conns, connID)
		if len(conns) == 0 {
			delete(b.held, user)
		}
	}
	b.slotMu.Unlock()
	b.queueRelease(slotRef{user, connID})
}

func (b *Broker) queueRelease(r slotRef) {
	b.slotMu.Lock()
	b.releases = append(b.releases, r)
	b.slotMu.Unlock()
	select {
	case b.relSignal <- struct{}{}:
	default:
	}
}

// slotLoop removes released slots as they come and renews the held ones
// three times per slot lifetime. Both run on this goroutine, in order, so a
// renewal never brings back a slot released after it.
func (b *Broker) slotLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.SlotTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.relSignal:
			b.flushReleases(b.ctx)
		case <-t.C:
			b.flushReleases(b.ctx)
			b.refreshSlots()
		}
	}
}

// flushReleases removes the slots released so far.
func (b *Broker) flushReleases(parent context.Context) {
	b.slotMu.Lock()
	rel := b.releases
	b.releases = nil
	b.slotMu.Unlock()
	if len(rel) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(parent, 5*time.Second)
	defer cancel()
	pipe := b.client.Pipeline()
	for _, r := range rel {
		pipe.ZRem(ctx, b.slotKey(r.user), r.conn)
	}
	if _, err := pipe.Exec(ctx); err != nil && parent.Err() == nil {
		b.log.Debug("redis slot release failed; the slots will expire", "err", err)
	}
}

// refreshSlots renews every slot this node holds.
func (b *Broker) refreshSlots() {
	b.slotMu.Lock()
	var keys []string
	var ids []any
	for user, conns := range b.held {
		for c := range conns {
			keys = append(keys, b.slotKey(user))
			ids = append(ids, c)
		}
	}
	b.slotMu.Unlock()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	ttl := b.opts.SlotTTL.Milliseconds()
	for i := 0; i < len(keys); i += refreshBatch {
		j := min(i+refreshBatch, len(keys))
		args := append([]any{ttl}, ids[i:j]...)
		if err := refreshScript.Run(ctx, b.client, keys[i:j], args...).Err(); err != nil {
			if b.ctx.Err() == nil {
				b.log.Debug("redis slot refresh failed", "err", err)
			}
			return
		}
	}
}
