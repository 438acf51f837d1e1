package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"

	"github.com/hubd/hub/client"
)

func init() {
	commands["publish"] = &command{summary: "publish an event to users or to all (or a batch from stdin)", run: runPublish}
}

// maxStdinLine is the longest line of --stdin (a broadcast body).
const maxStdinLine = 16 << 20

// runPublish publishes one event, or with --stdin the broadcast bodies read
// from stdin as batches, and prints the hub's answer.
func runPublish(ctx context.Context, s *streams, args []string) int {
	fs := newFlagSet("publish",
		"[--url U] [--api-key K | --token T] (--user u1 --user u2 | --users u1,u2 | --all) --type T [--payload JSON] [--idempotency-key K] [--key K | --volatile]\n"+
			"       hubctl publish [--url U] [--api-key K | --token T] --stdin   (one broadcast body per line)", s)
	cf := addConnFlags(fs)
	var users listFlag
	fs.Var(&users, "user", "a recipient user id (repeatable)")
	usersCSV := fs.String("users", "", "comma-separated recipient user ids")
	all := fs.Bool("all", false, "publish to every user")
	typ := fs.String("type", "", "the event type (required without --stdin)")
	payload := fs.String("payload", "null", "the event payload, any JSON value")
	idem := fs.String("idempotency-key", "", "idempotency key: a repeat within 10 minutes publishes nothing new")
	key := fs.String("key", "", "coalescing key (the syntax of a type, e.g. draft:42): a resume replays only the newest event of each key")
	volatile := fs.Bool("volatile", false, "deliver to the connections live now only: never stored, never replayed")
	stdin := fs.Bool("stdin", false, "read newline-delimited broadcast bodies from stdin and send them as batches of 1000")
	if code, done := parseFlags(fs, s, args); done {
		return code
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *stdin {
		for _, n := range []string{"user", "users", "all", "type", "payload", "idempotency-key", "key", "volatile"} {
			if set[n] {
				return usageError(s, fs, "--"+n+" cannot be used with --stdin (each line is a whole broadcast body)")
			}
		}
		c, done := cf.client()
		defer done()
		return publishStdin(ctx, s, c)
	}

	ids := append([]string(nil), users...)
	ids = append(ids, splitList(*usersCSV)...)
	switch {
	case len(ids) > 0 && *all:
		return usageError(s, fs, "give recipients (--user/--users) or --all, not both")
	case len(ids) == 0 && !*all:
		return usageError(s, fs, "recipients required: --user, --users or --all")
	case *typ == "":
		return usageError(s, fs, "--type is required")
	case !json.Valid([]byte(*payload)):
		return usageError(s, fs, "--payload is not valid JSON")
	case set["key"] && *volatile:
		return usageError(s, fs, "give --key or --volatile, not both")
	case set["key"] && *key == "":
		return usageError(s, fs, "--key must not be empty")
	}
	var opts []client.PublishOption
	if *idem != "" {
		opts = append(opts, client.IdempotencyKey(*idem))
	}
	if *key != "" {
		opts = append(opts, client.Keyed(*key))
	}
	if *volatile {
		opts = append(opts, client.Volatile())
	}
	c, done := cf.client()
	defer done()
	raw := json.RawMessage(*payload)
	if *all {
		id, err := c.PublishAll(ctx, *typ, raw, opts...)
		if err != nil {
			return fail(s, "publish", err)
		}
		return printJSON(s, "publish", map[string]string{"id": id})
	}
	evs, err := c.Publish(ctx, ids, *typ, raw, opts...)
	if err != nil {
		return fail(s, "publish", err)
	}
	return printJSON(s, "publish", map[string][]client.UserEvent{"events": evs})
}

// publishStdin sends every broadcast body of stdin in batches of
// client.MaxBatch and prints {"results":[...]} with one result per line
// sent. A message the hub refused is reported on stderr and makes the
// status 1 (the others are still applied).
func publishStdin(ctx context.Context, s *streams, c *client.Client) int {
	var msgs []client.Message
	sc := bufio.NewScanner(s.in)
	sc.Buffer(make([]byte, 64<<10), maxStdinLine)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var m client.Message
		if err := json.Unmarshal(b, &m); err != nil {
			return fail(s, "publish", fmt.Errorf("stdin line %d: %w", line, err))
		}
		msgs = append(msgs, m)
	}
	if err := sc.Err(); err != nil {
		return fail(s, "publish", fmt.Errorf("read stdin: %w", err))
	}
	if len(msgs) == 0 {
		return fail(s, "publish", errors.New("no broadcast bodies on stdin"))
	}
	results := make([]client.BatchResult, 0, len(msgs))
	var sendErr error
	for start := 0; start < len(msgs); start += client.MaxBatch {
		chunk := msgs[start:min(start+client.MaxBatch, len(msgs))]
		res, err := c.Batch(ctx, chunk)
		if err != nil {
			sendErr = fmt.Errorf("messages %d to %d: %w", start, start+len(chunk)-1, err)
			break
		}
		results = append(results, res...)
	}
	if len(results) > 0 || sendErr == nil {
		if code := printJSON(s, "publish", map[string][]client.BatchResult{"results": results}); code != exitOK {
			return code
		}
	}
	if sendErr != nil {
		return fail(s, "publish", sendErr)
	}
	code := exitOK
	for i, r := range results {
		if r.Err != nil {
			code = fail(s, "publish", fmt.Errorf("message %d refused: %w", i, r.Err))
		}
	}
	return code
}
