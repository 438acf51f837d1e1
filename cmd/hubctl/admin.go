package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

func init() {
	commands["stats"] = &command{summary: "print the node's connection stats (admin JWT)", run: runStats}
	commands["disconnect"] = &command{summary: "close every connection of a user", run: runDisconnect}
}

// runStats prints GET /api/websocket/stats as JSON. The stats need a JWT
// with the admin role: without a token, or with an API key only (which
// carries the service role and would get 403), it stops before sending
// anything, with a usage error (exit 2).
func runStats(ctx context.Context, s *streams, args []string) int {
	fs := newFlagSet("stats", "[--url U] [--token ADMIN_JWT]", s)
	cf := addAdminFlags(fs)
	if slices.ContainsFunc(args, isAPIKeyFlag) {
		return usageError(s, fs, fmt.Sprintf(errStatsAPIKey, "an API key"))
	}
	if code, done := parseFlags(fs, s, args); done {
		return code
	}
	cf.resolve()
	switch {
	case cf.token == "" && cf.apiKey != "":
		return usageError(s, fs, fmt.Sprintf(errStatsAPIKey, "the API key from HUB_API_KEY or HUB_API_KEYS"))
	case cf.token == "":
		return usageError(s, fs, "--token (or HUB_TOKEN) is required: the stats need a JWT with the admin role")
	}
	cf.apiKey = "" // the token is the credential
	c, done := cf.client()
	defer done()
	st, err := c.Stats(ctx)
	if err != nil {
		return fail(s, "stats", err)
	}
	return printJSON(s, "stats", st)
}

// errStatsAPIKey says why stats refuses an API key (%s: which one).
const errStatsAPIKey = "%s cannot read the stats: they need a JWT with the admin role (--token or HUB_TOKEN; " +
	"mint one with `hubctl token --config hub.yaml --sub ops --roles admin`)"

// isAPIKeyFlag reports whether arg is --api-key (or -api-key, with or
// without =value).
func isAPIKeyFlag(arg string) bool {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return strings.HasPrefix(arg, "-") && name == "api-key"
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
