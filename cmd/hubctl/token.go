package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/hubd/hub/internal/auth"
)

func init() {
	commands["token"] = &command{summary: "mint a development token (HS256/384/512)", run: runToken}
}

// runToken mints a token with internal/auth.Mint and prints it.
func runToken(_ context.Context, s *streams, args []string) int {
	fs := newFlagSet("token", "--secret S --sub USER [--roles admin,service] [--ttl 1h] [--alg HS256]", s)
	secret := fs.String("secret", "", "HMAC secret (default $HUB_JWT_SECRET)")
	alg := fs.String("alg", "HS256", "signing algorithm: HS256, HS384 or HS512")
	sub := fs.String("sub", "", "the token's subject, the user id (required)")
	roles := fs.String("roles", "", "comma-separated roles, e.g. admin,service")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	if code, done := parseFlags(fs, s, args); done {
		return code
	}
	if *secret == "" {
		*secret = os.Getenv("HUB_JWT_SECRET")
	}
	switch {
	case *secret == "":
		return usageError(s, fs, "--secret (or HUB_JWT_SECRET) is required")
	case *sub == "":
		return usageError(s, fs, "--sub is required")
	case !slices.Contains([]string{"HS256", "HS384", "HS512"}, *alg):
		return usageError(s, fs, fmt.Sprintf("--alg %q: want HS256, HS384 or HS512", *alg))
	case *ttl <= 0:
		return usageError(s, fs, fmt.Sprintf("--ttl %s: must be positive", *ttl))
	}
	tok, err := auth.Mint(*secret, *alg, *sub, splitList(*roles), *ttl)
	if err != nil {
		return fail(s, "token", err)
	}
	fmt.Fprintln(s.out, tok)
	return exitOK
}
