package modules_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// sseRecord is one dispatched SSE event as a browser would see it, plus the
// fields the stream carried with it.
type sseRecord struct {
	ID    string // value of the id: field
	HasID bool   // whether the record had an id: field
	Event string // value of the event: field
	Data  string // data: lines joined with "\n"
	Retry int    // last retry: value seen before this record (0: none)
}

// sseClient is an SSE device: a GET on the SSE endpoint read by a goroutine
// that parses the text/event-stream framing.
type sseClient struct {
	t      *testing.T
	resp   *http.Response
	ch     chan sseRecord
	done   chan struct{}
	cancel context.CancelFunc
	tr     *http.Transport
	// err is the read error that ended the stream (io.EOF on a clean end);
	// read it after done is closed.
	err      error
	pings    atomic.Int64 // ": ping" comments seen
	retry    atomic.Int64 // last retry: value seen
	firstRet atomic.Int64 // first retry: value seen
	retries  atomic.Int64 // number of retry: fields seen
	lastID   atomic.Value // string: the stream's last event ID, as EventSource keeps it
}

// lastEventID is the id an EventSource would send as Last-Event-ID on
// reconnect: set by every id: field, taken at each record's end whether
// or not the record has data.
func (c *sseClient) lastEventID() string {
	s, _ := c.lastID.Load().(string)
	return s
}

// sseDial describes one SSE connection attempt.
type sseDial struct {
	URL        string      // the SSE endpoint (default: the hub's)
	Token      string      // sent as Authorization: Bearer unless TokenQuery
	TokenQuery bool        // send the token as ?token= instead
	LastID     string      // Last-Event-ID header
	LastIDQ    string      // ?last_event_id=
	Header     http.Header // extra request headers
	// Manual starts no reader goroutine and registers no cleanup: the
	// caller reads with parser() and ends the stream with close().
	Manual bool
	// SmallRcvBuf makes the client socket's receive buffer tiny so that a
	// device that stops reading backs the server up quickly.
	SmallRcvBuf bool
	// TLS is the client's TLS configuration for an https URL; with HTTP2
	// the client offers HTTP/2 (ALPN), else it speaks HTTP/1.1.
	TLS   *tls.Config
	HTTP2 bool
}

// dialSSE opens an SSE stream. A non-200 answer is returned as its status
// and decoded JSON body with a nil client.
func (th *testHub) dialSSE(d sseDial) (*sseClient, int, map[string]any, error) {
	if d.URL == "" {
		d.URL = th.SSEURL
	}
	return dialSSE(th.t, d)
}

func dialSSE(t *testing.T, d sseDial) (*sseClient, int, map[string]any, error) {
	u, err := url.Parse(d.URL)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("parse url: %w", err)
	}
	q := u.Query()
	if d.TokenQuery && d.Token != "" {
		q.Set("token", d.Token)
	}
	if d.LastIDQ != "" {
		q.Set("last_event_id", d.LastIDQ)
	}
	u.RawQuery = q.Encode()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if d.SmallRcvBuf {
		dialer.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = smallRcvBuf(fd)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	tr := &http.Transport{DialContext: dialer.DialContext, DisableCompression: true, ReadBufferSize: 1024, ForceAttemptHTTP2: d.HTTP2}
	if d.TLS != nil {
		// a copy: an HTTP/2 transport adds "h2" to the configuration's ALPN
		// protocols, which an HTTP/1.1 client sharing it would then offer
		tr.TLSClientConfig = d.TLS.Clone()
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	req.Header.Set("Accept", "text/event-stream")
	if !d.TokenQuery && d.Token != "" {
		req.Header.Set("Authorization", "Bearer "+d.Token)
	}
	if d.LastID != "" {
		req.Header.Set("Last-Event-ID", d.LastID)
	}
	for k, v := range d.Header {
		req.Header[k] = v
	}
	hc := &http.Client{Transport: tr}
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer dcancel()
	stop := context.AfterFunc(dctx, func() {
		if dctx.Err() == context.DeadlineExceeded {
			cancel()
		}
	})
	resp, err := hc.Do(req)
	stop()
	if err != nil {
		cancel()
		tr.CloseIdleConnections()
		return nil, 0, nil, fmt.Errorf("get %s: %w", u.Path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer func() { cancel(); tr.CloseIdleConnections() }()
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, resp.StatusCode, nil, fmt.Errorf("status %d, body not JSON: %q", resp.StatusCode, b)
		}
		return nil, resp.StatusCode, m, nil
	}
	c := &sseClient{t: t, resp: resp, ch: make(chan sseRecord, 100000), done: make(chan struct{}), cancel: cancel, tr: tr}
	if d.Manual {
		close(c.done) // no reader to wait for
		return c, resp.StatusCode, nil, nil
	}
	go c.read()
	t.Cleanup(c.close)
	return c, resp.StatusCode, nil, nil
}

// mustSSE opens a stream for token (Authorization header) resuming from
// lastID (Last-Event-ID header) or fails the test.
func (th *testHub) mustSSE(token, lastID string) *sseClient {
	th.t.Helper()
	c, status, body, err := th.dialSSE(sseDial{Token: token, LastID: lastID})
	if err != nil || c == nil {
		th.t.Fatalf("sse dial: %v (status %d %v)", err, status, body)
	}
	return c
}

// read parses the event stream until it ends.
func (c *sseClient) read() {
	defer close(c.done)
	defer c.resp.Body.Close()
	p := c.parser(64 << 10)
	for {
		rec, err := p.next()
		if err != nil {
			c.err = err
			return
		}
		c.ch <- rec
	}
}

// parser returns a parser of the response body that keeps the client's
// retry and ping counters.
func (c *sseClient) parser(bufSize int) *sseParser {
	return &sseParser{
		br: bufio.NewReaderSize(c.resp.Body, bufSize),
		onRetry: func(n int) {
			c.retry.Store(int64(n))
			c.firstRet.CompareAndSwap(0, int64(n))
			c.retries.Add(1)
		},
		onPing:   func() { c.pings.Add(1) },
		onLastID: func(id string) { c.lastID.Store(id) },
	}
}

// sseParser reads text/event-stream records synchronously.
type sseParser struct {
	br      *bufio.Reader
	retry   int
	onRetry func(int)
	onPing  func()
	// idBuf is the last event ID buffer of the EventSource processing
	// model; onLastID gets it at the end of every record (blank line),
	// data or not.
	idBuf    string
	onLastID func(string)
}

// next returns the next dispatched record (one with data), io.EOF at a
// clean end of the stream, io.ErrUnexpectedEOF in the middle of a line.
func (p *sseParser) next() (sseRecord, error) {
	var rec sseRecord
	var data []string
	hasData := false
	for {
		line, err := p.br.ReadString('\n')
		if err != nil {
			if err == io.EOF && line != "" {
				err = io.ErrUnexpectedEOF
			}
			return sseRecord{}, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if p.onLastID != nil {
				p.onLastID(p.idBuf)
			}
			if hasData {
				rec.Data = strings.Join(data, "\n")
				rec.Retry = p.retry
				return rec, nil
			}
			rec, data = sseRecord{}, nil
			continue
		}
		if strings.HasPrefix(line, ":") {
			if strings.TrimSpace(line[1:]) == "ping" && p.onPing != nil {
				p.onPing()
			}
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			rec.ID, rec.HasID = value, true
			if !strings.ContainsRune(value, 0) {
				p.idBuf = value
			}
		case "event":
			rec.Event = value
		case "data":
			data, hasData = append(data, value), true
		case "retry":
			if n, err := strconv.Atoi(value); err == nil {
				p.retry = n
				if p.onRetry != nil {
					p.onRetry(n)
				}
			}
		}
	}
}

// close ends the stream from the client side and waits for the reader.
func (c *sseClient) close() {
	c.cancel()
	<-c.done
	c.resp.Body.Close()
	c.tr.CloseIdleConnections()
}

// decode turns a record into its envelope and checks that the SSE fields
// agree with it (id: line iff the envelope has an id, event: is the type).
func (c *sseClient) decode(r sseRecord) envelope {
	c.t.Helper()
	var e envelope
	if err := json.Unmarshal([]byte(r.Data), &e); err != nil {
		c.t.Fatalf("sse data is not one JSON envelope: %q: %v", r.Data, err)
	}
	e.raw = []byte(r.Data)
	if r.Event != e.Type {
		c.t.Fatalf("sse event: %q but envelope type %q (%s)", r.Event, e.Type, r.Data)
	}
	if r.HasID != (e.ID != "") || r.ID != e.ID {
		c.t.Fatalf("sse id: %q (present %v) but envelope id %q", r.ID, r.HasID, e.ID)
	}
	return e
}

// nextRecord returns the next record within the deadline.
func (c *sseClient) nextRecord(timeout time.Duration) sseRecord {
	c.t.Helper()
	select {
	case r := <-c.ch:
		return r
	case <-time.After(timeout):
		c.t.Fatalf("no sse event within %v (ended: %v)", timeout, c.endErr())
	}
	return sseRecord{}
}

// next returns the next envelope within the deadline.
func (c *sseClient) next(timeout time.Duration) envelope {
	c.t.Helper()
	return c.decode(c.nextRecord(timeout))
}

// connected reads hub.connected and returns its payload.
func (c *sseClient) connected() map[string]any {
	c.t.Helper()
	e := c.next(5 * time.Second)
	if e.Type != "hub.connected" {
		c.t.Fatalf("first sse event %q, want hub.connected", e.Type)
	}
	var p map[string]any
	if err := json.Unmarshal(e.Payload, &p); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// waitEnd reads until the stream ends and returns the envelopes read on
// the way (the last one is the closing control event, if any).
func (c *sseClient) waitEnd(timeout time.Duration) []envelope {
	c.t.Helper()
	deadline := time.After(timeout)
	var out []envelope
	for {
		select {
		case r := <-c.ch:
			out = append(out, c.decode(r))
		case <-c.done:
			for {
				select {
				case r := <-c.ch:
					out = append(out, c.decode(r))
				default:
					return out
				}
			}
		case <-deadline:
			c.t.Fatalf("sse stream not ended within %v", timeout)
		}
	}
}

// endErr is the error that ended the stream, nil while it is open.
func (c *sseClient) endErr() error {
	select {
	case <-c.done:
		if c.err == nil {
			return errors.New("ended")
		}
		return c.err
	default:
		return nil
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // test values only
	}
	return string(b)
}

// doNoFatal is do for goroutines other than the test's: errors come back
// as status 0 with an "error" entry.
func doNoFatal(req *http.Request) (int, map[string]any) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, map[string]any{"error": err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return resp.StatusCode, map[string]any{"error": fmt.Sprintf("body not JSON: %q", b)}
	}
	return resp.StatusCode, m
}

// decodeEnvelope decodes one WebSocket frame.
func decodeEnvelope(b []byte) (envelope, error) {
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("decode envelope: %w", err)
	}
	e.raw = b
	return e, nil
}

// smallRcvBuf gives a client socket, before it connects, the receive
// buffer of a device that falls behind quickly (4 KiB), and the segment
// size of a real network (1460 bytes). Without the latter, on loopback
// (MTU 64 KiB) the server bounds its segments to half the tiny window, the
// window stays a few bytes short of one segment, and the server sends only
// on its zero-window probe timer: about 10 KB/s, whatever the client reads.
func smallRcvBuf(fd uintptr) error {
	if err := syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096); err != nil {
		return err
	}
	return syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 1460)
}
