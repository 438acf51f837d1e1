package auth

import "regexp"

// redacted replaces secrets in Redact's output.
const redacted = "[REDACTED]"

var (
	// jwtLike matches three base64url segments separated by dots that look
	// like a JWT: a header starting with `{"` (eyJ), or three long segments.
	// Host names and version numbers are left alone.
	jwtLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*|[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}`)
	// tokenParam matches the value of a token= parameter (also access_token=
	// and the like), up to the next separator.
	tokenParam = regexp.MustCompile(`(?i)(token=)[^&\s#"';,]*`)
	// bearerValue matches the credential of a "Bearer <token>" header.
	bearerValue = regexp.MustCompile(`(?i)(\bbearer\s+)[^\s"',;]+`)
)

// Redact returns s with any JWT-looking substring (three base64url segments
// separated by dots), any token= query value and any Bearer credential
// replaced by "[REDACTED]"; for use by loggers.
func Redact(s string) string {
	s = tokenParam.ReplaceAllString(s, "${1}"+redacted)
	s = bearerValue.ReplaceAllString(s, "${1}"+redacted)
	return jwtLike.ReplaceAllString(s, redacted)
}
