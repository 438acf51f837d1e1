package auth

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// checkResult compares a Verify result with the wanted code ("" = success)
// and user, and checks the message never contains the token.
func checkResult(t *testing.T, token string, id *Identity, e *Error, wantCode, wantUser string) {
	t.Helper()
	if wantCode == "" {
		if e != nil {
			t.Fatalf("Verify: %v, want success", e)
		}
		if id.UserID != wantUser {
			t.Errorf("UserID = %q, want %q", id.UserID, wantUser)
		}
		return
	}
	if e == nil {
		t.Fatalf("Verify succeeded (user %q), want %s", id.UserID, wantCode)
	}
	if id != nil {
		t.Errorf("identity %+v returned with an error", id)
	}
	t.Logf("%s: %s", e.Code, e.Message)
	if e.Code != wantCode || e.Status != http.StatusUnauthorized {
		t.Errorf("error = %d %s (%s), want 401 %s", e.Status, e.Code, e.Message, wantCode)
	}
	if e.Message == "" || (token != "" && strings.Contains(e.Message, token)) {
		t.Errorf("bad message %q", e.Message)
	}
}

func TestVerifyHMAC(t *testing.T) {
	now := time.Now()
	long := strings.Repeat("x", 256)
	tests := []struct {
		name      string
		giveAlgs  []string
		giveToken func(t *testing.T) string
		wantCode  string
		wantUser  string
		wantRoles []string
	}{
		{name: "HS256 by default", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(nil), nil)
		}, wantUser: "u1"},
		{name: "HS384 configured, any case", giveAlgs: []string{"hs384"}, giveToken: func(t *testing.T) string {
			return sign(t, "HS384", []byte(testSecret), claims(nil), nil)
		}, wantUser: "u1"},
		{name: "HS512 among several", giveAlgs: []string{"HS256", "HS512"}, giveToken: func(t *testing.T) string {
			return sign(t, "HS512", []byte(testSecret), claims(nil), nil)
		}, wantUser: "u1"},
		{name: "HS384 not configured", giveToken: func(t *testing.T) string {
			return sign(t, "HS384", []byte(testSecret), claims(nil), nil)
		}, wantCode: CodeInvalidToken},
		{name: "wrong secret", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte("another secret"), claims(nil), nil)
		}, wantCode: CodeInvalidToken},
		{name: "tampered payload", giveToken: func(t *testing.T) string {
			good := strings.Split(sign(t, "HS256", []byte(testSecret), claims(nil), nil), ".")
			other := strings.Split(sign(t, "HS256", []byte(testSecret), claims(map[string]any{"sub": "admin"}), nil), ".")
			return good[0] + "." + other[1] + "." + good[2]
		}, wantCode: CodeInvalidToken},
		{name: "alg none", giveToken: func(t *testing.T) string {
			return rawToken(t, map[string]any{"alg": "none", "typ": "JWT"}, claims(nil), "")
		}, wantCode: CodeInvalidToken},
		{name: "alg None with a signature", giveToken: func(t *testing.T) string {
			return rawToken(t, map[string]any{"alg": "None"}, claims(nil), "c2ln")
		}, wantCode: CodeInvalidToken},
		{name: "not a JWT", giveToken: func(*testing.T) string { return "not-a-token" }, wantCode: CodeInvalidToken},
		{name: "empty", giveToken: func(*testing.T) string { return "" }, wantCode: CodeInvalidToken},
		{name: "expired", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"exp": now.Add(-time.Hour).Unix()}), nil)
		}, wantCode: CodeTokenExpired},
		{name: "exp missing", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"exp": nil}), nil)
		}, wantCode: CodeInvalidToken},
		{name: "nbf in the future", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"nbf": now.Add(time.Hour).Unix()}), nil)
		}, wantCode: CodeInvalidToken},
		{name: "nbf in the past", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"nbf": now.Add(-time.Hour).Unix()}), nil)
		}, wantUser: "u1"},
		{name: "iat in the future", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"iat": now.Add(time.Hour).Unix()}), nil)
		}, wantCode: CodeInvalidToken},
		{name: "sub missing", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"sub": nil}), nil)
		}, wantCode: CodeInvalidToken},
		{name: "sub empty", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"sub": ""}), nil)
		}, wantCode: CodeInvalidToken},
		{name: "sub a number", giveToken: func(t *testing.T) string {
			// jwx refuses to set a numeric sub: sign the raw payload.
			tok := sign(t, "HS256", []byte(testSecret), claims(nil), nil)
			raw := rawToken(t, map[string]any{"alg": "HS256"}, claims(map[string]any{"sub": 42}), "")
			return resign(t, raw, tok)
		}, wantCode: CodeInvalidToken},
		{name: "sub 256 bytes", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"sub": long}), nil)
		}, wantUser: long},
		{name: "sub 257 bytes", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"sub": long + "y"}), nil)
		}, wantCode: CodeInvalidToken},
		{name: "roles array", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"roles": []string{"user", "service"}}), nil)
		}, wantUser: "u1", wantRoles: []string{"user", "service"}},
		{name: "role string", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"role": "admin"}), nil)
		}, wantUser: "u1", wantRoles: []string{"admin"}},
		{name: "roles and role merged", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"roles": []string{"user"}, "role": "admin"}), nil)
		}, wantUser: "u1", wantRoles: []string{"user", "admin"}},
		{name: "no roles", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(nil), nil)
		}, wantUser: "u1"},
		{name: "roles a string", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"roles": "admin"}), nil)
		}, wantCode: CodeInvalidToken},
		{name: "roles with a number", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"roles": []any{"user", 7}}), nil)
		}, wantCode: CodeInvalidToken},
		{name: "role an array", giveToken: func(t *testing.T) string {
			return sign(t, "HS256", []byte(testSecret), claims(map[string]any{"role": []string{"admin"}}), nil)
		}, wantCode: CodeInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, Options{Secret: testSecret, Algorithms: tt.giveAlgs})
			token := tt.giveToken(t)
			id, e := verifyTwice(t, v, token)
			checkResult(t, token, id, e, tt.wantCode, tt.wantUser)
			if e == nil && !slices.Equal(id.Roles, tt.wantRoles) {
				t.Errorf("Roles = %q, want %q", id.Roles, tt.wantRoles)
			}
		})
	}
}

// resign signs the header and payload of raw with testSecret (HS256), using
// a token signed by jwx as a reference that the signing code is right.
func resign(t *testing.T, raw, reference string) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	sig := hs256(parts[0] + "." + parts[1])
	ref := strings.Split(reference, ".")
	if hs256(ref[0]+"."+ref[1]) != ref[2] {
		t.Fatal("hs256 helper does not match jwx")
	}
	return parts[0] + "." + parts[1] + "." + sig
}

func TestVerifyExpiresAt(t *testing.T) {
	v := newVerifier(t, Options{Secret: testSecret})
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	id, e := v.Verify(sign(t, "HS256", []byte(testSecret), claims(map[string]any{"exp": exp.Unix()}), nil))
	if e != nil {
		t.Fatal(e)
	}
	if !id.ExpiresAt.Equal(exp) {
		t.Errorf("ExpiresAt = %v, want %v", id.ExpiresAt, exp)
	}
}

func TestLeeway(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name       string
		giveLeeway time.Duration
		giveClaims map[string]any
		wantCode   string
	}{
		{name: "expired within leeway", giveLeeway: 30 * time.Second, giveClaims: map[string]any{"exp": now.Add(-10 * time.Second).Unix()}},
		{name: "expired beyond leeway", giveLeeway: 30 * time.Second, giveClaims: map[string]any{"exp": now.Add(-2 * time.Minute).Unix()}, wantCode: CodeTokenExpired},
		{name: "expired without leeway", giveClaims: map[string]any{"exp": now.Add(-10 * time.Second).Unix()}, wantCode: CodeTokenExpired},
		{name: "nbf within leeway", giveLeeway: 30 * time.Second, giveClaims: map[string]any{"nbf": now.Add(10 * time.Second).Unix()}},
		{name: "nbf beyond leeway", giveLeeway: 30 * time.Second, giveClaims: map[string]any{"nbf": now.Add(2 * time.Minute).Unix()}, wantCode: CodeInvalidToken},
		{name: "nbf without leeway", giveClaims: map[string]any{"nbf": now.Add(10 * time.Second).Unix()}, wantCode: CodeInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, Options{Secret: testSecret, Leeway: tt.giveLeeway})
			token := sign(t, "HS256", []byte(testSecret), claims(tt.giveClaims), nil)
			id, e := verifyTwice(t, v, token)
			checkResult(t, token, id, e, tt.wantCode, "u1")
		})
	}
}

func TestIssuerAudience(t *testing.T) {
	tests := []struct {
		name       string
		giveClaims map[string]any
		wantCode   string
	}{
		{name: "both match", giveClaims: map[string]any{"iss": "https://idp.example", "aud": "hub"}},
		{name: "aud list contains", giveClaims: map[string]any{"iss": "https://idp.example", "aud": []string{"other", "hub"}}},
		{name: "wrong iss", giveClaims: map[string]any{"iss": "https://evil.example", "aud": "hub"}, wantCode: CodeInvalidToken},
		{name: "iss missing", giveClaims: map[string]any{"aud": "hub"}, wantCode: CodeInvalidToken},
		{name: "wrong aud", giveClaims: map[string]any{"iss": "https://idp.example", "aud": "other"}, wantCode: CodeInvalidToken},
		{name: "aud missing", giveClaims: map[string]any{"iss": "https://idp.example"}, wantCode: CodeInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, Options{Secret: testSecret, Issuer: "https://idp.example", Audience: "hub"})
			token := sign(t, "HS256", []byte(testSecret), claims(tt.giveClaims), nil)
			id, e := verifyTwice(t, v, token)
			checkResult(t, token, id, e, tt.wantCode, "u1")
		})
	}
	t.Run("not checked when not configured", func(t *testing.T) {
		v := newVerifier(t, Options{Secret: testSecret})
		token := sign(t, "HS256", []byte(testSecret), claims(map[string]any{"iss": "anyone", "aud": "anything"}), nil)
		id, e := verifyTwice(t, v, token)
		checkResult(t, token, id, e, "", "u1")
	})
}

func TestVerifyPEM(t *testing.T) {
	k := keys()
	rsaPKIX := func(t *testing.T) string { return writePEM(t, pkixBlock(t, &k.rsa.PublicKey)) }
	tests := []struct {
		name      string
		giveFile  func(t *testing.T) string
		giveAlgs  []string
		giveToken func(t *testing.T, pemPath string) string
		wantCode  string
	}{
		{name: "RS256", giveFile: rsaPKIX, giveToken: func(t *testing.T, _ string) string {
			return sign(t, "RS256", k.rsa, claims(nil), nil)
		}},
		{name: "RS256 PKCS1 file", giveFile: func(t *testing.T) string {
			return writePEM(t, &pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)})
		}, giveToken: func(t *testing.T, _ string) string {
			return sign(t, "RS256", k.rsa, claims(nil), nil)
		}},
		{name: "RS256 certificate", giveFile: func(t *testing.T) string {
			return writePEM(t, certBlock(t, k.rsa))
		}, giveToken: func(t *testing.T, _ string) string {
			return sign(t, "RS256", k.rsa, claims(nil), nil)
		}},
		{name: "PS256 configured", giveFile: rsaPKIX, giveAlgs: []string{"PS256"}, giveToken: func(t *testing.T, _ string) string {
			return sign(t, "PS256", k.rsa, claims(nil), nil)
		}},
		{name: "RS256 not configured", giveFile: rsaPKIX, giveAlgs: []string{"PS256"}, giveToken: func(t *testing.T, _ string) string {
			return sign(t, "RS256", k.rsa, claims(nil), nil)
		}, wantCode: CodeInvalidToken},
		{name: "RS256 other key", giveFile: rsaPKIX, giveToken: func(t *testing.T, _ string) string {
			return sign(t, "RS256", k.rsa2, claims(nil), nil)
		}, wantCode: CodeInvalidToken},
		{name: "HS256 with the public key as secret", giveFile: rsaPKIX, giveToken: func(t *testing.T, path string) string {
			pub, err := readFile(path)
			if err != nil {
				t.Fatal(err)
			}
			return sign(t, "HS256", pub, claims(nil), nil)
		}, wantCode: CodeInvalidToken},
		{name: "HS256 with the DER key as secret", giveFile: rsaPKIX, giveToken: func(t *testing.T, _ string) string {
			der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			return sign(t, "HS256", der, claims(nil), nil)
		}, wantCode: CodeInvalidToken},
		{name: "alg none", giveFile: rsaPKIX, giveToken: func(t *testing.T, _ string) string {
			return rawToken(t, map[string]any{"alg": "none"}, claims(nil), "")
		}, wantCode: CodeInvalidToken},
		{name: "RS256 expired", giveFile: rsaPKIX, giveToken: func(t *testing.T, _ string) string {
			return sign(t, "RS256", k.rsa, claims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), nil)
		}, wantCode: CodeTokenExpired},
		{name: "ES256", giveFile: func(t *testing.T) string { return writePEM(t, pkixBlock(t, &k.ec.PublicKey)) },
			giveToken: func(t *testing.T, _ string) string { return sign(t, "ES256", k.ec, claims(nil), nil) }},
		{name: "ES256 other key", giveFile: func(t *testing.T) string { return writePEM(t, pkixBlock(t, &k.ec.PublicKey)) },
			giveToken: func(t *testing.T, _ string) string { return sign(t, "ES256", k.ec2, claims(nil), nil) },
			wantCode:  CodeInvalidToken},
		{name: "RS256 against an EC key", giveFile: func(t *testing.T) string { return writePEM(t, pkixBlock(t, &k.ec.PublicKey)) },
			giveToken: func(t *testing.T, _ string) string { return sign(t, "RS256", k.rsa, claims(nil), nil) },
			wantCode:  CodeInvalidToken},
		{name: "EdDSA", giveFile: func(t *testing.T) string { return writePEM(t, pkixBlock(t, k.ed.Public())) },
			giveToken: func(t *testing.T, _ string) string { return sign(t, "EdDSA", k.ed, claims(nil), nil) }},
		{name: "HS256 with the Ed25519 key as secret", giveFile: func(t *testing.T) string { return writePEM(t, pkixBlock(t, k.ed.Public())) },
			giveToken: func(t *testing.T, path string) string {
				pub, err := readFile(path)
				if err != nil {
					t.Fatal(err)
				}
				return sign(t, "HS256", pub, claims(nil), nil)
			}, wantCode: CodeInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.giveFile(t)
			v := newVerifier(t, Options{PublicKeyFile: path, Algorithms: tt.giveAlgs})
			token := tt.giveToken(t, path)
			id, e := verifyTwice(t, v, token)
			checkResult(t, token, id, e, tt.wantCode, "u1")
		})
	}
}

func TestNewErrors(t *testing.T) {
	k := keys()
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL
	gone.Close()
	octOnly := jwksServer(t, func() []byte { return []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256","kid":"s"}]}`) })
	notFound := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notFound.Close)
	tests := []struct {
		name     string
		giveOpts func(t *testing.T) Options
		wantErr  string
	}{
		{name: "no key", giveOpts: func(*testing.T) Options { return Options{} }, wantErr: "no JWT key"},
		{name: "two keys", giveOpts: func(*testing.T) Options { return Options{Secret: "s", JWKSURL: "http://x"} }, wantErr: "only one"},
		{name: "alg none", giveOpts: func(*testing.T) Options { return Options{Secret: "s", Algorithms: []string{"none"}} }, wantErr: `"none"`},
		{name: "unknown alg", giveOpts: func(*testing.T) Options { return Options{Secret: "s", Algorithms: []string{"XS999"}} }, wantErr: "unknown"},
		{name: "RS256 with a secret", giveOpts: func(*testing.T) Options { return Options{Secret: "s", Algorithms: []string{"RS256"}} }, wantErr: "does not fit"},
		{name: "HS256 with an RSA key", giveOpts: func(t *testing.T) Options {
			return Options{PublicKeyFile: writePEM(t, pkixBlock(t, &k.rsa.PublicKey)), Algorithms: []string{"HS256"}}
		}, wantErr: "does not fit"},
		{name: "ES384 with a P-256 key", giveOpts: func(t *testing.T) Options {
			return Options{PublicKeyFile: writePEM(t, pkixBlock(t, &k.ec.PublicKey)), Algorithms: []string{"ES384"}}
		}, wantErr: "does not fit"},
		{name: "missing file", giveOpts: func(t *testing.T) Options {
			return Options{PublicKeyFile: t.TempDir() + "/nope.pem"}
		}, wantErr: "read public key"},
		{name: "not PEM", giveOpts: func(t *testing.T) Options {
			return Options{PublicKeyFile: writePEM(t)}
		}, wantErr: "no PEM public key"},
		{name: "private key only", giveOpts: func(t *testing.T) Options {
			return Options{PublicKeyFile: writePEM(t, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.rsa)})}
		}, wantErr: "no PEM public key"},
		{name: "negative leeway", giveOpts: func(*testing.T) Options { return Options{Secret: "s", Leeway: -time.Second} }, wantErr: "leeway"},
		{name: "JWKS unreachable", giveOpts: func(*testing.T) Options { return Options{JWKSURL: goneURL} }, wantErr: "fetch JWKS"},
		{name: "JWKS 404", giveOpts: func(*testing.T) Options { return Options{JWKSURL: notFound.URL} }, wantErr: "fetch JWKS"},
		{name: "JWKS without a usable key", giveOpts: func(*testing.T) Options { return Options{JWKSURL: octOnly.URL} }, wantErr: "no usable signing key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := New(context.Background(), tt.giveOpts(t))
			if err == nil {
				v.Close()
				t.Fatalf("New succeeded, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestAPIKeysOnly(t *testing.T) {
	v := newVerifier(t, Options{APIKeys: []string{"k-123456"}})
	token := sign(t, "HS256", []byte(testSecret), claims(nil), nil)
	id, e := verifyTwice(t, v, token)
	checkResult(t, token, id, e, CodeInvalidToken, "")
}

// jwksServer serves the body returned by body on every request.
func jwksServer(t *testing.T, body func() []byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body())
	}))
	t.Cleanup(srv.Close)
	return srv
}

// jwkSet marshals the public keys of privs with their kid and alg ("" = no
// alg member).
func jwkSet(t *testing.T, entries ...jwkEntry) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, e := range entries {
		key, err := jwk.FromRaw(e.pub)
		if err != nil {
			t.Fatal(err)
		}
		if err := key.Set(jwk.KeyIDKey, e.kid); err != nil {
			t.Fatal(err)
		}
		if e.alg != "" {
			if err := key.Set(jwk.AlgorithmKey, jwa.SignatureAlgorithm(e.alg)); err != nil {
				t.Fatal(err)
			}
		}
		if err := set.AddKey(key); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type jwkEntry struct {
	pub      any
	kid, alg string
}

func TestVerifyJWKS(t *testing.T) {
	k := keys()
	body := jwkSet(t,
		jwkEntry{pub: &k.rsa.PublicKey, kid: "r1", alg: "RS256"},
		jwkEntry{pub: &k.ec.PublicKey, kid: "e1", alg: "ES256"},
		jwkEntry{pub: k.ed.Public(), kid: "d1"}, // no alg: EdDSA inferred
	)
	srv := jwksServer(t, func() []byte { return body })
	kid := func(s string) map[string]string { return map[string]string{"kid": s} }
	tests := []struct {
		name      string
		giveAlgs  []string
		giveToken func(t *testing.T) string
		wantCode  string
	}{
		{name: "RS256", giveToken: func(t *testing.T) string { return sign(t, "RS256", k.rsa, claims(nil), kid("r1")) }},
		{name: "ES256", giveToken: func(t *testing.T) string { return sign(t, "ES256", k.ec, claims(nil), kid("e1")) }},
		{name: "EdDSA inferred", giveToken: func(t *testing.T) string { return sign(t, "EdDSA", k.ed, claims(nil), kid("d1")) }},
		{name: "restricted to ES256 refuses RS256", giveAlgs: []string{"ES256"},
			giveToken: func(t *testing.T) string { return sign(t, "RS256", k.rsa, claims(nil), kid("r1")) }, wantCode: CodeInvalidToken},
		{name: "restricted to ES256 accepts ES256", giveAlgs: []string{"ES256"},
			giveToken: func(t *testing.T) string { return sign(t, "ES256", k.ec, claims(nil), kid("e1")) }},
		{name: "unknown kid", giveToken: func(t *testing.T) string { return sign(t, "RS256", k.rsa2, claims(nil), kid("r9")) }, wantCode: CodeInvalidToken},
		{name: "no kid with several keys", giveToken: func(t *testing.T) string { return sign(t, "RS256", k.rsa, claims(nil), nil) }, wantCode: CodeInvalidToken},
		{name: "wrong key for kid", giveToken: func(t *testing.T) string { return sign(t, "RS256", k.rsa2, claims(nil), kid("r1")) }, wantCode: CodeInvalidToken},
		{name: "header alg differs from the key's", giveToken: func(t *testing.T) string { return sign(t, "PS256", k.rsa, claims(nil), kid("r1")) }, wantCode: CodeInvalidToken},
		{name: "HS256 with the RSA key as secret", giveToken: func(t *testing.T) string {
			der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			return sign(t, "HS256", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), claims(nil), kid("r1"))
		}, wantCode: CodeInvalidToken},
		{name: "alg none", giveToken: func(t *testing.T) string {
			return rawToken(t, map[string]any{"alg": "none", "kid": "r1"}, claims(nil), "")
		}, wantCode: CodeInvalidToken},
		{name: "expired", giveToken: func(t *testing.T) string {
			return sign(t, "ES256", k.ec, claims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), kid("e1"))
		}, wantCode: CodeTokenExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, Options{JWKSURL: srv.URL, Algorithms: tt.giveAlgs})
			token := tt.giveToken(t)
			id, e := verifyTwice(t, v, token)
			checkResult(t, token, id, e, tt.wantCode, "u1")
		})
	}
}

func TestJWKSSingleKeyWithoutKid(t *testing.T) {
	k := keys()
	body := jwkSet(t, jwkEntry{pub: &k.ec.PublicKey, kid: "e1", alg: "ES256"})
	srv := jwksServer(t, func() []byte { return body })
	v := newVerifier(t, Options{JWKSURL: srv.URL})
	token := sign(t, "ES256", k.ec, claims(nil), nil)
	id, e := verifyTwice(t, v, token)
	checkResult(t, token, id, e, "", "u1")
}

func TestJWKSRotation(t *testing.T) {
	k := keys()
	var body atomic.Pointer[[]byte]
	var fetches atomic.Int32
	first := jwkSet(t, jwkEntry{pub: &k.rsa.PublicKey, kid: "r1", alg: "RS256"})
	body.Store(&first)
	srv := jwksServer(t, func() []byte { fetches.Add(1); return *body.Load() })

	tests := []struct {
		name        string
		giveMiss    time.Duration
		wantCode    string
		wantFetches int32
	}{
		{name: "unknown kid refreshes the set", giveMiss: 0, wantFetches: 2},
		{name: "refresh throttled", giveMiss: time.Hour, wantCode: CodeInvalidToken, wantFetches: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body.Store(&first)
			fetches.Store(0)
			v := newVerifier(t, Options{JWKSURL: srv.URL})
			v.missRefresh = tt.giveMiss
			if id, e := v.Verify(sign(t, "RS256", k.rsa, claims(nil), map[string]string{"kid": "r1"})); e != nil {
				t.Fatalf("old key: %v", e)
			} else if id.UserID != "u1" {
				t.Fatalf("UserID = %q", id.UserID)
			}
			rotated := jwkSet(t,
				jwkEntry{pub: &k.rsa.PublicKey, kid: "r1", alg: "RS256"},
				jwkEntry{pub: &k.rsa2.PublicKey, kid: "r2", alg: "RS256"})
			body.Store(&rotated)
			token := sign(t, "RS256", k.rsa2, claims(nil), map[string]string{"kid": "r2"})
			id, e := verifyTwice(t, v, token)
			checkResult(t, token, id, e, tt.wantCode, "u1")
			if got := fetches.Load(); got != tt.wantFetches {
				t.Errorf("fetches = %d, want %d", got, tt.wantFetches)
			}
		})
	}
}

func TestJWKSClosed(t *testing.T) {
	k := keys()
	body := jwkSet(t, jwkEntry{pub: &k.ec.PublicKey, kid: "e1", alg: "ES256"})
	srv := jwksServer(t, func() []byte { return body })
	ctx, cancel := context.WithCancel(context.Background())
	v, err := New(ctx, Options{JWKSURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	token := sign(t, "ES256", k.ec, claims(nil), map[string]string{"kid": "e1"})
	if _, e := v.Verify(token); e != nil {
		t.Fatalf("before cancel: %v", e)
	}
	cancel() // the context bounds the refresher; goleak checks it stopped
	v.Close()
	v.Close() // idempotent
}

func TestErrorIs(t *testing.T) {
	v := newVerifier(t, Options{Secret: testSecret})
	_, e := v.Verify(sign(t, "HS256", []byte(testSecret), claims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), nil))
	if !errors.Is(e, ErrTokenExpired) || errors.Is(e, ErrInvalidToken) {
		t.Errorf("errors.Is mismatch for %v", e)
	}
	if got := e.Error(); got != "token_expired: the token has expired" {
		t.Errorf("Error() = %q", got)
	}
}

// signedRaw signs a raw header and payload (JSON text, so that duplicate
// keys and odd types survive) with testSecret under HS256.
func signedRaw(header, payload string) string {
	enc := base64.RawURLEncoding
	in := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	return in + "." + hs256(in)
}

// TestVerifyCritAndNumericDates: a header crit naming anything is refused
// (RFC 7515 §4.1.11: the hub understands no extension), and exp, nbf and
// iat must be JSON numbers (jwx alone reads a string exp as a date).
func TestVerifyCritAndNumericDates(t *testing.T) {
	now := time.Now()
	exp := strconv.FormatInt(now.Add(time.Hour).Unix(), 10)
	past := strconv.FormatInt(now.Add(-time.Hour).Unix(), 10)
	tests := []struct {
		name     string
		header   string
		payload  string
		wantCode string
	}{
		{"plain", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `}`, ""},
		{"fractional exp", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `.5}`, ""},
		{"all three numbers", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"nbf":` + past + `,"iat":` + past + `}`, ""},
		{"crit naming exp", `{"alg":"HS256","crit":["exp"]}`, `{"sub":"u1","exp":` + exp + `}`, CodeInvalidToken},
		{"crit naming an extension", `{"alg":"HS256","crit":["b64"],"b64":true}`, `{"sub":"u1","exp":` + exp + `}`, CodeInvalidToken},
		{"crit empty", `{"alg":"HS256","crit":[]}`, `{"sub":"u1","exp":` + exp + `}`, CodeInvalidToken},
		{"crit null", `{"alg":"HS256","crit":null}`, `{"sub":"u1","exp":` + exp + `}`, CodeInvalidToken},
		{"exp a string", `{"alg":"HS256"}`, `{"sub":"u1","exp":"` + exp + `"}`, CodeInvalidToken},
		{"exp a date string", `{"alg":"HS256"}`, `{"sub":"u1","exp":"2099-01-01T00:00:00Z"}`, CodeInvalidToken},
		{"exp null", `{"alg":"HS256"}`, `{"sub":"u1","exp":null}`, CodeInvalidToken},
		{"exp true", `{"alg":"HS256"}`, `{"sub":"u1","exp":true}`, CodeInvalidToken},
		{"nbf a string", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"nbf":"` + past + `"}`, CodeInvalidToken},
		{"iat a string", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"iat":"` + past + `"}`, CodeInvalidToken},
		{"iat an object", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"iat":{}}`, CodeInvalidToken},
		{"string exp hidden by a duplicate", `{"alg":"HS256"}`, `{"sub":"u1","exp":"` + exp + `","exp":` + exp + `}`, CodeInvalidToken},
		{"escaped key", `{"alg":"HS256"}`, `{"sub":"u1","\u0065xp":"` + exp + `"}`, CodeInvalidToken},
		{"other claims may be strings", `{"alg":"HS256"}`, `{"sub":"u1","exp":` + exp + `,"auth_time":"x","jti":"j"}`, ""},
	}
	v := newVerifier(t, Options{Secret: testSecret})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := signedRaw(tt.header, tt.payload)
			id, e := verifyTwice(t, v, token)
			checkResult(t, token, id, e, tt.wantCode, "u1")
		})
	}
}
