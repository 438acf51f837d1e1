package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// TokenFromRequest returns the token of r from the first of: the
// Authorization header ("Bearer <jwt>", scheme case-insensitive), the token
// query parameter, the cookie named cookie (DefaultCookie when empty).
// It returns "" when there is none. An Authorization header that is not a
// usable Bearer token is skipped here; Authenticate refuses it.
func TokenFromRequest(r *http.Request, cookie string) string {
	if tok, ok := bearer(r.Header.Get("Authorization")); ok {
		return tok
	}
	if tok := r.URL.Query().Get("token"); tok != "" {
		return tok
	}
	if cookie == "" {
		cookie = DefaultCookie
	}
	if c, err := r.Cookie(cookie); err == nil && c.Value != "" {
		return c.Value
	}
	return ""
}

// bearer extracts the token of an Authorization header value.
func bearer(h string) (string, bool) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok := strings.TrimSpace(rest)
	if tok == "" || strings.ContainsAny(tok, " \t") {
		return "", false
	}
	return tok, true
}

// Authenticate verifies the token of r (see TokenFromRequest). It returns 401
// missing_token when there is none.
//
// Decision: an Authorization header that is present (and not blank) but is not
// a usable Bearer token (another scheme, "Bearer" alone) is 401 invalid_token,
// not a reason to fall through to the query parameter or the cookie: the
// client meant to authenticate with it, and silently using another credential
// would hide its mistake or authenticate it as someone else.
func (v *Verifier) Authenticate(r *http.Request) (*Identity, *Error) {
	if h := r.Header.Get("Authorization"); strings.TrimSpace(h) != "" {
		tok, ok := bearer(h)
		if !ok {
			return nil, invalid(`the Authorization header must be "Bearer <token>"`)
		}
		return v.Verify(tok)
	}
	tok := TokenFromRequest(r, v.cookie)
	if tok == "" {
		return nil, ErrMissingToken
	}
	return v.Verify(tok)
}

// AuthenticateService authenticates a caller of the broadcast API: an
// X-API-Key from the configured list (roles ["service"]) or a JWT with the
// role service or admin. No credential is 401 missing_token, a bad one 401
// invalid_token (a wrong X-API-Key: "invalid API key"), a JWT without either
// role 403 forbidden. When X-API-Key is present the JWT is not looked at.
func (v *Verifier) AuthenticateService(r *http.Request) (*Identity, *Error) {
	if vals := r.Header.Values("X-API-Key"); len(vals) > 0 {
		key := vals[0]
		if !v.validAPIKey(key) {
			return nil, invalid("invalid API key")
		}
		return &Identity{UserID: apiKeyUser(key), Roles: []string{RoleService}, APIKey: true}, nil
	}
	id, e := v.Authenticate(r)
	if e != nil {
		return nil, e
	}
	if !id.HasRole(RoleService, RoleAdmin) {
		return nil, &Error{Status: http.StatusForbidden, Code: CodeForbidden, Message: "this endpoint needs the service or admin role"}
	}
	return id, nil
}

// validAPIKey compares key with every configured key in constant time (the
// SHA-256 digests are compared, so the length does not leak either).
func (v *Verifier) validAPIKey(key string) bool {
	if key == "" {
		return false
	}
	sum := sha256.Sum256([]byte(key))
	match := 0
	for _, k := range v.apiKeys {
		match |= subtle.ConstantTimeCompare(sum[:], k[:])
	}
	return match == 1
}

// apiKeyUser names an API key caller by the key's first 4 characters (fewer
// for a very short key, so that the whole key never shows).
func apiKeyUser(key string) string {
	r := []rune(key)
	n := min(4, len(r)/2)
	return "api-key:" + string(r[:n]) + "…"
}
