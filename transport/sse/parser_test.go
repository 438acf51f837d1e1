package sse_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
)

// field is one "name: value" line of a text/event-stream record.
type field struct{ name, value string }

// record is one block of a text/event-stream, up to its blank line: the
// fields in order and the comments (text after the colon, leading space
// included).
type record struct {
	fields   []field
	comments []string
}

// value returns the value of the last field called name and how many there
// were.
func (r record) value(name string) (string, int) {
	var v string
	n := 0
	for _, f := range r.fields {
		if f.name == name {
			v, n = f.value, n+1
		}
	}
	return v, n
}

// names lists the field names in order.
func (r record) names() []string {
	out := make([]string, len(r.fields))
	for i, f := range r.fields {
		out[i] = f.name
	}
	return out
}

// event is what the WHATWG algorithm dispatches for the record (ok false:
// nothing is dispatched, as for a record without data).
func (r record) event() (id, typ, data string, retry int, ok bool) {
	var datas []string
	retry = -1
	for _, f := range r.fields {
		switch f.name {
		case "id":
			if !strings.ContainsRune(f.value, 0) {
				id = f.value
			}
		case "event":
			typ = f.value
		case "data":
			datas = append(datas, f.value)
		case "retry":
			if n, err := strconv.Atoi(f.value); err == nil && strings.Trim(f.value, "0123456789") == "" {
				retry = n
			}
		}
	}
	if len(datas) == 0 {
		return id, typ, "", retry, false
	}
	if typ == "" {
		typ = "message"
	}
	return id, typ, strings.Join(datas, "\n"), retry, true
}

// parser reads a text/event-stream strictly: lines end in CRLF, LF or CR; a
// line starting with a colon is a comment; otherwise the field name runs to
// the first colon and one space after it is dropped; a blank line ends the
// record. Field names other than id, event, data and retry are an error
// (the hub never writes them), as is a stream ending inside a record.
type parser struct {
	r *bufio.Reader
}

func newParser(r io.Reader) *parser { return &parser{r: bufio.NewReader(r)} }

// line reads one line without its end.
func (p *parser) line() (string, error) {
	var b strings.Builder
	for {
		c, err := p.r.ReadByte()
		if err != nil {
			if b.Len() > 0 && errors.Is(err, io.EOF) {
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		switch c {
		case '\n':
			return b.String(), nil
		case '\r':
			if n, err := p.r.Peek(1); err == nil && n[0] == '\n' {
				_, _ = p.r.ReadByte()
			}
			return b.String(), nil
		}
		b.WriteByte(c)
	}
}

// next returns the next non-empty record; io.EOF when the stream ended
// cleanly between records.
func (p *parser) next() (record, error) {
	var rec record
	for {
		l, err := p.line()
		if err != nil {
			if errors.Is(err, io.EOF) && (len(rec.fields) > 0 || len(rec.comments) > 0) {
				return rec, io.ErrUnexpectedEOF
			}
			return rec, err
		}
		if l == "" {
			if len(rec.fields) == 0 && len(rec.comments) == 0 {
				continue
			}
			return rec, nil
		}
		if l[0] == ':' {
			rec.comments = append(rec.comments, l[1:])
			continue
		}
		name, value, _ := strings.Cut(l, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id", "event", "data", "retry":
		default:
			return rec, fmt.Errorf("unknown field %q in line %q", name, l)
		}
		rec.fields = append(rec.fields, field{name, value})
	}
}

func TestParser(t *testing.T) {
	tests := []struct {
		name string
		give string
		want []record
	}{
		{
			name: "lf",
			give: "retry: 10\nevent: a\ndata: {}\n\n: ping\n\nid: 1\ndata:x\n\n",
			want: []record{
				{fields: []field{{"retry", "10"}, {"event", "a"}, {"data", "{}"}}},
				{comments: []string{" ping"}},
				{fields: []field{{"id", "1"}, {"data", "x"}}},
			},
		},
		{
			name: "crlf and cr",
			give: "data: a\r\ndata:  b\r\r\n\r\ndata\r\r",
			want: []record{
				{fields: []field{{"data", "a"}, {"data", " b"}}},
				{fields: []field{{"data", ""}}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newParser(strings.NewReader(tt.give))
			for i, want := range tt.want {
				got, err := p.next()
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("record %d = %v, want %v", i, got, want)
				}
			}
			if _, err := p.next(); !errors.Is(err, io.EOF) {
				t.Fatalf("end: %v, want io.EOF", err)
			}
		})
	}

	if _, err := newParser(strings.NewReader("data: a\n")).next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated record: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := newParser(strings.NewReader("foo: a\n\n")).next(); err == nil {
		t.Error("unknown field accepted")
	}
	rec := record{fields: []field{{"retry", "x1"}, {"event", "t"}}}
	if _, _, _, retry, ok := rec.event(); ok || retry != -1 {
		t.Errorf("event() = retry %d ok %v, want -1 false", retry, ok)
	}
}
