package redisbroker

import "time"

// Observer is told what the broker does with Redis, for metrics
// (internal/metrics implements it). Its methods are called on the
// broker's goroutines and on the callers' (a publish): they must not
// block. The op of PublishDone and Error is one of the Op* constants.
type Observer interface {
	// PublishDone reports a publish (OpPublish: to users, OpBroadcast: to
	// everyone) that was sent to Redis, with the time from the call to its
	// outcome and the error (nil: published). A publish refused before it
	// was sent (Redis found unresponsive) is reported by Error only.
	PublishDone(op string, d time.Duration, err error)
	// Reconnected reports the Pub/Sub connection subscribed again after
	// it broke (or was found silent and redialled).
	Reconnected()
	// Resynced reports the hub's Resync done after a reconnection.
	Resynced()
	// Error reports a Redis call of op that failed.
	Error(op string)
}

// The operations an Observer is told of (their values are metric labels).
const (
	OpPublish    = "publish"    // PublishUsers
	OpBroadcast  = "broadcast"  // PublishAll
	OpHistory    = "history"    // History, Since (a resume)
	OpPosition   = "position"   // Position
	OpSubscribe  = "subscribe"  // a SUBSCRIBE that could not be sent
	OpPubSub     = "pubsub"     // the Pub/Sub connection broke or went silent
	OpDisconnect = "disconnect" // DisconnectUser
	OpSlots      = "slots"      // connection slots: acquire, release, renew, list
	OpStats      = "stats"      // the node's stats report and ClusterStats
	OpHealth     = "health"     // a health probe that failed
)

// Ops lists every op an Observer may be told of.
var Ops = []string{OpPublish, OpBroadcast, OpHistory, OpPosition, OpSubscribe,
	OpPubSub, OpDisconnect, OpSlots, OpStats, OpHealth}

type nopObserver struct{}

func (nopObserver) PublishDone(string, time.Duration, error) {}
func (nopObserver) Reconnected()                             {}
func (nopObserver) Resynced()                                {}
func (nopObserver) Error(string)                             {}

// SubscribedUsers is the number of users whose channel this node is
// subscribed to (or subscribing): those with a connection on it.
func (b *Broker) SubscribedUsers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.subs)
	if b.rc != nil {
		for _, m := range b.rc.masters {
			n += len(m.subs)
		}
		n-- // the broadcasts' channel
	}
	return n
}
