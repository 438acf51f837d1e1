package modules

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

// DevTokens are the tokens minted in development mode (no JWT key set).
type DevTokens struct {
	UserID     string `json:"userId"`
	UserToken  string `json:"userToken"`
	AdminToken string `json:"adminToken"`
}

// Security is what the auth module provides: the verifier and, in
// development mode only, the tokens it minted.
type Security struct {
	fx.Out
	Verifier *auth.Verifier
	Dev      *DevTokens `optional:"true"`
}

// AuthModule provides the token verifier; with no key configured it starts
// development mode: a random secret, a loud warning and printed tokens.
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
		Cookie:        cfg.TokenCookie,
		APIKeys:       cfg.APIKeys,
	}
	var dev *DevTokens
	if cfg.DevMode() {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return Security{}, fmt.Errorf("development secret: %w", err)
		}
		o.Secret = hex.EncodeToString(b[:])
		o.Algorithms = []string{"HS256"}
		user, err := auth.Mint(o.Secret, "HS256", DevUser, nil, 24*time.Hour)
		if err != nil {
			return Security{}, fmt.Errorf("development token: %w", err)
		}
		admin, err := auth.Mint(o.Secret, "HS256", DevAdmin, []string{"admin", "service"}, 24*time.Hour)
		if err != nil {
			return Security{}, fmt.Errorf("development token: %w", err)
		}
		dev = &DevTokens{UserID: DevUser, UserToken: user, AdminToken: admin}
		log.Warn("DEVELOPMENT MODE: no JWT key configured (HUB_JWT_SECRET, HUB_JWT_PUBLIC_KEY_FILE or HUB_JWT_JWKS_URL); " +
			"a random secret was generated and development tokens were printed. Do not use this in production.")
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
	fmt.Fprintf(w, `
==================================================================
 hub is running in DEVELOPMENT MODE (no JWT key configured).
 A random secret was generated; these tokens last 24 hours.

 user token  (sub=%s):
   %s
 admin token (sub=%s, roles=admin,service):
   %s

 console:     %s/
 listen:      websocat '%s%s?token=<user token>'   (or: go run ./cmd/hubctl tail --url %s --token <user token>)
 broadcast:
   curl -X POST %s/api/broadcast -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{"userIds":["%s"],"type":"HELLO","payload":{"text":"hello"}}'
==================================================================

`, d.UserID, d.UserToken, DevAdmin, d.AdminToken, base,
		"ws"+base[len("http"):], cfg.WSPath, base,
		api, d.AdminToken, d.UserID)
}
