package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/hubd/hub/client"
)

func init() {
	commands["who"] = &command{summary: "list a user's live connections on every node", run: runWho}
}

// runWho prints GET /api/users/{userId}/connections: a table of the user's
// connections (id, transport, node, connected since), or with --json the
// answer as one line of JSON. A user without connections is no error: the
// table says so (exit 0).
func runWho(ctx context.Context, s *streams, args []string) int {
	fs := newFlagSet("who", "[--url U] [--api-key K | --token T] [--json] USER", s)
	cf := addConnFlags(fs)
	asJSON := fs.Bool("json", false, `print the answer as JSON: {"userId":...,"connections":[...]}`)
	// USER may come before, between or after the flags
	var user string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			code, _ := parseFlags(fs, s, rest) // --help: 0; a bad flag: 2
			return code
		}
		if fs.NArg() == 0 {
			break
		}
		if user != "" {
			return usageError(s, fs, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
		}
		user, rest = fs.Arg(0), fs.Args()[1:]
	}
	if user == "" {
		return usageError(s, fs, "the user is required: hubctl who USER")
	}
	c, done := cf.client()
	defer done()
	conns, err := c.Connections(ctx, user)
	if err != nil {
		return fail(s, "who", err)
	}
	if *asJSON {
		return printJSON(s, "who", struct {
			UserID      string              `json:"userId"`
			Connections []client.Connection `json:"connections"`
		}{user, conns})
	}
	return printConnections(s, user, conns)
}

// printConnections writes the connections as a table, oldest first.
func printConnections(s *streams, user string, conns []client.Connection) int {
	if len(conns) == 0 {
		if _, err := fmt.Fprintf(s.out, "%s has no live connection\n", user); err != nil {
			return fail(s, "who", fmt.Errorf("write answer: %w", err))
		}
		return exitOK
	}
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONNECTION\tTRANSPORT\tNODE\tCONNECTED AT")
	for _, c := range conns {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.ConnectionID, c.Transport, c.Node, c.ConnectedAt.UTC().Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return fail(s, "who", fmt.Errorf("write answer: %w", err))
	}
	return exitOK
}
