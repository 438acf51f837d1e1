// Package auth authenticates the hub's clients and services.
//
// It owns token extraction from a request (Authorization header, then the
// token query parameter, then a cookie, each endpoint taking only the
// sources of the contract's table: [Sources]), the Origin check of
// cookie-authenticated requests, JWT verification with jwtauth and
// jwx (an HMAC secret, a PEM public key or a JWKS URL), API keys for the
// broadcast API, the [Identity] a verified request yields and role checks,
// the redaction of token-shaped strings for logs ([Redact]) and HMAC token
// minting for development mode and hubctl ([Mint]). Every failure is an [*Error] whose status and code are the ones of the
// protocol's "Authentication" section, with a human-readable message that
// never contains the token.
package auth

import (
	"net/http"
	"slices"
	"time"

	"github.com/hubd/hub/internal/httpx"
)

// Role names the hub gives a meaning to.
const (
	// RoleService may use the broadcast API; API keys carry only this role.
	RoleService = "service"
	// RoleAdmin may use the broadcast API and the admin endpoints.
	RoleAdmin = "admin"
)

// DefaultCookie is the cookie read for the token when Options.Cookie is empty.
const DefaultCookie = "hub_token"

// CookieOff as Options.Cookie reads no cookie: it is not a valid cookie
// name, so no request carries a cookie of that name (HUB_TOKEN_COOKIE set
// empty).
const CookieOff = "hub token cookie off"

// Error codes of the contract.
const (
	CodeMissingToken = "missing_token"
	CodeInvalidToken = "invalid_token"
	CodeTokenExpired = "token_expired"
	CodeForbidden    = "forbidden"
)

// Identity is the authenticated caller.
type Identity struct {
	// UserID is the token's sub; for an API key a label for logs,
	// "api-key:" and the first 8 hex digits of the key's SHA-256 (nothing
	// of the key itself).
	UserID string
	// Caller scopes what the caller stores (the broadcast API's
	// idempotency keys) by the whole credential: "jwt:" and the sub for a
	// token, "api-key:" and the key's full SHA-256 in hex for an API key.
	Caller string
	// Roles come from the roles claim (array of strings) or the role claim
	// (string); an API key has ["service"].
	Roles []string
	// ExpiresAt is the token's exp; zero for an API key.
	ExpiresAt time.Time
	// APIKey is true when the caller used X-API-Key.
	APIKey bool
	// Cookie is true when the token came from the cookie (see
	// CheckCookieOrigin).
	Cookie bool
}

// HasRole reports whether the identity has any of roles.
func (i *Identity) HasRole(roles ...string) bool {
	if i == nil {
		return false
	}
	for _, r := range roles {
		if slices.Contains(i.Roles, r) {
			return true
		}
	}
	return false
}

// Error is an authentication or authorization failure: the HTTP status, the
// contract's error code and a human-readable message (never the token).
type Error struct {
	Status  int
	Code    string
	Message string
}

// Error returns the code and the message.
func (e *Error) Error() string {
	return e.Code + ": " + e.Message
}

// Is reports whether target is an *Error with the same status and code, so
// that errors.Is(err, auth.ErrTokenExpired) works whatever the message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status && t.Code == e.Code
}

// The contract's errors, with generic messages. Verify and the Authenticate
// methods return errors with the same status and code but a more precise
// message; compare with errors.Is or on Code.
var (
	ErrMissingToken = &Error{Status: http.StatusUnauthorized, Code: CodeMissingToken, Message: "no token: send it in the Authorization header (Bearer), the token query parameter or the cookie"}
	ErrInvalidToken = &Error{Status: http.StatusUnauthorized, Code: CodeInvalidToken, Message: "the token is invalid"}
	ErrTokenExpired = &Error{Status: http.StatusUnauthorized, Code: CodeTokenExpired, Message: "the token has expired"}
	ErrForbidden    = &Error{Status: http.StatusForbidden, Code: CodeForbidden, Message: "the caller lacks the required role"}
)

// invalid returns a 401 invalid_token with msg.
func invalid(msg string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: CodeInvalidToken, Message: msg}
}

// WriteError writes e with httpx.WriteError.
func WriteError(w http.ResponseWriter, e *Error) {
	httpx.WriteError(w, e.Status, e.Code, e.Message)
}
