// Package upstream carries operations from devices to the application's
// backend: hub.send frames on WebSocket and POST /api/send for everyone else
// (SSE clients). Each operation is validated, rate limited, signed with
// HMAC-SHA256 and posted to HUB_UPSTREAM_URL; the backend's answer goes back
// as hub.ack or hub.nack. Final outcomes are remembered per user and
// idempotency key for 10 minutes, so a device that resends after a lost ack
// never makes the backend apply an operation twice.
package upstream

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/httpx"
	"github.com/hubd/hub/internal/idem"
)

// Defaults and fixed limits.
const (
	// DefaultTimeout is the time allowed for one backend call.
	DefaultTimeout = 5 * time.Second
	// DefaultRate is the number of sends per second per connection.
	DefaultRate = 20
	// DefaultMaxPayload is the largest hub.send frame or /api/send body.
	DefaultMaxPayload = 64 << 10
	// IdempotencyTTL is how long a final outcome is remembered.
	IdempotencyTTL = 10 * time.Minute
	// MaxInflightPerConn bounds the operations of one WebSocket connection
	// waiting for the backend; beyond it sends are nacked rate_limited.
	MaxInflightPerConn = 8
	// MaxKeyLen is the longest idempotency key, in bytes.
	MaxKeyLen = 256
	// MaxRefLen is the longest ref, in bytes.
	MaxRefLen = 256
	// maxResult bounds the backend answer read; a longer 2xx answer is
	// acked with a null result.
	maxResult = 1 << 20
	// pollEvery is how often a repeated key whose first call is in flight on
	// another node looks for the outcome.
	pollEvery = 50 * time.Millisecond
	// claimSlack is added to the timeout for the in-flight claim's lifetime
	// and for how long a repeat waits for the first call.
	claimSlack = 2 * time.Second
)

// Nack codes.
const (
	CodeDisabled       = "upstream_disabled"
	CodeInvalidRequest = "invalid_request"
	// CodeInvalidJSON is a body or frame that is not valid UTF-8.
	CodeInvalidJSON = "invalid_json"
	// CodeUnsupportedMediaType is a POST /api/send body that is not
	// application/json.
	CodeUnsupportedMediaType = httpx.CodeUnsupportedMediaType
	CodePayloadTooLarge      = "payload_too_large"
	CodeRateLimited          = "rate_limited"
	CodeTimeout              = "upstream_timeout"
	CodeUnavailable          = "upstream_unavailable"
	CodeError                = "upstream_error"
	CodeRejected             = "upstream_rejected"
	CodeInFlight             = "in_flight"
	CodeShuttingDown         = "shutting_down"
	signatureHeader          = "X-Hub-Signature"
	sendType                 = "hub.send"
	userLimitPrefix          = "u:"
	connLimitPrefix          = "c:"
)

// Options configure an Upstream. Zero values are the documented defaults.
type Options struct {
	// URL receives the operations (HUB_UPSTREAM_URL); "" disables upstream.
	URL string
	// Secret signs each call: X-Hub-Signature: sha256=<hex HMAC-SHA256(body)>
	// (HUB_UPSTREAM_SECRET).
	Secret string
	// Timeout bounds one backend call (HUB_UPSTREAM_TIMEOUT, default 5s).
	Timeout time.Duration
	// Rate is the number of sends per second per WebSocket connection, and
	// per user on POST /api/send (HUB_SEND_RATE, default 20); the burst is
	// twice that. Negative means unlimited.
	Rate float64
	// MaxPayload is the largest hub.send frame and /api/send body
	// (HUB_MAX_PAYLOAD, default 64 KiB).
	MaxPayload int64
	// Auth authenticates POST /api/send (a user token).
	Auth *auth.Verifier
	// AllowedOrigins are the HUB_ALLOWED_ORIGINS patterns (see
	// httpx.OriginAllowed): a POST /api/send authenticated by the cookie
	// whose Origin is not allowed by them is refused (403
	// origin_not_allowed). Empty allows the request's own host only.
	AllowedOrigins []string
	// HTTPClient calls the backend; nil means a client of its own that does
	// not follow redirects. The timeout comes from Timeout either way.
	HTTPClient *http.Client
	// Logger receives failures (default slog.Default()).
	Logger *slog.Logger
	// Store remembers outcomes and in-flight claims; nil means an in-memory
	// store of idem.DefaultMaxEntries entries (per process: give every
	// node the same shared store, such as NewRedisStore, for the guarantee
	// to hold across nodes).
	Store IdempotencyStore
}

// Upstream sends operations to the backend. It owns one goroutine per
// WebSocket operation in flight; Close waits for them.
type Upstream struct {
	o       Options
	log     *slog.Logger
	client  *http.Client
	ownedTr *http.Transport
	once    *idem.Once[Outcome]
	lim     *limiter
	ctx     context.Context // cancelled by Close: ends waits for other calls
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	closed  bool
}

// New returns an Upstream for o; it starts nothing until operations come.
func New(o Options) *Upstream {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Rate == 0 {
		o.Rate = DefaultRate
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Store == nil {
		o.Store = idem.NewMemory[Outcome](0)
	}
	u := &Upstream{o: o, log: o.Logger, lim: newLimiter(o.Rate)}
	u.once = &idem.Once[Outcome]{Store: o.Store, TTL: IdempotencyTTL, ClaimTTL: o.Timeout + claimSlack,
		Poll: pollEvery, Wait: o.Timeout + claimSlack, Settle: claimSlack, Log: o.Logger, Scope: "upstream"}
	u.client = o.HTTPClient
	if u.client == nil {
		u.ownedTr = http.DefaultTransport.(*http.Transport).Clone()
		u.client = &http.Client{
			Transport:     u.ownedTr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	return u
}

// Enabled reports whether an upstream URL is configured.
func (u *Upstream) Enabled() bool { return u.o.URL != "" }

// Close refuses new operations, ends the waits for calls made by others and
// waits for the backend calls in flight (each bounded by Timeout). It is
// safe to call more than once.
func (u *Upstream) Close() {
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
	u.cancel()
	u.wg.Wait()
	if u.ownedTr != nil {
		u.ownedTr.CloseIdleConnections()
	}
}

// begin registers one operation with the WaitGroup; false after Close.
func (u *Upstream) begin() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false
	}
	u.wg.Add(1)
	return true
}

// request is a parsed operation.
type request struct {
	Ref            string
	IdempotencyKey string
	EventType      string
	Payload        json.RawMessage
}

// wire is the operation as sent by a client (hub.send frame or /api/send).
type wire struct {
	Ref            json.RawMessage `json:"ref"`
	IdempotencyKey json.RawMessage `json:"idempotencyKey"`
	Event          json.RawMessage `json:"event"`
}

type wireEvent struct {
	Type    json.RawMessage `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// parse decodes and validates an operation. The ref is returned even when
// the rest is invalid (so the nack can carry it). needRef is true on
// WebSocket, where the ref pairs an answer with its send.
func parse(data []byte, needRef bool) (request, *Outcome) {
	var req request
	if !utf8.Valid(data) {
		// encoding/json would swap in U+FFFD, and the payload goes to the
		// backend as it is: never pass invalid UTF-8 on
		return req, nack(CodeInvalidJSON, "the body is not valid UTF-8", false)
	}
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		return req, invalid("the body must be a JSON object")
	}
	ref, refOK := str(w.Ref)
	if refOK {
		req.Ref = ref
	}
	switch {
	case w.Ref != nil && !refOK && !isNull(w.Ref):
		return req, invalid("ref must be a string")
	case needRef && req.Ref == "":
		return req, invalid("ref is required")
	case len(req.Ref) > MaxRefLen:
		req.Ref = ""
		return req, invalid(fmt.Sprintf("ref must be at most %d bytes", MaxRefLen))
	}
	key, ok := str(w.IdempotencyKey)
	if !ok || key == "" {
		return req, invalid("idempotencyKey is required (a string)")
	}
	if err := validateKey(key); err != nil {
		return req, invalid("idempotencyKey " + err.Error())
	}
	req.IdempotencyKey = key
	var ev wireEvent
	if len(w.Event) == 0 || isNull(w.Event) || w.Event[0] != '{' || json.Unmarshal(w.Event, &ev) != nil {
		return req, invalid("event is required (an object with type and payload)")
	}
	typ, ok := str(ev.Type)
	if !ok || typ == "" {
		return req, invalid("event.type is required (a string)")
	}
	if err := hub.ValidateType(typ); err != nil {
		return req, invalid("event.type " + err.Error())
	}
	req.EventType = typ
	req.Payload = ev.Payload
	if len(bytes.TrimSpace(req.Payload)) == 0 {
		req.Payload = json.RawMessage("null")
	}
	return req, nil
}

func str(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// validateKey checks an idempotency key: 1 to MaxKeyLen bytes of printable
// ASCII (space included).
func validateKey(k string) error {
	if k == "" || len(k) > MaxKeyLen {
		return fmt.Errorf("must be 1 to %d bytes", MaxKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < ' ' || k[i] > '~' {
			return errors.New("must be printable ASCII")
		}
	}
	return nil
}

func nack(code, msg string, retryable bool) *Outcome {
	return &Outcome{Code: code, Message: msg, Retryable: retryable}
}

func invalid(msg string) *Outcome { return nack(CodeInvalidRequest, msg, false) }

var (
	outDisabled     = nack(CodeDisabled, "no upstream is configured on this hub", false)
	outRateLimited  = nack(CodeRateLimited, "too many sends; retry in a moment", true)
	outShuttingDown = nack(CodeShuttingDown, "the hub is shutting down; retry on another connection", true)
	outInFlight     = nack(CodeInFlight, "an operation with this idempotencyKey is still in flight; retry in a moment", true)
	outMediaType    = nack(CodeUnsupportedMediaType, httpx.MediaTypeMessage, false)
)

// ackPayload and nackPayload are the payloads of hub.ack and hub.nack (and
// the bodies of /api/send answers).
type ackPayload struct {
	Ref    string          `json:"ref"`
	Status int             `json:"status"`
	Result json.RawMessage `json:"result"`
}

type nackPayload struct {
	Ref       string          `json:"ref"`
	Retryable bool            `json:"retryable"`
	Status    int             `json:"status,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     nackError       `json:"error"`
}

type nackError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// payload returns the ack or nack payload of o under ref.
func (o *Outcome) payload(ref string) any {
	if o.Ack {
		return ackPayload{Ref: ref, Status: o.Status, Result: o.Result}
	}
	return nackPayload{Ref: ref, Retryable: o.Retryable, Status: o.Status, Result: o.Result,
		Error: nackError{Code: o.Code, Message: o.Message}}
}

func (o *Outcome) message(ref string) *hub.Message {
	if o.Ack {
		return hub.Control("hub.ack", o.payload(ref))
	}
	return hub.Control("hub.nack", o.payload(ref))
}

// HandleWS is the ws.Options.OnMessage hook. For "hub.send" it validates the
// frame, answers hub.ack or hub.nack on c and returns true; the backend call
// runs in a goroutine of the Upstream, so the reader never waits for it, and
// answers may come in another order than the sends (each carries its ref).
// Other types return false.
func (u *Upstream) HandleWS(c *hub.Conn, typ string, frame []byte) bool {
	if typ != sendType {
		return false
	}
	req, bad := parse(frame, true)
	switch {
	case !u.Enabled():
		c.Send(outDisabled.message(req.Ref))
		return true
	case bad != nil:
		c.Send(bad.message(req.Ref))
		return true
	}
	lkey := connLimitPrefix + c.ID()
	if !u.lim.acquire(lkey, MaxInflightPerConn) {
		c.Send(outRateLimited.message(req.Ref))
		return true
	}
	if !u.begin() {
		u.lim.release(lkey)
		c.Send(outShuttingDown.message(req.Ref))
		return true
	}
	go func() {
		defer u.wg.Done()
		defer u.lim.release(lkey)
		o := u.do(u.ctx, c.UserID(), c.ID(), req)
		c.Send(o.message(req.Ref))
	}()
	return true
}

// storeKey scopes an idempotency key by user.
func storeKey(user, key string) string {
	return strconv.Itoa(len(user)) + ":" + user + ":" + key
}

// do answers one operation: from the store when its key has a final
// outcome, else by calling the backend once (a repeat of a key in flight
// waits for the first call's outcome, up to Timeout plus a little). A
// final outcome is stored, a retryable one is not.
func (u *Upstream) do(ctx context.Context, user, connID string, req request) *Outcome {
	o, err := u.once.Do(ctx, storeKey(user, req.IdempotencyKey), func() (Outcome, bool) {
		o := u.call(user, connID, req)
		return *o, !o.Retryable
	})
	switch {
	case errors.Is(err, idem.ErrStore):
		return nack(CodeUnavailable, "the idempotency store is unavailable", true)
	case err != nil:
		return outInFlight
	}
	return &o
}

// backendBody is what the backend receives.
type backendBody struct {
	UserID         string       `json:"userId"`
	ConnectionID   string       `json:"connectionId,omitempty"`
	IdempotencyKey string       `json:"idempotencyKey"`
	Event          backendEvent `json:"event"`
}

type backendEvent struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// Sign returns the X-Hub-Signature value of body under secret:
// "sha256=" and the hex HMAC-SHA256.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// call posts the operation to the backend and maps its answer.
func (u *Upstream) call(user, connID string, req request) *Outcome {
	body, err := json.Marshal(backendBody{
		UserID: user, ConnectionID: connID, IdempotencyKey: req.IdempotencyKey,
		Event: backendEvent{Type: req.EventType, Payload: req.Payload},
	})
	if err != nil { // the payload was checked as JSON: should not happen
		return invalid("the payload is not valid JSON")
	}
	ctx, cancel := context.WithTimeout(context.Background(), u.o.Timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u.o.URL, bytes.NewReader(body))
	if err != nil {
		u.log.Error("upstream request", "err", err)
		return nack(CodeUnavailable, "the upstream URL is unusable", true)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set(signatureHeader, Sign(u.o.Secret, body))
	hr.Header.Set("User-Agent", "hub-upstream")
	resp, err := u.client.Do(hr)
	if err != nil {
		if isTimeout(ctx, err) {
			u.log.Warn("upstream call timed out", "user", user, "timeout", u.o.Timeout)
			return nack(CodeTimeout, "the backend did not answer in time", true)
		}
		u.log.Warn("upstream call failed", "user", user, "err", err)
		return nack(CodeUnavailable, "the backend could not be reached", true)
	}
	defer resp.Body.Close()
	data, rerr := io.ReadAll(io.LimitReader(resp.Body, maxResult+1))
	st := resp.StatusCode
	result := jsonResult(data, rerr)
	switch {
	case st >= 200 && st < 300:
		return &Outcome{Ack: true, Status: st, Result: result}
	case st >= 400 && st < 500:
		return &Outcome{Status: st, Result: result, Code: CodeRejected,
			Message: fmt.Sprintf("the backend refused the operation (HTTP %d)", st)}
	case st >= 500:
		u.log.Warn("upstream backend error", "user", user, "status", st)
		return &Outcome{Status: st, Retryable: true, Code: CodeError,
			Message: fmt.Sprintf("the backend failed (HTTP %d)", st)}
	default:
		u.log.Warn("upstream unexpected status", "user", user, "status", st)
		return &Outcome{Status: st, Retryable: true, Code: CodeError,
			Message: fmt.Sprintf("the backend answered an unexpected HTTP %d", st)}
	}
}

// jsonResult returns the backend's answer when it is one whole JSON value
// (compacted), else nil (null).
func jsonResult(data []byte, err error) json.RawMessage {
	if err != nil || len(data) > maxResult || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	var b bytes.Buffer
	if json.Compact(&b, data) != nil {
		return nil
	}
	return b.Bytes()
}

func isTimeout(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
