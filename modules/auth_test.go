package modules_test

import (
	"bytes"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/modules"
)

// TestTokenCookieOff: with HUB_TOKEN_COOKIE empty (the setting that allows
// HUB_ALLOWED_ORIGINS=*), a token in the cookie is not read; with the
// default name it is.
func TestTokenCookieOff(t *testing.T) {
	for _, tt := range []struct {
		name       string
		cookie     string // HUB_TOKEN_COOKIE
		wantStatus int
	}{
		{name: "default cookie", cookie: "hub_token", wantStatus: http.StatusOK},
		{name: "cookie off", cookie: "", wantStatus: http.StatusUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			th := startHub(t, func(c *config.Config) {
				c.TokenCookie = tt.cookie
				if tt.cookie == "" {
					c.AllowedOrigins = []string{"*"}
				}
			})
			tok := th.token("alice", time.Hour)
			for _, name := range []string{"hub_token", "hub token cookie off"} {
				c, status, body, err := th.dialSSE(sseDial{Header: http.Header{"Cookie": {name + "=" + tok}}})
				if err != nil {
					t.Fatal(err)
				}
				want := tt.wantStatus
				if name != "hub_token" {
					want = http.StatusUnauthorized // not a cookie name a browser can send
				}
				if status != want {
					t.Errorf("SSE with cookie %q: %d %v, want %d", name, status, body, want)
				}
				if c != nil {
					c.close()
				}
			}
		})
	}
}

// TestDevModeTokens: development mode prints the secret it made (so that
// hubctl token works) and tokens signed with it; with a configured secret
// it signs with that one and does not print it; the log shows neither.
// Without development mode there are no development tokens.
func TestDevModeTokens(t *testing.T) {
	var out bytes.Buffer
	prev := modules.DevOutput
	modules.DevOutput = &out
	t.Cleanup(func() { modules.DevOutput = prev })

	broadcast := func(th *testHub, tok string) int {
		t.Helper()
		status, _ := th.post("/api/broadcast", map[string]any{"all": true, "type": "HELLO", "payload": 1},
			map[string]string{"Authorization": "Bearer " + tok})
		return status
	}
	devTokens := func(th *testHub) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, th.URL+"/api/dev/tokens", nil)
		return do(t, req)
	}
	secretIn := func(banner string) string {
		lines := strings.Split(banner, "\n")
		for i, l := range lines {
			if strings.Contains(l, "secret (made for this run") && i+1 < len(lines) {
				return strings.TrimSpace(lines[i+1])
			}
		}
		return ""
	}

	t.Run("random secret", func(t *testing.T) {
		out.Reset()
		th := startHub(t, func(c *config.Config) { c.Dev, c.JWTSecret, c.JWTAlgorithms = true, "", nil })
		banner := out.String()
		secret := secretIn(banner)
		if b, err := hex.DecodeString(secret); err != nil || len(b) != 32 {
			t.Fatalf("no 32-byte secret in the banner:\n%s", banner)
		}
		status, body := devTokens(th)
		admin, _ := body["adminToken"].(string)
		if status != http.StatusOK || admin == "" || body["secret"] != nil || strings.Contains(strings.Join(mapValues(body), " "), secret) {
			t.Fatalf("GET /api/dev/tokens: %d %v", status, body)
		}
		if !strings.Contains(banner, admin) || !strings.Contains(banner, "hubctl tail") || !strings.Contains(banner, "hubctl token --secret "+secret) {
			t.Errorf("banner:\n%s", banner)
		}
		if code := broadcast(th, admin); code != http.StatusAccepted {
			t.Errorf("broadcast with the dev admin token: %d", code)
		}
		mine, err := auth.Mint(secret, "HS256", "ops", []string{"admin"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if code := broadcast(th, mine); code != http.StatusAccepted {
			t.Errorf("broadcast with a token minted with the printed secret: %d", code)
		}
		if logs := th.Logs.String(); strings.Contains(logs, secret) || strings.Contains(logs, admin) || !strings.Contains(logs, "DEVELOPMENT MODE") {
			t.Errorf("logs show the secret or a token, or no warning:\n%s", logs)
		}
	})

	t.Run("configured secret", func(t *testing.T) {
		out.Reset()
		th := startHub(t, func(c *config.Config) { c.Dev = true })
		banner := out.String()
		if strings.Contains(banner, hubtest.Secret) || !strings.Contains(banner, "the configured HUB_JWT_SECRET") || secretIn(banner) != "" {
			t.Errorf("banner with a configured secret:\n%s", banner)
		}
		_, body := devTokens(th)
		admin, _ := body["adminToken"].(string)
		if code := broadcast(th, admin); code != http.StatusAccepted {
			t.Errorf("broadcast with the dev admin token: %d", code)
		}
	})

	t.Run("issuer and audience checked", func(t *testing.T) {
		out.Reset()
		th := startHub(t, func(c *config.Config) {
			c.Dev, c.JWTIssuer, c.JWTAudience = true, "https://issuer.example", "hub-test"
		})
		_, body := devTokens(th)
		admin, _ := body["adminToken"].(string)
		if code := broadcast(th, admin); code != http.StatusAccepted {
			t.Errorf("broadcast with the dev admin token on a hub that checks iss and aud: %d", code)
		}
	})

	t.Run("not development mode", func(t *testing.T) {
		out.Reset()
		th := startHub(t, nil)
		if out.Len() != 0 {
			t.Errorf("banner without development mode:\n%s", out.String())
		}
		if status, body := devTokens(th); status != http.StatusNotFound {
			t.Errorf("GET /api/dev/tokens without development mode: %d %v", status, body)
		}
		if strings.Contains(th.Logs.String(), "DEVELOPMENT MODE") {
			t.Error("development mode warning without development mode")
		}
	})
}

func mapValues(m map[string]any) []string {
	var out []string
	for _, v := range m {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
