package redisbroker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubd/hub/hub"
)

// How a publish is bounded, and why an error means "not published".
//
// A publish is one EVALSHA of publishScript on b.pub, a client without
// retries: go-redis would otherwise send the script again on a new
// connection after a read timeout while the first copy may still run (two
// events for one call). Its budget is PublishTimeout, or less when the
// caller's context ends sooner, split as follows:
//
//	start ........ runBy ... runBy+settle ........ deadline
//	   the script may run     |  no answer yet: check the marker
//
// The script carries runBy converted to Redis's clock (clock, health.go)
// and refuses, publishing nothing, when redis.call('TIME') is past it. The
// conversion errs early, never late, so once the local clock is past
// runBy+settle (settle absorbs clock drift between samples) a script that
// has not run will never publish: it either did run, in time, or never
// will. Which of the two is told by its marker, a key the script sets to
// the ids when it publishes: after runBy+settle the node reads the marker
// (on the probe client, whose connections are not those of the lost
// answer), and answers with the ids if it is there and "not published" if
// it is not.
//
// What is left: the answer is lost and the marker cannot be read before
// the deadline either (Redis is stalled as a whole, e.g. stopped right
// after the script ran). Then the outcome is unknown, and the error wraps
// hub.ErrOutcomeUnknown: the API gives no answer rather than a 503 that
// might be false. A retry with the same idempotency key is safe all the
// same, because the marker of a keyed call is named after the key and
// lives as long as the key: a repeated call returns the first call's ids.
//
// While the health loop's last probe failed, a publish fails at once and
// sends nothing.
const (
	// minPublishBudget is the least time a publish starts with.
	minPublishBudget = 20 * time.Millisecond
	// maxSettle bounds settle, the margin after runBy (budget/20 below).
	maxSettle = 50 * time.Millisecond
	// defaultKeyTTL is the marker lifetime of a keyed publish whose
	// context gives none.
	defaultKeyTTL = 10 * time.Minute
)

// errLate is the script's refusal: it ran after its deadline.
var errLate = errors.New("redis ran the publish after its deadline and refused it")

// target is where publishScript appends and publishes an event: a stream
// and its state hash (key prefixes, the epoch appended by the script), a
// channel, and the slot set whose live members it counts.
type target struct {
	stream, state, channel, slots string
}

func (b *Broker) publish(ctx context.Context, targets []target, typ string, payload []byte, ts time.Time, o hub.EventOptions) (string, []int, error) {
	runBy, settle, deadline, err := b.publishBudget(ctx, typ, o)
	if err != nil {
		return "", nil, err
	}
	if len(payload) == 0 {
		payload = []byte("null")
	}
	marker, markerTTL := b.marker(ctx)

	n := len(targets)
	volatile := "0"
	if o.Volatile {
		volatile = "1"
	}
	args := make([]any, 0, 15+4*n)
	args = append(args, randomName(), b.opts.HistorySize, b.opts.HistoryTTL.Milliseconds(),
		typ, string(payload), ts.UTC().Format(hub.TimeFormat), ts.UnixMilli(),
		b.clock.toRedis(runBy), markerTTL.Milliseconds(), b.opts.HistoryMaxBytes,
		o.Key, volatile, b.checkpoints(), b.checkpointEvery().Milliseconds(), n)
	for _, t := range targets {
		args = append(args, t.stream, t.state, t.channel, t.slots)
	}
	keys := []string{b.metaKey, marker}
	sctx, cancel := context.WithDeadline(ctx, runBy.Add(settle))
	res, err := publishScript.Run(sctx, b.pub, keys, args...).StringSlice()
	cancel()
	if err == nil {
		return b.scriptAnswer(res, n)
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		b.kick() // a connection failed: is Redis still there?
	}
	if unsent(err) {
		return "", nil, err
	}
	if ctx.Err() != nil { // the caller stopped waiting before the check was possible
		return "", nil, fmt.Errorf("%w: %v", hub.ErrOutcomeUnknown, err)
	}
	return b.check(ctx, marker, n, runBy.Add(settle), deadline, err)
}

// publishBudget checks a publish before anything is sent (started,
// type, options, Redis healthy) and splits its budget: the script must
// run by runBy, its answer is awaited until runBy+settle, and the call
// ends at deadline (see the comment at the top).
func (b *Broker) publishBudget(ctx context.Context, typ string, o hub.EventOptions) (runBy time.Time, settle time.Duration, deadline time.Time, err error) {
	if b.client == nil {
		return runBy, 0, deadline, errors.New("not started")
	}
	if err := hub.ValidateType(typ); err != nil {
		return runBy, 0, deadline, fmt.Errorf("type: %w", err)
	}
	if err := o.Validate(); err != nil {
		return runBy, 0, deadline, err
	}
	if err := b.healthErr(); err != nil {
		return runBy, 0, deadline, err
	}
	start := time.Now()
	deadline = start.Add(b.opts.PublishTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	budget := deadline.Sub(start)
	if budget < minPublishBudget {
		return runBy, 0, deadline, fmt.Errorf("only %v left to publish", budget)
	}
	return start.Add(budget * 3 / 4), min(budget/20, maxSettle), deadline, nil
}

// check finds out, after a publish whose answer did not come, whether it
// was applied: it waits until the script can no longer publish (after)
// and reads the marker before deadline.
func (b *Broker) check(ctx context.Context, marker string, n int, after, deadline time.Time, cause error) (string, []int, error) {
	t := time.NewTimer(time.Until(after))
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return "", nil, fmt.Errorf("%w: %v", hub.ErrOutcomeUnknown, cause)
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	v, err := b.probe.Get(cctx, marker).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", nil, fmt.Errorf("no answer in time (%v); checked: not published", cause)
	case err != nil:
		return "", nil, fmt.Errorf("%w: no answer in time (%v), and the check failed: %v", hub.ErrOutcomeUnknown, cause, err)
	}
	return b.parseAnswer(v, n)
}

// marker returns the name and lifetime of the publish's marker: named after
// the idempotency key when the context has one (so that a repeated call
// finds it), else random and just long enough for check.
func (b *Broker) marker(ctx context.Context) (string, time.Duration) {
	if key, ttl, ok := hub.IdempotencyKey(ctx); ok {
		if ttl <= 0 {
			ttl = defaultKeyTTL
		}
		sum := sha256.Sum256([]byte(key))
		return b.opts.Prefix + "pk:" + hex.EncodeToString(sum[:]), ttl
	}
	return b.opts.Prefix + "pt:" + randomName(), 2*b.opts.PublishTimeout + time.Second
}

// scriptAnswer reads publishScript's answer.
func (b *Broker) scriptAnswer(res []string, n int) (string, []int, error) {
	switch {
	case len(res) == 1 && res[0] == "late":
		return "", nil, errLate
	case len(res) == 2 && (res[0] == "ok" || res[0] == "dup"):
		return b.parseAnswer(res[1], n)
	}
	return "", nil, fmt.Errorf("unexpected script answer %q", res)
}

// parseAnswer reads "<id>;<count>,<count>,...", the answer of a publish to
// n targets (as the script returns it and the marker keeps it), and notes
// the id as known (Latest).
func (b *Broker) parseAnswer(answer string, n int) (string, []int, error) {
	id, counts, ok := strings.Cut(answer, ";")
	epoch, seq, idOK := hub.ParseID(id)
	if !ok || !idOK {
		// a marker of a version that gave each user its own id
		return "", nil, fmt.Errorf("publish answer %q is not an id and counts", answer)
	}
	parts := strings.Split(counts, ",")
	if len(parts) != n {
		// a key used again for a publish to another number of users
		return "", nil, fmt.Errorf("%d users published earlier under this idempotency key, %d asked for now", len(parts), n)
	}
	devices := make([]int, n)
	for i, p := range parts {
		d, err := strconv.Atoi(p)
		if err != nil || d < 0 {
			return "", nil, fmt.Errorf("publish answer %q: bad count %q", answer, p)
		}
		devices[i] = d
	}
	b.note(epoch, seq, false)
	return id, devices, nil
}

// unsent reports whether err shows that the script was not run: the
// command was never written whole (no connection, a failed dial or write),
// or Redis answered with an error. Any other error (a read timeout, a
// connection lost while waiting) leaves the outcome open.
func unsent(err error) bool {
	if errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Op == "dial" || op.Op == "write"
	}
	var rerr redis.Error
	return errors.As(err, &rerr)
}
