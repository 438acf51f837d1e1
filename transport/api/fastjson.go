package api

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/hubd/hub/hub"
)

// Fast paths for the shapes a broadcast body almost always has. Each works
// on JSON already known to be valid (the body passed json.Valid) and gives
// exactly what encoding/json would; on anything unusual (an escape in a
// key or string) it says so and the caller decodes with encoding/json, so
// answers and error messages do not change. They save the five to ten
// passes that Unmarshal into maps and RawMessages made over every byte of a
// batch (a 100-message batch spent a fifth of the hub's time there).

// fastFields splits a valid JSON object into its members, like Unmarshal
// into map[string]json.RawMessage (the last of duplicate keys wins), and
// puts the value of fields[i] into out[i] (out as long as fields, cleared
// by the caller). ok is false when a key is not one of fields, or has an
// escape.
func fastFields(raw []byte, fields []string, out []json.RawMessage) bool {
	i := skipWS(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false
	}
	i = skipWS(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return true
	}
	for i < len(raw) {
		if raw[i] != '"' {
			return false
		}
		end := skipString(raw, i)
		key := raw[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return false
		}
		k := -1
		for j, f := range fields {
			if string(key) == f {
				k = j
				break
			}
		}
		if k < 0 {
			return false
		}
		i = skipWS(raw, end)
		if i >= len(raw) || raw[i] != ':' {
			return false
		}
		i = skipWS(raw, i+1)
		if i >= len(raw) {
			return false
		}
		vend := skipValue(raw, i)
		out[k] = raw[i:vend:vend]
		next, done, ok := nextItem(raw, vend, '}')
		if !ok {
			return false
		}
		if done {
			return true
		}
		i = next
	}
	return false
}

// fastStrings appends the strings of a valid JSON array of strings to dst,
// like Unmarshal into []string; ok is false when an element is not a
// string or has an escape (encoding/json then decodes the array).
func fastStrings(raw []byte, dst []string) ([]string, bool) {
	i := skipWS(raw, 0)
	if i >= len(raw) || raw[i] != '[' {
		return dst, false
	}
	i = skipWS(raw, i+1)
	if i < len(raw) && raw[i] == ']' {
		return dst, true
	}
	for i < len(raw) {
		if raw[i] != '"' {
			return dst, false
		}
		vend := skipString(raw, i)
		s, ok := simpleString(raw[i:vend])
		if !ok {
			return dst, false
		}
		dst = append(dst, s)
		next, done, ok := nextItem(raw, vend, ']')
		if !ok {
			return dst, false
		}
		if done {
			return dst, true
		}
		i = next
	}
	return dst, false
}

// fastArray splits a valid JSON array into its elements, like Unmarshal
// into []json.RawMessage.
func fastArray(raw []byte) ([]json.RawMessage, bool) {
	i := skipWS(raw, 0)
	if i >= len(raw) || raw[i] != '[' {
		return nil, false
	}
	var out []json.RawMessage
	i = skipWS(raw, i+1)
	if i < len(raw) && raw[i] == ']' {
		return []json.RawMessage{}, true
	}
	for i < len(raw) {
		vend := skipValue(raw, i)
		out = append(out, raw[i:vend:vend])
		next, done, ok := nextItem(raw, vend, ']')
		if !ok {
			return nil, false
		}
		if done {
			return out, true
		}
		i = next
	}
	return nil, false
}

// nextItem reads what follows a member or element that ends at vend in an
// object or array closed by closing: the index of the next one, or done at
// the end; ok is false for anything else.
func nextItem(raw []byte, vend int, closing byte) (next int, done, ok bool) {
	i := skipWS(raw, vend)
	if i >= len(raw) {
		return 0, false, false
	}
	switch raw[i] {
	case ',':
		return skipWS(raw, i+1), false, true
	case closing:
		return 0, true, true
	}
	return 0, false, false
}

// simpleString decodes a valid JSON string without escapes; ok is false
// for anything else (encoding/json then decodes it).
func simpleString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	for _, c := range in {
		if c == '\\' || c == '"' || c < 0x20 {
			return "", false
		}
	}
	if !utf8.Valid(in) { // encoding/json would replace the bad bytes
		return "", false
	}
	return string(in), true
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just after the string starting at b[i].
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// skipValue returns the index just after the valid JSON value at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j
			}
			j++
		}
		return j
	}
}

// appendUsersAnswer appends the 202 body of a publish to users, the bytes
// json.Marshal(usersAnswer{evs}) gives, when every id is plain printable
// ASCII that JSON does not escape; ok is false otherwise (b is returned
// as it was, and json.Marshal then encodes it, with its escapes).
func appendUsersAnswer(b []byte, evs []hub.UserEvent) ([]byte, bool) {
	start := len(b)
	b = append(b, `{"events":[`...)
	for i, e := range evs {
		if !plainJSON(e.UserID) || !plainJSON(e.ID) {
			return b[:start], false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"userId":"`...)
		b = append(b, e.UserID...)
		b = append(b, `","id":"`...)
		b = append(b, e.ID...)
		b = append(b, `","devices":`...)
		b = strconv.AppendInt(b, int64(e.Devices), 10)
		b = append(b, '}')
	}
	return append(b, "]}"...), true
}

// plainJSON reports whether encoding/json writes s between quotes as it is.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}
