// Package httpx holds tiny HTTP helpers shared by the hub's transports:
// JSON responses, the contract's JSON error body and the client address
// (clientip.go).
package httpx

import (
	"encoding/json"
	"net/http"
)

// WriteJSON writes v as JSON with the status and Content-Type: application/json.
// A value that cannot be encoded is answered with a 500 and a JSON error body
// instead (nothing has been written yet at that point).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":{"code":"internal_error","message":"could not encode the response"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	body = append(body, '\n')
	_, _ = w.Write(body)
}

// errorBody is the contract's error envelope:
// {"error":{"code":"...","message":"..."}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// WriteError writes {"error":{"code":code,"message":msg}} with the status.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: msg}})
}
