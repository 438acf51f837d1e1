package modules_test

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/transport/api"
)

// TestFailedCredentialsBehindTrustedProxy: the failed-credential limit of
// the service API counts the client's address that HUB_TRUSTED_PROXIES
// makes believable, so behind a proxy one guesser does not lock out every
// service; without trusted proxies X-Forwarded-For changes nothing.
func TestFailedCredentialsBehindTrustedProxy(t *testing.T) {
	body := map[string]any{"userIds": []string{"u1"}, "type": "T"}
	guess := func(th *testHub, xff string) {
		t.Helper()
		for range api.MaxCredentialFailures {
			if st, b := th.post("/api/broadcast", body, map[string]string{"X-API-Key": "not-the-key-0123456789", "X-Forwarded-For": xff}); st != http.StatusUnauthorized {
				t.Fatalf("bad key: %d %v, want 401", st, b)
			}
		}
	}
	good := func(th *testHub, xff string) int {
		t.Helper()
		st, _ := th.post("/api/broadcast", body, map[string]string{"X-API-Key": hubtest.APIKey, "X-Forwarded-For": xff})
		return st
	}

	th := startHub(t, func(c *config.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	guess(th, "203.0.113.1")
	if st := good(th, "203.0.113.1"); st != http.StatusTooManyRequests {
		t.Errorf("the guesser with the good key: %d, want 429", st)
	}
	if st := good(th, "198.51.100.7, 203.0.113.1"); st != http.StatusTooManyRequests {
		t.Errorf("the guesser with a spoofed leftmost entry: %d, want 429", st)
	}
	if st := good(th, "203.0.113.2"); st != http.StatusAccepted {
		t.Errorf("another client behind the proxy: %d, want 202", st)
	}

	direct := startHub(t, nil)
	guess(direct, "203.0.113.1")
	if st := good(direct, "203.0.113.2"); st != http.StatusTooManyRequests {
		t.Errorf("X-Forwarded-For believed without HUB_TRUSTED_PROXIES: %d, want 429", st)
	}
}
