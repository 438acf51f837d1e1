package httpx

import (
	"mime"
	"net/http"
)

// CodeUnsupportedMediaType is the 415 error code of a POST body that is not
// sent as application/json.
const CodeUnsupportedMediaType = "unsupported_media_type"

// MediaTypeMessage is the message of that 415.
const MediaTypeMessage = "send the body with Content-Type: application/json"

// IsJSON reports whether h's Content-Type is application/json: the media
// type compared without regard to case, parameters (charset=utf-8) allowed.
// A body of another type (text/plain, a form) is what a page on another
// origin can send without a CORS preflight, so the hub's POST endpoints
// take only this one.
func IsJSON(h http.Header) bool {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	return err == nil && mt == "application/json"
}
