// Package admit is the admission control for new connections: a node-wide
// token bucket on the connect rate, with a share reserved for resuming
// clients, and a limit of concurrent connections per client IP.
//
// Refusals, as the transports answer them (with Retry-After):
//
//	per-IP limit reached:  429, code "too_many_connections", outcome "ip_limited"
//	node bucket empty:     503, code "overloaded",           outcome "overloaded"
//
// The node bucket answers 503 rather than 429 because the client did nothing
// wrong: the node as a whole is taking connections faster than it allows, and
// another node (or the same one a little later) will take it. Retry-After is
// the time until a token is available for that client behind the clients
// refused before it that have not come due yet (a storm of N refusals at
// rate R is told to come back over N/R seconds, up to 30 s, not all after
// the same second), at least 1 s.
//
// The reserve lets resuming clients in first after a restart: a fresh client
// may take a token only while the bucket holds at least ResumeShare*Burst
// tokens after the take; a resuming client may take any token.
package admit

import (
	"context"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/hubd/hub/internal/httpx"
)

// Refusal codes and statuses, and the outcomes given to Options.Observe.
const (
	CodeTooManyConnections = "too_many_connections"
	CodeOverloaded         = "overloaded"

	StatusIPLimited  = http.StatusTooManyRequests
	StatusOverloaded = http.StatusServiceUnavailable

	OutcomeAdmitted   = "admitted"
	OutcomeIPLimited  = "ip_limited"
	OutcomeOverloaded = "overloaded"
)

// MinRetryAfter is the least Retry-After of a refusal.
const MinRetryAfter = time.Second

// Options configure a Controller. The zero value admits everything.
type Options struct {
	// Rate is the number of new connections per second node-wide
	// (HUB_CONNECT_RATE); 0 means unlimited.
	Rate float64
	// Burst is the bucket size (HUB_CONNECT_BURST); 0 means max(1, 2*Rate).
	Burst int
	// PerIP is the most concurrent connections of one client IP
	// (HUB_MAX_CONNECTIONS_PER_IP); 0 means unlimited.
	PerIP int
	// ResumeShare is the fraction of the bucket reserved for resuming
	// clients: a fresh client is admitted only if the bucket still holds
	// ResumeShare*Burst tokens after its take. 0 means the default 0.5; a
	// negative value reserves nothing; it is capped so that a full bucket
	// always admits at least one fresh client.
	ResumeShare float64
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Observe, when set, is told every decision's outcome (OutcomeAdmitted,
	// OutcomeIPLimited, OutcomeOverloaded), e.g. metrics.Metrics.Admission.
	// It is called without any lock held and must not block.
	Observe func(outcome string)
}

// Controller decides whether a new connection is admitted. It is safe for
// concurrent use. A nil *Controller admits everything.
type Controller struct {
	rate    float64
	burst   float64
	reserve float64
	perIP   int
	now     func() time.Time
	observe func(string)

	mu     sync.Mutex
	tokens float64
	// owed counts the refused clients told to come back that are not due
	// yet: each refusal adds one, time pays them off at rate. A refusal's
	// Retry-After places it behind them.
	owed float64
	last time.Time
	byIP map[string]int
}

// New builds a Controller; its bucket starts full.
func New(o Options) *Controller {
	if o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0) {
		o.Rate = 0
	}
	if o.PerIP < 0 {
		o.PerIP = 0
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Controller{
		rate:    o.Rate,
		perIP:   o.PerIP,
		now:     o.Now,
		observe: o.Observe,
		byIP:    make(map[string]int),
	}
	if c.rate > 0 {
		burst := o.Burst
		if burst <= 0 {
			burst = max(1, int(math.Ceil(2*o.Rate)))
		}
		c.burst = float64(burst)
		share := o.ResumeShare
		switch {
		case share == 0 || math.IsNaN(share):
			share = 0.5
		case share < 0:
			share = 0
		}
		c.reserve = min(share*c.burst, c.burst-1)
		c.tokens = c.burst
		c.last = c.now()
	}
	return c
}

// Admit is an admission hook for endpoints whose handler lasts as long as
// the connection (it fits sse.Options.Admit). When it admits a connection
// under a per-IP limit, the IP's slot is given back when r's context ends:
// for a server request, when the handler returns or the client goes away.
// The hub's own endpoints take their connections over from net/http and
// return from the handler at once (every WebSocket, every HTTP/1.1 SSE
// stream), so they use Acquire and release the slot when the connection
// ends; so must any request whose context never ends (context.Background).
func (c *Controller) Admit(r *http.Request, resuming bool) (ok bool, status int, code string, retryAfter time.Duration) {
	release, ok, status, code, retryAfter := c.Acquire(httpx.ClientIP(r), resuming)
	if ok && c != nil && c.perIP > 0 {
		context.AfterFunc(r.Context(), release)
	}
	return ok, status, code, retryAfter
}

// Acquire decides on a new connection from ip. When ok, release must be
// called once the connection ends (it gives back the IP's slot; calling it
// again does nothing). When refused, release is nil and status, code and
// retryAfter (at least MinRetryAfter) say how to answer.
func (c *Controller) Acquire(ip string, resuming bool) (release func(), ok bool, status int, code string, retryAfter time.Duration) {
	if c == nil {
		return func() {}, true, 0, "", 0
	}
	outcome := OutcomeAdmitted
	c.mu.Lock()
	switch {
	case c.perIP > 0 && c.byIP[ip] >= c.perIP:
		outcome, status, code, retryAfter = OutcomeIPLimited, StatusIPLimited, CodeTooManyConnections, MinRetryAfter
	default:
		if wait, taken := c.take(resuming); !taken {
			outcome, status, code = OutcomeOverloaded, StatusOverloaded, CodeOverloaded
			retryAfter = max(wait, MinRetryAfter)
		} else if c.perIP > 0 {
			c.byIP[ip]++
		}
	}
	c.mu.Unlock()
	if c.observe != nil {
		c.observe(outcome)
	}
	if outcome != OutcomeAdmitted {
		return nil, false, status, code, retryAfter
	}
	if c.perIP == 0 {
		return func() {}, true, 0, "", 0
	}
	var once sync.Once
	return func() { once.Do(func() { c.release(ip) }) }, true, 0, "", 0
}

// epsilon absorbs the float error of many small refills, so that a bucket
// refilled to exactly one more token is seen as such.
const epsilon = 1e-9

// take refills the bucket and takes a token if the client may have one;
// otherwise it returns how long until it may. c.mu is held.
func (c *Controller) take(resuming bool) (wait time.Duration, ok bool) {
	if c.rate == 0 {
		return 0, true
	}
	now := c.now()
	if el := now.Sub(c.last); el > 0 {
		c.tokens = min(c.burst, c.tokens+el.Seconds()*c.rate)
		c.owed = max(0, c.owed-el.Seconds()*c.rate)
	}
	c.last = now
	floor := 0.0 // tokens that must remain after the take
	if !resuming {
		floor = c.reserve
	}
	if c.tokens-1 >= floor-epsilon {
		c.tokens--
		return 0, true
	}
	need := max(floor+1-c.tokens, 0) + c.owed
	c.owed = min(c.owed+1, maxOwed*c.rate)
	return time.Duration(math.Ceil(need / c.rate * float64(time.Second))), false
}

// maxOwed bounds, in seconds of the rate, how far ahead refusals are
// spread: no client is told to wait longer than that behind others.
const maxOwed = 30

func (c *Controller) release(ip string) {
	c.mu.Lock()
	if n := c.byIP[ip]; n <= 1 {
		delete(c.byIP, ip)
	} else {
		c.byIP[ip] = n - 1
	}
	c.mu.Unlock()
}

// Connections returns the connections of ip currently counted against the
// per-IP limit.
func (c *Controller) Connections(ip string) int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byIP[ip]
}
