package auth

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMint(t *testing.T) {
	tests := []struct {
		name      string
		giveAlg   string
		giveRoles []string
	}{
		{name: "default alg", giveAlg: ""},
		{name: "HS256 with roles", giveAlg: "HS256", giveRoles: []string{"admin", "service"}},
		{name: "HS384", giveAlg: "HS384", giveRoles: []string{"user"}},
		{name: "HS512", giveAlg: "HS512"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := Mint(testSecret, tt.giveAlg, "u42", tt.giveRoles, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			alg := tt.giveAlg
			if alg == "" {
				alg = "HS256"
			}
			v := newVerifier(t, Options{Secret: testSecret, Algorithms: []string{alg}})
			id, e := v.Verify(tok)
			if e != nil {
				t.Fatalf("Verify: %v", e)
			}
			if id.UserID != "u42" || !slices.Equal(id.Roles, tt.giveRoles) {
				t.Errorf("identity = %+v", id)
			}
			if d := time.Until(id.ExpiresAt); d < 58*time.Minute || d > time.Hour+time.Second {
				t.Errorf("ExpiresAt in %s, want about 1h", d)
			}
			// a token minted with another secret is refused
			other, err := Mint("another-secret", tt.giveAlg, "u42", nil, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if _, e := v.Verify(other); e == nil {
				t.Error("token of another secret accepted")
			}
		})
	}
}

func TestMintErrors(t *testing.T) {
	tests := []struct {
		name                string
		giveSecret, giveAlg string
		giveSub             string
		giveTTL             time.Duration
		wantErr             string
	}{
		{name: "empty secret", giveAlg: "HS256", giveSub: "u", giveTTL: time.Hour, wantErr: "secret"},
		{name: "RS256", giveSecret: "s", giveAlg: "RS256", giveSub: "u", giveTTL: time.Hour, wantErr: "algorithm"},
		{name: "none", giveSecret: "s", giveAlg: "none", giveSub: "u", giveTTL: time.Hour, wantErr: "algorithm"},
		{name: "empty sub", giveSecret: "s", giveSub: "", giveTTL: time.Hour, wantErr: "sub"},
		{name: "long sub", giveSecret: "s", giveSub: strings.Repeat("x", 257), giveTTL: time.Hour, wantErr: "sub"},
		{name: "zero ttl", giveSecret: "s", giveSub: "u", wantErr: "ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Mint(tt.giveSecret, tt.giveAlg, tt.giveSub, nil, tt.giveTTL)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Mint error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestMintFor: a hub that checks iss and aud accepts MintFor's token and
// refuses Mint's.
func TestMintFor(t *testing.T) {
	v := newVerifier(t, Options{Secret: testSecret, Algorithms: []string{"HS256"}, Issuer: "https://id.example", Audience: "hub"})
	tok, err := MintFor(testSecret, "", "u42", []string{"admin"}, time.Hour, "https://id.example", "hub")
	if err != nil {
		t.Fatal(err)
	}
	if id, e := v.Verify(tok); e != nil || id.UserID != "u42" || !id.HasRole(RoleAdmin) {
		t.Errorf("Verify(MintFor) = %+v, %v", id, e)
	}
	plain, err := Mint(testSecret, "", "u42", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, e := v.Verify(plain); e == nil {
		t.Error("a token without iss and aud was accepted by a hub that checks them")
	}
}
