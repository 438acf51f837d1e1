package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubd/hub/internal/auth"
)

// result is the JSON line printed at the end of a run.
type result struct {
	Scenario     string `json:"scenario"`
	Transport    string `json:"transport"`
	Conns        int    `json:"conns"`
	Connected    int    `json:"connected"`
	PerUser      int    `json:"perUser"`
	Users        int    `json:"users"`
	Sources      int    `json:"sourceAddresses"`
	PayloadBytes int    `json:"payloadBytes"`
	PayloadKind  string `json:"payloadKind,omitempty"`
	Compression  bool   `json:"compression,omitempty"`

	ConnectSeconds float64 `json:"connectSeconds"`
	ConnectRate    float64 `json:"connectsPerSecond"`
	ConnectErrors  int     `json:"connectErrors"`
	// CPU time of the hub and of hubbench while connecting (the load
	// generator must have room to spare for the rate to be the hub's).
	ConnectServerCPU *float64 `json:"connectServerCpuSeconds,omitempty"`
	ConnectClientCPU *float64 `json:"connectClientCpuSeconds,omitempty"`

	RSSBefore      int64    `json:"rssBeforeBytes,omitempty"`
	RSSAfter       int64    `json:"rssAfterBytes,omitempty"`
	RSSPerConn     float64  `json:"rssPerConnBytes,omitempty"`
	HeapBefore     int64    `json:"heapInuseBeforeBytes,omitempty"`
	HeapAfter      int64    `json:"heapInuseAfterBytes,omitempty"`
	HeapPerConn    float64  `json:"heapPerConnBytes,omitempty"`
	GoroutinesPer  *float64 `json:"goroutinesPerConn,omitempty"`
	ServerCPUSecs  *float64 `json:"serverCpuSeconds,omitempty"`
	ClientCPUSecs  *float64 `json:"clientCpuSeconds,omitempty"`
	ClientErrors   int      `json:"clientErrors,omitempty"`
	FirstClientErr string   `json:"firstClientError,omitempty"`
	HeapNote       string   `json:"heapNote,omitempty"`
	Events         int      `json:"events,omitempty"`
	Batch          int      `json:"batch,omitempty"`
	UnicastAPI     string   `json:"unicastApi,omitempty"`
	Rate           float64  `json:"rate,omitempty"`
	APICalls       int      `json:"apiCalls,omitempty"`
	PublishErrors  int      `json:"publishErrors,omitempty"`
	PublishSeconds float64  `json:"publishSeconds,omitempty"`
	APILatencyMs   *pcts    `json:"apiLatencyMs,omitempty"`
	Expected       int64    `json:"expectedDeliveries,omitempty"`
	Deliveries     int64    `json:"deliveries,omitempty"`
	Missing        int64    `json:"missing"`
	Extra          int64    `json:"extra"`
	Seconds        float64  `json:"seconds,omitempty"`
	DeliveryRate   float64  `json:"deliveriesPerSecond,omitempty"`
	LatencyMs      *pcts    `json:"latencyMs,omitempty"`
	// What the clients read from their sockets after hub.connected
	// (frames as sent, compressed or not), in all and per delivery, and
	// the hub's CPU per delivery.
	BytesReceived     int64    `json:"bytesReceived,omitempty"`
	BytesPerDelivery  float64  `json:"bytesPerDelivery,omitempty"`
	ServerCPUPerDelUs *float64 `json:"serverCpuMicrosPerDelivery,omitempty"`
	// rawwrite: the machine's ceiling for one small write to one of many
	// loopback sockets (no hub).
	WriteRate      float64 `json:"writesPerSecond,omitempty"`
	MicrosPerWrite float64 `json:"microsPerWrite,omitempty"`
	Error          string  `json:"error,omitempty"`

	// storm: the reconnect storm (storm.go).
	Storm *stormResult `json:"storm,omitempty"`
}

// pcts are latency percentiles in milliseconds.
type pcts struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type bench struct {
	name      string    // the command, for messages
	stderr    io.Writer // warnings
	o         options
	base, api *url.URL
	clients   []*client
	userConns []int // connections per user
	http      *http.Client

	received atomic.Int64
	lastRecv atomic.Int64   // unix nanos of the latest delivery
	readers  sync.WaitGroup // the clients' read loops
}

// onEvent records one delivery; it runs on the client's read loop.
func (b *bench) onEvent(c *client, sent int64, seq uint32, now int64) {
	c.seqs = append(c.seqs, seq)
	c.lats = append(c.lats, now-sent)
	b.received.Add(1)
	if now > b.lastRecv.Load() {
		b.lastRecv.Store(now) // racy max; good enough for a rate
	}
}

func (b *bench) run(ctx context.Context) *result {
	o := b.o
	users := (o.conns + o.perUser - 1) / o.perUser
	res := &result{Scenario: o.scenario, Transport: o.tr, Conns: o.conns, PerUser: o.perUser, Users: users,
		Sources: (o.conns + o.perSource - 1) / o.perSource, PayloadBytes: len(b.payload(time.Now().UnixNano(), 0)),
		Compression: o.compression}
	if o.payloadKind != "x" {
		res.PayloadKind = o.payloadKind
	}
	b.http = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: o.insecure}}, // --insecure: the caller's choice, loopback only
		Timeout: 30 * time.Second}
	defer b.http.CloseIdleConnections()

	if o.scenario == "rawwrite" {
		b.runRawWrite(ctx, res)
		return res
	}
	if o.scenario == "storm" {
		b.runStorm(ctx, res)
		return res
	}
	before := b.sample(ctx)
	if err := b.connect(ctx, res); err != nil {
		res.Error = err.Error()
		b.closeAll()
		return res
	}
	switch o.scenario {
	case "idle":
		select {
		case <-time.After(o.settle):
		case <-ctx.Done():
		}
		after := b.sample(ctx)
		b.memory(res, before, after)
	case "fanout", "unicast":
		b.deliver(ctx, res)
	}
	b.closeAll()
	return res
}

// connect opens every connection and waits for its hub.connected.
func (b *bench) connect(ctx context.Context, res *result) error {
	o := b.o
	b.clients = make([]*client, o.conns)
	users := (o.conns + o.perUser - 1) / o.perUser
	b.userConns = make([]int, users)
	path := o.wsPath
	if o.tr == "sse" {
		path = o.ssePath
	}
	// every user's handshake request, built once
	reqs := make([][]byte, users)
	for u := range users {
		tok, err := auth.Mint(o.secret, "HS256", userID(u), nil, 2*maxTimeout)
		if err != nil {
			return err
		}
		reqs[u] = request(b.base, path, tok, "", o.tr == "ws", o.compression)
	}
	bufSize := max(4096, 2*o.payloadBytes+1024)
	var tlsConf *tls.Config
	if b.base.Scheme == "https" {
		// HTTP/1.1 as a WebSocket client asks; no session cache: every
		// connection makes a full handshake, as a fleet of devices does
		tlsConf = &tls.Config{ServerName: b.base.Hostname(), InsecureSkipVerify: o.insecure, NextProtos: []string{"http/1.1"}}
	}
	var (
		next     atomic.Int64
		mu       sync.Mutex
		firstErr error
		errs     int
		wg       sync.WaitGroup
	)
	cpu0, cpuOK := procCPU(o.pid)
	self0, selfOK := procCPU(os.Getpid())
	start := time.Now()
	for range o.dialConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= o.conns || ctx.Err() != nil {
					return
				}
				u := i / o.perUser
				c, err := dial(ctx, b.base, tlsConf, reqs[u], sourceAddr(i, o.perSource), o.tr == "ws", o.compression, bufSize)
				if err != nil {
					mu.Lock()
					errs++
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					continue
				}
				c.user = u
				b.clients[i] = c
				// Read from now on: pings are answered while the
				// others connect.
				b.readers.Add(1)
				go func() { defer b.readers.Done(); c.readLoop(b.onEvent) }()
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	res.ConnectServerCPU = cpuSince(o.pid, cpu0, cpuOK)
	res.ConnectClientCPU = cpuSince(os.Getpid(), self0, selfOK)
	for _, c := range b.clients {
		if c != nil {
			res.Connected++
			b.userConns[c.user]++
		}
	}
	res.ConnectSeconds = d.Seconds()
	res.ConnectRate = float64(res.Connected) / d.Seconds()
	res.ConnectErrors = errs
	if firstErr != nil {
		return fmt.Errorf("%d of %d connections failed; first: %w", errs, o.conns, firstErr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	return nil
}

func userID(u int) string { return "bench-" + strconv.Itoa(u) }

// sourceAddr is the local address of connection i: 127.0.0.2 for the first
// perSource connections, then 127.0.0.3, ...
func sourceAddr(i, perSource int) net.IP {
	n := 2 + i/perSource
	return net.IPv4(127, byte(n>>16), byte(n>>8), byte(n))
}

func (b *bench) closeAll() {
	var wg sync.WaitGroup
	for _, c := range b.clients {
		if c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.close() }()
		}
	}
	wg.Wait()
	b.readers.Wait()
}

// payload is [sentUnixNano,seq,padding] of about --payload-bytes: the
// padding a string of one letter, or (--payload-kind json) JSON records.
func (b *bench) payload(sent int64, seq int) []byte {
	n := b.o.payloadBytes
	p := make([]byte, 0, n+32)
	p = append(p, '[')
	p = strconv.AppendInt(p, sent, 10)
	p = append(p, ',')
	p = strconv.AppendInt(p, int64(seq), 10)
	if pad := n - len(p) - 4; pad >= 0 {
		p = append(p, ',')
		if b.o.payloadKind == "json" {
			p = append(p, jsonPadding(pad+2)...)
		} else {
			p = append(p, '"')
			p = append(p, bytes.Repeat([]byte{'x'}, pad)...)
			p = append(p, '"')
		}
	}
	return append(p, ']')
}

var (
	jsonPadMu sync.Mutex
	jsonPads  = map[int][]byte{}
)

// jsonPadding is a JSON array of made-up records (hex ids, user names,
// types, timestamps, titles, scores: what application events carry) of
// at most n bytes, the same for every call with n.
func jsonPadding(n int) []byte {
	jsonPadMu.Lock()
	defer jsonPadMu.Unlock()
	if p, ok := jsonPads[n]; ok {
		return p
	}
	rnd := rand.New(rand.NewPCG(uint64(n), 17))
	words := []string{"draft", "report", "invoice", "meeting", "notes", "budget", "review", "plan", "summary", "order", "ticket", "design"}
	types := []string{"DRAFT_UPDATED", "ORDER_CREATED", "COMMENT_ADDED", "TASK_ASSIGNED"}
	p := []byte{'['}
	for {
		var rec []byte
		if len(p) > 1 {
			rec = append(rec, ',')
		}
		rec = fmt.Appendf(rec, `{"id":"%08x","user":"user%d","type":%q,"ts":%d,"title":"%s %s %d","score":%.3f,"done":%v}`,
			rnd.Uint32(), rnd.IntN(100000), types[rnd.IntN(len(types))], 1765000000000+rnd.Int64N(1e9),
			words[rnd.IntN(len(words))], words[rnd.IntN(len(words))], rnd.IntN(1000), rnd.Float64(), rnd.IntN(2) == 0)
		if len(p)+len(rec)+1 > n {
			break
		}
		p = append(p, rec...)
	}
	// the rest: a string of words, so that the size is n
	if rest := n - len(p) - 1; rest >= 4 {
		start := len(p)
		if len(p) > 1 {
			p = append(p, ',')
		} else {
			p = append(p, ' ') // no record fits: JSON allows the space
		}
		p = append(p, '"')
		for len(p)-start < rest-1 {
			p = append(p, words[rnd.IntN(len(words))]...)
			p = append(p, ' ')
		}
		p = append(p[:start+rest-1], '"')
	}
	p = append(p, ']')
	jsonPads[n] = p
	return p
}

// deliver publishes the events and collects deliveries, latency and
// missing/extra counts.
func (b *bench) deliver(ctx context.Context, res *result) {
	o := b.o
	res.Events, res.Rate = o.events, o.rate
	if o.scenario == "unicast" {
		res.Batch = o.batch
	}
	// eventUser[s] is the user of unicast event s; wantSeqs[u] the
	// sequence numbers user u is to receive (unicast).
	var (
		eventUser []int32
		wantSeqs  [][]uint32
	)
	if o.scenario == "fanout" {
		res.Expected = int64(res.Connected) * int64(o.events)
	} else {
		res.UnicastAPI = o.unicastAPI
		eventUser = make([]int32, o.events)
		wantSeqs = make([][]uint32, len(b.userConns))
		n := len(b.userConns)
		distinct := b.broadcastCalls() && o.batch <= n // the users of one call
		inCall := map[int]bool{}
		for s := range eventUser {
			if b.eventSeq(s) == s {
				clear(inCall)
			}
			u := rand.IntN(n)
			for distinct && inCall[u] {
				u = rand.IntN(n)
			}
			inCall[u] = true
			eventUser[s] = int32(u)
			seq := uint32(b.eventSeq(s))
			if w := wantSeqs[u]; len(w) > 0 && w[len(w)-1] == seq {
				continue // a user named twice in one call gets one event
			}
			wantSeqs[u] = append(wantSeqs[u], seq)
			res.Expected += int64(b.userConns[u])
		}
	}
	cpu0, cpuOK := procCPU(o.pid)
	self0, selfOK := procCPU(os.Getpid())
	start := time.Now()
	apiLats, calls, perrs := b.publish(ctx, eventUser)
	pubEnd := time.Now()
	res.APICalls, res.PublishErrors = calls, perrs
	res.PublishSeconds = pubEnd.Sub(start).Seconds()
	res.APILatencyMs = percentiles(apiLats)

	// Wait for every delivery, a stall after the last publish, or the bound.
	deadline := pubEnd.Add(o.drain)
	lastCount, lastChange := int64(-1), time.Now()
	for ctx.Err() == nil && time.Now().Before(deadline) {
		n := b.received.Load()
		if n >= res.Expected {
			break
		}
		if n != lastCount {
			lastCount, lastChange = n, time.Now()
		} else if time.Since(lastChange) > 5*time.Second {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	res.ServerCPUSecs = cpuSince(o.pid, cpu0, cpuOK)
	res.ClientCPUSecs = cpuSince(os.Getpid(), self0, selfOK)
	// Extra deliveries may still be in flight: give them a moment.
	time.Sleep(200 * time.Millisecond)
	for _, c := range b.clients {
		if err := c.err.Load(); err != nil {
			res.ClientErrors++
			if res.FirstClientErr == "" {
				res.FirstClientErr = (*err).Error()
			}
		}
	}
	for _, c := range b.clients {
		_ = c.nc.Close()
	}
	b.readers.Wait()

	last := time.Unix(0, b.lastRecv.Load())
	res.Seconds = last.Sub(start).Seconds()
	var all []int64
	allSeqs := make([]uint32, o.events)
	for s := range allSeqs {
		allSeqs[s] = uint32(s)
	}
	for _, c := range b.clients {
		res.Deliveries += int64(len(c.seqs))
		all = append(all, c.lats...)
		want := allSeqs
		if wantSeqs != nil {
			want = wantSeqs[c.user]
		}
		miss, extra := compare(want, c.seqs)
		res.Missing += miss
		res.Extra += extra
	}
	if res.Seconds > 0 {
		res.DeliveryRate = float64(res.Deliveries) / res.Seconds
	}
	res.LatencyMs = percentiles(all)
	for _, c := range b.clients {
		res.BytesReceived += c.rx
	}
	if res.Deliveries > 0 {
		res.BytesPerDelivery = float64(res.BytesReceived) / float64(res.Deliveries)
		if res.ServerCPUSecs != nil {
			v := *res.ServerCPUSecs / float64(res.Deliveries) * 1e6
			res.ServerCPUPerDelUs = &v
		}
	}
	if res.Missing > 0 || res.Extra > 0 || res.PublishErrors > 0 {
		res.Error = fmt.Sprintf("%d missing, %d extra deliveries, %d publish errors", res.Missing, res.Extra, res.PublishErrors)
	}
}

// compare counts the expected sequence numbers (ascending, unique) not
// received and the received ones not expected or received twice.
func compare(want, got []uint32) (missing, extra int64) {
	g := slices.Clone(got)
	slices.Sort(g)
	i := 0
	for j, s := range g {
		if j > 0 && g[j-1] == s {
			extra++
			continue
		}
		for i < len(want) && want[i] < s {
			missing++
			i++
		}
		if i < len(want) && want[i] == s {
			i++
		} else {
			extra++
		}
	}
	missing += int64(len(want) - i)
	return missing, extra
}

// broadcastCalls reports whether unicast events go out as one event to
// --batch users per /api/broadcast call (--unicast-api broadcast).
func (b *bench) broadcastCalls() bool {
	return b.o.scenario == "unicast" && b.o.unicastAPI == "broadcast" && b.o.batch > 1
}

// eventSeq is the sequence number in the payload that unicast event s is
// delivered with: s, or with --unicast-api broadcast the first event of
// its call (one event, one payload, for all the users of the call).
func (b *bench) eventSeq(s int) int {
	if b.broadcastCalls() {
		return s - s%b.o.batch
	}
	return s
}

// publish sends the events through the API, paced by --rate, and returns
// the API call latencies, the number of calls and of failed calls.
func (b *bench) publish(ctx context.Context, eventUser []int32) (lats []int64, calls, errs int) {
	o := b.o
	start := time.Now()
	per := 1
	if eventUser != nil {
		per = o.batch
	}
	for first := 0; first < o.events && ctx.Err() == nil; first += per {
		if o.rate > 0 {
			at := start.Add(time.Duration(float64(first) / o.rate * float64(time.Second)))
			if d := time.Until(at); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return lats, calls, errs
				}
			}
		}
		last := min(first+per, o.events)
		var body bytes.Buffer
		path := "/api/broadcast"
		sent := time.Now().UnixNano()
		switch {
		case eventUser == nil:
			fmt.Fprintf(&body, `{"all":true,"type":"BENCH","payload":%s}`, b.payload(sent, first))
		case per == 1:
			fmt.Fprintf(&body, `{"userIds":[%q],"type":"BENCH","payload":%s}`, userID(int(eventUser[first])), b.payload(sent, first))
		case b.broadcastCalls():
			body.WriteString(`{"userIds":[`)
			for s := first; s < last; s++ {
				if s > first {
					body.WriteByte(',')
				}
				fmt.Fprintf(&body, `%q`, userID(int(eventUser[s])))
			}
			fmt.Fprintf(&body, `],"type":"BENCH","payload":%s}`, b.payload(sent, first))
		default:
			path = "/api/broadcast/batch"
			body.WriteString(`{"messages":[`)
			for s := first; s < last; s++ {
				if s > first {
					body.WriteByte(',')
				}
				fmt.Fprintf(&body, `{"userIds":[%q],"type":"BENCH","payload":%s}`, userID(int(eventUser[s])), b.payload(sent, s))
			}
			body.WriteString(`]}`)
		}
		t0 := time.Now()
		err := b.post(ctx, path, body.Bytes())
		lats = append(lats, time.Since(t0).Nanoseconds())
		calls++
		if err != nil {
			errs++
			if errs == 1 {
				fmt.Fprintln(b.stderr, b.name+": publish:", err)
			}
		}
	}
	return lats, calls, errs
}

func (b *bench) post(ctx context.Context, path string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.api.JoinPath(path).String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", b.o.apiKey)
	resp, err := b.http.Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", path, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("post %s: status %d: %s", path, resp.StatusCode, bytes.TrimSpace(rb[:min(len(rb), 300)]))
	}
	if bytes.Contains(rb, []byte(`"error":`)) {
		return fmt.Errorf("post %s: a message was refused: %s", path, rb[:min(len(rb), 300)])
	}
	return nil
}

func percentiles(ns []int64) *pcts {
	if len(ns) == 0 {
		return nil
	}
	slices.Sort(ns)
	at := func(q float64) float64 {
		i := int(q * float64(len(ns)-1))
		return float64(ns[i]) / 1e6
	}
	return &pcts{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: float64(ns[len(ns)-1]) / 1e6}
}

// sample is what is known of the server at one moment.
type sample struct {
	rss, heap  int64
	goroutines int64
	hasG       bool
}

func (b *bench) sample(ctx context.Context) sample {
	var s sample
	if b.o.pid > 0 {
		s.rss, _ = procRSS(b.o.pid)
	}
	m := b.metrics(ctx)
	s.heap = int64(m["go_memstats_heap_inuse_bytes"])
	if g, ok := m["go_goroutines"]; ok {
		s.goroutines, s.hasG = int64(g), true
	}
	return s
}

func (b *bench) memory(res *result, before, after sample) {
	n := float64(res.Connected)
	if before.rss > 0 && after.rss > 0 {
		res.RSSBefore, res.RSSAfter = before.rss, after.rss
		res.RSSPerConn = float64(after.rss-before.rss) / n
	}
	if before.heap > 0 && after.heap > 0 {
		res.HeapBefore, res.HeapAfter = before.heap, after.heap
		res.HeapPerConn = float64(after.heap-before.heap) / n
	} else {
		res.HeapNote = "the hub's /metrics has no go_memstats_heap_inuse_bytes: heap not measured"
	}
	if before.hasG && after.hasG {
		v := float64(after.goroutines-before.goroutines) / n
		res.GoroutinesPer = &v
	}
}

// metrics reads the hub's Prometheus text, if it serves one, as name → value
// for unlabelled samples.
func (b *bench) metrics(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.api.JoinPath("/metrics").String(), nil)
	if err != nil {
		return out
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode != http.StatusOK {
		return out
	}
	for line := range bytes.Lines(body) {
		name, val, ok := bytes.Cut(bytes.TrimSpace(line), []byte(" "))
		if !ok || bytes.HasPrefix(name, []byte("#")) || bytes.ContainsRune(name, '{') {
			continue
		}
		if v, err := strconv.ParseFloat(string(bytes.TrimSpace(val)), 64); err == nil {
			out[string(name)] = v
		}
	}
	return out
}

// loopbackURL parses raw and checks that its host resolves to 127.0.0.0/8
// only.
func loopbackURL(ctx context.Context, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: only http:// or https:// over loopback is supported", raw)
	}
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("%q: no host", raw)
	}
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		u.Host = net.JoinHostPort(host, port)
	}
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %q: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%q resolves to nothing", host)
	}
	for _, a := range addrs {
		if ip4 := a.IP.To4(); ip4 == nil || ip4[0] != 127 {
			return nil, fmt.Errorf("%q resolves to %s: only 127.0.0.0/8 is allowed", host, a.IP)
		}
	}
	// Dial the address checked, not a name that could resolve differently.
	u.Host = net.JoinHostPort(addrs[0].IP.String(), u.Port())
	u.Path, u.RawQuery, u.Fragment = "", "", ""
	return u, nil
}

var errNoProc = errors.New("no such process")

func procRSS(pid int) (int64, error) {
	b, err := readProc(pid, "status")
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(string(f[0]), 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, errNoProc
}

// procCPU is the process's user+system CPU time in seconds.
func procCPU(pid int) (float64, bool) {
	if pid <= 0 {
		return 0, false
	}
	b, err := readProc(pid, "stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	// Fields after the command: state(0) ... utime(11) stime(12).
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return float64(ut+st) / 100, true // USER_HZ is 100 on Linux
}

// cpuSince is the CPU time pid used since it had used before (nil when
// either reading failed).
func cpuSince(pid int, before float64, ok bool) *float64 {
	now, ok2 := procCPU(pid)
	if !ok || !ok2 {
		return nil
	}
	v := now - before
	return &v
}

// readProc reads /proc/PID/name.
func readProc(pid int, name string) ([]byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + name)
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	return b, nil
}
