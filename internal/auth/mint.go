package auth

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-chi/jwtauth/v5"
)

// Mint signs an HS256/384/512 token (for development mode and `hubctl
// token`): sub, roles (claim "roles" when not empty), exp = now+ttl, iat.
// An empty alg means HS256.
func Mint(secret, alg, sub string, roles []string, ttl time.Duration) (string, error) {
	return MintFor(secret, alg, sub, roles, ttl, "", "")
}

// MintFor is Mint for a hub that checks the issuer and the audience
// (HUB_JWT_ISSUER, HUB_JWT_AUDIENCE): it adds the claims "iss" and "aud"
// when they are not empty.
func MintFor(secret, alg, sub string, roles []string, ttl time.Duration, issuer, audience string) (string, error) {
	if alg == "" {
		alg = "HS256"
	}
	switch {
	case secret == "":
		return "", errors.New("mint token: empty secret")
	case !slices.Contains(hmacAlgs, alg):
		return "", fmt.Errorf("mint token: algorithm %q is not one of HS256, HS384, HS512", alg)
	case sub == "" || len(sub) > maxSubjectLen:
		return "", fmt.Errorf("mint token: sub must be 1 to %d bytes", maxSubjectLen)
	case ttl <= 0:
		return "", fmt.Errorf("mint token: ttl %s is not positive", ttl)
	}
	now := time.Now()
	claims := map[string]any{"sub": sub, "iat": now, "exp": now.Add(ttl)}
	if len(roles) > 0 {
		claims["roles"] = slices.Clone(roles)
	}
	if issuer != "" {
		claims["iss"] = issuer
	}
	if audience != "" {
		claims["aud"] = audience
	}
	_, tok, err := jwtauth.New(alg, []byte(secret), nil).Encode(claims)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return tok, nil
}
