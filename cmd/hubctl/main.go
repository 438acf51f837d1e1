// Command hubctl is the hub's command-line tool, a client of its public API:
//
//	hubctl token       mint a token (HS256/384/512) with the hub's secret (--config hub.yaml)
//	hubctl publish     publish an event to users or to all (or a batch from stdin)
//	hubctl tail        print a user's events as they come, reconnecting (WebSocket or SSE)
//	hubctl stats       print the node's connection stats (admin JWT; an API key is refused, exit 2)
//	hubctl disconnect  close every connection of a user
//	hubctl who         list a user's live connections on every node
//	hubctl bench       measure a hub on loopback (hubbench: idle, fanout, unicast)
//
// Environment: HUB_URL (default http://localhost:8080), HUB_API_KEY (else,
// when HUB_TOKEN is unset too, the first key of the hub's own HUB_API_KEYS),
// HUB_TOKEN, and HUB_JWT_SECRET (else the file HUB_CONFIG names) for
// `hubctl token`. Exit status: 0 on success (and `--help`), 1 for a runtime
// or API error (the message on stderr names the hub's error code; a hub
// that cannot be reached gets a hint to set --url or HUB_URL), 2 for a
// usage error, which includes credentials that cannot work (`stats` with
// an API key), found before anything is sent. hubctl never prints a token,
// except as the output of `hubctl token`.
//
// # Adding a subcommand from another file
//
// Every subcommand is a *command in the commands map, keyed by its name.
// Another file of package main (bench.go, for example) adds its own in an
// init function; the map is ready before any init runs:
//
//	func init() {
//		commands["bench"] = &command{
//			summary: "measure the hub",
//			run: func(ctx context.Context, s *streams, args []string) int {
//				fs := newFlagSet("bench", "[flags]", s)
//				cf := addConnFlags(fs)          // --url, --api-key, --token (+ env)
//				n := fs.Int("n", 100, "connections")
//				if code, done := parseFlags(fs, s, args); done {
//					return code                 // --help: 0, bad flags: 2
//				}
//				c, done := cf.client()          // a *client.Client for the hub
//				defer done()                    // drops its idle connections
//				...
//				return exitOK                   // or fail(s, "bench", err), usageError(s, fs, "...")
//			},
//		}
//	}
//
// ctx is cancelled on SIGINT/SIGTERM (and by tests); a long-running command
// stops when it is done and returns exitOK. Write results to s.out and
// messages to s.err.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/hubd/hub/client"
	"github.com/hubd/hub/cmd/internal/bench"
)

// Exit statuses.
const (
	exitOK    = 0 // success, or --help
	exitError = 1 // runtime or API error
	exitUsage = 2 // bad command line
)

// defaultURL is the hub's URL when neither --url nor HUB_URL is set.
const defaultURL = "http://localhost:8080"

// streams are a command's standard input, output and error.
type streams struct {
	in  io.Reader
	out io.Writer
	err io.Writer
}

// command is one subcommand: a one-line summary for the usage text and the
// function that runs it with the arguments after its name.
type command struct {
	summary string
	run     func(ctx context.Context, s *streams, args []string) int
}

// commands holds every subcommand by name. Files of package main add to it
// in init functions (see the package documentation).
var commands = map[string]*command{}

func main() {
	if ok, err := bench.RawReader(os.Args[1:]); ok { // `hubctl bench --scenario rawwrite`'s readers
		if err != nil {
			fmt.Fprintln(os.Stderr, "hubctl:", err)
			os.Exit(exitError)
		}
		return
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run runs hubctl with args (without the program name) until it is done or
// the process gets SIGINT/SIGTERM, and returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runContext(ctx, args, stdin, stdout, stderr)
}

// runContext is run with the cancellation given by ctx instead of signals:
// a cancelled ctx ends a command as an interrupt does.
func runContext(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	s := &streams{in: stdin, out: stdout, err: stderr}
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if name == "help" && len(args) > 1 {
			if cmd, ok := commands[args[1]]; ok {
				return cmd.run(ctx, s, []string{"--help"})
			}
			fmt.Fprintf(stderr, "hubctl: unknown command %q\n", args[1])
			return exitUsage
		}
		usage(stdout)
		return exitOK
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "hubctl: unknown command %q\n\n", name)
		usage(stderr)
		return exitUsage
	}
	return cmd.run(ctx, s, args[1:])
}

// usage writes the list of commands to w.
func usage(w io.Writer) {
	fmt.Fprint(w, "Usage: hubctl <command> [flags]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-11s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, "\nRun `hubctl <command> --help` for a command's flags.\n"+
		"Environment: HUB_URL (default "+defaultURL+"), HUB_API_KEY (else the first of HUB_API_KEYS), HUB_TOKEN, HUB_JWT_SECRET, HUB_CONFIG.\n"+
		"Exit status: 0 ok, 1 error, 2 usage (credentials that cannot work included).\n")
}

// newFlagSet returns the flag set of a subcommand; synopsis follows
// "hubctl <name>" in its usage line. Errors and help are written by
// parseFlags.
func newFlagSet(name, synopsis string, s *streams) *flag.FlagSet {
	fs := flag.NewFlagSet("hubctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: hubctl %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args into fs. done is true when the command must stop
// with code: 0 after --help (usage on stdout), 2 after a bad flag or a
// stray argument (message and usage on stderr).
func parseFlags(fs *flag.FlagSet, s *streams, args []string) (code int, done bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(s.out)
		fs.Usage()
		return exitOK, true
	case err != nil:
		fmt.Fprintf(s.err, "%s: %v\n", fs.Name(), err)
		fs.SetOutput(s.err)
		fs.Usage()
		return exitUsage, true
	case fs.NArg() > 0:
		return usageError(s, fs, fmt.Sprintf("unexpected argument %q", fs.Arg(0))), true
	}
	return exitOK, false
}

// usageError reports a bad command line and returns exitUsage.
func usageError(s *streams, fs *flag.FlagSet, msg string) int {
	fmt.Fprintf(s.err, "%s: %s\nRun `%s --help` for usage.\n", fs.Name(), msg, fs.Name())
	return exitUsage
}

// fail reports a runtime or API error of command name and returns
// exitError. A hub error answer is written with its status and code. A
// message that starts with the command's name (the client's context) does
// not repeat it. An error that says where to look next gets a second line
// with a hint (see hint).
func fail(s *streams, name string, err error) int {
	fmt.Fprintf(s.err, "hubctl %s: %s\n", name, strings.TrimPrefix(err.Error(), name+": "))
	if h := hint(name, err); h != "" {
		fmt.Fprintf(s.err, "hubctl: %s\n", h)
	}
	return exitError
}

// hint suggests what to check after err of command name: for a hub that
// cannot be reached (a refused or failed dial, an unknown host), to point
// --url or HUB_URL at it; for a path the hub does not serve (404), that the
// service API may be on the internal listener, or, for tail, that the
// WebSocket and SSE endpoints are on the public one. "" when there is
// nothing to add.
func hint(name string, err error) string {
	dial := false
	if op, ok := errors.AsType[*net.OpError](err); ok {
		dial = op.Op == "dial"
	}
	if _, dns := errors.AsType[*net.DNSError](err); dial || dns {
		where := "that address"
		if ue, ok := errors.AsType[*url.Error](err); ok {
			if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
				scheme := map[string]string{"ws": "http", "wss": "https"}[u.Scheme]
				if scheme == "" {
					scheme = u.Scheme
				}
				where = scheme + "://" + u.Host
			}
		}
		return "no hub answers at " + where + ": is it running there? Set --url or HUB_URL to the hub's address (default " + defaultURL + ")."
	}
	if e, ok := errors.AsType[*client.Error](err); ok && e.Status == http.StatusNotFound && e.Code == "not_found" {
		if name == "tail" {
			return "the WebSocket and SSE endpoints are on the hub's public listener (HUB_ADDR): check --url (or HUB_URL) and --path."
		}
		return "with HUB_INTERNAL_ADDR set, the hub serves its service API on the internal listener only: set --url or HUB_URL to that address."
	}
	return ""
}

// connFlags are the flags that say where the hub is and how to
// authenticate; empty ones fall back to the environment after parsing.
type connFlags struct {
	url, apiKey, token string
}

// addConnFlags registers --url, --api-key and --token on fs. Defaults are
// not shown in --help: they may be secrets.
func addConnFlags(fs *flag.FlagSet) *connFlags {
	cf := addAdminFlags(fs)
	fs.StringVar(&cf.apiKey, "api-key", "", "API key sent in X-API-Key (default $HUB_API_KEY, else the first key of $HUB_API_KEYS)")
	return cf
}

// addAdminFlags registers --url and --token on fs, for the commands that
// need an admin JWT (an API key carries the service role only).
func addAdminFlags(fs *flag.FlagSet) *connFlags {
	cf := &connFlags{}
	fs.StringVar(&cf.url, "url", "", "the hub's base URL (default $HUB_URL or "+defaultURL+")")
	fs.StringVar(&cf.token, "token", "", "JWT sent as a bearer token (default $HUB_TOKEN)")
	return cf
}

// resolve fills the empty fields from the environment. Without a
// credential in the flags it takes HUB_API_KEY and HUB_TOKEN; when both are
// unset, the first key of HUB_API_KEYS (the hub's own list, often set in the
// same shell).
func (cf *connFlags) resolve() {
	if cf.url == "" {
		cf.url = os.Getenv("HUB_URL")
	}
	if cf.url == "" {
		cf.url = defaultURL
	}
	cf.url = strings.TrimRight(cf.url, "/")
	if cf.apiKey == "" && cf.token == "" {
		cf.apiKey = os.Getenv("HUB_API_KEY")
		cf.token = os.Getenv("HUB_TOKEN")
	}
	if cf.apiKey == "" && cf.token == "" {
		if keys := splitList(os.Getenv("HUB_API_KEYS")); len(keys) > 0 {
			cf.apiKey = keys[0]
		}
	}
}

// client returns a client of the hub named by the flags (environment
// applied) with its own HTTP transport, and a func that closes the
// transport's idle connections.
func (cf *connFlags) client() (*client.Client, func()) {
	cf.resolve()
	hc := newHTTPClient()
	opts := []client.Option{client.WithHTTPClient(hc)}
	if cf.apiKey != "" {
		opts = append(opts, client.WithAPIKey(cf.apiKey))
	}
	if cf.token != "" {
		opts = append(opts, client.WithToken(cf.token))
	}
	return client.New(cf.url, opts...), hc.CloseIdleConnections
}

// newHTTPClient returns an HTTP client with a transport of its own (no
// overall timeout: a command's context bounds it).
func newHTTPClient() *http.Client {
	return &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
