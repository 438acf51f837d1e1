package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hubd/hub/hub"
)

// DefaultSlotTTL is how long a connection slot lives without being renewed:
// the slots of a node that stopped without giving them back (a crash) are
// free again after it.
const DefaultSlotTTL = time.Minute

// refreshBatch is the number of slots renewed by one script call.
const refreshBatch = 500

// slotRef names one slot: the user's set, the member and its connection
// id (the member in the cluster's set).
type slotRef struct{ user, conn, member string }

func (b *Broker) slotKey(user string) string { return b.userKey("uc", user) }

// allSlotsKey is the cluster's slot set: the connection ids of every
// user's slots, which a broadcast counts.
func (b *Broker) allSlotsKey() string {
	if b.copts != nil {
		return b.opts.Prefix + "conns:{all}"
	}
	return b.opts.Prefix + "conns"
}

// slotMember is the member of a connection's slot in its user's set: the
// connection id, transport, connection time (Unix milliseconds) and node,
// separated by newlines (the node last: it is the only free text), so
// that Connections reads every field from the set alone.
func slotMember(c hub.Connection) string {
	return c.ConnectionID + "\n" + c.Transport + "\n" + strconv.FormatInt(c.ConnectedAt.UnixMilli(), 10) + "\n" + c.Node
}

// parseMember reads a slot member back.
func parseMember(m string) (hub.Connection, bool) {
	parts := strings.SplitN(m, "\n", 4)
	if len(parts) != 4 {
		return hub.Connection{}, false
	}
	ms, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return hub.Connection{}, false
	}
	return hub.Connection{ConnectionID: parts[0], Transport: parts[1], Node: parts[3], ConnectedAt: time.UnixMilli(ms).UTC()}, true
}

// AcquireConn takes one of user's connection slots for the connection c,
// across every node sharing this Redis; it reports false when user holds
// limit slots already (limit <= 0: no limit). The broker renews the slots
// it took until ReleaseConn; a slot that is not renewed expires after
// Options.SlotTTL. The slot also puts c in the cluster's slot set, and is
// what a publish counts (devices) and Connections lists.
func (b *Broker) AcquireConn(ctx context.Context, user string, c hub.Connection, limit int) (bool, error) {
	if b.client == nil {
		return false, errors.New("redisbroker: not started")
	}
	limit = max(limit, 0)
	ref := slotRef{user: user, conn: c.ConnectionID, member: slotMember(c)}
	var n int
	var err error
	if b.rc != nil {
		var ok bool
		if ok, err = b.rcAcquire(ctx, ref, limit); ok {
			n = 1
		}
	} else {
		n, err = acquireScript.Run(ctx, b.client, []string{b.slotKey(user), b.allSlotsKey()},
			ref.member, limit, b.opts.SlotTTL.Milliseconds(), ref.conn).Int()
	}
	if err != nil {
		// The script may have run with its answer lost: give the slot back
		// rather than let it live out its lifetime.
		b.opts.Metrics.Error(OpSlots)
		b.queueRelease(ref)
		return false, fmt.Errorf("acquire connection slot: %w", err)
	}
	if n != 1 {
		return false, nil
	}
	b.slotMu.Lock()
	conns := b.held[user]
	if conns == nil {
		conns = make(map[string]string)
		b.held[user] = conns
	}
	conns[ref.conn] = ref.member
	b.slotMu.Unlock()
	return true, nil
}

// ReleaseConn gives back the slot of connID; it does not block (the slot is
// removed in the background; if that fails it expires on its own).
func (b *Broker) ReleaseConn(user, connID string) {
	b.slotMu.Lock()
	member, ok := b.held[user][connID]
	if ok {
		delete(b.held[user], connID)
		if len(b.held[user]) == 0 {
			delete(b.held, user)
		}
	}
	b.slotMu.Unlock()
	if ok {
		b.queueRelease(slotRef{user: user, conn: connID, member: member})
	}
}

// Connections lists the connections of user that hold a live slot, on
// every node, oldest first.
func (b *Broker) Connections(ctx context.Context, user string) ([]hub.Connection, error) {
	if b.client == nil {
		return nil, errors.New("redisbroker: not started")
	}
	members, err := connsScript.Run(ctx, b.client, []string{b.slotKey(user)}).StringSlice()
	if err != nil {
		b.opts.Metrics.Error(OpSlots)
		return nil, fmt.Errorf("connections: %w", err)
	}
	out := make([]hub.Connection, 0, len(members))
	for _, m := range members {
		if c, ok := parseMember(m); ok {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b hub.Connection) int {
		if c := a.ConnectedAt.Compare(b.ConnectedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ConnectionID, b.ConnectionID)
	})
	return out, nil
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
		pipe.ZRem(ctx, b.slotKey(r.user), r.member)
		pipe.ZRem(ctx, b.allSlotsKey(), r.conn)
	}
	if _, err := pipe.Exec(ctx); err != nil && parent.Err() == nil {
		b.opts.Metrics.Error(OpSlots)
		b.log.Debug("redis slot release failed; the slots will expire", "err", err)
	}
}

// refreshSlots renews every slot this node holds.
func (b *Broker) refreshSlots() {
	b.slotMu.Lock()
	var keys []string
	var members []any
	for user, conns := range b.held {
		for _, m := range conns {
			keys = append(keys, b.slotKey(user))
			members = append(members, m)
		}
	}
	b.slotMu.Unlock()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if b.rc != nil {
		if err := b.rcRefresh(ctx, keys, members); err != nil && b.ctx.Err() == nil {
			b.opts.Metrics.Error(OpSlots)
			b.log.Debug("redis slot refresh failed", "err", err)
		}
		return
	}
	ttl := b.opts.SlotTTL.Milliseconds()
	for i := 0; i < len(keys); i += refreshBatch {
		j := min(i+refreshBatch, len(keys))
		args := append([]any{ttl}, members[i:j]...)
		batch := append([]string{b.allSlotsKey()}, keys[i:j]...)
		if err := refreshScript.Run(ctx, b.client, batch, args...).Err(); err != nil {
			if b.ctx.Err() == nil {
				b.opts.Metrics.Error(OpSlots)
				b.log.Debug("redis slot refresh failed", "err", err)
			}
			return
		}
	}
}
