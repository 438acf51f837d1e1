package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/auth"
)

func init() {
	commands["token"] = &command{summary: "mint a token (HS256/384/512) with the hub's secret", run: runToken}
}

// hmacAlgs are the algorithms hubctl can sign with.
var hmacAlgs = []string{"HS256", "HS384", "HS512"}

// runToken mints a token with internal/auth.MintFor and prints it. The
// secret comes from --secret, else the hub's own configuration (--config
// FILE, read as hubd reads it: the file, then the HUB_ environment), else
// HUB_JWT_SECRET, else the file HUB_CONFIG names. With a configuration,
// the token also carries the hub's issuer and audience, and is signed with
// the first HMAC algorithm the hub accepts unless --alg says otherwise.
func runToken(_ context.Context, s *streams, args []string) int {
	fs := newFlagSet("token", "(--secret S | --config hub.yaml) --sub USER [--roles admin,service] [--ttl 1h] [--alg HS256]", s)
	secret := fs.String("secret", "", "HMAC secret (default: from --config, else $HUB_JWT_SECRET, else the file $HUB_CONFIG names)")
	cfgFile := fs.String("config", "", "the hub's YAML configuration: its secret, algorithms, issuer and audience (HUB_ variables apply over it, as for hubd)")
	alg := fs.String("alg", "", "signing algorithm: HS256, HS384 or HS512 (default: the hub's first HMAC algorithm, else HS256)")
	sub := fs.String("sub", "", "the token's subject, the user id (required)")
	roles := fs.String("roles", "", "comma-separated roles, e.g. admin,service")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	if code, done := parseFlags(fs, s, args); done {
		return code
	}
	switch {
	case *secret != "" && *cfgFile != "":
		return usageError(s, fs, "--secret and --config: give one of them")
	case *sub == "":
		return usageError(s, fs, "--sub is required")
	case *alg != "" && !slices.Contains(hmacAlgs, *alg):
		return usageError(s, fs, fmt.Sprintf("--alg %q: want HS256, HS384 or HS512", *alg))
	case *ttl <= 0:
		return usageError(s, fs, fmt.Sprintf("--ttl %s: must be positive", *ttl))
	}

	var hubCfg *config.Config // the hub's configuration, when read
	switch {
	case *cfgFile != "":
		c, err := hubConfig([]string{"--config", *cfgFile})
		if err != nil {
			return fail(s, "token", err)
		}
		hubCfg = &c
	case *secret == "" && os.Getenv("HUB_JWT_SECRET") == "" && os.Getenv("HUB_CONFIG") != "":
		c, err := hubConfig(nil)
		if err != nil {
			return fail(s, "token", err)
		}
		hubCfg = &c
	}
	var issuer, audience string
	if hubCfg != nil {
		if err := canSign(*hubCfg); err != nil {
			return fail(s, "token", err)
		}
		*secret, issuer, audience = hubCfg.JWTSecret, hubCfg.JWTIssuer, hubCfg.JWTAudience
		if *alg == "" {
			*alg = firstHMAC(hubCfg.JWTAlgorithms)
		} else if !slices.Contains(hubCfg.JWTAlgorithms, *alg) {
			return usageError(s, fs, fmt.Sprintf("--alg %s: the hub accepts %s only (jwt_algorithms)", *alg, strings.Join(hubCfg.JWTAlgorithms, ", ")))
		}
	}
	if *secret == "" {
		*secret = os.Getenv("HUB_JWT_SECRET")
	}
	if *secret == "" {
		return usageError(s, fs, "a secret is required: --secret, --config hub.yaml (the hub's own), or HUB_JWT_SECRET")
	}
	tok, err := auth.MintFor(*secret, *alg, *sub, splitList(*roles), *ttl, issuer, audience)
	if err != nil {
		return fail(s, "token", err)
	}
	fmt.Fprintln(s.out, tok)
	return exitOK
}

// hubConfig loads the hub's configuration as hubd does (defaults < file <
// HUB_ environment), from args ("--config FILE", or none for HUB_CONFIG).
func hubConfig(args []string) (config.Config, error) {
	c, _, err := config.Load(args, os.Environ())
	if err != nil {
		return config.Config{}, fmt.Errorf("the hub's configuration: %w", err)
	}
	return c, nil
}

// canSign says why hubctl cannot mint tokens the configured hub accepts.
func canSign(c config.Config) error {
	switch {
	case c.JWTSecret == "" && (c.JWTPublicKeyFile != "" || c.JWTJWKSURL != ""):
		return errors.New("the hub verifies tokens with a public key (jwt_public_key_file or jwt_jwks_url): sign them with the private key's owner, hubctl signs with a shared secret only")
	case c.JWTSecret == "":
		return errors.New("the hub's configuration has no jwt_secret (in development mode the hub makes one at start and prints it: pass it with --secret)")
	case firstHMAC(c.JWTAlgorithms) == "":
		return fmt.Errorf("the hub accepts %s only (jwt_algorithms), none of HS256, HS384, HS512", strings.Join(c.JWTAlgorithms, ", "))
	}
	return nil
}

// firstHMAC is the first of algs that hubctl can sign with ("" for none).
func firstHMAC(algs []string) string {
	for _, a := range algs {
		if slices.Contains(hmacAlgs, a) {
			return a
		}
	}
	return ""
}
