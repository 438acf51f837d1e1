package redisbroker

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// clock relates this process's monotonic clock to Redis's own clock (the
// TIME command), so that a publish can carry a deadline that the script
// checks against redis.call('TIME').
//
// A sample is a TIME answer R (Redis microseconds) received at local
// monotonic time t1 for a request sent at t0; Redis read its clock at some
// instant between t0 and t1, so R - t1 is a lower bound of the offset
// between the two clocks (off = redis - local). The lower bound is what is
// kept: a deadline d (local) becomes d + off in Redis's clock, which is at
// most the true d + offset, so a script that runs after local time d always
// sees a Redis clock past the deadline and refuses. The error goes the safe
// way (a script may refuse up to one round trip too early, never late);
// what it does not cover is the two clocks drifting apart between samples
// and a step of Redis's wall clock (NTP), which publish.go's settle margin
// absorbs up to its size (see docs/OPERATIONS.md).
type clock struct {
	base time.Time // local reference; only its monotonic reading is used

	mu   sync.Mutex
	off  int64 // Redis microseconds minus local microseconds since base
	skew int64 // added to off by tests (export_test.go)
}

func (c *clock) micros(t time.Time) int64 { return t.Sub(c.base).Microseconds() }

func (c *clock) set(redisTime, received time.Time) {
	off := redisTime.UnixMicro() - c.micros(received)
	c.mu.Lock()
	c.off = off
	c.mu.Unlock()
}

// toRedis converts a local time to Redis's clock, in microseconds.
func (c *clock) toRedis(t time.Time) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.micros(t) + c.off + c.skew
}

// sampleClock asks Redis for its time through client and records a sample;
// in the same round trip it reads the cluster's epoch and sequence from the
// meta hash for Latest.
func (b *Broker) sampleClock(ctx context.Context, client redis.UniversalClient) error {
	if b.copts != nil {
		return b.rcSampleClocks(ctx, client)
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
	defer cancel()
	var tc *redis.TimeCmd
	var mc *redis.SliceCmd
	_, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
		tc = p.Time(ctx)
		mc = p.HMGet(ctx, b.metaKey, "epoch", "seq")
		return nil
	})
	received := time.Now()
	rt, terr := tc.Result()
	if terr != nil {
		return terr
	}
	if err != nil {
		return err
	}
	b.clock.set(rt, received)
	if v := mc.Val(); len(v) == 2 {
		epoch, _ := v[0].(string)
		seqText, _ := v[1].(string)
		if seq, err := strconv.ParseUint(seqText, 10, 64); err == nil && epoch != "" {
			b.note(epoch, seq, true)
		}
	}
	return nil
}

// healthLoop probes Redis every HealthInterval with TIME (bounded by
// PublishTimeout; on a cluster every master, with its cluster_state), at
// most DefaultHealthInterval apart while the last probe failed, and at once
// when a connection to Redis failed (kick),
// and keeps the outcome for Ready and for the publishes, which fail at
// once, sending nothing, while Redis does not answer. Each answer is also a
// clock sample and a reading of the cluster's epoch and sequence.
func (b *Broker) healthLoop() {
	defer b.wg.Done()
	t := time.NewTimer(b.opts.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		case <-b.probeNow:
		}
		err := b.sampleClock(b.ctx, b.probe)
		if b.ctx.Err() != nil {
			return
		}
		b.setHealth(err)
		// while Redis fails, probe again soon whatever the interval: a
		// node must not refuse publishes for longer than Redis does
		next := b.opts.HealthInterval
		if err != nil {
			next = min(next, DefaultHealthInterval)
		}
		t.Stop()
		t.Reset(next)
	}
}

// kick asks the health loop for a probe now (a connection failed).
func (b *Broker) kick() {
	select {
	case b.probeNow <- struct{}{}:
	default:
	}
}

func (b *Broker) setHealth(err error) {
	old := b.healthErr()
	if err != nil {
		err = fmt.Errorf("redis unresponsive: %w", err)
		b.opts.Metrics.Error(OpHealth)
		if old == nil {
			b.log.Warn("redis health probe failed", "err", err)
		}
	} else if old != nil {
		b.log.Info("redis answers again")
	}
	b.health.Store(&err)
}

// healthErr is the last probe's error (nil: healthy).
func (b *Broker) healthErr() error {
	if p := b.health.Load(); p != nil {
		return *p
	}
	return nil
}
