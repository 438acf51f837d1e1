// Package client is the Go client of the hub's service API: publish events to
// users (POST /api/broadcast), publish batches (POST /api/broadcast/batch),
// disconnect a user (POST /api/users/{userId}/disconnect), list a user's
// connections (GET /api/users/{userId}/connections) and read the node's
// stats (GET /api/websocket/stats), as described in docs/PROTOCOL.md.
//
// A Client is safe for concurrent use. Every error answer of the hub comes
// back as an *Error carrying the HTTP status and the contract's error code;
// use errors.As or IsCode to inspect it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// MaxBatch is the largest number of messages the hub accepts in one batch.
const MaxBatch = 1000

// maxAnswer bounds the size of an answer body read from the hub.
const maxAnswer = 64 << 20

// Client calls the hub's service API. Build it with New.
type Client struct {
	base   string
	apiKey string
	token  string
	http   *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithAPIKey authenticates every request with key in the X-API-Key header.
func WithAPIKey(key string) Option { return func(c *Client) { c.apiKey = key } }

// WithToken authenticates every request with a JWT in the Authorization
// header (roles service or admin; Stats needs admin).
func WithToken(jwt string) Option { return func(c *Client) { c.token = jwt } }

// WithHTTPClient makes the Client send its requests with hc instead of
// http.DefaultClient.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// New returns a Client of the hub at baseURL (for example
// "http://localhost:8080"; a trailing slash is ignored).
func New(baseURL string, opts ...Option) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), http: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		c.http = http.DefaultClient
	}
	return c
}

// UserEvent is the id the hub gave to the event of one user, and the
// number of the user's connections, cluster-wide, that were live when it
// was published (0: the user is offline now; the event waits in the
// history, and a push notification may be the way to reach the user).
type UserEvent struct {
	UserID  string `json:"userId"`
	ID      string `json:"id"`
	Devices int    `json:"devices"`
}

// PublishOption configures one publish.
type PublishOption func(*publishOptions)

type publishOptions struct {
	idem     string
	key      string
	volatile bool
}

// IdempotencyKey makes a publish idempotent: a repeated key within 10
// minutes (per caller) returns the first answer and publishes nothing new.
func IdempotencyKey(key string) PublishOption {
	return func(o *publishOptions) { o.idem = key }
}

// Keyed gives the event a coalescing key (the syntax of a type, e.g.
// "draft:42"): the events to one user with the same key supersede each
// other in that user's history, so a device that resumes gets only the
// newest of them. Live delivery is unchanged, and the envelope carries the
// key. Not together with Volatile (the hub answers 400).
func Keyed(key string) PublishOption {
	return func(o *publishOptions) { o.key = key }
}

// Volatile makes the event volatile: it reaches the connections live now
// and is never stored, so no resume replays it (a "typing" indicator). It
// still gets an id.
func Volatile() PublishOption {
	return func(o *publishOptions) { o.volatile = true }
}

// Message is one broadcast: to UserIDs, or to every user when All is set.
// Payload is encoded with encoding/json (a json.RawMessage is sent as is; nil
// is JSON null). Key and Volatile are the options Keyed and Volatile.
type Message struct {
	UserIDs        []string
	All            bool
	Type           string
	Payload        any
	IdempotencyKey string
	Key            string
	Volatile       bool
}

// wireMessage is a broadcast body as the hub reads it.
type wireMessage struct {
	UserIDs        []string `json:"userIds,omitempty"`
	All            bool     `json:"all,omitempty"`
	Type           string   `json:"type"`
	Payload        any      `json:"payload"`
	IdempotencyKey string   `json:"idempotencyKey,omitempty"`
	Key            string   `json:"key,omitempty"`
	Volatile       bool     `json:"volatile,omitempty"`
}

// MarshalJSON encodes m as a broadcast body of the contract.
func (m Message) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireMessage(m))
}

// UnmarshalJSON decodes a broadcast body; the payload is kept as a
// json.RawMessage. Unknown fields are refused.
func (m *Message) UnmarshalJSON(b []byte) error {
	var w struct {
		UserIDs        []string        `json:"userIds"`
		All            bool            `json:"all"`
		Type           string          `json:"type"`
		Payload        json.RawMessage `json:"payload"`
		IdempotencyKey string          `json:"idempotencyKey"`
		Key            string          `json:"key"`
		Volatile       bool            `json:"volatile"`
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&w); err != nil {
		return fmt.Errorf("decode broadcast message: %w", err)
	}
	*m = Message{UserIDs: w.UserIDs, All: w.All, Type: w.Type, IdempotencyKey: w.IdempotencyKey, Key: w.Key, Volatile: w.Volatile}
	if w.Payload != nil {
		m.Payload = w.Payload
	}
	return nil
}

// Publish sends an event of type typ with payload to each of userIDs and
// returns the id of each user's event.
func (c *Client) Publish(ctx context.Context, userIDs []string, typ string, payload any, opts ...PublishOption) ([]UserEvent, error) {
	var o publishOptions
	for _, f := range opts {
		f(&o)
	}
	var answer struct {
		Events []UserEvent `json:"events"`
	}
	m := Message{UserIDs: userIDs, Type: typ, Payload: payload, IdempotencyKey: o.idem, Key: o.key, Volatile: o.volatile}
	if err := c.do(ctx, http.MethodPost, "/api/broadcast", m, &answer); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	return answer.Events, nil
}

// PublishAll sends an event of type typ with payload to every user and
// returns its id (the same for every recipient).
func (c *Client) PublishAll(ctx context.Context, typ string, payload any, opts ...PublishOption) (string, error) {
	var o publishOptions
	for _, f := range opts {
		f(&o)
	}
	var answer struct {
		ID string `json:"id"`
	}
	m := Message{All: true, Type: typ, Payload: payload, IdempotencyKey: o.idem, Key: o.key, Volatile: o.volatile}
	if err := c.do(ctx, http.MethodPost, "/api/broadcast", m, &answer); err != nil {
		return "", fmt.Errorf("publish to all: %w", err)
	}
	return answer.ID, nil
}

// BatchResult is the outcome of one message of a batch: Events for a
// message to users, ID and Devices (the connections live, cluster-wide,
// when it was published) for a message to all, or Err when the hub refused
// that message (the others are still applied).
type BatchResult struct {
	Events  []UserEvent
	ID      string
	Devices int
	Err     *Error
}

// MarshalJSON encodes r as the hub answers it: {"events":[...]},
// {"id":"...","devices":N} or {"error":{"code":"...","message":"..."}}.
func (r BatchResult) MarshalJSON() ([]byte, error) {
	switch {
	case r.Err != nil:
		return json.Marshal(struct {
			Error *Error `json:"error"`
		}{r.Err})
	case r.Events != nil:
		return json.Marshal(struct {
			Events []UserEvent `json:"events"`
		}{r.Events})
	default:
		return json.Marshal(struct {
			ID      string `json:"id"`
			Devices int    `json:"devices"`
		}{r.ID, r.Devices})
	}
}

// UnmarshalJSON decodes one result of a batch answer.
func (r *BatchResult) UnmarshalJSON(b []byte) error {
	var w struct {
		Events  []UserEvent `json:"events"`
		ID      string      `json:"id"`
		Devices int         `json:"devices"`
		Error   *Error      `json:"error"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("decode batch result: %w", err)
	}
	*r = BatchResult{Events: w.Events, ID: w.ID, Devices: w.Devices, Err: w.Error}
	return nil
}

// Batch sends up to MaxBatch messages in one request; the hub applies them
// in order. It returns one result per message, in the same order. An error
// is returned only when the whole request failed; a refused message has its
// Err set (with Status 0: it was not an HTTP answer of its own).
func (c *Client) Batch(ctx context.Context, msgs []Message) ([]BatchResult, error) {
	body := struct {
		Messages []Message `json:"messages"`
	}{msgs}
	var answer struct {
		Results []BatchResult `json:"results"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/broadcast/batch", body, &answer); err != nil {
		return nil, fmt.Errorf("publish batch: %w", err)
	}
	if len(answer.Results) != len(msgs) {
		return answer.Results, fmt.Errorf("publish batch: %d results for %d messages", len(answer.Results), len(msgs))
	}
	return answer.Results, nil
}

// Disconnect closes every connection of userID (close 4003 on WebSocket, end
// of stream on SSE) and returns how many the answering node closed.
func (c *Client) Disconnect(ctx context.Context, userID string) (int, error) {
	var answer struct {
		Closed int `json:"closed"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/users/"+url.PathEscape(userID)+"/disconnect", nil, &answer); err != nil {
		return 0, fmt.Errorf("disconnect: %w", err)
	}
	return answer.Closed, nil
}

// Connection is one live connection of a user, as
// GET /api/users/{userId}/connections lists it.
type Connection struct {
	ConnectionID string    `json:"connectionId"`
	Transport    string    `json:"transport"` // "websocket" or "sse"
	Node         string    `json:"node"`      // the node that holds it
	ConnectedAt  time.Time `json:"connectedAt"`
}

// Connections returns userID's live connections on every node of the hub
// (an empty slice for a user with none), oldest first.
func (c *Client) Connections(ctx context.Context, userID string) ([]Connection, error) {
	var answer struct {
		UserID      string       `json:"userId"`
		Connections []Connection `json:"connections"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/users/"+url.PathEscape(userID)+"/connections", nil, &answer); err != nil {
		return nil, fmt.Errorf("connections: %w", err)
	}
	if answer.Connections == nil {
		answer.Connections = []Connection{}
	}
	return answer.Connections, nil
}

// Stats is a node's connection counts, as GET /api/websocket/stats answers.
type Stats struct {
	TotalConnections int            `json:"totalConnections"`
	ActiveUsers      int            `json:"activeUsers"`
	Connections      map[string]int `json:"connections"`
	Node             string         `json:"node"`
	UptimeSeconds    int64          `json:"uptimeSeconds"`
	// Cluster holds the cluster-wide totals when the hub has a broker.
	Cluster json.RawMessage `json:"cluster,omitempty"`
}

// Stats returns the answering node's stats. It needs a JWT with the admin
// role (WithToken); an API key is answered 403.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	if err := c.do(ctx, http.MethodGet, "/api/websocket/stats", nil, &s); err != nil {
		return Stats{}, fmt.Errorf("stats: %w", err)
	}
	return s, nil
}

// do sends a request with body encoded as JSON (none when nil) and decodes
// a 2xx answer into out; any other answer becomes an *Error.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.apiKey != "" {
		req.Header.Set("X-API-Key", c.apiKey)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err // already names method and URL
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errorFrom(resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode answer (status %d): %w", resp.StatusCode, err)
	}
	return nil
}

// Error is an error answer of the hub: the HTTP status and the contract's
// body {"error":{"code":"...","message":"..."}}. An answer without that body
// (a proxy's page, for example) has Code "unexpected_response".
type Error struct {
	// Status is the HTTP status; 0 for the error of one message of a batch.
	Status int `json:"-"`
	// Code is the contract's error code, for example "invalid_token".
	Code string `json:"code"`
	// Message is the hub's human readable explanation.
	Message string `json:"message"`
}

// CodeUnexpectedResponse is the Code of an error answer that does not carry
// the contract's JSON error body.
const CodeUnexpectedResponse = "unexpected_response"

// Error returns "hub: <status> <code>: <message>".
func (e *Error) Error() string {
	if e.Status == 0 {
		return "hub: " + e.Code + ": " + e.Message
	}
	return fmt.Sprintf("hub: %d %s: %s", e.Status, e.Code, e.Message)
}

// ReadError reads the body of a refused answer (resp.Body, which the
// caller still closes) and returns it as an *Error. It is for callers that
// talk to the hub without a Client, such as a refused WebSocket or SSE
// handshake.
func ReadError(resp *http.Response) *Error {
	var b []byte
	if resp.Body != nil {
		b, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	}
	return errorFrom(resp.StatusCode, b)
}

// errorFrom builds the *Error of a non-2xx answer.
func errorFrom(status int, body []byte) *Error {
	var b struct {
		Error *Error `json:"error"`
	}
	if json.Unmarshal(body, &b) == nil && b.Error != nil && b.Error.Code != "" {
		b.Error.Status = status
		return b.Error
	}
	msg := http.StatusText(status)
	if s := strings.TrimSpace(string(body)); s != "" {
		if len(s) > 200 {
			s = s[:200] + "..."
		}
		msg += ": " + s
	}
	return &Error{Status: status, Code: CodeUnexpectedResponse, Message: msg}
}

// IsCode reports whether err is (or wraps) an *Error with the given code.
func IsCode(err error, code string) bool {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code == code
	}
	return false
}
