package hub

import (
	"context"
	"time"
)

// Broker carries events between the nodes of a cluster and keeps their
// history where every node can read it (hub/redisbroker implements it on
// Redis). Without a Broker the hub is a single node: ids, history and
// delivery stay in memory (the embedded default).
//
// With a Broker, Publish and Broadcast hand events to it; it gives them ids,
// appends them to the durable history and publishes them; every node's
// broker (this one included) calls Hub.Deliver for the users it subscribed
// to and for broadcasts. Deliveries must come in id order.
type Broker interface {
	// PublishUsers gives one event one id, appends it to the history of
	// each user (distinct) and publishes it to them, atomically; it
	// returns the id and, for each user in order, the number of the
	// user's connections holding a slot (AcquireConn) when it was
	// published. An error means that nothing was published, unless it
	// wraps ErrOutcomeUnknown (the answer was lost: it may have been).
	// With an idempotency key in ctx (WithIdempotencyKey), a repeated call
	// returns the answer of the first one that published (counts
	// included) and publishes nothing. The same holds for PublishAll.
	//
	// With o.Key, the event supersedes, in each user's history, the
	// user's last event with the same key (atomically with the append);
	// o.Volatile events are published and counted but never stored.
	PublishUsers(ctx context.Context, users []string, typ string, payload []byte, ts time.Time, o EventOptions) (id string, devices []int, err error)
	// PublishAll appends one event to the broadcast history and publishes
	// it to every node; it returns its id and the number of connections
	// holding a slot, cluster-wide, when it was published. A key
	// supersedes the last broadcast with the same key.
	PublishAll(ctx context.Context, typ string, payload []byte, ts time.Time, o EventOptions) (id string, devices int, err error)
	// History returns the events of user after lastID (the user's own and
	// the broadcasts, in id order, coalesced: of each key only the newest,
	// see Coalesce) and whether that list is provably complete; at most
	// max events (more: not complete). An id the history does not hold (a
	// superseded or volatile event's) is taken as a position: complete
	// when nothing from it on was dropped.
	History(ctx context.Context, user, lastID string, max int) ([]*Message, bool, error)
	// Subscribe makes this node receive user's events; it returns once the
	// subscription is active. Unsubscribe undoes it (it must not block).
	Subscribe(ctx context.Context, user string) error
	Unsubscribe(user string)
	// DisconnectUser asks every node to close user's connections.
	DisconnectUser(ctx context.Context, user string) error

	// Position returns the cluster's current position: an id made of the
	// current epoch and the sequence of the last event published so far
	// (its sequence may be 0 and may belong to no stream of interest).
	// Every event published after the call has a greater id.
	Position(ctx context.Context) (string, error)
	// Since is History from a position returned by Position rather than
	// from an id the user was sent: it returns the events of user after
	// pos and whether that list is provably complete (pos is of the
	// current epoch, nothing after it was trimmed, at most max events).
	Since(ctx context.Context, user, pos string, max int) ([]*Message, bool, error)

	// AcquireConn takes one of user's connection slots across the cluster
	// for the connection c (the hub takes one for every connection, before
	// its hub.connected); it reports false when user already holds limit
	// slots on all nodes together (limit 0: no limit). The broker keeps
	// the slots it acquired alive until ReleaseConn; those of a node that
	// stopped without releasing them expire on their own. The slots are
	// what the publish counts (devices) and Connections list.
	AcquireConn(ctx context.Context, user string, c Connection, limit int) (bool, error)
	// ReleaseConn gives back the slot of connID (it must not block).
	ReleaseConn(user, connID string)
	// Connections lists user's connections holding a slot, on every node.
	Connections(ctx context.Context, user string) ([]Connection, error)
	// Latest returns the cluster's epoch and the highest sequence this
	// node knows of, without asking Redis or any other store ("" when no
	// epoch is known yet). It may lag behind the cluster by a moment; it
	// never runs ahead of it.
	Latest() (epoch string, seq uint64)
}

// NewMessage builds an application event message from its parts: the
// envelope frame (one line of JSON) is given as made by the node that
// published it; seq is the id's position; o is what the broker knows of
// the event's options (the key of an event read from the history, which
// Coalesce needs). Brokers use it to turn what they receive into what the
// hub queues.
func NewMessage(id string, seq uint64, typ string, o EventOptions, frame []byte, accepted time.Time) *Message {
	return eventFromFrame(id, seq, typ, o, frame, accepted)
}

// Coalesce keeps, of the events of msgs (in id order) that share a key,
// only the last, and every event without a key; the order is kept. It is
// what a resume replays: the newest event of each key published after the
// client's last id. It reuses msgs' array.
func Coalesce(msgs []*Message) []*Message {
	keyed := 0
	for _, m := range msgs {
		if m.key != "" {
			keyed++
		}
	}
	if keyed < 2 {
		return msgs
	}
	seen := make(map[string]struct{}, keyed)
	// walk from the newest: the first of each key seen is the one kept
	w := len(msgs)
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		if m.key != "" {
			if _, dup := seen[m.key]; dup {
				continue
			}
			seen[m.key] = struct{}{}
		}
		w--
		msgs[w] = m
	}
	n := copy(msgs, msgs[w:])
	clear(msgs[n:])
	return msgs[:n]
}

// Seq returns the message's position in the id order (0 for control events).
func (m *Message) Seq() uint64 { return m.seq }

// EncodeEnvelope returns the envelope JSON of an event, as the hub frames it.
func EncodeEnvelope(id, typ string, o EventOptions, payload []byte, ts time.Time) []byte {
	return newEvent(id, typ, o, payload, ts, 0).Frame
}

// UserOrderBroker is implemented by a broker whose ids are ordered per user
// rather than by one sequence of the whole cluster (redisbroker on a Redis
// Cluster, where a user's events and the broadcasts live in different hash
// slots: docs/DECISIONS.md 31). When PerUserOrder reports true the hub
// registers and resyncs connections with Resume instead of History, Since
// and Position, and checks ids with ValidID instead of Latest.
type UserOrderBroker interface {
	Broker
	// PerUserOrder reports whether the hub must use Resume.
	PerUserOrder() bool
	// Resume returns user's events after from (an id or a position this
	// broker handed out; "" for a fresh start) in the user's order,
	// coalesced, and whether they are provably all of them (never for
	// ""), at most max; pos is where the connection stands once they are
	// queued (the last event's id, from, or a fresh position when the list
	// is not complete) and floor the order key of pos: every event
	// published after the call has a greater key (Message.Seq) and is
	// delivered through Deliver, nothing at or below it is delivered after
	// the call. The broker's subscription to user must be live.
	Resume(ctx context.Context, user, from string, max int) (msgs []*Message, complete bool, pos string, floor uint64, err error)
	// ValidID reports whether id has the form of an id or a position this
	// broker hands out (a cheap check before admission, proving nothing).
	ValidID(id string) bool
}

// userOrder returns the broker as a UserOrderBroker when it orders per user.
func (h *Hub) userOrder() UserOrderBroker {
	if ub, ok := h.opts.Broker.(UserOrderBroker); ok && ub.PerUserOrder() {
		return ub
	}
	return nil
}
