// Package bench is the hub's load generator, run as `hubbench` and as
// `hubctl bench`: it measures a running hub over loopback, how much an idle
// connection costs it (idle), how fast it fans an event out to every
// connection (fanout) and how fast it delivers events to single users
// (unicast). Each run prints exactly one JSON line of results.
//
//	hubbench --url http://127.0.0.1:18181 --secret S --api-key K --pid 1234 \
//	    --scenario fanout --transport ws --conns 10000 --events 200
//
// The load generator is bounded in count (at most 19,900 connections) and in
// time (--timeout), only talks to 127.0.0.0/8, spreads its sockets over the
// source addresses 127.0.0.2, 127.0.0.3, ... and raises its own file limit
// to the hard limit. Its clients are raw WebSocket and SSE readers on
// net.Conn with one goroutine each, so that the generator stays light.
//
// Every event's payload is [sentUnixNano, seq, "padding"], stamped just
// before the publishing HTTP request; latency is measured at the client on
// receipt (both processes share the machine's clock).
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"
)

// Bounds of the flags.
const (
	maxConns      = 19900
	maxEvents     = 1_000_000
	maxDeliveries = 20_000_000
	maxBatch      = 1000
	maxTimeout    = time.Hour
)

type options struct {
	url, apiURL     string
	secret, apiKey  string
	scenario, tr    string
	wsPath, ssePath string
	conns, perUser  int
	events, batch   int
	payloadBytes    int
	rate            float64
	timeout, settle time.Duration
	pid             int
	dialConcurrency int
	perSource       int
	drain           time.Duration
	compression     bool
	payloadKind     string
	unicastAPI      string
	storm           stormOptions
	insecure        bool
}

func parseFlags(name string, stderr io.Writer, args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", envOr("HUB_URL", "http://127.0.0.1:8080"), "hub base URL, http:// or https:// (TLS; see --insecure); must resolve to 127.0.0.0/8; default $HUB_URL")
	fs.StringVar(&o.apiURL, "api-url", "", "base URL of the broadcast API and /metrics (default: --url)")
	fs.StringVar(&o.secret, "secret", os.Getenv("HUB_JWT_SECRET"), "HS256 secret used to mint user tokens (default $HUB_JWT_SECRET)")
	fs.StringVar(&o.apiKey, "api-key", os.Getenv("HUB_API_KEY"), "API key for publishing (X-API-Key; default $HUB_API_KEY)")
	fs.StringVar(&o.scenario, "scenario", "idle", "idle, fanout, unicast, storm (reconnect storm: --mode) or rawwrite (the machine's write ceiling, no hub: --conns sockets, --events writes)")
	fs.StringVar(&o.tr, "transport", "ws", "ws or sse")
	fs.StringVar(&o.wsPath, "ws-path", "/ws/realtime", "WebSocket endpoint path")
	fs.StringVar(&o.ssePath, "sse-path", "/sse/realtime", "SSE endpoint path")
	fs.IntVar(&o.conns, "conns", 1000, fmt.Sprintf("connections (at most %d)", maxConns))
	fs.IntVar(&o.perUser, "per-user", 1, "connections per user")
	fs.IntVar(&o.events, "events", 100, "events to publish (fanout, unicast)")
	fs.Float64Var(&o.rate, "rate", 0, "events per second; 0 publishes flat out")
	fs.IntVar(&o.batch, "batch", 1, fmt.Sprintf("unicast: events (one random user each) per API call, 1 to %d", maxBatch))
	fs.StringVar(&o.unicastAPI, "unicast-api", "batch", `unicast with --batch B > 1: "batch" (B messages of one user each per /api/broadcast/batch call) or "broadcast" (one event to B users per /api/broadcast call)`)
	fs.IntVar(&o.payloadBytes, "payload-bytes", 42, "size of each event's JSON payload")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "bound of the whole run")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "idle: wait this long after the last hub.connected before reading RSS")
	fs.IntVar(&o.pid, "pid", 0, "the hub's process id, to read its RSS and CPU time from /proc")
	fs.IntVar(&o.dialConcurrency, "dial-concurrency", 64, "connections opened at the same time")
	fs.IntVar(&o.perSource, "per-source", 10000, "connections per source address 127.0.0.2, 127.0.0.3, ...")
	fs.DurationVar(&o.drain, "drain", 30*time.Second, "how long to wait for deliveries after the last publish")
	fs.BoolVar(&o.compression, "compression", false, "ws: offer permessage-deflate as Chromium does, and fail unless the hub accepts it")
	fs.BoolVar(&o.insecure, "insecure", false, "https:// URLs: do not verify the hub's certificate (a self-signed one on loopback)")
	fs.StringVar(&o.payloadKind, "payload-kind", "x", `padding of each payload: "x" (one repeated letter) or "json" (records of ids, names and numbers, compressible like real data)`)
	addStormFlags(fs, &o)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.apiURL == "" {
		o.apiURL = o.url
	}
	switch {
	case o.scenario != "idle" && o.scenario != "fanout" && o.scenario != "unicast" && o.scenario != "rawwrite" && o.scenario != "storm":
		return o, fmt.Errorf("--scenario %q: want idle, fanout, unicast, storm or rawwrite", o.scenario)
	case o.tr != "ws" && o.tr != "sse":
		return o, fmt.Errorf("--transport %q: want ws or sse", o.tr)
	case o.conns < 1 || o.conns > maxConns:
		return o, fmt.Errorf("--conns %d: want 1 to %d", o.conns, maxConns)
	case o.perUser < 1 || o.perUser > o.conns:
		return o, fmt.Errorf("--per-user %d: want 1 to --conns", o.perUser)
	case o.scenario != "idle" && (o.events < 1 || o.events > maxEvents):
		return o, fmt.Errorf("--events %d: want 1 to %d", o.events, maxEvents)
	case o.batch < 1 || o.batch > maxBatch:
		return o, fmt.Errorf("--batch %d: want 1 to %d", o.batch, maxBatch)
	case o.rate < 0:
		return o, fmt.Errorf("--rate %v: want 0 or more", o.rate)
	case o.payloadBytes < 2 || o.payloadBytes > 60<<10:
		return o, fmt.Errorf("--payload-bytes %d: want 2 to %d", o.payloadBytes, 60<<10)
	case o.unicastAPI != "batch" && o.unicastAPI != "broadcast":
		return o, fmt.Errorf("--unicast-api %q: want batch or broadcast", o.unicastAPI)
	case o.payloadKind != "x" && o.payloadKind != "json":
		return o, fmt.Errorf("--payload-kind %q: want x or json", o.payloadKind)
	case o.compression && o.tr != "ws":
		return o, errors.New("--compression is for --transport ws")
	case o.timeout <= 0 || o.timeout > maxTimeout:
		return o, fmt.Errorf("--timeout %v: want up to %v", o.timeout, maxTimeout)
	case o.secret == "" && o.scenario != "rawwrite":
		return o, errors.New("--secret is required (the hub's HUB_JWT_SECRET)")
	case o.scenario != "idle" && o.scenario != "rawwrite" && o.apiKey == "":
		return o, errors.New("--api-key is required to publish")
	case o.dialConcurrency < 1 || o.dialConcurrency > 1000:
		return o, fmt.Errorf("--dial-concurrency %d: want 1 to 1000", o.dialConcurrency)
	case o.perSource < 1 || o.perSource > 20000:
		return o, fmt.Errorf("--per-source %d: want 1 to 20000", o.perSource)
	}
	if o.scenario == "storm" {
		return o, o.storm.check(o)
	}
	if o.scenario == "fanout" && o.conns*o.events > maxDeliveries {
		return o, fmt.Errorf("--conns × --events = %d deliveries: at most %d", o.conns*o.events, maxDeliveries)
	}
	if o.scenario == "unicast" && o.perUser*o.events > maxDeliveries {
		return o, fmt.Errorf("--per-user × --events = %d deliveries: at most %d", o.perUser*o.events, maxDeliveries)
	}
	return o, nil
}

// UsageError is a bad command line (a flag out of its bounds, a missing
// one).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Run runs one benchmark as the command name (for messages) with args,
// writes its JSON line to stdout and warnings to stderr, and stops early
// when ctx ends. It returns flag.ErrHelp for --help, a *UsageError for a
// bad command line, and an error when the run failed or anything was
// missing or extra.
func Run(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(name, stderr, args)
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	if err != nil {
		return &UsageError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	base, err := loopbackURL(ctx, o.url)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	apiBase, err := loopbackURL(ctx, o.apiURL)
	if err != nil {
		return fmt.Errorf("--api-url: %w", err)
	}
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintln(stderr, name+": warning:", err)
	}
	// The generator holds thousands of connections and allocates on every
	// one: fewer collections leave its one core to the work measured.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	b := &bench{name: name, stderr: stderr, o: o, base: base, api: apiBase}
	res := b.run(ctx)
	line, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	if res.Error != "" {
		return errors.New(res.Error)
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
