package hub

import (
	"errors"
	"fmt"
)

// Reason is why a connection is closed: a WebSocket close code and its text.
// The SSE transport maps it to the end of its stream.
type Reason struct {
	Code int
	Text string
}

func (r Reason) String() string { return fmt.Sprintf("%d %s", r.Code, r.Text) }

// The close reasons of the contract, reason texts as sent.
var (
	ReasonNormal        = Reason{1000, "normal"}
	ReasonShutdown      = Reason{1001, "server shutdown"}
	ReasonTokenExpired  = Reason{4001, "token expired"}
	ReasonUnauthorized  = Reason{4001, "unauthorized"}
	ReasonDisconnected  = Reason{4003, "disconnected by server"}
	ReasonSlowConsumer  = Reason{4008, "slow consumer"}
	ReasonTooManyConns  = Reason{4029, "too many connections"}
	ReasonPongTimeout   = Reason{1001, "ping timeout"}
	ReasonPolicyViolate = Reason{1008, "policy violation"}
)

// Errors returned by Register.
var (
	// ErrShuttingDown: the hub is draining and accepts no new connection.
	ErrShuttingDown = errors.New("hub: shutting down")
	// ErrTooManyConnections: the per-user or per-node limit is reached.
	ErrTooManyConnections = errors.New("hub: too many connections")
)

// LimitError says which limit refused a connection; it matches
// ErrTooManyConnections with errors.Is.
type LimitError struct {
	Scope string // "user" or "node"
	Limit int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("hub: too many connections for this %s (limit %d)", e.Scope, e.Limit)
}

// Is makes errors.Is(err, ErrTooManyConnections) true.
func (e *LimitError) Is(target error) bool { return target == ErrTooManyConnections }
