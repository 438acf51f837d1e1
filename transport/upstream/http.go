package upstream

import (
	"errors"
	"io"
	"math"
	"net/http"
	"time"

	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/httpx"
)

// httpStatus maps an outcome to the status of a /api/send answer.
func httpStatus(o *Outcome) int {
	if o.Ack {
		return http.StatusOK
	}
	switch o.Code {
	case CodeDisabled:
		return http.StatusNotFound
	case CodeInvalidRequest, CodeInvalidJSON:
		return http.StatusBadRequest
	case CodeUnsupportedMediaType:
		return http.StatusUnsupportedMediaType
	case CodePayloadTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeRejected:
		return http.StatusUnprocessableEntity
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeTimeout:
		return http.StatusGatewayTimeout
	case CodeInFlight:
		return http.StatusConflict
	case CodeShuttingDown:
		return http.StatusServiceUnavailable
	default: // upstream_error, upstream_unavailable
		return http.StatusBadGateway
	}
}

// SendHandler serves POST /api/send for a user token, taken from the
// Authorization header (Bearer) or the cookie, never from the token query
// parameter. A request authenticated by the cookie that carries an Origin
// header must come from an origin allowed by Options.AllowedOrigins (403
// origin_not_allowed). The body must be sent as application/json (415
// unsupported_media_type) and be valid UTF-8 (400 invalid_json). It is a
// hub.send frame without type and ref ({"idempotencyKey":...,
// "event":{"type":...,"payload":...}}; an optional string "ref" is echoed).
// An ack answers 200 with the ack payload; a nack answers an error status
// (see docs/UPSTREAM.md) with the nack payload, whose "error" member has the
// usual {"code","message"} shape. Sends are rate limited per user. The
// backend gets no connectionId for these operations.
func (u *Upstream) SendHandler() http.Handler {
	return http.HandlerFunc(u.serveSend)
}

func (u *Upstream) serveSend(w http.ResponseWriter, r *http.Request) {
	if !u.Enabled() {
		u.answer(w, outDisabled, "")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	if u.o.Auth == nil {
		httpx.WriteError(w, http.StatusInternalServerError, "internal_error", "no token verifier is configured")
		return
	}
	id, aerr := u.o.Auth.AuthenticateFrom(r, auth.SendSources)
	if aerr == nil {
		aerr = auth.CheckCookieOrigin(r, id, u.o.AllowedOrigins)
	}
	if aerr != nil {
		auth.WriteError(w, aerr)
		return
	}
	isJSON := httpx.IsJSON(r.Header)
	if r.ContentLength > 0 && !isJSON {
		u.answer(w, outMediaType, "")
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, u.o.MaxPayload))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			u.answer(w, nack(CodePayloadTooLarge, "the body is larger than the hub's maximum payload", false), "")
			return
		}
		u.answer(w, invalid("could not read the body"), "")
		return
	}
	if len(data) > 0 && !isJSON { // a body of unknown length (chunked)
		u.answer(w, outMediaType, "")
		return
	}
	req, bad := parse(data, false)
	if bad != nil {
		u.answer(w, bad, req.Ref)
		return
	}
	if !u.lim.acquire(userLimitPrefix+id.UserID, 0) {
		httpx.RetryAfter(w, u.retryAfter())
		u.answer(w, outRateLimited, req.Ref)
		return
	}
	if !u.begin() {
		u.answer(w, outShuttingDown, req.Ref)
		return
	}
	defer u.wg.Done()
	u.answer(w, u.do(r.Context(), id.UserID, "", req), req.Ref)
}

// retryAfter is the time one send token takes to come back.
func (u *Upstream) retryAfter() time.Duration {
	if u.o.Rate <= 0 {
		return time.Second
	}
	return time.Duration(math.Ceil(float64(time.Second) / u.o.Rate))
}

func (u *Upstream) answer(w http.ResponseWriter, o *Outcome, ref string) {
	if o.Retryable && w.Header().Get("Retry-After") == "" {
		httpx.RetryAfter(w, time.Second)
	}
	httpx.WriteJSON(w, httpStatus(o), o.payload(ref))
}
