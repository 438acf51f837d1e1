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
// errors are reported; the f* constants are their indexes.
var broadcastFields = []string{"userIds", "all", "type", "payload", "idempotencyKey", "key", "volatile"}

const (
	fUserIDs = iota
	fAll
	fType
	fPayload
	fIdempotencyKey
	fKey
	fVolatile
	nBroadcastFields
)

// where is the path of a batch's message at index at in error messages
// ("messages[2]"), "" for the body of /api/broadcast (at < 0). It is built
// only when an error names it.
func where(at int) string {
	if at < 0 {
		return ""
	}
	return "messages[" + strconv.Itoa(at) + "]"
}

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
	body, err := readAll(http.MaxBytesReader(w, r.Body, a.maxPayload), r.ContentLength)
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

// readAll is io.ReadAll into a buffer of the announced length (plus one
// byte, to see the end without growing): a batch body is read with one
// allocation instead of a dozen growing copies.
func readAll(r io.Reader, length int64) ([]byte, error) {
	if length <= 0 {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, length+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) { // longer than announced: let ReadAll go on
			rest, err := io.ReadAll(r)
			return append(b, rest...), err
		}
	}
}

// decodeObject parses body as one JSON object and puts the value of each
// of fields into out (out[i] for fields[i]; nil when absent), refusing
// every other key. A syntax error or a body that is not valid UTF-8 is
// invalid_json, anything else an invalid_request. Every later step (the
// fast paths included) works on this body, so none of them can pass
// invalid UTF-8 on: encoding/json would accept it and swap in U+FFFD, and
// a raw payload would carry it into every recipient's frame and the
// history.
func decodeObject(body []byte, fields []string, out []json.RawMessage) *apiError {
	trimmed := bytes.Trim(body, " \t\r\n") // JSON whitespace only
	if len(trimmed) == 0 {
		return &apiError{Status: http.StatusBadRequest, Code: codeInvalidJSON, Message: "the request body is empty"}
	}
	if !utf8.Valid(trimmed) {
		return &apiError{Status: http.StatusBadRequest, Code: codeInvalidJSON, Message: "the request body is not valid UTF-8"}
	}
	if !json.Valid(trimmed) {
		var v any
		msg := "the request body is not valid JSON"
		if err := json.Unmarshal(trimmed, &v); err != nil {
			msg += ": " + err.Error()
		}
		return &apiError{Status: http.StatusBadRequest, Code: codeInvalidJSON, Message: msg}
	}
	return objectFields(trimmed, -1, fields, out)
}

// objectFields splits valid JSON raw, the body (at < 0) or the batch's
// message at, into the fields of an object (out[i] for fields[i], nil
// when absent), refusing a non-object and unknown (or differently cased)
// keys.
func objectFields(raw json.RawMessage, at int, fields []string, out []json.RawMessage) *apiError {
	clear(out)
	what := func() string {
		if at < 0 {
			return "the request body"
		}
		return where(at)
	}
	if len(raw) == 0 || raw[0] != '{' {
		return invalidRequest("%s must be a JSON object", what())
	}
	if fastFields(raw, fields, out) {
		return nil
	}
	clear(out)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return invalidRequest("%s must be a JSON object", what())
	}
	var unknown []string
	for k := range m {
		if !slices.Contains(fields, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return invalidRequest("%s: unknown field (expected one of %s)", path(where(at), strconv.Quote(unknown[0])), quoteList(fields))
	}
	for i, f := range fields {
		out[i] = m[f]
	}
	return nil
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

// parseMessage validates one broadcast body (already split into fields,
// indexed by the f* constants) into m; at is its index in a batch (-1 for
// /api/broadcast). ids, when not nil, is where the user ids are appended
// (a batch's messages share one array); prevType is a type string that m
// may share when it is the same (the type of the batch's previous
// message).
func parseMessage(f []json.RawMessage, at int, m *message, ids *[]string, prevType string) *apiError {
	*m = message{}
	field := func(name string) string { return path(where(at), name) }

	hasIDs := !isNull(f[fUserIDs])
	if raw := f[fAll]; !isNull(raw) && string(raw) != "false" {
		if string(raw) == "true" {
			m.all = true
		} else if err := json.Unmarshal(raw, &m.all); err != nil {
			return invalidRequest("%s: must be a boolean", field("all"))
		}
	}
	switch {
	case hasIDs && m.all:
		return invalidRequest("%s and %s: give exactly one of userIds and all:true, not both", field("userIds"), field("all"))
	case !hasIDs && !m.all:
		return invalidRequest("%s: required (1 to %d user ids), or all:true", field("userIds"), MaxUserIDs)
	case hasIDs:
		raw := f[fUserIDs]
		if raw[0] != '[' {
			return invalidRequest("%s: must be an array of strings", field("userIds"))
		}
		var dst []string
		if ids != nil {
			dst = *ids
		}
		start := len(dst)
		list, ok := fastStrings(raw, dst)
		if ok {
			if n := len(list) - start; n == 0 || n > MaxUserIDs {
				return invalidRequest("%s: must hold 1 to %d user ids (got %d)", field("userIds"), MaxUserIDs, n)
			}
		} else {
			var elems []json.RawMessage
			if err := json.Unmarshal(raw, &elems); err != nil {
				return invalidRequest("%s: must be an array of strings", field("userIds"))
			}
			if len(elems) == 0 || len(elems) > MaxUserIDs {
				return invalidRequest("%s: must hold 1 to %d user ids (got %d)", field("userIds"), MaxUserIDs, len(elems))
			}
			list = dst
			for i, e := range elems {
				var id string
				if len(e) == 0 || e[0] != '"' || json.Unmarshal(e, &id) != nil {
					return invalidRequest("%s[%d]: must be a string", field("userIds"), i)
				}
				if id == "" || len(id) > MaxUserIDLen {
					return invalidRequest("%s[%d]: must be 1 to %d bytes", field("userIds"), i, MaxUserIDLen)
				}
				list = append(list, id)
			}
		}
		m.userIDs = list[start:len(list):len(list)]
		for i, id := range m.userIDs {
			if id == "" || len(id) > MaxUserIDLen {
				return invalidRequest("%s[%d]: must be 1 to %d bytes", field("userIds"), i, MaxUserIDLen)
			}
		}
		if ids != nil {
			*ids = list
		}
	}

	raw := f[fType]
	if isNull(raw) {
		return invalidRequest("%s: required", field("type"))
	}
	if prevType != "" && len(raw) == len(prevType)+2 && raw[0] == '"' && string(raw[1:len(raw)-1]) == prevType {
		m.typ = prevType // already validated
	} else {
		if t, ok := simpleString(raw); ok {
			m.typ = t
		} else if raw[0] != '"' || json.Unmarshal(raw, &m.typ) != nil {
			return invalidRequest("%s: must be a string", field("type"))
		}
		if err := hub.ValidateType(m.typ); err != nil {
			return invalidRequest("%s: %v", field("type"), err)
		}
	}

	m.payload = f[fPayload]
	if m.payload == nil {
		m.payload = json.RawMessage("null")
	}

	if raw := f[fIdempotencyKey]; !isNull(raw) {
		if k, ok := simpleString(raw); ok {
			m.idem = k
		} else if raw[0] != '"' || json.Unmarshal(raw, &m.idem) != nil {
			return invalidRequest("%s: must be a string", field("idempotencyKey"))
		}
		if m.idem == "" || len(m.idem) > MaxIdempotencyKeyLen {
			return invalidRequest("%s: must be 1 to %d bytes", field("idempotencyKey"), MaxIdempotencyKeyLen)
		}
	}

	// The coalescing key has the syntax of a type; volatile is a boolean
	// (false: a plain event); not both.
	if raw := f[fKey]; !isNull(raw) {
		if k, ok := simpleString(raw); ok {
			m.opts.Key = k
		} else if raw[0] != '"' || json.Unmarshal(raw, &m.opts.Key) != nil {
			return invalidRequest("%s: must be a string", field("key"))
		}
		if err := hub.ValidateKey(m.opts.Key); err != nil {
			return invalidRequest("%s: %v (the syntax of a type)", field("key"), err)
		}
	}
	if raw := f[fVolatile]; !isNull(raw) {
		switch string(raw) {
		case "true":
			m.opts.Volatile = true
		case "false":
		default:
			if json.Unmarshal(raw, &m.opts.Volatile) != nil {
				return invalidRequest("%s: must be a boolean", field("volatile"))
			}
		}
	}
	if m.opts.Key != "" && m.opts.Volatile {
		return invalidRequest("%s and %s: give a coalescing key or volatile:true, not both", field("key"), field("volatile"))
	}
	return nil
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
// appends the 202 body, as JSON, to dst. ctx bounds it (publishContext).
func (a *API) publish(ctx context.Context, caller string, m *message, dst []byte) ([]byte, *apiError) {
	if m.idem == "" {
		return a.publishNow(ctx, m, dst)
	}
	// length-prefixed: no caller and key can spell another pair's entry
	key := strconv.Itoa(len(caller)) + ":" + caller + ":" + m.idem
	answer, e := a.once(ctx, key, func() (json.RawMessage, *apiError) {
		// the broker remembers the key too, so that a retry after an
		// answer that never came publishes at most once
		return a.publishNow(hub.WithIdempotencyKey(ctx, key, IdempotencyTTL), m, nil)
	})
	if e != nil {
		return dst, e
	}
	return append(dst, answer...), nil
}

// publishNow publishes m and appends the 202 body to dst (dst unchanged on
// an error).
func (a *API) publishNow(ctx context.Context, m *message, dst []byte) ([]byte, *apiError) {
	var (
		v   any
		evs []hub.UserEvent
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
		evs, err = a.hub.Publish(ctx, m.userIDs, m.typ, m.payload, opts...)
	}
	if err != nil {
		if errors.Is(err, hub.ErrOutcomeUnknown) {
			a.log.Error("publish outcome unknown: the broker's answer was lost; the call is left unanswered", "err", err)
			return dst, errOutcomeUnknown
		}
		if errors.Is(err, hub.ErrUnavailable) {
			a.log.Error("publish failed: broker unavailable", "err", err)
			return dst, errUnavailable
		}
		if a.hub.Draining() {
			return dst, &apiError{Status: http.StatusServiceUnavailable, Code: codeShuttingDown, Message: "the node is draining"}
		}
		a.log.Error("publish failed", "type", m.typ, "all", m.all, "users", len(m.userIDs), "err", err)
		return dst, &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "the event could not be published"}
	}
	if !m.all {
		if out, ok := appendUsersAnswer(dst, evs); ok {
			return out, nil
		}
		v = usersAnswer{Events: evs}
	}
	body, err := json.Marshal(v)
	if err != nil { // our own types: cannot happen
		return dst, &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "could not encode the answer"}
	}
	return append(dst, body...), nil
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
// object with the given fields, into f (f[i] for fields[i]); on failure it
// has answered and ok is false.
func (a *API) request(w http.ResponseWriter, r *http.Request, fields []string, f []json.RawMessage) (caller string, ok bool) {
	id, ok := a.authenticate(w, r)
	if !ok {
		return "", false
	}
	body, e := a.readBody(w, r)
	if e == nil {
		e = decodeObject(body, fields, f)
	}
	if e != nil {
		e.write(w)
		return "", false
	}
	return id.Caller, true
}

// broadcast serves POST /api/broadcast.
func (a *API) broadcast(w http.ResponseWriter, r *http.Request) {
	var f [nBroadcastFields]json.RawMessage
	caller, ok := a.request(w, r, broadcastFields, f[:])
	if !ok {
		return
	}
	m := new(message)
	if e := parseMessage(f[:], -1, m, nil, ""); e != nil {
		e.write(w)
		return
	}
	ctx, cancel := a.publishContext(r)
	defer cancel()
	answer, e := a.publish(ctx, caller, m, nil)
	if e != nil {
		if e.unknown {
			abortUnanswered()
		}
		e.write(w)
		return
	}
	writeRaw(w, http.StatusAccepted, answer)
}

// batchFields are the fields of a batch body.
var batchFields = []string{"messages"}

// batch serves POST /api/broadcast/batch. The answers are appended to the
// batch's answer as they come (each is compact JSON already, so the
// result is the bytes json.Marshal would give).
func (a *API) batch(w http.ResponseWriter, r *http.Request) {
	var bf [1]json.RawMessage
	caller, ok := a.request(w, r, batchFields, bf[:])
	if !ok {
		return
	}
	raw := bf[0]
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
	// batch is left unanswered like a single call. Without a broker a
	// publish without an idempotency key never waits: those messages
	// share one context without a deadline (and without a timer each).
	var (
		brokerFailed, unknown bool
		f                     [nBroadcastFields]json.RawMessage
		m                     = new(message) // reused: parseMessage resets it
		ids                   = make([]string, 0, len(msgs))
		typ                   string
	)
	var plain context.Context
	if !a.hub.Clustered() {
		plain = context.WithoutCancel(r.Context())
	}
	out := make([]byte, 0, 16+len(msgs)*96)
	out = append(out, `{"results":[`...)
	for i, raw := range msgs {
		if i > 0 {
			out = append(out, ',')
		}
		e := objectFields(raw, i, broadcastFields, f[:])
		if e == nil {
			if e = parseMessage(f[:], i, m, &ids, typ); e == nil {
				typ = m.typ
				if brokerFailed {
					e = errBatchStopped
				} else if plain != nil && m.idem == "" {
					out, e = a.publish(plain, caller, m, out)
				} else {
					ctx, cancel := a.publishContext(r)
					out, e = a.publish(ctx, caller, m, out)
					cancel()
				}
			}
		}
		if e != nil {
			if e.broker {
				brokerFailed = true
				unknown = unknown || e.unknown
			}
			out = appendBatchError(out, e)
		}
	}
	if unknown {
		abortUnanswered()
	}
	writeRaw(w, http.StatusAccepted, append(out, "]}"...))
}

// appendBatchError appends the entry of a refused message to a batch
// answer: {"error":{"code":...,"message":...}}, as json.Marshal writes it.
func appendBatchError(dst []byte, e *apiError) []byte {
	b, err := json.Marshal(struct {
		Error *apiError `json:"error"`
	}{e})
	if err != nil { // our own type: cannot happen
		return append(dst, `{"error":{"code":"internal_error","message":"could not encode the answer"}}`...)
	}
	return append(dst, b...)
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
