package hubtest

import (
	"testing"
	"time"

	"github.com/go-chi/jwtauth/v5"

	"github.com/hubd/hub/internal/auth"
)

const (
	// Secret is the HS256 secret that the app of hubtest/app verifies
	// tokens with and that Token signs with. A package whose tests build
	// their own verifier gives it this secret too.
	Secret = "test-secret-0123456789abcdef0123456789"
	// APIKey is the service API key of the app of hubtest/app.
	APIKey = "test-api-key-0123456789" // 16 characters or more (start-up refuses shorter keys)
)

// Token mints an HS256 token signed with Secret for the user sub, valid
// for ttl, with roles: none for a device's user, auth.RoleService for a
// service, auth.RoleAdmin for the admin endpoints.
func Token(t testing.TB, sub string, ttl time.Duration, roles ...string) string {
	t.Helper()
	return TokenWith(t, Secret, sub, ttl, roles...)
}

// TokenWith is Token signed with secret: a hub configured with another
// secret, or a token signed with the wrong key.
func TokenWith(t testing.TB, secret, sub string, ttl time.Duration, roles ...string) string {
	t.Helper()
	tok, err := auth.Mint(secret, "HS256", sub, roles, ttl)
	if err != nil {
		t.Fatalf("mint token: %v", err)
	}
	return tok
}

// ExpiredToken mints an HS256 token signed with Secret for sub, with
// roles, issued two hours ago and expired one hour ago (auth.Mint only
// mints live tokens).
func ExpiredToken(t testing.TB, sub string, roles ...string) string {
	t.Helper()
	now := time.Now()
	claims := map[string]any{"sub": sub, "iat": now.Add(-2 * time.Hour), "exp": now.Add(-time.Hour)}
	if len(roles) > 0 {
		claims["roles"] = roles
	}
	_, tok, err := jwtauth.New("HS256", []byte(Secret), nil).Encode(claims)
	if err != nil {
		t.Fatalf("mint expired token: %v", err)
	}
	return tok
}
