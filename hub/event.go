package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MaxTypeLen, MaxKeyLen and MaxIDLen bound an envelope's type, coalescing
// key and id, in bytes.
const (
	MaxTypeLen = 128
	MaxKeyLen  = MaxTypeLen
	MaxIDLen   = 128
)

// TimeFormat is the envelope timestamp format: RFC 3339, milliseconds, UTC.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// Message is one encoded envelope, immutable once built and shared by every
// connection it is queued on and by every history that holds it.
type Message struct {
	// ID is the event id; empty for control events.
	ID string
	// Type is the envelope type.
	Type string
	// Frame is the envelope as one line of JSON: a WebSocket text frame.
	// For application events it is a part of SSE (the record's data line),
	// so the envelope is held once.
	Frame []byte
	// SSE is the whole text/event-stream record, blank line included.
	SSE []byte
	// Accepted is when the hub accepted the event (zero for control events).
	Accepted time.Time

	seq      uint64
	key      string // coalescing key ("" for none): see EventOptions
	volatile bool
	// held counts the histories of this node holding the event, plus one
	// while it is being published (see histIndex).
	held atomic.Int32

	zOnce sync.Once
	z     []byte // Frame compressed, made by the first Compressed call
}

// Compressed returns Frame compressed by compress, which runs once per
// message, on the first call (later and concurrent callers get what it
// returned): a transport that compresses events (WebSocket
// permessage-deflate without context takeover) compresses each event once
// and sends the same bytes to every recipient, as with Frame. compress may
// return nil (nothing gained: send Frame); it must not keep Frame.
func (m *Message) Compressed(compress func(frame []byte) []byte) []byte {
	m.zOnce.Do(func() { m.z = compress(m.Frame) })
	return m.z
}

// Size is what the event counts against the history bounds: the bytes of
// its envelope as sent.
func (m *Message) Size() int { return len(m.Frame) }

// Key is the event's coalescing key ("" for none). Messages read back from
// a broker's history carry it; those a broker delivers live may not (live
// delivery does not look at it).
func (m *Message) Key() string { return m.key }

// Volatile reports whether the event was published volatile (never stored).
func (m *Message) Volatile() bool { return m.volatile }

// Control reports whether m is a control event (its type starts with "hub.").
func (m *Message) Control() bool { return strings.HasPrefix(m.Type, "hub.") }

// ValidateType checks an application event type: 1 to 128 bytes of
// [A-Za-z0-9_.:-], not starting with the reserved "hub." prefix in any
// letter case ("HUB.shutdown" is refused too: a client that matches types
// without regard to case must never take an application event for a
// control event).
func ValidateType(t string) error {
	if err := validName(t, MaxTypeLen); err != nil {
		return err
	}
	if len(t) >= 4 && strings.EqualFold(t[:4], "hub.") {
		return errors.New(`types starting with "hub." (in any letter case) are reserved`)
	}
	return nil
}

// ValidateKey checks a coalescing key: the syntax of a type, 1 to 128 bytes
// of [A-Za-z0-9_.:-]. The "hub." reservation is a rule of types, not of
// their syntax: a key names no control event, so "hub.x" is a key like any
// other.
func ValidateKey(k string) error { return validName(k, MaxKeyLen) }

// validName checks 1 to max bytes of [A-Za-z0-9_.:-].
func validName(t string, max int) error {
	if t == "" {
		return errors.New("must not be empty")
	}
	if len(t) > max {
		return fmt.Errorf("must be at most %d bytes", max)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return errors.New("may contain only A-Z, a-z, 0-9, '_', '.', ':' and '-'")
		}
	}
	return nil
}

// EventOptions shape what the history keeps of one event (the broadcast
// API's "key" and "volatile"). The zero value is a plain event.
type EventOptions struct {
	// Key is a coalescing key ("" for none): the events to one user with
	// the same key supersede each other in that user's history (a
	// broadcast's, in every user's), so a resume replays only the newest
	// of each key published after the client's last id. Live delivery is
	// unchanged. The envelope carries it ("key").
	Key string
	// Volatile events go to the connections live at the time and are
	// never stored: no resume replays them. They still get an id, which
	// a client may resume from like a position. The envelope says so
	// ("volatile":true).
	Volatile bool
}

// Validate checks the key's syntax and that a key and Volatile are not
// both given; the error names the field.
func (o EventOptions) Validate() error {
	if o.Key != "" {
		if err := ValidateKey(o.Key); err != nil {
			return fmt.Errorf("key: %w", err)
		}
		if o.Volatile {
			return errors.New("key and volatile: an event is either coalesced by a key or volatile, not both")
		}
	}
	return nil
}

// EventOption sets one of an event's EventOptions (Publish, BroadcastAll).
type EventOption func(*EventOptions)

// Keyed gives the event the coalescing key k (EventOptions.Key).
func Keyed(k string) EventOption { return func(o *EventOptions) { o.Key = k } }

// Volatile makes the event volatile (EventOptions.Volatile).
func Volatile() EventOption { return func(o *EventOptions) { o.Volatile = true } }

// eventOptions applies opts and validates the result.
func eventOptions(opts []EventOption) (EventOptions, error) {
	if len(opts) == 0 { // a plain event: nothing to apply
		return EventOptions{}, nil
	}
	return applyOptions(opts)
}

// applyOptions is eventOptions with options: its EventOptions escape to
// the heap (the options are closures), a plain event's do not.
func applyOptions(opts []EventOption) (EventOptions, error) {
	o := new(EventOptions)
	for _, f := range opts {
		f(o)
	}
	return *o, o.Validate()
}

// ValidateID checks an event id as a client may send it back: 1 to 128
// bytes of printable ASCII without whitespace.
func ValidateID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("must be 1 to %d bytes", MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return errors.New("must be printable ASCII without whitespace")
		}
	}
	return nil
}

// compactPayload returns p as one line of valid JSON ("null" when empty):
// p itself when it is valid and holds no whitespace at all (the usual
// case: the caller's bytes are copied into the envelope, never kept),
// else a compacted copy.
func compactPayload(p json.RawMessage) ([]byte, error) {
	if len(bytes.TrimSpace(p)) == 0 {
		return []byte("null"), nil
	}
	if !bytes.ContainsAny(p, " \t\r\n") && json.Valid(p) {
		return p, nil
	}
	var b bytes.Buffer
	b.Grow(len(p))
	if err := json.Compact(&b, p); err != nil {
		return nil, fmt.Errorf("payload is not valid JSON: %w", err)
	}
	return b.Bytes(), nil
}

// newEvent encodes an application event once per wire format: the SSE
// record is built around the envelope, and Frame is the envelope's part of
// it (capacity capped, so nobody can append into the record). The
// envelope's fields come in the order id, type, key or volatile (when
// set), payload, timestamp; the Redis broker's script writes the same
// bytes.
func newEvent(id, typ string, o EventOptions, payload []byte, ts time.Time, seq uint64) *Message {
	n := len(id) + len(typ) + len(o.Key) + len(payload) + len(TimeFormat) + 64 // the envelope's fixed text
	b := make([]byte, 0, n+len(id)+len(typ)+24)
	b = appendSSEHead(b, id, typ)
	start := len(b)
	b = append(b, `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","type":"`...)
	b = append(b, typ...)
	switch {
	case o.Key != "":
		b = append(b, `","key":"`...)
		b = append(b, o.Key...)
		b = append(b, `","payload":`...)
	case o.Volatile:
		b = append(b, `","volatile":true,"payload":`...)
	default:
		b = append(b, `","payload":`...)
	}
	b = append(b, payload...)
	b = append(b, `,"timestamp":"`...)
	b = appendTimestamp(b, ts)
	b = append(b, `"}`...)
	end := len(b)
	b = append(b, "\n\n"...)
	return &Message{ID: id, Type: typ, Frame: b[start:end:end], SSE: b, Accepted: ts, seq: seq, key: o.Key, volatile: o.Volatile}
}

// appendTimestamp appends t in TimeFormat, as t.UTC().AppendFormat(b,
// TimeFormat) does for the years 0 to 9999 (a quarter of its cost: this
// runs once per event).
func appendTimestamp(b []byte, t time.Time) []byte {
	t = t.UTC()
	y, mo, d := t.Date()
	if y < 0 || y > 9999 {
		return t.AppendFormat(b, TimeFormat)
	}
	h, mi, sec := t.Clock()
	ms := t.Nanosecond() / 1e6
	return append(b,
		byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+int(mo)/10), byte('0'+int(mo)%10), '-', byte('0'+d/10), byte('0'+d%10), 'T',
		byte('0'+h/10), byte('0'+h%10), ':', byte('0'+mi/10), byte('0'+mi%10), ':',
		byte('0'+sec/10), byte('0'+sec%10), '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

// appendSSEHead appends the lines of an SSE record that come before the
// envelope: "id: ..." (when id is set), "event: ..." and "data: ".
func appendSSEHead(b []byte, id, typ string) []byte {
	if id != "" {
		b = append(b, "id: "...)
		b = append(b, id...)
		b = append(b, '\n')
	}
	b = append(b, "event: "...)
	b = append(b, typ...)
	return append(b, "\ndata: "...)
}

// eventFromFrame builds the message of an envelope received whole (from a
// broker), with the same layout as newEvent; o is what the broker knows of
// the event's options.
func eventFromFrame(id string, seq uint64, typ string, o EventOptions, frame []byte, accepted time.Time) *Message {
	b := make([]byte, 0, len(frame)+len(id)+len(typ)+24)
	b = appendSSEHead(b, id, typ)
	start := len(b)
	b = append(b, frame...)
	end := len(b)
	b = append(b, "\n\n"...)
	return &Message{ID: id, Type: typ, Frame: b[start:end:end], SSE: b, Accepted: accepted, seq: seq, key: o.Key, volatile: o.Volatile}
}

func sseRecord(id, typ string, frame []byte) []byte {
	b := make([]byte, 0, len(frame)+len(id)+len(typ)+24)
	b = appendSSEHead(b, id, typ)
	b = append(b, frame...)
	return append(b, "\n\n"...)
}

// Control builds a control event (no id) of type typ ("hub." prefix
// expected) with the payload marshalled to JSON; a nil payload is omitted.
func Control(typ string, payload any) *Message {
	env := struct {
		Type    string `json:"type"`
		Payload any    `json:"payload,omitempty"`
	}{typ, payload}
	frame, err := json.Marshal(env)
	if err != nil { // payloads are our own types; this is a programming error
		frame = []byte(`{"type":` + strconv.Quote(typ) + `}`)
	}
	return &Message{Type: typ, Frame: frame, SSE: sseRecord("", typ, frame)}
}

// Ping is the heartbeat message: a hub.ping control event on WebSocket and a
// ": ping" comment on SSE.
var Ping = &Message{Type: "hub.ping", Frame: []byte(`{"type":"hub.ping"}`), SSE: []byte(": ping\n\n")}

// ParseID splits an event id made by this hub into its epoch and sequence.
func ParseID(id string) (epoch string, seq uint64, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 || i == len(id)-1 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(id[i+1:], 10, 64)
	if err != nil || seq == 0 {
		return "", 0, false
	}
	return id[:i], seq, true
}

func formatID(epoch string, seq uint64) string {
	var buf [64]byte // one allocation, the string's, for the usual epochs
	b := append(buf[:0], epoch...)
	b = append(b, '-')
	return string(strconv.AppendUint(b, seq, 10))
}
