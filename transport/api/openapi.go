package api

import (
	"net/http"

	"github.com/hubd/hub/docs"
	"github.com/hubd/hub/internal/httpx"
)

// openapi serves docs/openapi.yaml as JSON (GET /api/openapi.json): the
// document is embedded at build time and converted on the first request.
func (a *API) openapi(w http.ResponseWriter, _ *http.Request) {
	body, err := docs.OpenAPIJSON()
	if err != nil {
		a.log.Error("openapi document", "err", err)
		httpx.WriteError(w, http.StatusInternalServerError, codeInternal, "the OpenAPI document could not be read")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(body)
}
