package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/hubd/hub/internal/idem"
)

// IdempotencyStore remembers the answers of accepted broadcasts by
// idempotency key and holds in-flight claims, so that a key publishes once
// (see idem.Store). The API scopes keys by caller before they reach the
// store. A store shared by several nodes (NewRedisIdempotency) gives that
// guarantee across the nodes; without one (Options.Idempotency nil) each
// node remembers its own keys in memory.
type IdempotencyStore = idem.Store[json.RawMessage]

// Timing of the idempotency keys. Every call to the store is bounded by
// the publish's context (the publish timeout), so a hung store delays an
// answer no longer than a hung broker does.
const (
	// idemClaimTTLFactor times the publish timeout is a claim's lifetime:
	// longer than the claimant holds it (the claim, the publish and the
	// Put all end within one publish timeout), and short, so that a claim
	// whose Release was lost with a hung Redis blocks a retry briefly.
	// The claim only saves duplicate work: that a key publishes once rests
	// on the broker's marker of the key (hub.WithIdempotencyKey).
	idemClaimTTLFactor = 3
	// idemPollEvery is how often a request whose key is in flight on
	// another node looks for the answer.
	idemPollEvery = 50 * time.Millisecond
	// idemMaxWait bounds that wait (and so does the publish's context);
	// then the answer is 409 in_flight.
	idemMaxWait = 10 * time.Second
	// idemSettleMin is the least time given to the Put or Release after a
	// publish that used up its context.
	idemSettleMin = 50 * time.Millisecond
	codeInFlight  = "in_flight"
)

var (
	errIdemStore = &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable",
		Message: "the idempotency store is unreachable; the event was not accepted", broker: true}
	errInFlight = &apiError{Status: http.StatusConflict, Code: codeInFlight,
		Message: "a request with this idempotencyKey is still in flight; retry in a moment"}
	errGaveUp = &apiError{Status: http.StatusInternalServerError, Code: codeInternal,
		Message: "gave up waiting for a concurrent request with the same idempotencyKey"}
)

// newOnce runs publishes at most once per key over s (an in-memory store
// of MaxIdempotencyKeys keys when nil).
func newOnce(s IdempotencyStore, log *slog.Logger, publishTimeout time.Duration) *idem.Once[json.RawMessage] {
	if s == nil {
		s = idem.NewMemory[json.RawMessage](MaxIdempotencyKeys)
	}
	return &idem.Once[json.RawMessage]{Store: s, TTL: IdempotencyTTL, ClaimTTL: idemClaimTTLFactor * publishTimeout,
		Poll: idemPollEvery, Wait: idemMaxWait, Settle: idemSettleMin, Log: log, Scope: "api"}
}

// once returns the stored answer of key, or publishes and stores the
// answer when the publish succeeds. Nothing else is remembered: not a 503
// (nothing was published), nor an unknown outcome (a retry then finds the
// broker's marker of the key).
func (a *API) once(ctx context.Context, key string, publish func() (json.RawMessage, *apiError)) (json.RawMessage, *apiError) {
	var failed *apiError
	answer, err := a.idem.Do(ctx, key, func() (json.RawMessage, bool) {
		answer, e := publish()
		failed = e
		return answer, e == nil && answer != nil
	})
	switch {
	case errors.Is(err, idem.ErrStore):
		return nil, errIdemStore
	case errors.Is(err, idem.ErrInFlight):
		return nil, errInFlight
	case err != nil:
		return nil, errGaveUp
	case failed != nil:
		return nil, failed
	}
	return answer, nil
}
