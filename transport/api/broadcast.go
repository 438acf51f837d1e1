package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/httpx"
)

// Error codes of the broadcast API (besides the auth ones).
const (
	codeInvalidJSON     = "invalid_json"
	codeInvalidRequest  = "invalid_request"
	codePayloadTooLarge = "payload_too_large"
	codeShuttingDown    = "shutting_down"
	codeInternal        = "internal_error"
	codeRateLimited     = "rate_limited"
)

// apiError is an error answer: status, code and message.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// unknown: the broker may have published (its answer was lost and
	// could not be checked); the call is left without an answer rather
	// than answered 503, which would say it was not published.
	unknown bool
	// broker: the broker failed (nothing was published).
	broker bool
}

func (e *apiError) write(w http.ResponseWriter) {
	httpx.WriteError(w, e.Status, e.Code, e.Message)
}

func invalidRequest(format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: codeInvalidRequest, Message: fmt.Sprintf(format, args...)}
}

// message is one validated broadcast request.
type message struct {
	userIDs []string // nil when all
	all     bool
	typ     string
	payload json.RawMessage
	idem    string           // idempotency key, "" when none
	opts    hub.EventOptions // coalescing key, volatile
}

// broadcastFields are the fields of a broadcast body, in the order their
// errors are reported.
var broadcastFields = []string{"userIds", "all", "type", "payload", "idempotencyKey", "key", "volatile"}

// errMediaType is the answer to a body that is not application/json.
var errMediaType = &apiError{Status: http.StatusUnsupportedMediaType, Code: httpx.CodeUnsupportedMediaType, Message: httpx.MediaTypeMessage}

// readBody reads the request body within the size limit. It answers 415
// for a body without Content-Type: application/json, 413 for a body over
// the limit and 400 invalid_json for an unreadable one (an empty body is
// returned empty, whatever its Content-Type).
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	isJSON := httpx.IsJSON(r.Header)
	if r.ContentLength > 0 && !isJSON {
		return nil, errMediaType
	}
	tooLarge := &apiError{
		Status:  http.StatusRequestEntityTooLarge,
		Code:    codePayloadTooLarge,
		Message: "the request body exceeds " + strconv.FormatInt(a.maxPayload, 10) + " bytes",
	}
	if r.ContentLength > a.maxPayload {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxPayload))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			if !isJSON {
				return nil, errMediaType
			}
			return nil, tooLarge
		}
		return nil, &apiError{Status: http.StatusBadRequest, Code: codeInvalidJSON, Message: "could not read the request body"}
	}
	if len(body) > 0 && !isJSON { // a body of unknown length (chunked)
		return nil, errMediaType
	}
	return body, nil
}

// decodeObject parses body as one JSON object and checks that every key is
// one of fields. A syntax error or a body that is not valid UTF-8 is
// invalid_json, anything else an invalid_request whose message starts with
// prefix (the path of the object). Every later step (the fast paths
// included) works on this body, so none of them can pass invalid UTF-8 on:
// encoding/json would accept it and swap in U+FFFD, and a raw payload
// would carry it into every recipient's frame and the history.
func decodeObject(body []byte, prefix string, fields []string) (map[string]json.RawMessage, *apiError) {
	trimmed := bytes.Trim(body, " \t\r\n") // JSON whitespace only
	if len(trimmed) == 0 {
		return nil, &apiError{Status: http.StatusBadRequest, Code: codeInvalidJSON, Message: "the request body is empty"}
	}
	if !utf8.Valid(trimmed) {
		return nil, &apiError{Status: http.StatusBadRequest, Code: codeInvalidJSON, Message: "the request body is not valid UTF-8"}
	}
	if !json.Valid(trimmed) {
		var v any
		msg := "the request body is not valid JSON"
		if err := json.Unmarshal(trimmed, &v); err != nil {
			msg += ": " + err.Error()
		}
		return nil, &apiError{Status: http.StatusBadRequest, Code: codeInvalidJSON, Message: msg}
	}
	return objectFields(trimmed, prefix, fields)
}

// objectFields splits valid JSON raw into the fields of an object, refusing
// a non-object and unknown (or differently cased) keys.
func objectFields(raw json.RawMessage, prefix string, fields []string) (map[string]json.RawMessage, *apiError) {
	what := "the request body"
	if prefix != "" {
		what = prefix
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, invalidRequest("%s must be a JSON object", what)
	}
	if m, ok := fastFields(raw, fields); ok {
		return m, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalidRequest("%s must be a JSON object", what)
	}
	var unknown []string
	for k := range m {
		if !slices.Contains(fields, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return nil, invalidRequest("%s: unknown field (expected one of %s)", path(prefix, strconv.Quote(unknown[0])), quoteList(fields))
	}
	return m, nil
}

func quoteList(fields []string) string {
	var b []byte
	for i, f := range fields {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, f...)
	}
	return string(b)
}

// path joins a prefix ("messages[2]") and a field name.
func path(prefix, field string) string {
	if prefix == "" {
		return field
	}
	return prefix + "." + field
}

func isNull(raw json.RawMessage) bool {
	return raw == nil || string(raw) == "null"
}

// parseMessage validates one broadcast body (already split into fields);
// prefix is its path in a batch ("" for /api/broadcast).
func parseMessage(f map[string]json.RawMessage, prefix string) (*message, *apiError) {
	m := &message{}

	hasIDs := !isNull(f["userIds"])
	if raw := f["all"]; !isNull(raw) && string(raw) != "false" {
		if string(raw) == "true" {
			m.all = true
		} else if err := json.Unmarshal(raw, &m.all); err != nil {
			return nil, invalidRequest("%s: must be a boolean", path(prefix, "all"))
		}
	}
	switch {
	case hasIDs && m.all:
		return nil, invalidRequest("%s and %s: give exactly one of userIds and all:true, not both", path(prefix, "userIds"), path(prefix, "all"))
	case !hasIDs && !m.all:
		return nil, invalidRequest("%s: required (1 to %d user ids), or all:true", path(prefix, "userIds"), MaxUserIDs)
	case hasIDs:
		raw := f["userIds"]
		if raw[0] != '[' {
			return nil, invalidRequest("%s: must be an array of strings", path(prefix, "userIds"))
		}
		elems, ok := fastArray(raw)
		if !ok {
			if err := json.Unmarshal(raw, &elems); err != nil {
				return nil, invalidRequest("%s: must be an array of strings", path(prefix, "userIds"))
			}
		}
		if len(elems) == 0 || len(elems) > MaxUserIDs {
			return nil, invalidRequest("%s: must hold 1 to %d user ids (got %d)", path(prefix, "userIds"), MaxUserIDs, len(elems))
		}
		m.userIDs = make([]string, len(elems))
		for i, e := range elems {
			if id, ok := simpleString(e); ok {
				m.userIDs[i] = id
			} else if len(e) == 0 || e[0] != '"' || json.Unmarshal(e, &m.userIDs[i]) != nil {
				return nil, invalidRequest("%s[%d]: must be a string", path(prefix, "userIds"), i)
			}
			if id := m.userIDs[i]; id == "" || len(id) > MaxUserIDLen {
				return nil, invalidRequest("%s[%d]: must be 1 to %d bytes", path(prefix, "userIds"), i, MaxUserIDLen)
			}
		}
	}

	raw := f["type"]
	if isNull(raw) {
		return nil, invalidRequest("%s: required", path(prefix, "type"))
	}
	if t, ok := simpleString(raw); ok {
		m.typ = t
	} else if raw[0] != '"' || json.Unmarshal(raw, &m.typ) != nil {
		return nil, invalidRequest("%s: must be a string", path(prefix, "type"))
	}
	if err := hub.ValidateType(m.typ); err != nil {
		return nil, invalidRequest("%s: %v", path(prefix, "type"), err)
	}

	m.payload = f["payload"]
	if m.payload == nil {
		m.payload = json.RawMessage("null")
	}

	if raw := f["idempotencyKey"]; !isNull(raw) {
		if k, ok := simpleString(raw); ok {
			m.idem = k
		} else if raw[0] != '"' || json.Unmarshal(raw, &m.idem) != nil {
			return nil, invalidRequest("%s: must be a string", path(prefix, "idempotencyKey"))
		}
		if m.idem == "" || len(m.idem) > MaxIdempotencyKeyLen {
			return nil, invalidRequest("%s: must be 1 to %d bytes", path(prefix, "idempotencyKey"), MaxIdempotencyKeyLen)
		}
	}

	// The coalescing key has the syntax of a type; volatile is a boolean
	// (false: a plain event); not both.
	if raw := f["key"]; !isNull(raw) {
		if k, ok := simpleString(raw); ok {
			m.opts.Key = k
		} else if raw[0] != '"' || json.Unmarshal(raw, &m.opts.Key) != nil {
			return nil, invalidRequest("%s: must be a string", path(prefix, "key"))
		}
		if err := hub.ValidateKey(m.opts.Key); err != nil {
			return nil, invalidRequest("%s: %v (the syntax of a type)", path(prefix, "key"), err)
		}
	}
	if raw := f["volatile"]; !isNull(raw) {
		switch string(raw) {
		case "true":
			m.opts.Volatile = true
		case "false":
		default:
			if json.Unmarshal(raw, &m.opts.Volatile) != nil {
				return nil, invalidRequest("%s: must be a boolean", path(prefix, "volatile"))
			}
		}
	}
	if m.opts.Key != "" && m.opts.Volatile {
		return nil, invalidRequest("%s and %s: give a coalescing key or volatile:true, not both", path(prefix, "key"), path(prefix, "volatile"))
	}
	return m, nil
}

// usersAnswer and hub.AllEvent are the 202 bodies of a broadcast: the
// event's id per user or for all, and how many connections, cluster-wide,
// were live when it was published (devices).
type usersAnswer struct {
	Events []hub.UserEvent `json:"events"`
}

// publishContext is the context of one publish: within the publish
// timeout, and not cancelled when the caller hangs up (a publish given up
// half way would leave its outcome unknown; finished, its answer is
// remembered under its idempotency key).
func (a *API) publishContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), a.timeout)
}

// publish applies m (through the idempotency cache when it has a key) and
// returns the 202 body as JSON. ctx bounds it (publishContext).
func (a *API) publish(ctx context.Context, caller string, m *message) (json.RawMessage, *apiError) {
	if m.idem == "" {
		return a.publishNow(ctx, m)
	}
	// length-prefixed: no caller and key can spell another pair's entry
	key := strconv.Itoa(len(caller)) + ":" + caller + ":" + m.idem
	return a.once(ctx, key, func() (json.RawMessage, *apiError) {
		// the broker remembers the key too, so that a retry after an
		// answer that never came publishes at most once
		return a.publishNow(hub.WithIdempotencyKey(ctx, key, IdempotencyTTL), m)
	})
}

func (a *API) publishNow(ctx context.Context, m *message) (json.RawMessage, *apiError) {
	var (
		v   any
		err error
	)
	var opts []hub.EventOption
	if m.opts.Key != "" {
		opts = append(opts, hub.Keyed(m.opts.Key))
	}
	if m.opts.Volatile {
		opts = append(opts, hub.Volatile())
	}
	if m.all {
		v, err = a.hub.BroadcastAll(ctx, m.typ, m.payload, opts...)
	} else {
		var evs []hub.UserEvent
		evs, err = a.hub.Publish(ctx, m.userIDs, m.typ, m.payload, opts...)
		v = usersAnswer{Events: evs}
	}
	if err != nil {
		if errors.Is(err, hub.ErrOutcomeUnknown) {
			a.log.Error("publish outcome unknown: the broker's answer was lost; the call is left unanswered", "err", err)
			return nil, errOutcomeUnknown
		}
		if errors.Is(err, hub.ErrUnavailable) {
			a.log.Error("publish failed: broker unavailable", "err", err)
			return nil, errUnavailable
		}
		if a.hub.Draining() {
			return nil, &apiError{Status: http.StatusServiceUnavailable, Code: codeShuttingDown, Message: "the node is draining"}
		}
		a.log.Error("publish failed", "type", m.typ, "all", m.all, "users", len(m.userIDs), "err", err)
		return nil, &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "the event could not be published"}
	}
	if ua, ok := v.(usersAnswer); ok {
		if body, ok := appendUsersAnswer(nil, ua.Events); ok {
			return body, nil
		}
	}
	body, err := json.Marshal(v)
	if err != nil { // our own types: cannot happen
		return nil, &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "could not encode the answer"}
	}
	return body, nil
}

var (
	errUnavailable = &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable",
		Message: "the broker is unreachable; the event was not accepted", broker: true}
	errOutcomeUnknown = &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable",
		Message: "the broker's answer was lost", broker: true, unknown: true}
	errBatchStopped = &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable",
		Message: "the broker failed on an earlier message; this one was not accepted", broker: true}
)

// abortUnanswered ends the request without an answer (the connection is
// closed, or the HTTP/2 stream reset): the outcome of the publish is
// unknown, and any answer would claim to know it. The caller retries with
// the same idempotencyKey, which is safe.
func abortUnanswered() {
	panic(http.ErrAbortHandler)
}

// authenticate authenticates a caller of the service and admin endpoints,
// writing the error answer: 429 rate_limited while the client address is
// blocked for failed credentials (whatever the request carries), else the
// credential check's answer; a 401 counts as one failure of the address.
func (a *API) authenticate(w http.ResponseWriter, r *http.Request) (*auth.Identity, bool) {
	addr := a.clientIP(r)
	if wait := a.fails.blocked(addr); wait > 0 {
		httpx.RetryAfter(w, wait)
		httpx.WriteError(w, http.StatusTooManyRequests, codeRateLimited,
			"too many failed credentials from this address; retry after the Retry-After delay")
		return nil, false
	}
	id, e := a.auth.AuthenticateService(r)
	if e != nil {
		if e.Status == http.StatusUnauthorized {
			a.fails.fail(addr)
		}
		auth.WriteError(w, e)
		return nil, false
	}
	return id, true
}

// request authenticates a service call and decodes its body, a JSON
// object with the given fields; on failure it has answered and ok is false.
func (a *API) request(w http.ResponseWriter, r *http.Request, fields []string) (caller string, f map[string]json.RawMessage, ok bool) {
	id, ok := a.authenticate(w, r)
	if !ok {
		return "", nil, false
	}
	body, e := a.readBody(w, r)
	if e == nil {
		f, e = decodeObject(body, "", fields)
	}
	if e != nil {
		e.write(w)
		return "", nil, false
	}
	return id.Caller, f, true
}

// broadcast serves POST /api/broadcast.
func (a *API) broadcast(w http.ResponseWriter, r *http.Request) {
	caller, f, ok := a.request(w, r, broadcastFields)
	if !ok {
		return
	}
	m, e := parseMessage(f, "")
	if e != nil {
		e.write(w)
		return
	}
	ctx, cancel := a.publishContext(r)
	defer cancel()
	answer, e := a.publish(ctx, caller, m)
	if e != nil {
		if e.unknown {
			abortUnanswered()
		}
		e.write(w)
		return
	}
	writeRaw(w, http.StatusAccepted, answer)
}

// batchResult is one entry of a batch answer: the message's 202 body, or
// an error object.
type batchResult struct {
	answer json.RawMessage
	err    *apiError
}

func (b batchResult) MarshalJSON() ([]byte, error) {
	if b.err != nil {
		return json.Marshal(struct {
			Error *apiError `json:"error"`
		}{b.err})
	}
	return b.answer, nil
}

// batch serves POST /api/broadcast/batch.
func (a *API) batch(w http.ResponseWriter, r *http.Request) {
	caller, f, ok := a.request(w, r, []string{"messages"})
	if !ok {
		return
	}
	raw := f["messages"]
	if isNull(raw) {
		invalidRequest("messages: required (1 to %d messages)", MaxBatch).write(w)
		return
	}
	if raw[0] != '[' {
		invalidRequest("messages: must be an array of broadcast objects").write(w)
		return
	}
	msgs, ok := fastArray(raw)
	if !ok && json.Unmarshal(raw, &msgs) != nil {
		invalidRequest("messages: must be an array of broadcast objects").write(w)
		return
	}
	if len(msgs) == 0 || len(msgs) > MaxBatch {
		invalidRequest("messages: must hold 1 to %d messages (got %d)", MaxBatch, len(msgs)).write(w)
		return
	}
	// Each message has the publish timeout; after the broker failed on
	// one, the next ones are not tried (so a hung broker costs one
	// timeout, not one per message), and after an unknown outcome the
	// batch is left unanswered like a single call.
	results := make([]batchResult, len(msgs))
	var brokerFailed, unknown bool
	for i, raw := range msgs {
		prefix := "messages[" + strconv.Itoa(i) + "]"
		fields, e := objectFields(raw, prefix, broadcastFields)
		if e == nil {
			var m *message
			if m, e = parseMessage(fields, prefix); e == nil {
				if brokerFailed {
					e = errBatchStopped
				} else {
					ctx, cancel := a.publishContext(r)
					results[i].answer, e = a.publish(ctx, caller, m)
					cancel()
				}
			}
		}
		if e != nil && e.broker {
			brokerFailed = true
			unknown = unknown || e.unknown
		}
		results[i].err = e
	}
	if unknown {
		abortUnanswered()
	}
	out, err := joinResults(results)
	if err != nil { // our own types: cannot happen
		httpx.WriteError(w, http.StatusInternalServerError, codeInternal, "could not encode the answer")
		return
	}
	writeRaw(w, http.StatusAccepted, out)
}

// joinResults is the batch answer, {"results":[...]}. The answers are
// compact JSON already: joining them gives the bytes json.Marshal would,
// without re-scanning each.
func joinResults(results []batchResult) ([]byte, error) {
	out := make([]byte, 0, 16+len(results)*96)
	out = append(out, `{"results":[`...)
	for i, r := range results {
		if i > 0 {
			out = append(out, ',')
		}
		b, err := r.MarshalJSON()
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return append(out, "]}"...), nil
}

// writeRaw writes a JSON body that is already encoded.
func writeRaw(w http.ResponseWriter, status int, body json.RawMessage) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	// body may be shared by the idempotency cache: never append to it
	_, _ = w.Write(body)
	_, _ = w.Write(newline)
}

var newline = []byte{'\n'}
