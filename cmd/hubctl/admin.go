package main

import (
	"context"
	"encoding/json"
	"fmt"
)

func init() {
	commands["stats"] = &command{summary: "print the node's connection stats (admin JWT)", run: runStats}
	commands["disconnect"] = &command{summary: "close every connection of a user", run: runDisconnect}
}

// runStats prints GET /api/websocket/stats as JSON.
func runStats(ctx context.Context, s *streams, args []string) int {
	fs := newFlagSet("stats", "[--url U] [--token ADMIN_JWT]", s)
	cf := addConnFlags(fs)
	if code, done := parseFlags(fs, s, args); done {
		return code
	}
	c, done := cf.client()
	defer done()
	st, err := c.Stats(ctx)
	if err != nil {
		return fail(s, "stats", err)
	}
	return printJSON(s, "stats", st)
}

// runDisconnect closes a user's connections and prints {"closed":N}.
func runDisconnect(ctx context.Context, s *streams, args []string) int {
	fs := newFlagSet("disconnect", "--user U [--url U] [--api-key K | --token T]", s)
	cf := addConnFlags(fs)
	user := fs.String("user", "", "the user whose connections are closed (required)")
	if code, done := parseFlags(fs, s, args); done {
		return code
	}
	if *user == "" {
		return usageError(s, fs, "--user is required")
	}
	c, done := cf.client()
	defer done()
	n, err := c.Disconnect(ctx, *user)
	if err != nil {
		return fail(s, "disconnect", err)
	}
	return printJSON(s, "disconnect", map[string]int{"closed": n})
}

// printJSON writes v as one line of JSON to stdout.
func printJSON(s *streams, name string, v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return fail(s, name, fmt.Errorf("encode answer: %w", err))
	}
	if _, err := fmt.Fprintf(s.out, "%s\n", b); err != nil {
		return fail(s, name, fmt.Errorf("write answer: %w", err))
	}
	return exitOK
}
