package sse_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/transport/sse"
)

// Serve the SSE endpoint of a hub on /sse/realtime.
func ExampleNew() {
	h := hub.New(hub.Options{Node: "hub-1", HistorySize: 1000, HistoryTTL: 10 * time.Minute})
	h.Start()
	defer h.Stop()

	v, err := auth.New(context.Background(), auth.Options{Secret: "change-me", Leeway: 30 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()

	mux := http.NewServeMux()
	mux.Handle("/sse/realtime", sse.New(sse.Options{
		Hub:            h,
		Auth:           v,
		AllowedOrigins: []string{"https://app.example"},
	}))
	_ = mux // http.ListenAndServe(":8080", mux)
}
