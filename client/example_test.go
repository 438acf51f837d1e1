package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/hubd/hub/client"
	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/transport/api"
)

// Example starts a hub in-process, then publishes to two users (none of
// them connected) and to everyone with an API key.
func Example() {
	// A hub with its service API on a loopback server.
	h := hub.New(hub.Options{Node: "hub-1"})
	h.Start()
	defer h.Stop()
	v, err := auth.New(context.Background(), auth.Options{
		Secret:  "example-secret-0123456789abcdef0123",
		APIKeys: []string{"example-api-key"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer v.Close()
	mux := http.NewServeMux()
	api.New(api.Options{Hub: h, Auth: v, Logger: slog.New(slog.DiscardHandler)}).RegisterInternal(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// The service side.
	c := client.New(srv.URL, client.WithAPIKey("example-api-key"), client.WithHTTPClient(srv.Client()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	events, err := c.Publish(ctx, []string{"u1", "u2"}, "DRAFT_UPDATED", map[string]int{"draftId": 42})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range events {
		// devices 0: nobody is connected, so a push notification may be due
		fmt.Println("published to", e.UserID, "with an id:", e.ID != "", "devices:", e.Devices)
	}

	id, err := c.PublishAll(ctx, "ANNOUNCEMENT", "maintenance at 22:00")
	fmt.Println("broadcast id:", id != "", err)

	// Errors are typed: the HTTP status and the contract's code.
	_, err = c.Publish(ctx, []string{"u1"}, "hub.reserved", nil)
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Code)
	}
	// Output:
	// published to u1 with an id: true devices: 0
	// published to u2 with an id: true devices: 0
	// broadcast id: true <nil>
	// 400 invalid_request
}
