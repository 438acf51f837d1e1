package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/hubd/hub/internal/httpx"
)

// Sources is a set of the places a request's token may come from. Which
// ones an endpoint takes is the contract's table (Authentication): a
// credential an endpoint does not take is ignored there, as if absent.
type Sources uint8

// The places a token may come from.
const (
	// FromHeader is the Authorization header ("Bearer <jwt>").
	FromHeader Sources = 1 << iota
	// FromQuery is the token query parameter.
	FromQuery
	// FromCookie is the configured cookie (Options.Cookie).
	FromCookie
)

// The contract's credential sets.
const (
	// StreamSources are what the WebSocket and SSE handshakes take: the
	// header, the query parameter (browsers cannot set headers on a
	// WebSocket or an EventSource) and the cookie.
	StreamSources = FromHeader | FromQuery | FromCookie
	// SendSources are what POST /api/send takes: the header and the cookie,
	// never the query parameter.
	SendSources = FromHeader | FromCookie
)

// CodeOriginNotAllowed is the 403 code of a request whose Origin is not
// allowed.
const CodeOriginNotAllowed = "origin_not_allowed"

// TokenFromRequest returns the token of r from the first of: the
// Authorization header ("Bearer <jwt>", scheme case-insensitive), the token
// query parameter, the cookie named cookie (DefaultCookie when empty).
// It returns "" when there is none. An Authorization header that is not a
// usable Bearer token is skipped here; Authenticate refuses it.
func TokenFromRequest(r *http.Request, cookie string) string {
	tok, _ := tokenFrom(r, cookie, StreamSources)
	return tok
}

// tokenFrom is TokenFromRequest over the sources in set; it also says
// which source gave the token (0 when none did).
func tokenFrom(r *http.Request, cookie string, set Sources) (string, Sources) {
	if set&FromHeader != 0 {
		if tok, ok := bearer(r.Header.Get("Authorization")); ok {
			return tok, FromHeader
		}
	}
	if set&FromQuery != 0 {
		if tok := httpx.QueryValue(r.URL.RawQuery, "token"); tok != "" {
			return tok, FromQuery
		}
	}
	if set&FromCookie != 0 {
		if cookie == "" {
			cookie = DefaultCookie
		}
		if c, err := r.Cookie(cookie); err == nil && c.Value != "" {
			return c.Value, FromCookie
		}
	}
	return "", 0
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

// Authenticate verifies the token of a WebSocket or SSE handshake, taken
// from StreamSources (see TokenFromRequest). It returns 401 missing_token
// when there is none.
func (v *Verifier) Authenticate(r *http.Request) (*Identity, *Error) {
	return v.AuthenticateFrom(r, StreamSources)
}

// AuthenticateFrom verifies the token of r taken from the sources in set
// only (in the order header, query, cookie). It returns 401 missing_token
// when none of them holds one. The identity's Cookie field says whether the
// cookie gave the token (see CheckCookieOrigin).
//
// Decision: an Authorization header that is present (and not blank) but is not
// a usable Bearer token (another scheme, "Bearer" alone) is 401 invalid_token,
// not a reason to fall through to the query parameter or the cookie: the
// client meant to authenticate with it, and silently using another credential
// would hide its mistake or authenticate it as someone else.
func (v *Verifier) AuthenticateFrom(r *http.Request, set Sources) (*Identity, *Error) {
	if h := r.Header.Get("Authorization"); set&FromHeader != 0 && strings.TrimSpace(h) != "" {
		tok, ok := bearer(h)
		if !ok {
			return nil, invalid(`the Authorization header must be "Bearer <token>"`)
		}
		return v.Verify(tok)
	}
	tok, src := tokenFrom(r, v.cookie, set)
	if tok == "" {
		return nil, missing(set)
	}
	id, e := v.Verify(tok)
	if e != nil {
		return nil, e
	}
	id.Cookie = src == FromCookie
	return id, nil
}

// missing is the 401 missing_token naming the places looked at.
func missing(set Sources) *Error {
	var where []string
	if set&FromHeader != 0 {
		where = append(where, "the Authorization header (Bearer)")
	}
	if set&FromQuery != 0 {
		where = append(where, "the token query parameter")
	}
	if set&FromCookie != 0 {
		where = append(where, "the cookie")
	}
	msg := "no token: send it in " + strings.Join(where, " or ")
	if set == StreamSources {
		msg = ErrMissingToken.Message
	}
	return &Error{Status: http.StatusUnauthorized, Code: CodeMissingToken, Message: msg}
}

// CheckCookieOrigin refuses a request whose token came from the cookie
// (id.Cookie) and whose Origin header is not allowed by the
// HUB_ALLOWED_ORIGINS patterns (httpx.OriginAllowed): 403
// origin_not_allowed. A request without Origin (a same-origin GET, a
// client that is not a browser) and one authenticated otherwise pass: a
// page on another origin can send a cookie, never a header it does not know.
func CheckCookieOrigin(r *http.Request, id *Identity, allowed []string) *Error {
	if id == nil || !id.Cookie {
		return nil
	}
	origin := r.Header.Get("Origin")
	if origin == "" || httpx.OriginAllowed(allowed, origin, r.Host) {
		return nil
	}
	return &Error{Status: http.StatusForbidden, Code: CodeOriginNotAllowed,
		Message: "origin not allowed: a request authenticated by the cookie must come from an allowed origin (HUB_ALLOWED_ORIGINS)"}
}

// AuthenticateService authenticates a caller of the service and admin
// endpoints: an X-API-Key from the configured list (roles ["service"]) or a
// JWT in the Authorization header with the role service or admin. The
// cookie and the token query parameter are ignored there. No credential is
// 401 missing_token, a bad one 401 invalid_token (a wrong X-API-Key:
// "invalid API key"), a JWT without either role 403 forbidden. When
// X-API-Key is present the JWT is not looked at.
func (v *Verifier) AuthenticateService(r *http.Request) (*Identity, *Error) {
	if vals := r.Header.Values("X-API-Key"); len(vals) > 0 {
		key := vals[0]
		sum, ok := v.validAPIKey(key)
		if !ok {
			return nil, invalid("invalid API key")
		}
		return &Identity{UserID: apiKeyUser(sum), Caller: apiKeyCaller(sum), Roles: []string{RoleService}, APIKey: true}, nil
	}
	id, e := v.AuthenticateFrom(r, FromHeader)
	if e != nil {
		if e.Code == CodeMissingToken {
			e.Message = "no credential: send an API key in X-API-Key or a service token in the Authorization header (Bearer)"
		}
		return nil, e
	}
	if !id.HasRole(RoleService, RoleAdmin) {
		return nil, &Error{Status: http.StatusForbidden, Code: CodeForbidden, Message: "this endpoint needs the service or admin role"}
	}
	return id, nil
}

// validAPIKey compares key with every configured key in constant time (the
// SHA-256 digests are compared, so the length does not leak either). It
// returns the key's digest.
func (v *Verifier) validAPIKey(key string) ([sha256.Size]byte, bool) {
	sum := sha256.Sum256([]byte(key))
	if key == "" {
		return sum, false
	}
	match := 0
	for _, k := range v.apiKeys {
		match |= subtle.ConstantTimeCompare(sum[:], k[:])
	}
	return sum, match == 1
}

// apiKeyUser names an API key caller for logs: "api-key:" and the first 8
// hex digits of the key's SHA-256, a label that tells keys apart and gives
// away nothing of the key.
func apiKeyUser(sum [sha256.Size]byte) string {
	return "api-key:" + hex.EncodeToString(sum[:4])
}

// apiKeyCaller scopes what an API key caller stores by the whole key: its
// full SHA-256 digest.
func apiKeyCaller(sum [sha256.Size]byte) string {
	return "api-key:" + hex.EncodeToString(sum[:])
}

// jwtCaller scopes what a token's caller stores: its sub.
func jwtCaller(sub string) string {
	return "jwt:" + sub
}
