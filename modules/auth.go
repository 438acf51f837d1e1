package modules

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/auth"
)

// DevUser and DevAdmin are the subjects of the development-mode tokens.
const (
	DevUser  = "dev-user"
	DevAdmin = "dev-admin"
)

// DevTokens are the tokens minted in development mode (--dev).
type DevTokens struct {
	UserID     string `json:"userId"`
	UserToken  string `json:"userToken"`
	AdminToken string `json:"adminToken"`
	// Secret is the secret made for this run, printed so that `hubctl
	// token` can mint more; empty when the secret was configured. Never
	// served by GET /api/dev/tokens.
	Secret string `json:"-"`
}

// Security is what the auth module provides: the verifier and, in
// development mode only, the tokens it minted.
type Security struct {
	fx.Out
	Verifier *auth.Verifier
	Dev      *DevTokens `optional:"true"`
}

// AuthModule provides the token verifier. In development mode (--dev or
// HUB_DEV=true, never implied) it makes a random secret unless a key is
// configured, logs a loud warning and prints the secret and tokens.
var AuthModule = fx.Module("auth",
	fx.Provide(newSecurity),
)

// DevOutput is where development mode prints its tokens (standard output;
// tests may replace it before building the app).
var DevOutput io.Writer = os.Stdout

func newSecurity(lc fx.Lifecycle, cfg config.Config, log *slog.Logger) (Security, error) {
	o := auth.Options{
		Secret:        cfg.JWTSecret,
		PublicKeyFile: cfg.JWTPublicKeyFile,
		JWKSURL:       cfg.JWTJWKSURL,
		Algorithms:    cfg.JWTAlgorithms,
		Issuer:        cfg.JWTIssuer,
		Audience:      cfg.JWTAudience,
		Leeway:        cfg.JWTLeeway,
		Cookie:        cookieName(cfg.TokenCookie),
		APIKeys:       cfg.APIKeys,
	}
	var dev *DevTokens
	if cfg.Dev {
		var err error
		if dev, err = devTokens(&o); err != nil {
			return Security{}, err
		}
		log.Warn("DEVELOPMENT MODE (--dev or HUB_DEV=true): do not use it in production. " + devModeSummary(dev))
	} else if !cfg.HasJWTKey() {
		// config.Validate refuses this; an App built from an unvalidated
		// Config must not start without a key either
		return Security{}, errors.New("auth: no JWT key configured (HUB_JWT_SECRET, HUB_JWT_PUBLIC_KEY_FILE or HUB_JWT_JWKS_URL) and no development mode (--dev)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	v, err := auth.New(ctx, o)
	if err != nil {
		cancel()
		return Security{}, fmt.Errorf("auth: %w", err)
	}
	lc.Append(fx.StopHook(func() { v.Close(); cancel() }))
	return Security{Verifier: v, Dev: dev}, nil
}

// cookieName is the verifier's cookie name for the configured one.
func cookieName(configured string) string {
	if configured == "" {
		return auth.CookieOff // HUB_TOKEN_COOKIE set empty: no cookie
	}
	return configured
}

// devTokens sets up development mode on o: a random HS256 secret when no
// key is configured, and a user and an admin token signed with the secret.
// With a public key or JWKS URL configured the hub cannot sign: it returns
// nil tokens.
func devTokens(o *auth.Options) (*DevTokens, error) {
	d := &DevTokens{UserID: DevUser}
	if o.Secret == "" && o.PublicKeyFile == "" && o.JWKSURL == "" {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("development secret: %w", err)
		}
		o.Secret = hex.EncodeToString(b[:])
		d.Secret = o.Secret
	}
	if o.Secret == "" {
		return nil, nil
	}
	if len(o.Algorithms) == 0 {
		o.Algorithms = []string{"HS256"}
	}
	alg := o.Algorithms[0] // an HMAC algorithm: config refuses others with a secret
	var err error
	// with the configured issuer and audience, which the verifier checks
	if d.UserToken, err = auth.MintFor(o.Secret, alg, DevUser, nil, 24*time.Hour, o.Issuer, o.Audience); err != nil {
		return nil, fmt.Errorf("development token: %w", err)
	}
	if d.AdminToken, err = auth.MintFor(o.Secret, alg, DevAdmin, []string{"admin", "service"}, 24*time.Hour, o.Issuer, o.Audience); err != nil {
		return nil, fmt.Errorf("development token: %w", err)
	}
	return d, nil
}

// devModeSummary says in one line what development mode did (no secret,
// no token: it goes to the log).
func devModeSummary(d *DevTokens) string {
	switch {
	case d == nil:
		return "A public key is configured, so no development tokens could be minted."
	case d.Secret != "":
		return "A random secret was made for this run; it and the development tokens were printed to standard output."
	}
	return "Development tokens signed with the configured HUB_JWT_SECRET were printed to standard output."
}

// printDevBanner prints the development tokens, the secret when it was
// made for this run, and commands that use them.
func printDevBanner(w io.Writer, cfg config.Config, d *DevTokens) {
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		port = "8080"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	base := "http://" + net.JoinHostPort(host, port)
	if cfg.TLSCertFile != "" {
		base = "https://" + net.JoinHostPort(host, port)
	}
	api := base
	if cfg.InternalAddr != "" {
		if h, p, err := net.SplitHostPort(cfg.InternalAddr); err == nil {
			if h == "" || h == "0.0.0.0" || h == "::" {
				h = "localhost"
			}
			api = "http://" + net.JoinHostPort(h, p)
		}
	}
	secretLine := "secret: the configured HUB_JWT_SECRET"
	secretArg := `"$HUB_JWT_SECRET"`
	if d.Secret != "" {
		secretLine = "secret (made for this run; HUB_JWT_SECRET for hubctl):\n   " + d.Secret
		secretArg = d.Secret
	}
	fmt.Fprintf(w, `
==================================================================
 hub is running in DEVELOPMENT MODE (--dev). Never use it in production.
 These tokens last 24 hours.

 %s
 user token  (sub=%s):
   %s
 admin token (sub=%s, roles=admin,service):
   %s

 console:     %s/
 listen:      go run ./cmd/hubctl tail --url %s --token %s
 new token:   go run ./cmd/hubctl token --secret %s --sub alice --ttl 1h
 broadcast:
   curl -X POST %s/api/broadcast -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{"userIds":["%s"],"type":"HELLO","payload":{"text":"hello"}}'
==================================================================

`, secretLine, d.UserID, d.UserToken, DevAdmin, d.AdminToken, base,
		base, d.UserToken, secretArg,
		api, d.AdminToken, d.UserID)
}
