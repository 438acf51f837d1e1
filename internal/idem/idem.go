// Package idem remembers idempotency keys: the broadcast API's answers and
// the upstream's outcomes. A Store keeps, per key, a settled value and an
// in-flight claim, both with a TTL; Memory keeps them in the process, Redis
// shares them between the nodes of a cluster. Once runs an operation at
// most once per key over a Store.
package idem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Store remembers values by key and holds in-flight claims, so that the
// operation of a key runs once. Callers scope keys (by caller, by user)
// before they reach the store.
//
// Implementations are safe for concurrent use. For an operation, Once
// calls Get; when there is no value, Claim; the claimant runs the
// operation and then either Put (which also ends the claim) or Release
// (nothing remembered). A caller that finds neither a value nor the claim
// waits and tries again.
type Store[V any] interface {
	// Get returns the value stored for key, if any.
	Get(ctx context.Context, key string) (V, bool, error)
	// Claim marks key as in flight for at most ttl (so that a claimant
	// that died does not hold it forever). It reports false when key
	// already has a value or a live claim.
	Claim(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// Put stores the value of key for ttl and ends its claim.
	Put(ctx context.Context, key string, v V, ttl time.Duration) error
	// Release ends the claim of key without storing a value.
	Release(ctx context.Context, key string) error
}

var (
	// ErrStore is returned by Once.Do when the store failed before the
	// operation ran: nothing was done.
	ErrStore = errors.New("idempotency store unavailable")
	// ErrInFlight is returned by Once.Do when the key stayed claimed by
	// another call for longer than Wait.
	ErrInFlight = errors.New("idempotency key in flight")
)

// Once runs an operation at most once per key over Store. Calls of this
// process waiting for a key claimed here are woken when it settles; a key
// claimed elsewhere (another node, through a shared store) is polled.
type Once[V any] struct {
	Store Store[V]
	// TTL is how long a settled value is kept.
	TTL time.Duration
	// ClaimTTL bounds how long a claim outlives a claimant that died.
	ClaimTTL time.Duration
	// Poll is how often a key claimed elsewhere is looked at again.
	Poll time.Duration
	// Wait bounds how long a call waits for a key in flight (ErrInFlight);
	// so does the context's deadline.
	Wait time.Duration
	// Settle is the least time given to the Put or Release after the
	// operation (the context's deadline, when later, bounds it).
	Settle time.Duration
	// Log receives store failures (with the scope attribute Scope).
	Log   *slog.Logger
	Scope string

	mu       sync.Mutex
	inflight map[string]chan struct{} // key -> closed when settled here
}

// Do returns the value stored for key, or claims key and runs op. op
// reports whether its value is to be remembered (keep); a value that is
// not kept is returned to this caller only and the next call with key runs
// op again. The error is ErrStore (nothing ran), ErrInFlight (also when
// ctx's deadline passes while waiting), or ctx's error when it is
// cancelled while waiting; op's own failures are its value's business.
// Every store call is bounded by ctx.
func (o *Once[V]) Do(ctx context.Context, key string, op func() (v V, keep bool)) (V, error) {
	var zero V
	deadline := time.Now().Add(o.Wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		v, ok, err := o.Store.Get(ctx, key)
		if err != nil {
			o.logFailure("get", err)
			return zero, fmt.Errorf("%w: %w", ErrStore, err)
		}
		if ok {
			return v, nil
		}
		claimed, err := o.Store.Claim(ctx, key, o.ClaimTTL)
		if err != nil {
			o.logFailure("claim", err)
			return zero, fmt.Errorf("%w: %w", ErrStore, err)
		}
		if claimed {
			return o.run(ctx, key, op), nil
		}
		if !time.Now().Before(deadline) {
			return zero, ErrInFlight
		}
		o.mu.Lock()
		done := o.inflight[key] // nil when claimed elsewhere: poll
		o.mu.Unlock()
		t := time.NewTimer(min(o.Poll, time.Until(deadline)))
		select {
		case <-done:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return zero, ErrInFlight
			}
			return zero, ctx.Err()
		}
		t.Stop()
	}
}

// run runs op for the claimed key and settles the claim, within ctx's
// deadline but with at least Settle for the settling, and whether or not
// ctx is cancelled meanwhile.
func (o *Once[V]) run(ctx context.Context, key string, op func() (V, bool)) V {
	done := make(chan struct{})
	o.mu.Lock()
	if o.inflight == nil {
		o.inflight = make(map[string]chan struct{})
	}
	o.inflight[key] = done
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		delete(o.inflight, key)
		o.mu.Unlock()
		close(done)
	}()
	v, keep := op()
	settleBy := time.Now().Add(o.Settle)
	if d, ok := ctx.Deadline(); ok && d.After(settleBy) {
		settleBy = d
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), settleBy)
	defer cancel()
	if !keep {
		if err := o.Store.Release(ctx, key); err != nil {
			o.logFailure("release", err)
		}
		return v
	}
	if err := o.Store.Put(ctx, key, v, o.TTL); err != nil {
		// the operation ran: answer it; a repeat may run it again
		o.logFailure("put", err)
	}
	return v
}

func (o *Once[V]) logFailure(op string, err error) {
	if o.Log != nil {
		o.Log.Warn("idempotency store failed", "scope", o.Scope, "op", op, "err", err)
	}
}
